"""Strict loading of stored weights into Keras 3 models, every declared shape checked before any data is read.

Keras' own ``load_weights`` on legacy files matches layers by position and can silently skip layers. Here every
layer that owns weights must find its counterpart (by name, or by position when asked), every tensor must have
the same shape and a numeric dtype, and a mismatch raises :class:`~kerasbd.errors.WeightsMismatchError` naming
the layer and both shapes before anything is read or assigned, so a small file declaring a huge dataset never
allocates it. Keras 3 weight files (``layers/<name>/vars/<i>``) are read by kerasbd the same way into a checked
copy, which Keras then assigns.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np

from kerasbd.errors import ConfigError, ModelFileError, WeightsMismatchError
from kerasbd.models.files import open_model_file
from kerasbd.models.h5 import WeightTable, open_h5, read_dataset, weight_table

__all__ = ["load_weights", "assign_weight_table", "load_keras3_weights", "is_keras3_layout"]

_NUMERIC_KINDS = "fiub"  # float, signed and unsigned integer, bool


def load_weights(model: keras.Model, path: str | os.PathLike, *, by: str = "name") -> keras.Model:
    """Load a weights file (Keras 2 ``save_weights``, a full legacy ``.h5``, or Keras 3 ``.weights.h5``) into ``model``.

    Args:
        model: a built Keras model, e.g. from :func:`kerasbd.models.build_architecture`.
        path: the weights file; opened read-only, its layout decided from its content.
        by: ``"name"`` matches layers by name (strict both ways); ``"order"`` matches the layers that own
            weights in order, as Keras 2's ``load_weights(by_name=False)`` did. Keras 3 files always match
            by Keras' own layer paths.

    Returns:
        ``model``, with its variables assigned.

    Raises:
        WeightsMismatchError: a layer is missing on either side, or a tensor's shape or dtype differs.
        ModelFileError: the file is missing, not HDF5, truncated, or holds no Keras weights.
        UnsafeModelError: the file stores data outside itself (external links or storage, virtual datasets).

    Example:
        >>> from kerasbd.models import build_architecture
        >>> net = build_architecture("deepid")                       # doctest: +SKIP
        >>> load_weights(net, "zoo/csaw2020_youtube/sunglasses_bd_weights.h5")  # doctest: +SKIP
    """
    if by not in ("name", "order"):
        raise ConfigError(f"by must be 'name' or 'order', got {by!r}.")
    source = str(path)
    with open_model_file(path) as model_file:
        if model_file.kind != "hdf5":
            raise ModelFileError(f"{source} is a zip archive, not an HDF5 file; load .keras files with kerasbd.models.load_model.")
        with open_h5(model_file.handle, source) as f:
            if is_keras3_layout(f):
                load_keras3_weights(model, f, source)
                return model
            nonfinite = assign_weight_table(model, weight_table(f["model_weights"] if "model_weights" in f else f, source), by=by, source=source)
    warn_nonfinite(nonfinite, path)
    return model


def warn_nonfinite(layers: list[str], path: str | os.PathLike) -> None:
    if layers:
        warnings.warn(f"{path}: stored weights of layer(s) {layers} contain NaN or infinity; the model's outputs will be NaN.", stacklevel=3)


def is_keras3_layout(f: h5py.File) -> bool:
    """Keras 3 weight files keep ``layers/<name>/vars`` groups and no ``layer_names`` attribute."""
    return "layer_names" not in f.attrs and "layers" in f


def assign_weight_table(model: keras.Model, table: WeightTable, *, by: str = "name", source: str = "weights file") -> list[str]:
    """Check every layer, shape and dtype, then read and assign; the model is left untouched on any error.

    Returns:
        names of layers whose stored weights contain NaN or infinity (a broken file still loads; callers warn).
    """
    plan = [item for layer, weights in _pair_layers(model, table, by, source) for item in _match_layer(layer, weights, source)]
    values = [read_dataset(dataset, source) for _, dataset in plan]  # only after every declared shape matched
    for (variable, _), value in zip(plan, values, strict=True):
        variable.assign(value.astype(variable.dtype, copy=False))
    return sorted({variable.path.split("/")[0] for (variable, _), value in zip(plan, values, strict=True) if not np.isfinite(value).all()})


def _pair_layers(model: keras.Model, table: WeightTable, by: str, source: str) -> list[tuple[keras.layers.Layer, list[tuple[str, h5py.Dataset]]]]:
    stored = {name: weights for name, weights in table.items() if weights}
    owners = [layer for layer in model.layers if layer.weights]
    if by == "name":
        model_names = [layer.name for layer in owners]
        missing = [n for n in model_names if n not in stored]
        extra = [n for n in stored if n not in model_names]
        if missing or extra:
            raise WeightsMismatchError(
                f"{source}: layer names do not match the model. Layers of the model without weights in the file: "
                f"{missing or 'none'}; layers in the file that the model lacks: {extra or 'none'}. Use the matching "
                "architecture, or by='order' if only the names differ."
            )
        return [(layer, stored[layer.name]) for layer in owners]
    if len(owners) != len(stored):
        raise WeightsMismatchError(
            f"{source}: the file has {len(stored)} layers with weights ({list(stored)}), the model has "
            f"{len(owners)} ({[layer.name for layer in owners]})."
        )
    return list(zip(owners, stored.values(), strict=True))


def _short(name: str, parts: int) -> str:
    return "/".join(name.split(":")[0].split("/")[-parts:])


def _match_layer(layer: keras.layers.Layer, weights: list[tuple[str, h5py.Dataset]], source: str) -> list[tuple[keras.Variable, h5py.Dataset]]:
    variables = list(layer.weights)
    if len(variables) != len(weights):
        raise WeightsMismatchError(
            f"{source}: layer {layer.name!r} has {len(variables)} weight tensors in the model "
            f"({[v.name for v in variables]}) but {len(weights)} in the file ({[w for w, _ in weights]})."
        )
    order = list(range(len(weights)))
    # Match by the weight's own name (kernel, bias, moving_mean...) when that is unambiguous; Keras 2 and 3 order
    # agree for built-in layers, so position is the fallback (nested models, renamed sublayers).
    for parts in (1, 2):
        file_keys = [_short(w, parts) for w, _ in weights]
        model_keys = [_short(v.path, parts) for v in variables]
        if len(set(file_keys)) == len(file_keys) and sorted(file_keys) == sorted(model_keys):
            order = [file_keys.index(k) for k in model_keys]
            break
    plan = []
    for variable, idx in zip(variables, order, strict=True):
        wname, dataset = weights[idx]
        where = f"layer {layer.name!r}, weight {_short(wname, 1)!r}"
        if dataset.shape is None or tuple(dataset.shape) != tuple(variable.shape):
            raise WeightsMismatchError(
                f"{source}: {where}: shape {dataset.shape} in the file but {tuple(variable.shape)} in the model. The file "
                "was saved from a different architecture (check input shape, number of classes and layer widths)."
            )
        _check_numeric(dataset, where, source)
        plan.append((variable, dataset))
    return plan


def _check_numeric(dataset: h5py.Dataset, where: str, source: str) -> None:
    if dataset.dtype.kind not in _NUMERIC_KINDS or dataset.dtype.itemsize > 8:
        raise WeightsMismatchError(f"{source}: {where} is stored as {dataset.dtype}, not as numbers; the file is malformed.")


def load_keras3_weights(model: keras.Model, f: h5py.File, source: str) -> None:
    """Load a Keras 3 weights file: declared sizes checked, data read by kerasbd, then assigned by Keras.

    kerasbd cannot map Keras 3 paths to variables itself, so it checks that the file declares no more values
    than the model holds, reads every dataset (:func:`~kerasbd.models.h5.read_dataset`) into a fresh file
    holding nothing else, and lets Keras assign from that copy. Optimizer state is skipped (models are loaded
    uncompiled).
    """
    datasets = _model_datasets(f)
    declared = sum(dataset.size for dataset in datasets.values())
    held = sum(math.prod(v.shape) for v in model.variables)
    if declared > held:
        raise WeightsMismatchError(
            f"{source}: the file stores {declared:,} weight values but the model holds {held:,}; it was saved from "
            "a different (larger) architecture."
        )
    for name, dataset in datasets.items():
        _check_numeric(dataset, f"dataset {name!r}", source)
    with tempfile.TemporaryDirectory(prefix="kerasbd-") as folder:
        checked = Path(folder) / "checked.weights.h5"
        with h5py.File(checked, "w") as out:
            for name, dataset in datasets.items():
                out.create_dataset(name, data=read_dataset(dataset, source))
        try:
            model.load_weights(checked)
        except ValueError as exc:
            raise WeightsMismatchError(f"{source}: the stored weights do not fit the model: {exc}") from None


def _is_optimizer_state(parts: list[str]) -> bool:
    """``optimizer/...`` of the model or of a nested compiled model (``layers/<model>/optimizer/...``); a layer
    named "optimizer" sits at ``layers/optimizer``."""
    return any(part == "optimizer" and (i == 0 or parts[i - 1] != "layers") for i, part in enumerate(parts))


def _model_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def collect(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and not _is_optimizer_state(name.split("/")):
            found[name] = obj

    f.visititems(collect)
    return found
