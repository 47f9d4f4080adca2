"""Feature-squeezing squeezers (Xu et al.; code mzweilin/EvadeML-Zoo ``utils/squeeze.py``).

* :class:`BitDepth`: ``rint(x * (2^b - 1)) / (2^b - 1)``.
* :class:`MedianSmoothing`: ``scipy.ndimage.median_filter(x, size=(1, kh, kw, 1), mode="reflect")`` without
  SciPy: SciPy's "reflect" repeats the edge pixel (d c b a | a b c d), the window of size k covers offsets
  ``-(k//2) .. k-1-k//2`` (a 2x2 window reaches one pixel up and left), and the result is the element of rank
  ``k_h*k_w // 2`` of the sorted window (for 2x2 the *upper* median, no averaging).
* :class:`NonLocalMeans`: ``cv2.fastNlMeansDenoisingColored(uint8(rint(x*255)), None, h, h, patch, search)/255``
  with RGB arrays handed to OpenCV as if they were BGR, as the original does (``bgr_quirk=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.transforms import _ops
from kerasbd.transforms.base import Transform

__all__ = ["BitDepth", "MedianSmoothing", "NonLocalMeans"]


class BitDepth(Transform):
    """Reduce every value to ``bits`` bits (1-8).

    Example:
        >>> import numpy as np
        >>> BitDepth(1)(np.array([0.2, 0.5, 0.7], np.float32).reshape(1, 1, 3, 1)).ravel().tolist()
        [0.0, 0.0, 1.0]
    """

    def __init__(self, bits: int = 5) -> None:
        if int(bits) != bits or not 1 <= bits <= 8:
            raise ConfigError(f"bits must be an integer in [1, 8], got {bits}.")
        self.bits = int(bits)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = np.empty_like(x)
        self._run_into(x, rng, y)
        return y

    def _run_into(self, x: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        levels = np.float32(2**self.bits - 1)
        step = max(1, 65536 // x[0].size)  # blocks of ~256 KB: the three passes run in cache, written once
        for s in range(0, len(x), step):
            y = out[s : s + step]
            np.multiply(x[s : s + step], levels, out=y)
            np.rint(y, out=y)
            np.divide(y, levels, out=y)


def _upper_median_2x2(p: np.ndarray) -> np.ndarray:
    """Rank-2 (of 0..3) element of every 2x2 window of an edge-padded batch, by a min/max network."""
    a, b = p[:, :-1, :-1], p[:, :-1, 1:]
    c, d = p[:, 1:, :-1], p[:, 1:, 1:]
    hi1, lo1 = np.maximum(a, b), np.minimum(a, b)
    hi2, lo2 = np.maximum(c, d), np.minimum(c, d)
    return np.maximum(np.minimum(hi1, hi2), np.maximum(lo1, lo2))


class MedianSmoothing(Transform):
    """SciPy-exact median filter over a ``size=(kh, kw)`` window per channel (2x2 and 3x3 in the paper).

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0, 0.4], [0.8, 0.2]], np.float32).reshape(1, 2, 2, 1)
        >>> round(float(MedianSmoothing(2)(x)[0, 1, 1, 0]), 4)  # window {0, .4, .8, .2} -> upper median .4
        0.4
    """

    def __init__(self, size: int | Sequence[int] = 2) -> None:
        kh, kw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if kh < 1 or kw < 1:
            raise ConfigError(f"size must be positive, got {size}.")
        self.size = size if isinstance(size, (int, np.integer)) else [int(kh), int(kw)]
        self._k = (int(kh), int(kw))

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        self._require_size(shape, max(self._k), f"the {self._k[0]}x{self._k[1]} median window")

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kh, kw = self._k
        if (kh, kw) == (3, 3):
            # reflect-by-one equals replicate, so OpenCV's float 3x3 median is SciPy's exactly
            return _ops.median_blur(x, 3)
        pad = ((0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0))
        out = np.empty_like(x)
        step = max(1, 4_000_000 // (x[0].size * kh * kw))  # bound the window stack's memory
        for s in range(0, len(x), step):
            p = np.pad(x[s : s + step], pad, mode="symmetric")
            if (kh, kw) == (2, 2):
                out[s : s + step] = _upper_median_2x2(p)
                continue
            h, w = x.shape[1:3]
            windows = np.stack([p[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)])
            rank = kh * kw // 2
            out[s : s + step] = np.partition(windows, rank, axis=0)[rank]
        return out


class NonLocalMeans(Transform):
    """OpenCV colour non-local means (EvadeML ``non_local_means_color_{search}_{patch}_{h}``), per image.

    ``bgr_quirk=True`` (default) reproduces the original, which passed RGB arrays to a function that assumes
    BGR (it converts to Lab internally, so channel order changes the result); ``False`` converts properly.
    """

    requires_color = True

    def __init__(self, search: int = 13, patch: int = 3, h: float = 2.0, bgr_quirk: bool = True) -> None:
        if search < 1 or patch < 1 or search % 2 == 0 or patch % 2 == 0:
            raise ConfigError(f"search and patch must be odd positive sizes, got {search} and {patch}.")
        if h <= 0:
            raise ConfigError(f"h must be positive, got {h}.")
        self.search, self.patch, self.h, self.bgr_quirk = int(search), int(patch), h, bool(bgr_quirk)

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        self._require_size(shape, self.patch, f"the {self.patch}x{self.patch} patch")

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        if not self.bgr_quirk:
            u = np.ascontiguousarray(u[..., ::-1])
        out = np.stack([cv2.fastNlMeansDenoisingColored(img, None, self.h, self.h, self.patch, self.search) for img in u])
        if not self.bgr_quirk:
            out = out[..., ::-1]
        return out.astype(np.float32) / np.float32(255.0)
