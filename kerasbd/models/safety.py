"""Inspection of a stored model config before anything in it is deserialized.

A Keras model file is code as much as data: a ``Lambda`` layer carries Python bytecode, a custom class or a
``module`` entry makes the loader import and run whatever the file names. kerasbd treats model files as
untrusted and walks the plain JSON config first (no Keras object is built, nothing is imported), refusing
anything that is not a Keras built-in or a layer kerasbd itself registers. ``trust=True`` lifts the refusal
for files whose origin the user vouches for.
"""

from __future__ import annotations

import functools
from typing import Any

import keras

from kerasbd.errors import UnknownLayerError, UnsafeModelError

__all__ = ["check_config", "builtin_layer_names"]

# Layers whose config carries code, a function reference, a path to other code, or a pickled module.
_CODE_LAYERS = {
    "Lambda": "holds Python bytecode",
    "TFOpLambda": "calls a TensorFlow function named in the file",
    "SlicingOpLambda": "calls a TensorFlow function named in the file",
    "TensorFlowOpLayer": "runs TensorFlow ops named in the file",
    "TFSMLayer": "loads and runs a TensorFlow SavedModel from a path named in the file",
    "TorchModuleWrapper": "unpickles a PyTorch module",
    "JaxLayer": "calls a JAX function named in the file",
    "FlaxLayer": "calls a Flax module named in the file",
}
_MODEL_CLASSES = {"Sequential", "Functional", "Model"}
# Markers Keras 3 uses for plain values inside configs (tensors, tuples, dtype specs); "__lambda__" is code.
_VALUE_MARKERS = {"__tensor__", "__numpy__", "__keras_tensor__", "__tuple__", "__bytes__", "__typespec__", "__ellipsis__", "__slice__"}
# Keras 2 names of nested objects that Keras 3 spells differently but that are still plain data.
_LEGACY_OBJECTS = {"Policy", "PolicyV1", "L1L2", "VarianceScaling"}


@functools.lru_cache(maxsize=1)
def builtin_layer_names() -> frozenset[str]:
    """Class names of Keras' public layers and models (the allow-list for layer entries)."""
    names = {n for n in dir(keras.layers) if isinstance(getattr(keras.layers, n), type) and issubclass(getattr(keras.layers, n), keras.layers.Layer)}
    return frozenset((names | _MODEL_CLASSES) - set(_CODE_LAYERS))


@functools.lru_cache(maxsize=1)
def _builtin_object_names() -> frozenset[str]:
    """Class names allowed for nested config objects (initializers, regularizers, constraints, dtype policies)."""
    names: set[str] = set()
    for mod in (keras.initializers, keras.regularizers, keras.constraints, keras.dtype_policies):
        names |= {n for n in dir(mod) if isinstance(getattr(mod, n), type)}
    return frozenset(names | _VALUE_MARKERS | _LEGACY_OBJECTS | builtin_layer_names())


def _is_keras_module(module: str) -> bool:
    return module.split(".")[0] in ("keras", "kerasbd")


def _kerasbd_registered(registered_name: str) -> bool:
    return registered_name.startswith("kerasbd>") and keras.saving.get_registered_object(registered_name) is not None


def _refuse(layer: str, cls: str, reason: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"layer {layer!r} ({cls}) {reason}. Deserializing it could execute arbitrary code from an untrusted model "
        "file, so kerasbd refuses to load it. If you trust the file's origin, pass trust=True (and register any "
        "custom classes with keras.saving.register_keras_serializable)."
    )


def check_config(config: Any, *, trust: bool = False) -> None:
    """Walk a model config (JSON-decoded, Keras 2 or 3 format) and refuse code-bearing or unknown entries.

    Raises:
        UnsafeModelError: without ``trust``: a code-bearing layer (``Lambda``...), a class that is neither a
            Keras built-in nor registered by kerasbd, a ``module`` outside keras/kerasbd, a ``function`` entry.
        UnknownLayerError: with ``trust``: a layer class that neither Keras, kerasbd nor the user registered.

    Example:
        >>> check_config({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]}})
        >>> check_config({"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {"name": "l"}}]}})
        Traceback (most recent call last):
        ...
        kerasbd.errors.UnsafeModelError: layer 'l' (Lambda) holds Python bytecode. ...
    """
    _walk(config, layer="<model>", is_layer=True, trust=trust)


def _walk(node: Any, *, layer: str, is_layer: bool, trust: bool) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, layer=layer, is_layer=False, trust=trust)
        return
    if not isinstance(node, dict):
        return
    cls = node.get("class_name")
    if isinstance(cls, str) and is_layer:
        inner = node.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        layer = str(node.get("name") or name or layer)
    # Code references first: they are the most specific reason to refuse.
    module = node.get("module")
    if isinstance(module, str) and not _is_keras_module(module) and not trust:
        raise _refuse(layer, str(cls or "object"), f"names the Python module {module!r}")
    if node.get("function") is not None and not trust:
        raise _refuse(layer, str(cls or "object"), "stores a function to call")
    if isinstance(cls, str):
        _check_object(node, cls, layer=layer, is_layer=is_layer, trust=trust)
    for key, value in node.items():
        # Layer entries sit in "layers" lists and under wrapper keys (TimeDistributed, Bidirectional, RNN cells).
        child_is_layer = key in ("layers", "layer", "backward_layer", "forward_layer", "cell", "cells")
        if key == "layers" and isinstance(value, list):
            for item in value:
                _walk(item, layer=layer, is_layer=True, trust=trust)
        elif child_is_layer and isinstance(value, dict):
            _walk(value, layer=layer, is_layer=True, trust=trust)
        elif child_is_layer and isinstance(value, list):
            for item in value:
                _walk(item, layer=layer, is_layer=True, trust=trust)
        elif isinstance(value, (dict, list)):
            _walk(value, layer=layer, is_layer=False, trust=trust)


def _check_object(node: dict[str, Any], cls: str, *, layer: str, is_layer: bool, trust: bool) -> None:
    if cls in _CODE_LAYERS:
        if not trust:
            raise _refuse(layer, cls, _CODE_LAYERS[cls])
        return
    if cls == "__lambda__":
        if not trust:
            raise _refuse(layer, cls, "holds Python bytecode")
        return
    module = node.get("module")
    registered = node.get("registered_name")
    if cls == "function":
        # A function reference is only plain data when it points into Keras itself (a built-in activation).
        if not (isinstance(module, str) and module.split(".")[0] == "keras") and not trust:
            raise _refuse(layer, "function", f"references the Python function {node.get('config')!r}")
        return
    if isinstance(registered, str) and registered not in (cls, ""):
        if _kerasbd_registered(registered) or (isinstance(module, str) and module.split(".")[0] == "keras"):
            return
        if not trust:
            raise _refuse(layer, cls, f"names the custom registered object {registered!r}")
        if keras.saving.get_registered_object(registered) is None:
            raise UnknownLayerError(_unknown_message(layer, registered))
        return
    known = builtin_layer_names() if is_layer else _builtin_object_names()
    if cls in known:
        return
    if not trust:
        raise _refuse(layer, cls, "is not a Keras built-in class")
    if keras.saving.get_registered_object(cls) is None:
        raise UnknownLayerError(_unknown_message(layer, cls))


def _unknown_message(layer: str, cls: str) -> str:
    return (
        f"layer {layer!r} uses the class {cls!r}, which neither Keras nor kerasbd provides. Register it with "
        "@keras.saving.register_keras_serializable() before loading, or rebuild the architecture yourself and use "
        "kerasbd.models.load_weights."
    )
