"""One way to configure every kerasbd component: constructor arguments are the configuration.

Like Keras layers and scikit-learn estimators, a :class:`Configurable` stores each constructor argument under the
same attribute name and does its work later (``run``, ``inspect``, ``fit``). Components nest: an inspector holds
an inversion engine, a candidate family and a cost schedule, each configured by its own arguments. Then

- :meth:`Configurable.get_config` gives the whole tree as JSON-able dicts; a nested component appears as
  ``{"class_name": ..., "config": {...}}`` (the format of ``keras.saving.serialize_keras_object``);
- :meth:`Configurable.from_config` rebuilds it (nested specs become components again), refusing unknown keys;
- :meth:`Configurable.get_params` flattens the tree with scikit-learn's ``a__b`` names, and
  :meth:`Configurable.with_params` returns a copy with some of them changed — the CLI's ``--set a__b=value``.

Example:
    >>> class Engine(Configurable):
    ...     def __init__(self, steps: int = 10) -> None:
    ...         self.steps = steps
    >>> class Method(Configurable):
    ...     def __init__(self, engine: Engine | None = None, threshold: float = 2.0) -> None:
    ...         self.engine = engine if engine is not None else Engine()
    ...         self.threshold = threshold
    >>> Method().get_config()
    {'engine': {'class_name': 'Engine', 'config': {'steps': 10}}, 'threshold': 2.0}
    >>> Method().with_params(engine__steps=300).engine.steps
    300
    >>> sorted(Method().get_params())
    ['engine', 'engine__steps', 'threshold']
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

import numpy as np

from kerasbd.errors import ConfigError

__all__ = ["Configurable", "COMPONENTS", "serialize", "deserialize"]

T = TypeVar("T", bound="Configurable")

#: Every concrete Configurable class by class name, so a nested ``{"class_name", "config"}`` spec can be rebuilt
#: without importing anything named by the spec (only kerasbd's own classes are reachable).
COMPONENTS: dict[str, type[Configurable]] = {}


def _params(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [k for k, p in sig.parameters.items() if k != "self" and p.kind not in skip]


def _encode(value: Any) -> Any:
    if isinstance(value, Configurable):
        return serialize(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"class_name", "config"} and value["class_name"] in COMPONENTS


def _decode(value: Any) -> Any:
    if _is_spec(value):
        return deserialize(value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def serialize(component: Configurable) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` of a component (nested components included)."""
    return {"class_name": type(component).__name__, "config": component.get_config()}


def deserialize(spec: dict[str, Any] | Configurable, base: type[T] | None = None) -> Any:
    """Rebuild a component from :func:`serialize` output; ``base`` restricts which classes are accepted.

    Example:
        >>> from kerasbd.transforms import BitDepth, Transform
        >>> deserialize(serialize(BitDepth(5)), Transform).bits
        5
    """
    want = base or Configurable
    if isinstance(spec, want):
        return spec
    if not isinstance(spec, dict) or "class_name" not in spec:
        raise ConfigError(f"a {want.__name__} spec is a dict with 'class_name' and 'config', got {spec!r}.")
    cls = COMPONENTS.get(spec["class_name"])
    if cls is None or not issubclass(cls, want):
        known = sorted(n for n, c in COMPONENTS.items() if issubclass(c, want))
        raise ConfigError(f"unknown {want.__name__} {spec['class_name']!r}; known: {', '.join(known)}.")
    return cls.from_config(dict(spec.get("config") or {}))


class Configurable:
    """Base class of everything configured by its constructor (defenses, inspectors, engines, transforms)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and not cls.__name__.startswith("_"):
            COMPONENTS[cls.__name__] = cls

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-able values; nested components as ``{"class_name", "config"}``."""
        return {k: _encode(getattr(self, k)) for k in _params(type(self))}

    @classmethod
    def from_config(cls: type[T], config: dict[str, Any]) -> T:
        """Rebuild from :meth:`get_config` output; unknown keys and invalid values raise ``ConfigError``."""
        known = _params(cls)
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}.")
        try:
            return cls(**{k: _decode(v) for k, v in config.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{cls.__name__}: invalid configuration ({exc}).") from None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Flat parameters; with ``deep`` nested components' too, as ``component__param`` (scikit-learn style)."""
        out: dict[str, Any] = {}
        for key in _params(type(self)):
            value = getattr(self, key)
            out[key] = value
            if deep and isinstance(value, Configurable):
                out.update({f"{key}__{k}": v for k, v in value.get_params().items()})
        return out

    def with_params(self: T, **params: Any) -> T:
        """A new component with ``params`` changed (``a__b`` reaches into nested components); validated anew.

        Values may be plain values or, for a component, a ``{"class_name", "config"}`` spec.
        """
        config = self.get_config()
        for key, value in params.items():
            _set_path(config, key.split("__"), value, key, self)
        return type(self).from_config(config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in _params(type(self)))
        return f"{type(self).__name__}({args})"


def _set_path(config: dict[str, Any], path: list[str], value: Any, full: str, owner: Configurable) -> None:
    head, rest = path[0], path[1:]
    if head not in config:
        names = sorted(owner.get_params())
        raise ConfigError(f"{type(owner).__name__} has no parameter {full!r}; its parameters are: {', '.join(names)}.")
    if not rest:
        config[head] = _encode(value)
        return
    nested = config[head]
    if not _is_spec(nested):
        raise ConfigError(f"{full!r}: {head!r} is not a component (its value is {nested!r}), so it has no {rest[0]!r}.")
    _set_path(nested["config"], rest, value, full, owner)
