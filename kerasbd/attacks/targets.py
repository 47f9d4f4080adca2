"""Target mappings: which label a triggered input should get, and which inputs count for the attack success rate."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from kerasbd.errors import TriggerError

__all__ = ["TargetMap", "AllToOne", "AllToAll", "target_from_spec"]


class TargetMap(abc.ABC):
    """Maps true labels to attack labels. :meth:`eligible` marks inputs whose attack label differs from the true
    label: only those count for the attack success rate (a target-class image "succeeding" proves nothing)."""

    type: ClassVar[str] = ""

    @abc.abstractmethod
    def map(self, y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        """Attack labels (int64) for true labels ``y``."""

    def eligible(self, y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        """Boolean mask of inputs whose attack label differs from their true label."""
        y = np.asarray(y, dtype=np.int64)
        return self.map(y, num_classes) != y

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type, **self.get_config()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None  # type: ignore[assignment]


class AllToOne(TargetMap):
    """Every triggered input goes to ``label``.

    Example:
        >>> AllToOne(7).map(np.array([1, 7, 3])).tolist(), AllToOne(7).eligible(np.array([1, 7, 3])).tolist()
        ([7, 7, 7], [True, False, True])
    """

    type = "all-to-one"

    def __init__(self, label: int) -> None:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
            raise TriggerError(f"all-to-one target label must be a non-negative integer, got {label!r}.")
        self.label = int(label)

    def map(self, y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        if num_classes is not None and self.label >= num_classes:
            raise TriggerError(f"target label {self.label} is out of range for a model with {num_classes} classes.")
        return np.full(np.shape(y), self.label, dtype=np.int64)

    def get_config(self) -> dict[str, Any]:
        return {"label": self.label}


class AllToAll(TargetMap):
    """Input of class ``y`` goes to ``(y + shift) mod num_classes`` (BadNets' all-to-all attack).

    ``num_classes`` may be left for :meth:`map` to receive (metrics pass the model's class count).

    Example:
        >>> AllToAll(num_classes=10).map(np.array([0, 9])).tolist()
        [1, 0]
    """

    type = "all-to-all"

    def __init__(self, shift: int = 1, num_classes: int | None = None) -> None:
        self.shift = int(shift)
        self.num_classes = None if num_classes is None else int(num_classes)
        if self.num_classes is not None and self.num_classes < 2:
            raise TriggerError(f"all-to-all needs at least 2 classes, got {num_classes}.")
        if self.num_classes is not None and self.shift % self.num_classes == 0:
            raise TriggerError(f"shift {shift} maps every class to itself with {num_classes} classes.")

    def map(self, y: np.ndarray, num_classes: int | None = None) -> np.ndarray:
        n = self.num_classes or num_classes
        if n is None:
            raise TriggerError("all-to-all mapping needs num_classes (set it on the target or pass the model's).")
        if self.num_classes is not None and num_classes is not None and num_classes != self.num_classes:
            raise TriggerError(f"the target is for {self.num_classes} classes but the model has {num_classes}.")
        return (np.asarray(y, dtype=np.int64) + self.shift) % n

    def get_config(self) -> dict[str, Any]:
        return {"shift": self.shift, **({"num_classes": self.num_classes} if self.num_classes is not None else {})}


TARGETS: dict[str, type[TargetMap]] = {"all-to-one": AllToOne, "all-to-all": AllToAll}


def target_from_spec(spec: dict[str, Any] | int | TargetMap) -> TargetMap:
    """Build a target map from ``{"type": "all-to-one", "label": 7}``, ``{"type": "all-to-all", "shift": 1}``, or
    a bare integer (all-to-one)."""
    if isinstance(spec, TargetMap):
        return spec
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return AllToOne(int(spec))
    if not isinstance(spec, dict) or "type" not in spec:
        raise TriggerError(f"target spec {spec!r} must be an object with a 'type' ({', '.join(TARGETS)}) or a label.")
    kind = spec["type"]
    if kind not in TARGETS:
        raise TriggerError(f"unknown target type {kind!r}; known: {', '.join(TARGETS)}.")
    args = {k: v for k, v in spec.items() if k != "type"}
    if kind == "all-to-one" and "label" not in args:
        raise TriggerError("an all-to-one target needs 'label'.")
    try:
        return TARGETS[kind](**args)
    except TypeError as exc:
        raise TriggerError(f"target type {kind!r}: {exc}.") from exc
