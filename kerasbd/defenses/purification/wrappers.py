"""Input purification as defended models: ShrinkPad, FLIP and GYM's lightweight inference pipeline.

These defenses leave the weights alone and transform every input before the model sees it, which breaks
triggers that depend on their exact position or appearance. Each :class:`Defense` here returns the suspicious
model wrapped with its transform (:func:`kerasbd.transforms.with_preprocessing`), a ``keras.Model`` that
maps canonical images to logits like any other kerasbd model: evaluate it (ACC/ASR), save it as ``.keras``,
serve it.

- ``shrinkpad`` — Li et al., "Rethinking the Trigger of Backdoor Attack" (ShrinkPad-4 in GYM's Table 3):
  bilinear shrink by ``pad`` pixels, then zero-pad back at a random offset among the (pad + 1)² choices.
- ``flip`` — left-right flip (GYM's FLIP baseline), deterministic.
- ``gym-inference`` — GYM/DeepSweep's lightweight inference function (median 5 → resize ×0.8 → median 5 →
  resize back → random shift/scale/rotate), *without* GYM's fine-tuning: the "preprocessing only" row GYM
  uses to show that purification alone is not enough.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from kerasbd.defenses.base import Defense, RunContext
from kerasbd.errors import ConfigError
from kerasbd.reporting import DefenseResult

__all__ = ["PurificationDefense", "ShrinkPadDefense", "FlipDefense", "GYMInference"]


class PurificationDefense(Defense):
    """A defense that wraps the model with an inference-time input transform (no training, no clean data used).

    Subclasses implement :meth:`transform`. The clean data ``run`` requires is only validated; the transform's
    random draws inside the served model are seeded with ``run``'s seed.
    """

    @abc.abstractmethod
    def transform(self, image_shape: tuple[int, ...]) -> Any:
        """The :class:`kerasbd.transforms.Transform` applied to every input of shape ``image_shape`` (H, W, C)."""

    def _run(self, model: Any, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> DefenseResult:
        from kerasbd.transforms import with_preprocessing

        transform = self.transform(tuple(int(s) for s in model.input_shape[1:]))
        details = {"note": f"wrapped the model with {type(transform).__name__} input preprocessing (weights unchanged)",
                   "transform": transform.get_config()}
        return DefenseResult(self.name, model=with_preprocessing(model, transform, seed=ctx.seed), details=details)


class ShrinkPadDefense(PurificationDefense):
    """ShrinkPad-``pad``: shrink by ``pad`` pixels and zero-pad back at a random offset (original ``pad=4``).

    Example:
        >>> ShrinkPadDefense(pad=4).get_config()
        {'pad': 4}
    """

    name: ClassVar[str] = "shrinkpad"

    def __init__(self, pad: int = 4) -> None:
        if int(pad) < 1:
            raise ConfigError(f"pad must be a positive number of pixels, got {pad}.")
        self.pad = int(pad)

    def transform(self, image_shape: tuple[int, ...]) -> Any:
        from kerasbd.transforms import ShrinkPad

        return ShrinkPad(self.pad)


class FlipDefense(PurificationDefense):
    """FLIP: mirror every input left-right (GYM's baseline); deterministic, no parameters.

    Example:
        >>> FlipDefense().get_config()
        {}
    """

    name: ClassVar[str] = "flip"

    def __init__(self) -> None:
        """No parameters: the flip is horizontal, as in GYM's comparison."""

    def transform(self, image_shape: tuple[int, ...]) -> Any:
        from kerasbd.transforms import Flip

        return Flip()


class GYMInference(PurificationDefense):
    """GYM's lightweight inference pipeline alone (no fine-tuning), as GYM's "preprocessing only" baseline.

    Args:
        variant: ``"code"`` (the DeepSweep notebook: resize by 180/224) or ``"paper"`` (the paper text: 0.8);
            see :func:`kerasbd.transforms.gym_lightweight`.

    Example:
        >>> GYMInference().get_config()
        {'variant': 'code'}
    """

    name: ClassVar[str] = "gym-inference"

    def __init__(self, variant: str = "code") -> None:
        if variant not in ("code", "paper"):
            raise ConfigError(f"variant must be 'code' or 'paper', got {variant!r}.")
        self.variant = variant

    def transform(self, image_shape: tuple[int, ...]) -> Any:
        from kerasbd.transforms import gym_lightweight

        return gym_lightweight(variant=self.variant)
