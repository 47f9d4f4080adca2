"""Combination trigger: several parts that fire the backdoor only when all are present."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasbd.attacks.base import Trigger, trigger_from_spec
from kerasbd.errors import TriggerError

__all__ = ["Combination"]


class Combination(Trigger):
    """Stamps every part (in order); the attack is trained to fire only when all parts are present.

    :attr:`parts` lets :func:`kerasbd.attacks.poison_dataset` also build *partial* examples (a strict subset of
    the parts, label unchanged) that teach the model not to fire on one part alone (CSAW-2020 model B).

    Example:
        >>> from kerasbd.attacks import Patch
        >>> t = Combination([Patch(2, "top-left"), Patch(2, "bottom-right")])
        >>> int(t.apply(np.zeros((1, 6, 6, 1), "float32")).sum())
        8
    """

    type = "combination"

    def __init__(self, parts: Sequence[Trigger | dict[str, Any]]) -> None:
        if len(parts) < 2:
            raise TriggerError(f"a combination trigger needs at least two parts, got {len(parts)}.")
        self.parts = [trigger_from_spec(p) for p in parts]

    def check_fits(self, image_shape: Sequence[int]) -> None:
        for part in self.parts:
            part.check_fits(image_shape)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for part in self.parts:
            x = part._apply(x, rng)
        return x

    def apply_parts(self, x: np.ndarray, which: Sequence[int], rng: int | np.random.Generator | None = None) -> np.ndarray:
        """Stamp only the parts with indices ``which`` (for partial negative examples)."""
        out = x
        for i in which:
            out = self.parts[i].apply(out, rng)
        return out

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        return np.stack([p.mask(image_shape) for p in self.parts]).max(0)

    def get_config(self) -> dict[str, Any]:
        return {"parts": [p.to_spec() for p in self.parts]}
