"""Translation of Keras 2 model configs (Keras 2.2.x to 2.15, as stored in ``.h5`` files) into Keras 3 configs.

Keras 3 reads legacy configs only partly right: a Sequential whose first layer carries ``batch_input_shape``
(every Keras 2.2 Sequential) gets an input of shape ``(None, None, 16)`` instead of ``(None, 16)``; Keras 2
``Model`` class names, dtype ``Policy`` objects, batch-norm ``fused``/``renorm`` flags and old initializer
spellings are rejected or misread. :func:`translate_model_config` rewrites the whole config into explicit
Keras 3 form (explicit ``InputLayer`` with ``batch_shape``, ``Functional`` class, module-qualified layers),
so the model is then built by Keras 3's ordinary, safe deserializer.
"""

from __future__ import annotations

import copy
from typing import Any

from kerasbd.errors import ModelFileError

__all__ = ["translate_model_config", "is_model_class"]

_FUNCTIONAL_MODULE = "keras.src.models.functional"
# Keras 2 layer-config keys that Keras 3 does not accept, with the values that mean "feature not used" (the key
# is then dropped); any other value is a feature Keras 3 lacks, and loading stops with a clear error.
_ANY = object()
_INERT: dict[str, dict[str, tuple[Any, ...]]] = {
    "BatchNormalization": {"fused": (_ANY,), "renorm": (False, None), "renorm_clipping": (None,), "renorm_momentum": (_ANY,),
                           "virtual_batch_size": (None,), "adjustment": (None,)},
    "LSTM": {"time_major": (False, None), "implementation": (_ANY,)},
    "GRU": {"time_major": (False, None), "implementation": (_ANY,)},
    "SimpleRNN": {"time_major": (False, None)},
    "Embedding": {"input_length": (_ANY,)},
}
_RENAMES = {"LeakyReLU": {"alpha": "negative_slope"}}
_NESTED_OBJECT_KEYS = ("initializer", "regularizer", "constraint")


def is_model_class(class_name: str) -> bool:
    return class_name in ("Sequential", "Functional", "Model")


def translate_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a Keras 3 serialized model dict for a Keras 2 (or already Keras 3) ``model_config``.

    Example:
        >>> cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        ...     {"class_name": "Dense", "config": {"name": "d", "units": 4, "batch_input_shape": [None, 16]}}]}}
        >>> out = translate_model_config(cfg)
        >>> out["config"]["layers"][0]["config"]["batch_shape"]
        [None, 16]
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError("the stored model_config is not a Keras model description (no 'class_name').")
    try:
        return _translate_layer(copy.deepcopy(config), where="<model>")
    except (AttributeError, TypeError, ValueError) as exc:  # a value of the wrong JSON type somewhere in the config
        raise ModelFileError(f"the stored model_config is malformed ({type(exc).__name__}: {exc}).") from None


