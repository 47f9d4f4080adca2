"""``load_model``: legacy Keras 2 ``.h5`` (full or weights-only) and Keras 3 ``.keras`` files, safely.

The order of operations is the point: open read-only → parse the stored JSON → refuse code-bearing or unknown
entries (:mod:`kerasbd.models.safety`) → translate the Keras 2 config (:mod:`kerasbd.models.legacy`) → build
with Keras' safe deserializer → assign weights strictly by layer name (:mod:`kerasbd.models.weights`). Nothing
is unpickled and nothing from the file is imported or executed unless the caller passes ``trust=True``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import keras

from kerasbd.errors import ConfigError, KerasBDError, ModelFileError
from kerasbd.io import sha256_file
from kerasbd.models.architectures import build_architecture
from kerasbd.models.classifier import Classifier
from kerasbd.models.h5 import file_kind, open_h5, read_attr, read_json_attr, weight_table
from kerasbd.models.legacy import translate_model_config
from kerasbd.models.safety import check_config
from kerasbd.models.spec import InputSpec
from kerasbd.models.weights import assign_weight_table, warn_nonfinite

__all__ = ["load_model"]


def load_model(
    path: str | os.PathLike,
    *,
    architecture: str | keras.Model | None = None,
    input_spec: InputSpec | dict[str, Any] | None = None,
    trust: bool = False,
    zoo_entry: str | dict[str, Any] | None = None,
) -> Classifier:
    """Load a model file as a :class:`Classifier` (canonical images → logits).

    Args:
        path: a full Keras ``.h5`` (Keras 2.2 to 2.15 or Keras 3 legacy), a weights-only ``.h5`` (needs
            ``architecture``), or a ``.keras`` archive. Opened read-only; never modified.
        architecture: for weights-only files: a name from :data:`~kerasbd.models.ARCHITECTURES` or a built
            ``keras.Model``; the weights are loaded into it by layer name.
        input_spec: what the stored model expects (range, mean/std, channel order). Default: the zoo manifest
            entry whose sha256 matches the file, else ``[0, 1]`` RGB at the model's input shape.
        trust: allow Lambda layers, custom classes and module references (runs code from the file).
        zoo_entry: a zoo entry (name or dict) whose input spec to use.

    Raises:
        ModelFileError: missing, non-HDF5, truncated or malformed file; weights-only file without architecture.
        UnsafeModelError: the file asks for code execution and ``trust`` is False.
        UnknownLayerError: a layer class nobody registered (with ``trust=True``).
        WeightsMismatchError: stored weights do not fit the model (layer names or shapes).

    Example:
        >>> clf = load_model("zoo/dillonsd_mnist_badnets/badnets_baseline.h5")     # doctest: +SKIP
        >>> clf.input_shape, clf.num_classes, clf.output_activation                  # doctest: +SKIP
        ((28, 28, 1), 10, 'softmax')
    """
    path = Path(path)
    kind = file_kind(path)
    sha = sha256_file(path)
    if kind == "zip":
        if architecture is not None:
            raise ConfigError(".keras archives carry their own architecture; do not pass architecture=.")
        model, info = _load_keras_archive(path, trust)
    else:
        model, info = _load_h5(path, architecture, trust)
    spec, spec_origin = _resolve_spec(input_spec, zoo_entry, sha)
    source = {"path": str(path), "sha256": sha, **info, "input_spec_source": spec_origin}
    try:
        clf = Classifier.from_keras(model, input_spec=spec, source=source)
    except KerasBDError:
        raise
    except Exception as exc:  # Keras errors while assembling the canonical model
        raise ModelFileError(f"{path}: the model was read but cannot be wrapped as a classifier ({exc}).") from None
    if info["format"] == "h5-weights":
        clf.output_activation = None  # a weights file stores no activation; the architecture ends in logits
    return clf


def _resolve_spec(input_spec: Any, zoo_entry: Any, sha: str) -> tuple[InputSpec | None, str]:
    if input_spec is not None:
        return (InputSpec.from_dict(input_spec) if isinstance(input_spec, dict) else input_spec), "caller"
    from kerasbd import zoo  # the zoo imports this module; import lazily

    entry = zoo.get_entry(zoo_entry) if isinstance(zoo_entry, str) else zoo_entry
    if entry is None:
        entry = zoo.find_by_sha256(sha)
    if entry is None:
        return None, "identity"
    spec = entry.get("input")
    return (InputSpec.from_dict(spec) if spec else None), f"zoo:{entry['name']}"


def _load_h5(path: Path, architecture: str | keras.Model | None, trust: bool) -> tuple[keras.Model, dict[str, Any]]:
    with open_h5(path) as f:
        info: dict[str, Any] = {"keras_version": read_attr(f, "keras_version"), "backend": read_attr(f, "backend")}
        config = read_json_attr(f, "model_config", path)
        info["training_config"] = "training_config" in f.attrs
        info["optimizer_weights_ignored"] = "optimizer_weights" in f
        if config is None and architecture is None:
            if "layer_names" in f.attrs:
                raise ModelFileError(
                    f"{path} is a weights-only file (saved with save_weights; no model_config). Pass "
                    "architecture=... (a name from kerasbd.models.ARCHITECTURES such as 'deepid', or a built "
                    "keras.Model) to load it."
                )
            raise ModelFileError(f"{path} is an HDF5 file but holds no Keras model (no model_config, no layer_names).")
        if "model_weights" not in f and "layer_names" not in f.attrs:
            raise ModelFileError(f"{path} has a model_config but no weights (no 'model_weights' group).")
        table = weight_table(f["model_weights"] if "model_weights" in f else f, path)
    if architecture is not None:
        model = build_architecture(architecture) if isinstance(architecture, str) else architecture
        if not isinstance(model, keras.Model):
            raise ConfigError(f"architecture must be a name or a keras.Model, got {type(architecture).__name__}.")
        info.update(format="h5-weights" if config is None else "h5-full", architecture=architecture if isinstance(architecture, str) else model.name)
    else:
        if not isinstance(config, dict):
            raise ModelFileError(f"{path}: model_config is not a JSON object; the file is malformed.")
        check_config(config, trust=trust)
        model = _deserialize(translate_model_config(config), path, trust)
        info.update(format="h5-full", model_class=config.get("class_name"))
    nonfinite = assign_weight_table(model, table, by="name", source=str(path))
    warn_nonfinite(nonfinite, path)
    info["nonfinite_weights"] = nonfinite
    return model, info


def _deserialize(config: dict[str, Any], path: Path, trust: bool) -> keras.Model:
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=not trust)
    except KerasBDError:
        raise
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError for configs it cannot build
        raise ModelFileError(f"{path}: the stored model config cannot be built in Keras 3: {exc}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path}: the stored config describes a {type(model).__name__}, not a model.")
    return model


def _load_keras_archive(path: Path, trust: bool) -> tuple[keras.Model, dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            metadata = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path} is a damaged zip archive ({exc}); the .keras file is truncated or corrupt.") from None
    except KeyError:
        raise ModelFileError(f"{path} is a zip archive without config.json; it is not a Keras .keras file.") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: config.json is not valid JSON ({exc}).") from None
    check_config(config, trust=trust)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not trust)
    except KerasBDError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: Keras could not load the archive: {exc}") from None
    return model, {"format": "keras", "keras_version": metadata.get("keras_version")}
