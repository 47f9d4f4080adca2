"""Triggers given as full-image arrays: a mask and pattern, ``x' = (1 − m)·x + m·p`` (:class:`MaskedPattern`),
or an additive perturbation, ``x' = clip(x + δ)`` (:class:`AdditivePerturbation`).

These are the forms in which trigger-inversion methods (Neural Cleanse's masks and patterns, the perturbations
of the generator-based inspectors) return what they reverse-engineered, so a reversed trigger can be stamped, evaluated (ASR of the reversed trigger),
unlearned and written in the JSON schema like any attacker's trigger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasbd.attacks.base import Trigger, image_hwc
from kerasbd.errors import TriggerError

__all__ = ["AdditivePerturbation", "MaskedPattern", "apply_mask_pattern"]

_SLACK = 1e-6


def apply_mask_pattern(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Stamp canonical images ``x`` (N, H, W, C) with a mask (H, W) and pattern (H, W, C): ``(1 − m)·x + m·p``.

    Example:
        >>> x = np.zeros((1, 2, 2, 1), np.float32)
        >>> apply_mask_pattern(x, np.eye(2), np.ones((2, 2, 1)))[0, ..., 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    m = np.asarray(mask, np.float32)[..., None]
    return ((1.0 - m) * x + m * np.asarray(pattern, np.float32)).astype(np.float32)


class MaskedPattern(Trigger):
    """Blend a pattern into the image through a per-pixel mask shared by the channels (spec type ``masked-pattern``).

    Args:
        mask: (H, W) opacity in [0, 1].
        pattern: (H, W, C) pattern in [0, 1], C matching the images.

    Example:
        >>> t = MaskedPattern(np.eye(3), np.ones((3, 3, 1)))
        >>> t.apply(np.zeros((1, 3, 3, 1), "float32"))[0, :, :, 0].diagonal().tolist(), float(t.mask((3, 3, 1)).sum())
        ([1.0, 1.0, 1.0], 3.0)
    """

    type = "masked-pattern"

    def __init__(self, mask: np.ndarray | Sequence[Any], pattern: np.ndarray | Sequence[Any]) -> None:
        self.mask_ = np.asarray(mask, np.float32)
        self.pattern = np.asarray(pattern, np.float32)
        if self.mask_.ndim != 2 or self.pattern.ndim != 3 or self.pattern.shape[:2] != self.mask_.shape:
            raise TriggerError(f"a masked-pattern trigger needs an (H, W) mask and an (H, W, C) pattern, got {self.mask_.shape} "
                               f"and {self.pattern.shape}.")
        for name, a in (("mask", self.mask_), ("pattern", self.pattern)):
            # float32 tanh parametrisations can overshoot [0, 1] by an ulp; the values are kept exactly as given
            if not np.isfinite(a).all() or a.min() < -_SLACK or a.max() > 1 + _SLACK:
                raise TriggerError(f"masked-pattern {name} values must be finite and lie in [0, 1].")

    def check_fits(self, image_shape: Sequence[int]) -> None:
        h, w, c = image_hwc(image_shape)
        if (h, w, c) != self.pattern.shape:
            raise TriggerError(f"the masked-pattern trigger is {self.pattern.shape} but the images are {(h, w, c)}.")

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        self.check_fits(image_shape)
        return self.mask_.copy()

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return apply_mask_pattern(x, self.mask_, self.pattern)

    def get_config(self) -> dict[str, Any]:
        return {"mask": self.mask_.tolist(), "pattern": self.pattern.tolist()}


class AdditivePerturbation(Trigger):
    """Add a fixed (H, W, C) perturbation δ to every image and clip to [0, 1] (spec type ``perturbation``).

    GangSweep's and DeepInspect's reversed triggers: their generators perturb each image; the universal
    perturbation of a label (e.g. the mean over images) stamps, evaluates and serialises like any trigger.
    ``mask`` is the footprint ``min(1, max_c |δ|)``.

    Example:
        >>> t = AdditivePerturbation(np.full((2, 2, 1), 0.25))
        >>> t.apply(np.full((1, 2, 2, 1), 0.5, "float32"))[0, 0, 0, 0], float(t.mask((2, 2, 1)).sum())
        (np.float32(0.75), 1.0)
    """

    type = "perturbation"

    def __init__(self, delta: np.ndarray | Sequence[Any]) -> None:
        self.delta = np.asarray(delta, np.float32)
        if self.delta.ndim != 3 or not np.isfinite(self.delta).all() or np.abs(self.delta).max(initial=0.0) > 1 + _SLACK:
            raise TriggerError(f"a perturbation trigger needs a finite (H, W, C) delta in [−1, 1], got shape {self.delta.shape}.")

    def check_fits(self, image_shape: Sequence[int]) -> None:
        h, w, c = image_hwc(image_shape)
        if (h, w, c) != self.delta.shape:
            raise TriggerError(f"the perturbation trigger is {self.delta.shape} but the images are {(h, w, c)}.")

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        self.check_fits(image_shape)
        return np.minimum(np.abs(self.delta).max(axis=-1), 1.0)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + self.delta

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta.tolist()}
