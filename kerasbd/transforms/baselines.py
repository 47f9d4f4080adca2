"""The input-preprocessing baselines GYM compares against: ShrinkPad (Li et al., "Rethinking the Trigger of
Backdoor Attack"; BackdoorBox ``core/defenses/ShrinkPad.py``) and FLIP (horizontal flip)."""

from __future__ import annotations

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.transforms import _ops
from kerasbd.transforms.base import Transform

__all__ = ["ShrinkPad", "Flip"]


class ShrinkPad(Transform):
    """Bilinear resize to (H - pad, W - pad), then zero-pad back to (H, W) at one of the (pad + 1)^2 offsets,
    drawn uniformly per image (BackdoorBox: ``Resize`` + ``RandomChoice`` over all paddings, fill 0).
    ``ShrinkPad(4)`` is the paper's ShrinkPad-4. The resize is OpenCV's bilinear without anti-aliasing (the
    behaviour of torchvision's tensor ``Resize`` before antialias became its default).

    Example:
        >>> import numpy as np
        >>> y = ShrinkPad(4)(np.ones((2, 32, 32, 3), np.float32), rng=0)
        >>> int((y.sum(axis=(1, 2, 3)) / 3)[0])  # a 28x28 block of ones survives
        784
    """

    def __init__(self, pad: int = 4, fill: float = 0.0) -> None:
        if int(pad) != pad or pad < 0:
            raise ConfigError(f"pad must be a non-negative integer, got {pad}.")
        if not 0 <= fill <= 1:
            raise ConfigError(f"fill must be in [0, 1], got {fill}.")
        self.pad, self.fill = int(pad), fill

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        self._require_size(shape, self.pad + 1, f"the padding ({self.pad} px) plus one pixel")

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(x.shape, np.float32)
        self._run_into(x, rng, out)
        return out

    def _run_into(self, x: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        n, h, w, _ = x.shape
        small = _ops.resize(x, (h - self.pad, w - self.pad))
        left = rng.integers(0, self.pad + 1, size=int(n))
        top = rng.integers(0, self.pad + 1, size=int(n))
        out[...] = self.fill  # the canvas is the output itself: no temporary
        _ops.place(out, small, top, left)


class Flip(Transform):
    """Horizontal flip of every image (the FLIP baseline); deterministic, ``rng`` is ignored."""

    def __init__(self) -> None:
        pass

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.ascontiguousarray(x[:, :, ::-1])
