"""Strict loading of Keras 2 weight tables into Keras 3 models.

Keras' own ``load_weights`` on legacy files matches layers by position and can silently skip layers. Here every
layer that owns weights must find its counterpart (by name, or by position when asked), every tensor must have
the same shape, and a mismatch raises :class:`~kerasbd.errors.WeightsMismatchError` naming the layer and both
shapes before anything is assigned.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np

from kerasbd.errors import ConfigError, WeightsMismatchError
from kerasbd.models.h5 import file_kind, open_h5, weight_table

__all__ = ["load_weights", "assign_weight_table"]

WeightTable = dict[str, list[tuple[str, np.ndarray]]]


def load_weights(model: keras.Model, path: str | os.PathLike, *, by: str = "name") -> keras.Model:
    """Load a weights-only ``.h5`` (Keras 2 ``save_weights``, or the weights of a full legacy ``.h5``) into ``model``.

    Args:
        model: a built Keras model, e.g. from :func:`kerasbd.models.build_architecture`.
        path: the weights file; opened read-only.
        by: ``"name"`` matches layers by name (strict both ways); ``"order"`` matches the layers that own
            weights in order, as Keras 2's ``load_weights(by_name=False)`` did.

    Returns:
        ``model``, with its variables assigned.

    Raises:
        WeightsMismatchError: a layer is missing on either side, or a tensor's shape differs.
        ModelFileError: the file is missing, not HDF5, truncated, or holds no Keras weights.

    Example:
        >>> from kerasbd.models import build_architecture
        >>> net = build_architecture("deepid")                       # doctest: +SKIP
        >>> load_weights(net, "zoo/csaw2020_youtube/sunglasses_bd_weights.h5")  # doctest: +SKIP
    """
    if by not in ("name", "order"):
        raise ConfigError(f"by must be 'name' or 'order', got {by!r}.")
    if str(path).endswith(".weights.h5") and _is_keras3_weights(path):
        try:  # Keras 3's own weights format (layers/<name>/vars/<i>): Keras checks it strictly itself
            model.load_weights(path)
        except ValueError as exc:
            raise WeightsMismatchError(f"{path}: {exc}") from None
        return model
    with open_h5(path) as f:
        group = f["model_weights"] if "model_weights" in f else f
        table = weight_table(group, path)
    warn_nonfinite(assign_weight_table(model, table, by=by, source=str(path)), path)
    return model


def warn_nonfinite(layers: list[str], path: str | os.PathLike) -> None:
    if layers:
        warnings.warn(f"{path}: stored weights of layer(s) {layers} contain NaN or infinity; the model's outputs will be NaN.", stacklevel=3)


def _is_keras3_weights(path: str | os.PathLike) -> bool:
    if file_kind(path) != "hdf5":
        return False
    with open_h5(path) as f:
        return "layer_names" not in f.attrs and "layers" in f


def assign_weight_table(model: keras.Model, table: WeightTable, *, by: str = "name", source: str = "weights file") -> list[str]:
    """Check every layer and shape first, then assign; the model is left untouched on any mismatch.

    Returns:
        names of layers whose stored weights contain NaN or infinity (a broken file still loads; callers warn).
    """
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
        pairs = [(layer, stored[layer.name]) for layer in owners]
    else:
        if len(owners) != len(stored):
            raise WeightsMismatchError(
                f"{source}: the file has {len(stored)} layers with weights ({list(stored)}), the model has "
                f"{len(owners)} ({[layer.name for layer in owners]})."
            )
        pairs = list(zip(owners, stored.values()))
    plan = [item for layer, weights in pairs for item in _match_layer(layer, weights, source)]
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype, copy=False))
    return sorted({variable.path.split("/")[0] for variable, value in plan if not np.isfinite(value).all()})


def _short(name: str, parts: int) -> str:
    return "/".join(name.split(":")[0].split("/")[-parts:])


def _match_layer(layer: keras.layers.Layer, weights: list[tuple[str, np.ndarray]], source: str) -> list[tuple[keras.Variable, np.ndarray]]:
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
    for variable, idx in zip(variables, order):
        wname, value = weights[idx]
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightsMismatchError(
                f"{source}: layer {layer.name!r}, weight {_short(wname, 1)!r}: shape {tuple(value.shape)} in the file "
                f"but {tuple(variable.shape)} in the model. The file was saved from a different architecture "
                "(check input shape, number of classes and layer widths)."
            )
        plan.append((variable, value))
    return plan

