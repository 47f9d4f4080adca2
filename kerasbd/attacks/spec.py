"""Backdoor = trigger + target mapping, and the JSON documents that describe them (docs/ARCHITECTURE.md schema).

A spec is one backdoor object or ``{"backdoors": [...]}``; either may carry the model's ``"input"`` scaling
(an :class:`~kerasbd.models.spec.InputSpec` dict). :func:`from_spec` returns the backdoors, :func:`parse_spec`
and :func:`load_spec` return an :class:`AttackSpec` ``(backdoors, input_spec)`` named tuple.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kerasbd.attacks.base import RngLike, Trigger, trigger_from_spec
from kerasbd.attacks.targets import TargetMap, target_from_spec
from kerasbd.errors import ConfigError, TriggerError
from kerasbd.io import write_json
from kerasbd.models.spec import InputSpec

__all__ = ["Backdoor", "AttackSpec", "from_spec", "parse_spec", "load_spec", "to_spec", "save_spec"]

_BACKDOOR_KEYS = {"name", "trigger", "target", "input", "description", "note"}
_TOP_KEYS = {"backdoors", "input", "name", "description", "note"}


@dataclasses.dataclass(eq=False)
class Backdoor:
    """One backdoor: a trigger and the labels triggered inputs should get.

    Args:
        trigger: a :class:`Trigger` or its spec dict.
        target: a :class:`TargetMap`, its spec dict, or an int label (all-to-one).
        name: label used in per-trigger metrics (default ``"<trigger type>→<target>"``).

    Example:
        >>> from kerasbd.attacks import Patch
        >>> bd = Backdoor(Patch(3), 7)
        >>> xt, yt = bd.poison(np.zeros((2, 8, 8, 1), "float32"), np.array([1, 2]))
        >>> yt.tolist(), bd.name
        ([7, 7], 'patch→7')
    """

    trigger: Trigger
    target: TargetMap
    name: str = ""

    def __post_init__(self) -> None:
        self.trigger = trigger_from_spec(self.trigger)
        self.target = target_from_spec(self.target)
        if not self.name:
            tgt = self.target.get_config().get("label", "all")
            self.name = f"{self.trigger.type}→{tgt}"

    def poison(self, x: np.ndarray, y: np.ndarray, rng: RngLike = None, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stamped images and their attack labels."""
        return self.trigger.apply(x, rng), self.target.map(y, num_classes)

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "trigger": self.trigger.to_spec(), "target": self.target.to_spec()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Backdoor:
        if not isinstance(spec, dict):
            raise TriggerError(f"a backdoor spec must be a JSON object, got {type(spec).__name__}.")
        unknown = set(spec) - _BACKDOOR_KEYS
        if unknown:
            raise TriggerError(f"backdoor spec has unknown key(s) {sorted(unknown)}; known: {sorted(_BACKDOOR_KEYS)}.")
        missing = [k for k in ("trigger", "target") if k not in spec]
        if missing:
            raise TriggerError(f"backdoor spec {spec.get('name', '')!r} is missing {missing}.")
        return cls(spec["trigger"], spec["target"], spec.get("name", ""))

    def __repr__(self) -> str:
        return f"Backdoor({self.trigger!r}, {self.target!r}, name={self.name!r})"


class AttackSpec(NamedTuple):
    """What a spec document describes: the backdoors and, if given, the model's input scaling."""

    backdoors: list[Backdoor]
    input_spec: InputSpec | None


def parse_spec(spec: dict[str, Any] | Sequence[dict[str, Any]]) -> AttackSpec:
    """Parse a spec document (one backdoor, ``{"backdoors": [...]}``, or a bare list of backdoors)."""
    if isinstance(spec, (list, tuple)):
        spec = {"backdoors": list(spec)}
    if not isinstance(spec, dict):
        raise TriggerError(f"a trigger spec must be a JSON object or list, got {type(spec).__name__}.")
    if "backdoors" in spec:
        unknown = set(spec) - _TOP_KEYS
        if unknown:
            raise TriggerError(f"spec has unknown top-level key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}.")
        items = spec["backdoors"]
        if not isinstance(items, list) or not items:
            raise TriggerError("'backdoors' must be a non-empty list of backdoor objects.")
        inputs = [spec.get("input")] + [b.get("input") for b in items if isinstance(b, dict)]
    else:
        items, inputs = [spec], [spec.get("input")]
    backdoors = [Backdoor.from_spec(b) for b in items]
    names = [b.name for b in backdoors]
    if len(set(names)) != len(names):
        raise TriggerError(f"backdoor names must be unique, got {names}.")
    given = [i for i in inputs if i is not None]
    if any(i != given[0] for i in given[1:]):
        raise TriggerError("the spec gives different 'input' objects; one model has one input specification.")
    input_spec = None
    if given:
        try:
            input_spec = InputSpec.from_dict(given[0])
        except (ConfigError, TypeError) as exc:
            raise TriggerError(f"invalid 'input' in trigger spec: {exc}") from exc
    return AttackSpec(backdoors, input_spec)


def from_spec(spec: dict[str, Any] | Sequence[dict[str, Any]]) -> list[Backdoor]:
    """The backdoors a spec document describes.

    Example:
        >>> bds = from_spec({"trigger": {"type": "pixels", "pixels": [[27, 27]]},
        ...                  "target": {"type": "all-to-all", "shift": 1}, "name": "single-pixel"})
        >>> bds[0].target.map(np.array([9]), num_classes=10).tolist()
        [0]
    """
    return parse_spec(spec).backdoors


def load_spec(path: str | os.PathLike) -> AttackSpec:
    """Read a JSON spec file → :class:`AttackSpec` ``(backdoors, input_spec)``."""
    p = Path(path)
    if not p.is_file():
        raise TriggerError(f"trigger spec file {p} not found.")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TriggerError(f"{p} is not valid JSON: {exc}") from exc
    return parse_spec(_anchor_paths(doc, p.resolve().parent))


def _anchor_paths(doc: Any, base: Path) -> Any:
    """Make relative image paths in a spec file relative to the file's folder (where its author put them)."""
    if isinstance(doc, list):
        return [_anchor_paths(d, base) for d in doc]
    if not isinstance(doc, dict):
        return doc
    out = {k: _anchor_paths(v, base) for k, v in doc.items()}
    for key in ("path", "pattern"):
        value = out.get(key)
        if isinstance(value, str) and not value.startswith("zoo:") and not Path(value).is_absolute() and (base / value).is_file():
            out[key] = str(base / value)
    return out


def to_spec(backdoors: Backdoor | Sequence[Backdoor], input_spec: InputSpec | None = None) -> dict[str, Any]:
    """Spec document for one or several backdoors (``{"backdoors": [...]}``, plus ``"input"`` when given)."""
    items = [backdoors] if isinstance(backdoors, Backdoor) else list(backdoors)
    doc: dict[str, Any] = {"backdoors": [b.to_spec() for b in items]}
    if input_spec is not None:
        doc["input"] = {k: v for k, v in input_spec.to_dict().items() if v is not None}
    return doc


def save_spec(path: str | os.PathLike, backdoors: Backdoor | Sequence[Backdoor], input_spec: InputSpec | None = None) -> Path:
    """Write :func:`to_spec` as JSON atomically."""
    return write_json(path, to_spec(backdoors, input_spec))
