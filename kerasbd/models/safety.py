"""Inspection of a stored model config before anything in it is deserialized.

A Keras model file is code as much as data: a ``Lambda`` layer carries Python bytecode, a custom class, a
``module`` entry or a registered name makes the loader import and run whatever the file names. kerasbd treats
model files as untrusted and walks the plain JSON config first (no Keras object is built, nothing is imported).
The allow-list is exact: every object must be a (module, class) pair under which Keras itself resolves a layer,
model, initializer, regularizer, constraint or dtype policy it ships; every function a Keras activation; every
registered name one of kerasbd's own layers. ``trust=True`` lifts the refusal for files whose origin the user
vouches for. :func:`parse_config` bounds the JSON text itself (size and nesting depth).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
from typing import Any

import keras
from keras.src.models.functional import Functional  # functional models serialize as this class, which keras does not export

from kerasbd.errors import ModelFileError, ModelTooLargeError, UnknownLayerError, UnsafeModelError
from kerasbd.models.limits import MAX_CONFIG_DEPTH

__all__ = ["check_config", "parse_config", "check_depth"]

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
    "__lambda__": "holds Python bytecode",
}
# Markers Keras 3 uses for plain values inside configs; Keras rebuilds them without looking up any module.
_VALUE_MARKERS = {"__tensor__", "__numpy__", "__keras_tensor__", "__bytes__", "__ellipsis__", "__slice__"}
# Keys under which a config holds layers (models, wrappers such as TimeDistributed and Bidirectional, RNN cells).
_LAYER_KEYS = {"layers", "layer", "backward_layer", "forward_layer", "cell", "cells"}
# Namespaces Keras exports its built-ins from, with the base class of what each ships.
_CATEGORIES = {
    "keras.layers": (keras.layers, keras.layers.Layer),
    "keras.initializers": (keras.initializers, keras.initializers.Initializer),
    "keras.regularizers": (keras.regularizers, keras.regularizers.Regularizer),
    "keras.constraints": (keras.constraints, keras.constraints.Constraint),
    "keras.dtype_policies": (keras.dtype_policies, keras.dtype_policies.DTypePolicy),
}
_PUBLIC = {"keras": keras, "keras.models": keras.models, **{name: ns for name, (ns, _) in _CATEGORIES.items()}}
# Modules defining kerasbd's registered Keras objects: a file may hold them before the caller imported any.
_KERASBD_MODULES = ("kerasbd.transforms.keras_layer", "kerasbd.generators.layers", "kerasbd.generators.pool",
                    "kerasbd.generators.schedules", "kerasbd.models.spec", "kerasbd.models.classifier", "kerasbd.serving.ensemble")
# A function whose module is "builtins" is looked up by Keras in each of these namespaces (in no fixed order).
_BUILTINS_SEARCHED = ("activations", "constraints", "initializers", "losses", "metrics", "optimizers", "regularizers")


@functools.lru_cache(maxsize=1)
def _builtin_classes() -> frozenset[type]:
    """What Keras ships as layers, models, initializers, regularizers, constraints, dtype policies; no code layers."""
    found: set[type] = {keras.Sequential, keras.Model, Functional}
    for namespace, base in _CATEGORIES.values():
        found |= {obj for obj in vars(namespace).values() if isinstance(obj, type) and issubclass(obj, base)}
    return frozenset(cls for cls in found if cls.__name__ not in _CODE_LAYERS)


@functools.lru_cache(maxsize=1)
def _class_modules() -> dict[str, frozenset[str]]:
    """Class name → every module under which Keras resolves that name to one of its built-in classes."""
    classes = _builtin_classes()
    modules: dict[str, set[str]] = {}
    for cls in classes:
        modules.setdefault(cls.__name__, set()).add(cls.__module__)  # Keras imports keras.src modules by name
    for module, namespace in _PUBLIC.items():
        for name, obj in vars(namespace).items():
            if isinstance(obj, type) and obj in classes:
                modules.setdefault(name, set()).add(module)
    return {name: frozenset(found) for name, found in modules.items()}


@functools.lru_cache(maxsize=1)
def _function_modules() -> dict[str, frozenset[str]]:
    """Activation name → every module under which Keras resolves that name to that activation."""
    modules: dict[str, frozenset[str]] = {}
    for name, fn in vars(keras.activations).items():
        if name.startswith("_") or not _is_activation(name, fn):
            continue
        unambiguous = all(getattr(getattr(keras, ns), name, fn) is fn for ns in _BUILTINS_SEARCHED)
        modules[name] = frozenset({"keras.activations", fn.__module__} | ({"builtins"} if unambiguous else set()))
    return modules


def _is_activation(name: str, fn: Any) -> bool:
    try:
        return callable(fn) and keras.activations.get(name) is fn
    except ValueError:  # exported helpers such as get/serialize are not activations
        return False


def parse_config(text: Any, *, source: str, max_bytes: int) -> Any:
    """Parse a stored JSON document (``model_config``, ``config.json``) within size and depth bounds.

    Raises:
        ModelTooLargeError: the text is longer than ``max_bytes``.
        ModelFileError: not text, not JSON, or nested deeper than :data:`~kerasbd.models.limits.MAX_CONFIG_DEPTH`.
    """
    if not isinstance(text, (str, bytes)):
        raise ModelFileError(f"{source} is not text; the file is malformed.")
    if len(text) > max_bytes:
        raise ModelTooLargeError(
            f"{source} is {len(text):,} bytes, more than max_config_bytes={max_bytes:,}. No Keras model needs a config "
            "this large; if yours does, pass load_model(..., max_config_bytes=N)."
        )
    try:
        config = json.loads(text)
    except RecursionError:
        raise ModelFileError(_too_deep(source)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{source} is not valid JSON ({exc}); the file is corrupt.") from None
    check_depth(config, source)
    return config


def check_depth(config: Any, source: str = "the model config") -> None:
    """Refuse a JSON value nested deeper than :data:`~kerasbd.models.limits.MAX_CONFIG_DEPTH` (checked without recursion)."""
    level, depth = [config], 0
    while level:
        depth += 1
        if depth > MAX_CONFIG_DEPTH:
            raise ModelFileError(_too_deep(source))
        level = [child for node in level for child in _children(node)]


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    return node if isinstance(node, list) else []


def _too_deep(source: str) -> str:
    return (
        f"{source} is nested more than {MAX_CONFIG_DEPTH} levels deep; Keras models need about 10 levels plus 4 per "
        "nested model. The file is malformed or hostile."
    )


@dataclasses.dataclass(frozen=True)
class _Where:
    """The layer being inspected and the key path from its entry to the current value."""

    layer: str
    cls: str
    path: tuple[str, ...] = ()

    def key(self, field: str | None = None) -> str:
        return ".".join(self.path + ((field,) if field else ()))


def check_config(config: Any, *, trust: bool = False) -> None:
    """Walk a model config (JSON-decoded, Keras 3 form or Keras 2 translated) and refuse anything not plain data.

    Raises:
        UnsafeModelError: without ``trust``: a code-bearing layer (``Lambda``...), a (module, class) pair that is
            not a Keras built-in, a function that is not a Keras activation, a registered name (or a string
            naming a registered object) that is not one of kerasbd's layers. The message names the layer and key.
        UnknownLayerError: with ``trust``: a layer class that neither Keras, kerasbd nor the user registered.
        ModelFileError: the config is nested too deeply.

    Example:
        >>> check_config({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]}})
        >>> check_config({"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {"name": "l"}}]}})
        Traceback (most recent call last):
        ...
        kerasbd.errors.UnsafeModelError: layer 'l' (Lambda) holds Python bytecode (key 'class_name'). ...
    """
    check_depth(config)
    _register_kerasbd_objects()
    _walk(config, _Where("<model>", "model"), is_layer=True, trust=trust)


@functools.lru_cache(maxsize=1)
def _register_kerasbd_objects() -> None:
    for module in _KERASBD_MODULES:
        importlib.import_module(module)


def _walk(node: Any, where: _Where, *, is_layer: bool, trust: bool) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, where, is_layer=is_layer, trust=trust)
    elif isinstance(node, str):
        if not trust:
            _check_string(node, where)
    elif isinstance(node, dict):
        cls = node.get("class_name")
        if isinstance(cls, str):
            if is_layer:
                where = _enter_layer(node, cls, where)
            _check_object(node, cls, where, trust=trust)
        for key, value in node.items():
            _walk(value, dataclasses.replace(where, path=where.path + (str(key),)), is_layer=key in _LAYER_KEYS, trust=trust)


def _enter_layer(node: dict[str, Any], cls: str, where: _Where) -> _Where:
    inner = node.get("config")
    name = node.get("name") or (inner.get("name") if isinstance(inner, dict) else None) or where.layer
    return _Where(str(name), cls)


def _check_object(node: dict[str, Any], cls: str, where: _Where, *, trust: bool) -> None:
    if cls in _CODE_LAYERS:
        if not trust:
            raise _refuse(where, _CODE_LAYERS[cls], "class_name")
    elif cls in _VALUE_MARKERS or _is_kerasbd_component(node, cls, where):
        return
    elif trust:
        _check_known(node, cls, where)
    elif cls == "function":
        _check_function(node, where)
    elif not _is_kerasbd_object(node, cls, where):
        _check_class(node, cls, where)


def _check_function(node: dict[str, Any], where: _Where) -> None:
    """A function reference is plain data only when Keras resolves it to one of its activations."""
    name, module, registered = node.get("config"), node.get("module"), node.get("registered_name")
    modules = _function_modules().get(name, frozenset()) if isinstance(name, str) else frozenset()
    if module not in modules or registered not in (None, "", "function", name):
        raise _refuse(where, f"references the function {name!r} of module {module!r}, which is not a Keras activation")


def _is_kerasbd_object(node: dict[str, Any], cls: str, where: _Where) -> bool:
    """Whether the entry is one of kerasbd's registered layers; any other registered name is refused."""
    registered = node.get("registered_name")
    if registered in (None, "", cls):
        return False
    if isinstance(registered, str) and registered.startswith("kerasbd>"):
        obj = keras.saving.get_registered_object(registered)
        if obj is not None and obj.__name__ == cls:
            return True
    raise _refuse(where, f"names the registered object {registered!r}, which is neither a Keras built-in nor a kerasbd layer", "registered_name")


def _is_kerasbd_component(node: dict[str, Any], cls: str, where: _Where) -> bool:
    """A kerasbd component (a transform) inside a kerasbd layer's config: kerasbd rebuilds it from its own registry
    of classes (:func:`kerasbd.config.deserialize`) and their constructor arguments, importing nothing the file names."""
    from kerasbd.config import COMPONENTS

    if "module" in node or "registered_name" in node or keras.saving.get_registered_object(f"kerasbd>{where.cls}") is None:
        return False
    component = COMPONENTS.get(cls)
    return component is not None and component.__module__.startswith("kerasbd.")


def _check_class(node: dict[str, Any], cls: str, where: _Where) -> None:
    module = node.get("module")
    modules = _class_modules().get(cls)
    if module is None and modules:  # Keras 2 style: the parent resolves the name within a Keras namespace
        return
    if module is not None and not (isinstance(module, str) and module.split(".")[0] == "keras"):
        raise _refuse(where, f"names the Python module {module!r}", "module")
    if not modules:
        raise _refuse(where, f"is not a Keras built-in class ({cls!r})", "class_name")
    if module not in modules:
        raise _refuse(where, f"names {cls!r} in module {module!r}, where Keras ships no such built-in (it has {cls!r} "
                             f"under {', '.join(sorted(modules))})", "module")


def _check_string(value: str, where: _Where) -> None:
    """Keras resolves a string identifier (an initializer, an activation) through the registry of custom objects."""
    obj = keras.saving.get_registered_object(value)
    if obj is not None and not value.startswith("kerasbd>"):
        raise _refuse(where, f"names the registered object {value!r}, which is neither a Keras built-in nor a kerasbd layer")


def _check_known(node: dict[str, Any], cls: str, where: _Where) -> None:
    """With trust: every class must still be one that Keras, kerasbd or the user provides."""
    registered = node.get("registered_name")
    name = registered if isinstance(registered, str) and registered not in ("", cls) else cls
    if cls == "function" or cls in _class_modules() or keras.saving.get_registered_object(name) is not None:
        return
    raise UnknownLayerError(
        f"layer {where.layer!r} uses the class {name!r}, which neither Keras nor kerasbd provides. Register it with "
        "@keras.saving.register_keras_serializable() before loading, or rebuild the architecture yourself and use "
        "kerasbd.models.load_weights."
    )


def _refuse(where: _Where, reason: str, field: str | None = None) -> UnsafeModelError:
    return UnsafeModelError(
        f"layer {where.layer!r} ({where.cls}) {reason} (key {where.key(field)!r}). Deserializing it could execute "
        "arbitrary code from an untrusted model file, so kerasbd refuses to load it. If you trust the file's origin, "
        "pass trust=True (and register any custom classes with keras.saving.register_keras_serializable)."
    )
