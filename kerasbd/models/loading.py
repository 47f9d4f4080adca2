"""``load_model``: legacy Keras 2 ``.h5`` (full or weights-only) and Keras 3 ``.keras`` files, safely.

The order of operations is the point: open the file once, read-only, as a regular file, its format decided from
its content (:mod:`kerasbd.models.files`) → refuse data stored outside the file (:mod:`kerasbd.models.h5`) →
parse the stored JSON within size and depth bounds → translate a Keras 2 config (:mod:`kerasbd.models.legacy`)
→ refuse anything in the config that is not a Keras built-in (:mod:`kerasbd.models.safety`) → count the
parameters it describes without allocating them → build with Keras' safe deserializer → check every stored
tensor's declared shape, then read and assign it (:mod:`kerasbd.models.weights`). kerasbd never hands a path to
a Keras loader: what it inspected is exactly what it builds. Nothing is unpickled and nothing from the file is
imported or executed unless the caller passes ``trust=True``.
"""

from __future__ import annotations

import copy
import io
import math
import os
import zipfile
from typing import Any

import keras
import numpy as np
from keras.src.backend.common import global_state

from kerasbd.errors import ConfigError, KerasBDError, ModelFileError, ModelTooLargeError
from kerasbd.models.architectures import build_architecture
from kerasbd.models.classifier import Classifier
from kerasbd.models.files import ModelFile, open_archive, open_model_file, read_member
from kerasbd.models.h5 import open_h5, read_attr, weight_table
from kerasbd.models.legacy import translate_model_config
from kerasbd.models.limits import MAX_CONFIG_BYTES, MAX_PARAMS, Limits
from kerasbd.models.safety import check_config, parse_config
from kerasbd.models.spec import InputSpec
from kerasbd.models.weights import assign_weight_table, load_keras3_weights, warn_nonfinite

__all__ = ["load_model", "build_model"]

# model.weights.h5 of a .keras archive: the model's variables, optimizer slots for each (up to three), HDF5 overhead.
_WEIGHTS_FILE_FACTOR = 4
_WEIGHTS_FILE_OVERHEAD = 16 * 2**20


def load_model(
    path: str | os.PathLike,
    *,
    architecture: str | keras.Model | None = None,
    input_spec: InputSpec | dict[str, Any] | None = None,
    trust: bool = False,
    max_params: int = MAX_PARAMS,
    max_config_bytes: int = MAX_CONFIG_BYTES,
) -> Classifier:
    """Load a model file as a :class:`Classifier` (canonical images → logits).

    Args:
        path: a full Keras ``.h5`` (Keras 2.2 to 2.15 or Keras 3 legacy), a weights-only ``.h5`` (needs
            ``architecture``), or a ``.keras`` archive; the format is read from the content, not the name.
            Opened read-only; never modified.
        architecture: for weights-only files: a name from :data:`~kerasbd.models.ARCHITECTURES` or a built
            ``keras.Model``; the weights are loaded into it by layer name.
        input_spec: what the stored model expects (range, mean/std, channel order). Default: ``[0, 1]`` RGB at
            the model's input shape (:func:`kerasbd.zoo.load_zoo_model` passes the manifest's spec).
        trust: allow Lambda layers, custom classes and module references (runs code from the file).
        max_params: the most parameters the stored config may describe
            (default :data:`~kerasbd.models.limits.MAX_PARAMS`, 150 M); checked before anything is allocated.
        max_config_bytes: the largest stored JSON config accepted
            (default :data:`~kerasbd.models.limits.MAX_CONFIG_BYTES`, 16 MiB).

    Raises:
        ModelFileError: missing, non-regular (FIFO, device), non-HDF5, polyglot, truncated or malformed file;
            weights-only file without architecture.
        ModelTooLargeError: the file declares more than ``max_params``/``max_config_bytes`` allow, or data that
            inflates beyond its declared size.
        UnsafeModelError: the file asks for code execution and ``trust`` is False, or stores data outside itself.
        UnknownLayerError: a layer class nobody registered (with ``trust=True``).
        WeightsMismatchError: stored weights do not fit the model (layer names, shapes or dtypes).

    Example:
        >>> clf = load_model("zoo/dillonsd_mnist_badnets/badnets_baseline.h5")     # doctest: +SKIP
        >>> clf.input_shape, clf.num_classes, clf.output_activation                  # doctest: +SKIP
        ((28, 28, 1), 10, 'softmax')
    """
    limits = Limits(max_params=max_params, max_config_bytes=max_config_bytes)
    with open_model_file(path) as model_file:
        if model_file.kind == "zip":
            if architecture is not None:
                raise ConfigError(".keras archives carry their own architecture; do not pass architecture=.")
            model, info = _load_keras_archive(model_file, trust, limits)
        else:
            model, info = _load_h5(model_file, architecture, trust, limits)
    spec = InputSpec.from_dict(input_spec) if isinstance(input_spec, dict) else input_spec
    source = {"path": str(model_file.path), "sha256": model_file.sha256, **info,
              "input_spec_source": "identity" if spec is None else "caller"}
    try:
        clf = Classifier.from_keras(model, input_spec=spec, source=source)
    except KerasBDError:
        raise
    except Exception as exc:  # Keras errors while assembling the canonical model
        raise ModelFileError(f"{model_file.path}: the model was read but cannot be wrapped as a classifier ({exc}).") from None
    if info["format"] == "h5-weights":
        clf.output_activation = None  # a weights file stores no activation; the architecture ends in logits
    return clf


