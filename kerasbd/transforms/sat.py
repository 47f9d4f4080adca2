"""SAT, the Stochastic Affine Transformation (Zeng et al., ICA3PP 2020), in the fast form DeepSweep uses:
albumentations 0.4.x ``ShiftScaleRotate(shift_limit=0.16, scale_limit=0.16, rotate_limit=4, border_mode=0, p=1)``.

Per image: angle ~ U(-4, 4) degrees, scale ~ U(0.84, 1.16), dx, dy ~ U(-0.16, 0.16) of the width/height;
``M = cv2.getRotationMatrix2D((W/2, H/2), angle, scale)`` plus the translation, then ``cv2.warpAffine`` with
bilinear interpolation and a constant 0 border, on truncated uint8 pixels. The matrices of the whole batch are
built at once; each image then goes through its own ``warpAffine``, bit-identical to the original. No batched
call is exact here: OpenCV 5.0 computes float32 source coordinates per pixel, which a mosaic ``remap`` cannot
reproduce once tile offsets are added (see :mod:`kerasbd.transforms._ops`).
"""

from __future__ import annotations

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.transforms import _ops
from kerasbd.transforms.base import Transform

__all__ = ["SAT", "affine_matrices"]


def affine_matrices(angle: np.ndarray, scale: np.ndarray, dx: np.ndarray, dy: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 2, 3) forward matrices: ``cv2.getRotationMatrix2D((W/2, H/2), angle, scale)`` + (dx*W, dy*H)."""
    a = np.deg2rad(np.asarray(angle, np.float64))
    alpha, beta = scale * np.cos(a), scale * np.sin(a)
    cx, cy = width / 2, height / 2
    m = np.empty((len(a), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = alpha, beta, (1 - alpha) * cx - beta * cy + dx * width
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = -beta, alpha, beta * cx + (1 - alpha) * cy + dy * height
    return m


class SAT(Transform):
    """Random shift, scale and rotation per image (fastSAT), constant ``border_value`` outside the image.

    Example:
        >>> import numpy as np
        >>> x = np.ones((3, 28, 28, 1), np.float32)
        >>> y = SAT()(x, rng=0)
        >>> y.shape, float(y.max())
        ((3, 28, 28, 1), 1.0)
    """

    quantizes = True

    def __init__(self, shift_limit: float = 0.16, scale_limit: float = 0.16, rotate_limit: float = 4.0, border_value: int = 0) -> None:
        for name, v in (("shift_limit", shift_limit), ("scale_limit", scale_limit), ("rotate_limit", rotate_limit)):
            if v < 0:
                raise ConfigError(f"{name} must be non-negative, got {v}.")
        if scale_limit >= 1:
            raise ConfigError(f"scale_limit must be below 1 (scale 1 +- limit stays positive), got {scale_limit}.")
        if not 0 <= border_value <= 255:
            raise ConfigError(f"border_value is a uint8 grey level in [0, 255], got {border_value}.")
        self.shift_limit, self.scale_limit, self.rotate_limit = shift_limit, scale_limit, rotate_limit
        self.border_value = border_value

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw the per-image parameters (angle in degrees, scale, dx, dy as fractions of the size)."""
        return {
            "angle": rng.uniform(-self.rotate_limit, self.rotate_limit, n),
            "scale": rng.uniform(1 - self.scale_limit, 1 + self.scale_limit, n),
            "dx": rng.uniform(-self.shift_limit, self.shift_limit, n),
            "dy": rng.uniform(-self.shift_limit, self.shift_limit, n),
        }

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w, _ = u.shape
        return _ops.warp_affine(u, affine_matrices(**self.sample(n, rng), height=h, width=w), self.border_value)