def _translate_layer(entry: Any, *, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ModelFileError(f"layer entry {where!r} is a {type(entry).__name__}, not an object; the model_config is malformed.")
    cls = entry.get("class_name")
    cfg = entry.get("config")
    if not isinstance(cls, str) or cfg is None:
        raise ModelFileError(f"layer entry {where!r} has no class_name/config; the model_config is malformed.")
    if is_model_class(cls):
        return _translate_model(entry)
    if not isinstance(cfg, dict):
        raise ModelFileError(f"layer {where!r} ({cls}) has a config of type {type(cfg).__name__}, expected an object.")
    out = {"module": entry.get("module") or "keras.layers", "class_name": cls, "config": _translate_layer_config(cls, cfg),
           "registered_name": entry.get("registered_name")}
    for key in ("name", "inbound_nodes"):
        if key in entry:
            out[key] = entry[key]
    return out


def _translate_model(entry: dict[str, Any]) -> dict[str, Any]:
    cls, cfg = entry["class_name"], entry["config"]
    if isinstance(cfg, list):  # Keras 2.0/2.1 Sequential: the config is the bare layer list
        cfg = {"name": "sequential", "layers": cfg}
    cfg = dict(cfg)
    layers = cfg.get("layers")
    if not isinstance(layers, list):
        raise ModelFileError(f"the stored {cls} config has no 'layers' list; the model_config is malformed.")
    if isinstance(cfg.get("dtype"), dict):  # a Keras 2 Policy object; layers carry their own dtypes
        cfg.pop("dtype")
    if cls == "Sequential":
        cfg["layers"] = _sequential_layers(layers, cfg.pop("build_input_shape", None))
        out = {"module": "keras", "class_name": "Sequential", "config": cfg, "registered_name": None}
    else:
        cfg["layers"] = [_translate_layer(layer, where=str(layer.get("name", "?"))) for layer in layers]
        for layer in cfg["layers"]:
            layer.setdefault("name", layer["config"].get("name"))
        out = {"module": _FUNCTIONAL_MODULE, "class_name": "Functional", "config": cfg, "registered_name": None}
    if "name" in entry:
        out["name"] = entry["name"]
    if "inbound_nodes" in entry:
        out["inbound_nodes"] = entry["inbound_nodes"]
    return out


def _sequential_layers(layers: list[dict[str, Any]], build_input_shape: Any) -> list[dict[str, Any]]:
    """Translate a Sequential's layers and make its input explicit (the source of Keras 3's shape bug)."""
    if not layers:
        raise ModelFileError("the stored Sequential model has no layers.")
    first = layers[0]
    translated = [_translate_layer(layer, where=str(layer.get("config", {}).get("name", "?"))) for layer in layers]
    if first.get("class_name") == "InputLayer":
        return translated
    first_cfg = first.get("config", {}) if isinstance(first.get("config"), dict) else {}
    batch_shape = first_cfg.get("batch_input_shape") or build_input_shape
    if batch_shape is None and first_cfg.get("input_dim") is not None:  # Keras 1/2.0 Dense(input_dim=...)
        batch_shape = [None, first_cfg["input_dim"]]
    if batch_shape is None:
        raise ModelFileError(
            "the stored Sequential model records no input shape (it was saved before being built); "
            "rebuild it in code and load its weights with kerasbd.models.load_weights."
        )
    dtype = first_cfg.get("dtype") if isinstance(first_cfg.get("dtype"), str) else "float32"
    input_layer = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {"batch_shape": list(batch_shape), "dtype": dtype, "name": f"{first_cfg.get('name', 'layer')}_input"},
        "registered_name": None,
    }
    return [input_layer, *translated]


def _translate_layer_config(cls: str, cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(cfg)
    name = cfg.get("name", "?")
    if isinstance(cfg.get("dtype"), dict):  # Keras 2.13+ mixed-precision Policy object → its name
        cfg["dtype"] = (cfg["dtype"].get("config") or {}).get("name", "float32")
    batch_input_shape = cfg.pop("batch_input_shape", None)
    if cls != "Embedding":
        cfg.pop("input_dim", None)  # Keras 2.0 input hint, replaced by the explicit InputLayer
    if cls == "InputLayer":
        if batch_input_shape is not None:
            cfg["batch_shape"] = list(batch_input_shape)
        cfg.pop("input_shape", None)
        if cfg.pop("ragged", False):
            raise ModelFileError(f"input layer {name!r} is ragged; Keras 3 has no ragged inputs.")
    for key, harmless in _INERT.get(cls, {}).items():
        if key in cfg:
            value = cfg.pop(key)
            if _ANY not in harmless and value not in harmless:
                raise ModelFileError(f"layer {name!r} ({cls}) uses {key}={value!r}, which Keras 3 does not support.")
    for old, new in _RENAMES.get(cls, {}).items():
        if old in cfg:
            cfg[new] = cfg.pop(old)
    if cls == "BatchNormalization" and isinstance(cfg.get("axis"), list):
        if len(cfg["axis"]) != 1:
            raise ModelFileError(f"layer {name!r} normalises over axes {cfg['axis']}; Keras 3 takes one axis.")
        cfg["axis"] = cfg["axis"][0]
    for key, value in list(cfg.items()):
        if any(key.endswith(suffix) for suffix in _NESTED_OBJECT_KEYS) and isinstance(value, dict):
            cfg[key] = _translate_object(value)
        elif key in ("layer", "backward_layer", "cell") and isinstance(value, dict) and "class_name" in value:
            cfg[key] = _translate_layer(value, where=f"{name}.{key}")
    return cfg


def _translate_object(obj: dict[str, Any]) -> dict[str, Any]:
    """Initializer/regularizer/constraint dicts: drop Keras 2-only keys, map renamed options."""
    obj = dict(obj)
    inner = dict(obj.get("config") or {})
    inner.pop("dtype", None)  # Keras 2.2 initializers stored a dtype; Keras 3's take none
    if obj.get("class_name") == "VarianceScaling" and inner.get("distribution") == "normal":
        inner["distribution"] = "truncated_normal"  # Keras 2's "normal" was a truncated normal
    obj["config"] = inner
    return obj