def build_model(config: dict[str, Any], *, trust: bool, max_params: int, source: str) -> keras.Model:
    """Build a stored Keras 3 model config after checking it (:func:`~kerasbd.models.safety.check_config`) and its size.

    Raises:
        UnsafeModelError, UnknownLayerError: see :func:`~kerasbd.models.safety.check_config`.
        ModelTooLargeError: the config describes more than ``max_params`` parameters.
        ModelFileError: Keras cannot build the config.
    """
    _drop_compile_configs(config)
    check_config(config, trust=trust)
    shapes = _declared_weight_shapes(config, trust, source)
    total = sum(math.prod(shape) for _, shape in shapes)
    if total > max_params:
        largest, shape = max(shapes, key=lambda item: math.prod(item[1]))
        raise ModelTooLargeError(
            f"{source}: the model config describes {total:,} parameters, more than max_params={max_params:,} (the largest "
            f"weight, {largest!r}, has shape {shape}). Refused before allocating them; if you expect a model this large, "
            "pass load_model(..., max_params=N)."
        )
    return _deserialize(config, trust, source)


def _declared_weight_shapes(config: dict[str, Any], trust: bool, source: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(variable path, shape), ...]`` of the model ``config`` describes, built without allocating any variable.

    Keras creates variables inside a ``StatelessScope`` uninitialized and queues them for later initialization;
    the queue is restored afterwards so that the probe's variables are never allocated.
    """
    pending = list(global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True))
    try:
        with keras.StatelessScope(initialize_variables=False):
            probe = _deserialize(config, trust, source)
        return [(v.path, tuple(v.shape)) for v in probe.weights]
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def _deserialize(config: dict[str, Any], trust: bool, source: str) -> keras.Model:
    try:  # Keras consumes the config it is given: build from a copy
        model = keras.saving.deserialize_keras_object(copy.deepcopy(config), safe_mode=not trust)
    except KerasBDError:
        raise
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError for configs it cannot build
        raise ModelFileError(f"{source}: the stored model config cannot be built in Keras 3: {exc}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{source}: the stored config describes a {type(model).__name__}, not a model.")
    return model


def _load_h5(model_file: ModelFile, architecture: str | keras.Model | None, trust: bool, limits: Limits) -> tuple[keras.Model, dict[str, Any]]:
    source = str(model_file.path)
    with open_h5(model_file.handle, source) as f:
        info: dict[str, Any] = {"keras_version": read_attr(f, "keras_version"), "backend": read_attr(f, "backend"),
                                "training_config": "training_config" in f.attrs, "optimizer_weights_ignored": "optimizer_weights" in f}
        has_config = "model_config" in f.attrs
        if not has_config and architecture is None:
            if "layer_names" in f.attrs:
                raise ModelFileError(
                    f"{source} is a weights-only file (saved with save_weights; no model_config). Pass "
                    "architecture=... (a name from kerasbd.models.ARCHITECTURES such as 'deepid', or a built "
                    "keras.Model) to load it."
                )
            raise ModelFileError(f"{source} is an HDF5 file but holds no Keras model (no model_config, no layer_names).")
        if "model_weights" not in f and "layer_names" not in f.attrs:
            raise ModelFileError(f"{source} has a model_config but no weights (no 'model_weights' group).")
        if architecture is not None:
            model = _architecture_model(architecture)
            info.update(format="h5-full" if has_config else "h5-weights", architecture=architecture if isinstance(architecture, str) else model.name)
        else:
            config = parse_config(read_attr(f, "model_config"), source=f"{source}: the 'model_config' attribute", max_bytes=limits.max_config_bytes)
            if not isinstance(config, dict):
                raise ModelFileError(f"{source}: model_config is not a JSON object; the file is malformed.")
            model = build_model(translate_model_config(config), trust=trust, max_params=limits.max_params, source=source)
            info.update(format="h5-full", model_class=config.get("class_name"))
        table = weight_table(f["model_weights"] if "model_weights" in f else f, source)
        nonfinite = assign_weight_table(model, table, by="name", source=source)
    warn_nonfinite(nonfinite, source)
    info["nonfinite_weights"] = nonfinite
    return model, info


def _architecture_model(architecture: str | keras.Model) -> keras.Model:
    model = build_architecture(architecture) if isinstance(architecture, str) else architecture
    if not isinstance(model, keras.Model):
        raise ConfigError(f"architecture must be a name or a keras.Model, got {type(architecture).__name__}.")
    return model


def _drop_compile_configs(config: Any) -> None:
    """Models load uncompiled, nested ones too (a fine-tuned model inside a defended one keeps its own): the
    optimizer and loss configs are never built."""
    level = [config]
    while level:  # iterative: the depth was bounded when the JSON was parsed
        for node in level:
            if isinstance(node, dict):
                node.pop("compile_config", None)
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list) else ())]


def _load_keras_archive(model_file: ModelFile, trust: bool, limits: Limits) -> tuple[keras.Model, dict[str, Any]]:
    source = str(model_file.path)
    hint = "If the model really needs more, pass load_model(..., max_config_bytes=N)."
    with open_archive(model_file.handle, source) as archive:
        names = archive.namelist()
        if any(name.startswith("assets/") and not name.endswith("/") for name in names):
            raise ModelFileError(f"{source} holds assets; kerasbd loads layer weights only, and image classifiers keep no assets.")
        config = _archive_json(archive, "config.json", source, limits.max_config_bytes, hint)
        metadata = _archive_json(archive, "metadata.json", source, limits.max_config_bytes, hint) if "metadata.json" in names else {}
        if not isinstance(config, dict) or not isinstance(metadata, dict):
            raise ModelFileError(f"{source}: config.json or metadata.json is not a JSON object; the archive is malformed.")
        model = build_model(config, trust=trust, max_params=limits.max_params, source=source)
        weights = read_member(archive, "model.weights.h5", _weights_file_limit(model), source=source,
                              hint="A model.weights.h5 larger than its model needs is malformed or hostile.")
    with open_h5(io.BytesIO(weights), f"{source}: model.weights.h5") as f:
        load_keras3_weights(model, f, f"{source}: model.weights.h5")
    return model, {"format": "keras", "keras_version": metadata.get("keras_version")}


def _archive_json(archive: zipfile.ZipFile, name: str, source: str, max_bytes: int, hint: str) -> Any:
    text = read_member(archive, name, max_bytes, source=source, hint=hint)
    return parse_config(text, source=f"{source}: {name}", max_bytes=max_bytes)


def _weights_file_limit(model: keras.Model) -> int:
    held = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.variables)
    return _WEIGHTS_FILE_FACTOR * held + _WEIGHTS_FILE_OVERHEAD
