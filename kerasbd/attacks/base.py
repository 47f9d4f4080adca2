"""The Trigger abstraction: something that stamps a backdoor trigger onto a batch of canonical images.

A trigger is configuration only (like a Keras layer): :meth:`Trigger.apply` takes a canonical batch
(float32 NHWC RGB in [0, 1]) and returns a new stamped batch; :meth:`Trigger.check_fits` says whether the trigger
fits an image shape (raises :class:`~kerasbd.errors.TriggerError`); :meth:`Trigger.to_spec` gives the JSON
document of docs/ARCHITECTURE.md; :func:`trigger_from_spec` reads it back. Concrete triggers register
themselves in :data:`TRIGGERS` under their spec ``type``.

Seeded randomness: triggers whose *pattern* is random (noise, invisible perturbations) draw it once from their
own ``seed``; triggers with per-image randomness (a patch at a random position) draw from the ``rng`` passed to
``apply`` (an int seed or a ``numpy.random.Generator``), or from their ``seed`` when none is given.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from kerasbd.errors import DataError, TriggerError
from kerasbd.validation import check_images

__all__ = ["Trigger", "TRIGGERS", "trigger_from_spec", "as_rng", "value_scale"]

#: spec ``type`` → Trigger class; filled by ``Trigger.__init_subclass__``.
TRIGGERS: dict[str, type[Trigger]] = {}

RngLike = int | np.random.Generator | None


def as_rng(rng: RngLike, default_seed: int = 0) -> np.random.Generator:
    """A Generator from an int seed, a Generator (returned as is) or None (seeded with ``default_seed``)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(default_seed if rng is None else int(rng))


def value_scale(spec: dict[str, Any]) -> float:
    """Factor that converts a spec's values to canonical units (``"value_range": "0-255"`` → 1/255)."""
    vr = spec.get("value_range", "0-1")
    if vr not in ("0-1", "0-255"):
        raise TriggerError(f"trigger value_range {vr!r} is unknown; use '0-1' (canonical) or '0-255'.")
    return 1.0 / 255.0 if vr == "0-255" else 1.0


def image_hwc(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate an (H, W, C) image shape (a leading batch axis is dropped)."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or shape[-1] not in (1, 3, 4) or min(shape) < 1:
        raise TriggerError(f"image shape {shape} is not (H, W, C) with C in (1, 3).")
    return shape


class Trigger(abc.ABC):
    """Base class of every trigger.

    Subclasses set ``type`` (the spec name), implement :meth:`_apply` (stamp a validated float32 copy in place or
    return a new array), :meth:`get_config` (constructor arguments) and, when the trigger has a footprint,
    :meth:`mask`. ``check_fits`` defaults to accepting any image.
    """

    type: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type:
            TRIGGERS[cls.type] = cls

    def apply(self, x: np.ndarray, rng: RngLike = None) -> np.ndarray:
        """Return a stamped copy of the canonical batch ``x`` (uint8 input is converted by /255).

        Raises:
            TriggerError: the trigger does not fit the images.
            DataError: ``x`` is not a valid image batch.
        """
        x = check_images(x, name="images to stamp")
        self.check_fits(x.shape[1:])
        out = self._apply(np.array(x, dtype=np.float32, copy=True), as_rng(rng, getattr(self, "seed", 0)))
        return np.clip(out, 0.0, 1.0, out=out)

    def __call__(self, x: np.ndarray, rng: RngLike = None) -> np.ndarray:
        """Alias of :meth:`apply`, so a trigger can serve as a batch transform ``f(batch, rng)``."""
        return self.apply(x, rng)

    @abc.abstractmethod
    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stamp the validated float32 batch ``x`` (a private copy) and return it."""

    def check_fits(self, image_shape: Sequence[int]) -> None:
        """Raise TriggerError if the trigger cannot be stamped on images of ``image_shape`` (H, W, C)."""
        image_hwc(image_shape)

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        """(H, W) float32 map of the trigger's opacity (1 = pixel replaced); all ones for image-wide triggers."""
        h, w, _ = image_hwc(image_shape)
        self.check_fits(image_shape)
        return np.ones((h, w), np.float32)

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-able values (canonical units)."""

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec of this trigger (``{"type": ..., **config}``)."""
        return {"type": self.type, **self.get_config()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Trigger:
        """Build from a spec dict (``type`` already matched); unknown keys are refused."""
        config = {k: v for k, v in spec.items() if k not in ("type", "value_range")}
        scale = value_scale(spec)
        if scale != 1.0:
            config = cls._scale_values(config, scale)
        try:
            return cls(**config)
        except TypeError as exc:
            raise TriggerError(f"trigger type {cls.type!r}: {exc}. Check the spec's field names.") from exc

    @classmethod
    def _scale_values(cls, config: dict[str, Any], scale: float) -> dict[str, Any]:
        """Convert value fields given in 0-255 units to canonical units (override where values exist)."""
        raise TriggerError(f"trigger type {cls.type!r} has no pixel values; drop 'value_range'.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_spec() == other.to_spec()

    __hash__ = None  # type: ignore[assignment]


def trigger_from_spec(spec: dict[str, Any] | Trigger) -> Trigger:
    """Build any trigger from its JSON spec (a Trigger instance passes through).

    Example:
        >>> from kerasbd.attacks import trigger_from_spec  # the package import registers every trigger type
        >>> t = trigger_from_spec({"type": "patch", "size": [3, 3], "position": "bottom-right", "value": 1.0})
        >>> t.apply(np.zeros((1, 8, 8, 1), "float32"))[0, 5:, 5:, 0].tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    if isinstance(spec, Trigger):
        return spec
    if not isinstance(spec, dict):
        raise TriggerError(f"a trigger spec must be a JSON object, got {type(spec).__name__}.")
    kind = spec.get("type")
    if kind is None:
        raise TriggerError(f"trigger spec {spec} has no 'type'; known types: {', '.join(sorted(TRIGGERS))}.")
    if kind not in TRIGGERS:
        raise TriggerError(f"unknown trigger type {kind!r}; known types: {', '.join(sorted(TRIGGERS))}.")
    try:
        return TRIGGERS[kind].from_spec(spec)
    except (DataError, ValueError) as exc:
        if isinstance(exc, TriggerError):
            raise
        raise TriggerError(f"trigger type {kind!r}: {exc}") from exc
