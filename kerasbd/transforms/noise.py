"""NNoculation's noise augmentation (akshajkumarv/NNoculation ``augment.py``) without imgaug.

The original applies imgaug ``ReplaceElementwise(FromLowerResolution(Binomial(p), size_px=4),
Normal(128, 0.4*128), per_channel=1)`` to uint8 images: a ``size_px x size_px`` (x channels) Bernoulli(p) mask is
upsampled with nearest neighbour (OpenCV's ``floor(i * 4 / size)`` rule) and the masked values are replaced by
``clip(round(N(128, 51.2)), 0, 255)``.

Two mask layouts, both replacing a fraction ~p of the values:

* ``mode="original-rowwise"`` (default): what the original code actually did. It called ``seq(images=img)`` on
  one (H, W, C) array, which imgaug reads as a batch of H grayscale images of size W x C, so every image *row*
  gets its own 4x4 mask, upsampled to (W, C): horizontal blocks ~W/4 wide, independent per row, with a channel
  pattern from the 4 -> C nearest resize. It is the default because the published AugNet models (and the
  noise levels chosen with them) were trained on this noise.
* ``mode="intended"``: ``seq(image=img)`` semantics, one 4x4xC mask per image upsampled to (H, W): large
  ~H/4 x W/4 blocks per channel, as the paper and imgaug's documentation describe it.

Untouched pixels keep their exact float values; replaced ones are multiples of 1/255.
"""

from __future__ import annotations

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.transforms import _ops
from kerasbd.transforms.base import Transform

__all__ = ["NNoculationNoise"]

_MODES = ("original-rowwise", "intended")


class NNoculationNoise(Transform):
    """Replace a fraction ``p`` of pixel values by clipped, rounded Normal(loc, scale) grey levels in blocks.

    Example:
        >>> import numpy as np
        >>> y = NNoculationNoise(0.3)(np.zeros((64, 55, 47, 3), np.float32), rng=0)
        >>> round(float((y != 0).mean()), 1)
        0.3
    """

    def __init__(self, p: float = 0.1, size_px: int = 4, loc: float = 128.0, scale: float = 51.2, mode: str = "original-rowwise") -> None:
        if not 0 <= p <= 1:
            raise ConfigError(f"p (the replaced fraction) must be in [0, 1], got {p}.")
        if int(size_px) != size_px or size_px < 1:
            raise ConfigError(f"size_px must be a positive integer, got {size_px}.")
        if scale < 0:
            raise ConfigError(f"scale must be non-negative, got {scale}.")
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}.")
        self.p, self.size_px, self.loc, self.scale, self.mode = p, int(size_px), loc, scale, mode

    def mask(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Boolean (N, H, W, C) replacement mask."""
        n, h, w, c = shape
        s = self.size_px
        if self.mode == "intended":
            low = rng.random((n, s, s, c)) < self.p
            return low[:, _ops.nearest_index(s, h)][:, :, _ops.nearest_index(s, w)]
        # each row is an imgaug "image" of size (W, C) with one channel: its own s x s mask resized to (W, C)
        low = rng.random((n, h, s, s)) < self.p
        return low[:, :, _ops.nearest_index(s, w)][:, :, :, _ops.nearest_index(s, c)]

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        m = self.mask(x.shape, rng)
        values = np.clip(np.round(rng.normal(self.loc, self.scale, size=int(m.sum()))), 0, 255)
        out = x.copy()
        out[m] = values.astype(np.float32) / np.float32(255.0)
        return out
