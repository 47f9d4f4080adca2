"""GYM / DeepSweep preprocessing (Zeng et al., "GYM: A Comprehensive Defense Approach against DNN Backdoor
Attacks"; code YiZeng623/DeepSweep), batched and faithful to albumentations 0.4.x.

Components (constants of the original as defaults, every constant a parameter): :class:`OpticalDistortion`,
:class:`Gamma`, :class:`Multiply`, :class:`MedianBlur`, :class:`Downscale`, :class:`Resize`,
:class:`ScaledMedian`, :class:`RandomShrinkPad`; SAT lives in :mod:`kerasbd.transforms.sat`.

Pipelines: :class:`GYMIntensive` (fine-tuning data) and :class:`GYMLightweight` (inference). Two descriptions
of the intensive function disagree:

* ``variant="code"`` (default) follows the DeepSweep notebook that produced the published numbers: OD ->
  gamma 0.6 -> median 5 -> x1.53 -> gamma 2.6 -> nearest down/up-scale 0.25 -> median 5 -> resize 224->180 ->
  median 5 -> resize back -> RAND(scalimit 1.1, i.e. shrink to ~[0.91, 1]) -> fastSAT.
* ``variant="paper"`` follows the paper text: the second median runs on a 0.75 downscale (resized back), the
  third on a 0.8 downscale, and the random shrink covers [0.8, 1] (scalimit 1.25).

The 224 -> 180 resize of the original is expressed as a factor of the image size (180/224 in the code
variant, so a 224x224 image still goes through exactly 180x180; 0.8 in the paper variant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import cv2
import numpy as np

from kerasbd.errors import ConfigError, DataError
from kerasbd.transforms import _ops
from kerasbd.transforms.base import Compose, Transform
from kerasbd.transforms.sat import SAT

__all__ = [
    "OpticalDistortion",
    "Gamma",
    "Multiply",
    "MultiplicativeNoise",
    "MedianBlur",
    "Downscale",
    "Resize",
    "ScaledMedian",
    "RandomShrinkPad",
    "GYMIntensive",
    "GYMLightweight",
    "gym_intensive",
    "gym_lightweight",
    "distortion_maps",
]


def _range(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """albumentations' ``to_tuple``: a scalar v means (-v, v)."""
    if isinstance(value, (int, float)):
        lo, hi = -abs(float(value)), abs(float(value))
    else:
        lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ConfigError(f"{name}: lower bound {lo} exceeds upper bound {hi}.")
    return lo, hi


def _scaled_size(shape: Sequence[int], factor: float) -> tuple[int, int]:
    return max(1, int(round(shape[0] * factor))), max(1, int(round(shape[1] * factor)))


def distortion_maps(k: np.ndarray, height: int, width: int, dx: float = 0.0, dy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``cv2.initUndistortRectifyMap`` of albumentations 0.4.x ``optical_distortion`` for many k.

    Camera matrix fx=W, fy=H, principal point (W/2+dx, H/2+dy), distortion [k, k, 0, 0, 0]; with no new camera
    matrix OpenCV back-projects from the centred principal point ((W-1)/2, (H-1)/2). For each output pixel (u, v):
    x = (u - (W-1)/2)/W, y = (v - (H-1)/2)/H, r2 = x^2+y^2, s = 1 + k r2 + k r2^2, map = (W x s + cx, H y s + cy).

    Returns (map_x, map_y) float32 of shape (len(k), H, W).
    """
    k = np.asarray(k, np.float64).reshape(-1, 1, 1)
    x = ((np.arange(width) - (width - 1) * 0.5) / width)[None, None, :]
    y = ((np.arange(height) - (height - 1) * 0.5) / height)[None, :, None]
    r2 = x * x + y * y
    s = 1.0 + (k * r2 + k) * r2
    map_x = (width * x * s + (width * 0.5 + dx)).astype(np.float32)
    map_y = (height * y * s + (height * 0.5 + dy)).astype(np.float32)
    return map_x, map_y


class OpticalDistortion(Transform):
    """albumentations 0.4.x ``OpticalDistortion(p=1)``: radial distortion with k ~ U(distort_limit) per image.

    Defaults are GYM's ``defend_OD``: k ~ U(-0.05, 0.05), shift 0 (albumentations rounds U(-0.05, 0.05) to 0),
    bilinear remap with reflect-101 border, on truncated uint8 pixels. :meth:`pincushion` gives the fixed
    k = -0.5 constant-border variant of the DeepSweep illustration notebook.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
        >>> OpticalDistortion()(x, rng=0).shape
        (2, 32, 32, 3)
    """

    quantizes = True

    def __init__(
        self,
        distort_limit: float | Sequence[float] = 0.05,
        shift_limit: float | Sequence[float] = 0.05,
        border: str = "reflect_101",
    ) -> None:
        self.distort_limit = distort_limit
        self.shift_limit = shift_limit
        self.border = border
        self._k = _range(distort_limit, "distort_limit")
        self._shift = _range(shift_limit, "shift_limit")
        if border not in ("reflect_101", "constant"):
            raise ConfigError(f"border must be 'reflect_101' or 'constant', got {border!r}.")

    @classmethod
    def pincushion(cls, k: float = -0.5) -> OpticalDistortion:
        """The fixed-k, zero-border pincushion of DeepSweep's ``test.ipynb`` illustration."""
        return cls(distort_limit=(k, k), shift_limit=0.0, border="constant")

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w, _ = u.shape
        k = rng.uniform(*self._k, size=int(n))
        # albumentations draws dx, dy as round(U(shift_limit)), i.e. 0 for any |limit| < 0.5
        dx, dy = np.round(rng.uniform(*self._shift, size=2))
        map_x, map_y = distortion_maps(k, h, w, dx, dy)
        return _ops.remap(u, map_x, map_y, border=self.border)


class Gamma(Transform):
    """albumentations 0.4.x ``RandomGamma(gamma_limit=(g*100, g*100))``: the uint8 LUT
    ``(arange(0, 256/255, 1/255) ** gamma * 255).astype(uint8)`` (truncation). GYM uses 0.6 and 2.6."""

    quantizes = True

    def __init__(self, gamma: float = 0.6) -> None:
        if gamma <= 0:
            raise ConfigError(f"gamma must be positive, got {gamma}.")
        self.gamma = gamma
        # built exactly like albumentations (arange with a float step), so the truncated table matches bit for bit
        self.lut = ((np.arange(0, 256.0 / 255, 1.0 / 255) ** float(gamma)) * 255).astype(np.uint8)

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.lut[u]


class Multiply(Transform):
    """albumentations 0.4.x ``MultiplicativeNoise(multiplier=m)`` with a fixed multiplier: the uint8 LUT
    ``clip(float32(arange(256)) * m, 0, 255).astype(uint8)``. GYM's ``defend_MPN`` uses 1.53."""

    quantizes = True

    def __init__(self, multiplier: float = 1.53) -> None:
        if multiplier < 0:
            raise ConfigError(f"multiplier must be non-negative, got {multiplier}.")
        self.multiplier = multiplier
        lut = np.arange(0, 256, dtype=np.float32)
        lut *= multiplier  # float32 arithmetic, as in albumentations' _multiply_uint8_optimized
        self.lut = np.clip(lut, 0, 255).astype(np.uint8)

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.lut[u]


#: The name albumentations gives the same operation.
MultiplicativeNoise = Multiply


class MedianBlur(Transform):
    """``cv2.medianBlur(img, ksize)`` on truncated uint8 pixels (albumentations ``MedianBlur``), border replicated."""

    quantizes = True

    def __init__(self, ksize: int = 5) -> None:
        if ksize < 3 or ksize % 2 == 0:
            raise ConfigError(f"ksize must be an odd integer >= 3, got {ksize}.")
        self.ksize = int(ksize)

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        self._require_size(shape, self.ksize, f"the {self.ksize}x{self.ksize} median kernel")

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _ops.median_blur(u, self.ksize)

    def _convert_apply(self, x: np.ndarray, rng: np.random.Generator, *, from_float: bool, to_float: bool) -> np.ndarray:
        return _ops.median_blur(x, self.ksize, quantize=from_float, dequantize=to_float)


class Downscale(Transform):
    """albumentations 0.4.x ``Downscale(scale, scale)``: nearest resize by ``scale`` (``cv2.resize(fx=fy=scale)``,
    size rounded) and nearest back to the original size. GYM's ``defend_DOWN`` uses 0.25."""

    quantizes = True

    def __init__(self, scale: float = 0.25) -> None:
        if not 0 < scale <= 1:
            raise ConfigError(f"scale must be in (0, 1], got {scale}.")
        self.scale = scale

    def _small(self, shape: Sequence[int]) -> tuple[int, int]:
        return int(round(shape[0] * self.scale)), int(round(shape[1] * self.scale))

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        if min(self._small(shape)) < 1:
            raise DataError(f"Downscale: {shape[0]}x{shape[1]} images vanish at scale {self.scale}; use a larger scale.")

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = u.shape[1:3]
        small = _ops.nearest_resize(u, self._small(u.shape[1:]), scale=self.scale)
        return _ops.nearest_resize(small, (h, w))


class Resize(Transform):
    """``cv2.resize`` (bilinear by default) to a fixed ``size=(h, w)`` or by ``factor`` of the input size."""

    def __init__(self, size: Sequence[int] | None = None, factor: float | None = None, interpolation: str = "linear") -> None:
        if (size is None) == (factor is None):
            raise ConfigError("Resize needs exactly one of size=(h, w) or factor.")
        if factor is not None and factor <= 0:
            raise ConfigError(f"factor must be positive, got {factor}.")
        if interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}.")
        self.size = None if size is None else [int(s) for s in size]
        self.factor = factor
        self.interpolation = interpolation

    def output_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        shape = super().output_shape(image_shape)
        if self.size is not None:
            h, w = self.size
        else:
            assert self.factor is not None  # __init__ takes exactly one of size and factor
            h, w = _scaled_size(shape, self.factor)
        return (h, w, shape[2])

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w, _ = self.output_shape(x.shape[1:])
        return _ops.resize(x, (h, w), _INTERPOLATIONS[self.interpolation])


_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


class ScaledMedian(Transform):
    """A median filter in a downscaled space: bilinear resize by ``factor`` -> truncate to uint8 -> medianBlur ->
    /255 -> bilinear resize back. This is GYM's ``cv2.resize(180) -> defend_MED -> cv2.resize(224)`` with the
    sizes expressed as a factor (180/224 by default, so 224x224 images go through exactly 180x180)."""

    def __init__(self, factor: float = 180 / 224, ksize: int = 5) -> None:
        if not 0 < factor <= 1:
            raise ConfigError(f"factor must be in (0, 1], got {factor}.")
        self.factor = factor
        self.ksize = int(ksize)
        self._median = MedianBlur(ksize)

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        small = _scaled_size(shape, self.factor)
        if min(small) < self.ksize:
            self._require_size(shape, int(np.ceil(self.ksize / self.factor)), f"a {self.ksize}x{self.ksize} median after x{self.factor:.3g}")

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = x.shape[1:3]
        small = _ops.resize(x, _scaled_size(x.shape[1:], self.factor))
        return _ops.resize(self._median._run(small, rng), (h, w))


class RandomShrinkPad(Transform):
    """GYM / FenceBox ``defend_RAND``: upscale each image to a random size in [H, H*scalimit), paste it at a random
    position of an (H*scalimit)-sized canvas filled with ``pad_value`` and resize the canvas back to H. The
    content therefore shrinks to a random fraction in (1/scalimit, 1] of the image and shifts randomly.

    DeepSweep uses scalimit 1.1 and pad 0 (FenceBox: 1.3, pad 0.5; the GYM paper's [0.8, 1] is scalimit 1.25).
    The original resizes with skimage (bilinear); we use OpenCV's bilinear resize, which uses the same pixel-centre
    convention. Non-square images keep their aspect ratio (the width follows the drawn height).
    """

    def __init__(self, scalimit: float = 1.1, pad_value: float = 0.0) -> None:
        if scalimit <= 1:
            raise ConfigError(f"scalimit must exceed 1, got {scalimit}.")
        if not 0 <= pad_value <= 1:
            raise ConfigError(f"pad_value must be in [0, 1], got {pad_value}.")
        self.scalimit = scalimit
        self.pad_value = pad_value

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, h, w, c = x.shape
        max_h, max_w = max(h + 1, int(h * self.scalimit)), max(w + 1, int(w * self.scalimit))
        rnd_h = rng.integers(h, max_h, size=n)
        rnd_w = np.clip(np.round(rnd_h * (w / h)).astype(np.int64), w, max_w - 1)
        top = rng.integers(0, max_h - rnd_h)  # randint(0, maxv - rnd) as in the original
        left = rng.integers(0, max_w - rnd_w)
        canvas = np.full((n, max_h, max_w, c), self.pad_value, np.float32)
        for sh, sw in {(int(a), int(b)) for a, b in zip(rnd_h, rnd_w, strict=True)}:
            idx = np.flatnonzero((rnd_h == sh) & (rnd_w == sw))
            grown = _ops.resize(x[idx], (sh, sw))
            canvas[idx] = _ops.place(canvas[idx], grown, top[idx], left[idx])
        return _ops.resize(canvas, (h, w))


_T = TypeVar("_T")


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


_VARIANTS = {
    #                second median          third median   shrink scalimit
    "code": {"downscale": 0.25, "second_scale": None, "resize_factor": 180 / 224, "scalimit": 1.1},
    "paper": {"downscale": None, "second_scale": 0.75, "resize_factor": 0.8, "scalimit": 1.25},
}


def _variant(variant: str) -> dict:
    if variant not in _VARIANTS:
        raise ConfigError(f"variant must be 'code' (DeepSweep notebook) or 'paper' (GYM paper text), got {variant!r}.")
    return _VARIANTS[variant]


class GYMIntensive(Compose):
    """GYM's intensive preprocessing (fine-tuning data): a :class:`Compose` configured by GYM's constants.

    ``variant`` picks the defaults of the arguments left as None (see the module docstring): ``"code"`` =
    DeepSweep's notebook (nearest 0.25 down/up-scale before the second median, 180/224 for the third, shrink
    scalimit 1.1), ``"paper"`` = the paper text (second median at 0.75, third at 0.8, shrink to [0.8, 1]).
    Being configured by these constants (not by its list of steps), it is reachable from ``--set`` as
    ``intensive__median_ksize=3``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
        >>> GYMIntensive()(x, rng=0).shape
        (4, 32, 32, 3)
        >>> GYMIntensive(median_ksize=3).get_config()["median_ksize"]
        3
    """

    def __init__(
        self,
        *,
        variant: str = "code",
        distort_limit: float = 0.05,
        gamma_compress: float = 0.6,
        multiplier: float = 1.53,
        gamma_extend: float = 2.6,
        downscale: float | None = None,
        second_scale: float | None = None,
        resize_factor: float | None = None,
        median_ksize: int = 5,
        scalimit: float | None = None,
        pad_value: float = 0.0,
        sat_shift: float = 0.16,
        sat_scale: float = 0.16,
        sat_rotate: float = 4.0,
    ) -> None:
        v = _variant(variant)
        self.variant, self.distort_limit, self.gamma_compress = variant, distort_limit, gamma_compress
        self.multiplier, self.gamma_extend, self.downscale, self.second_scale = multiplier, gamma_extend, downscale, second_scale
        self.resize_factor, self.median_ksize, self.scalimit, self.pad_value = resize_factor, median_ksize, scalimit, pad_value
        self.sat_shift, self.sat_scale, self.sat_rotate = sat_shift, sat_scale, sat_rotate
        down, second = _pick(downscale, v["downscale"]), _pick(second_scale, v["second_scale"])
        steps: list[Transform] = [
            OpticalDistortion(distort_limit),
            Gamma(gamma_compress),
            MedianBlur(median_ksize),
            Multiply(multiplier),
            Gamma(gamma_extend),
        ]
        if second is not None:
            steps.append(ScaledMedian(second, median_ksize))
        else:
            if down is not None:
                steps.append(Downscale(down))
            steps.append(MedianBlur(median_ksize))
        steps += [
            ScaledMedian(_pick(resize_factor, v["resize_factor"]), median_ksize),
            RandomShrinkPad(_pick(scalimit, v["scalimit"]), pad_value),
            SAT(sat_shift, sat_scale, sat_rotate),
        ]
        super().__init__(steps)


class GYMLightweight(Compose):
    """GYM's lightweight preprocessing (inference): median -> median in a downscaled space -> fastSAT.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).random((4, 55, 47, 3), dtype=np.float32)
        >>> GYMLightweight()(x, rng=0).shape
        (4, 55, 47, 3)
    """

    def __init__(
        self,
        *,
        variant: str = "code",
        median_ksize: int = 5,
        resize_factor: float | None = None,
        sat_shift: float = 0.16,
        sat_scale: float = 0.16,
        sat_rotate: float = 4.0,
    ) -> None:
        v = _variant(variant)
        self.variant, self.median_ksize, self.resize_factor = variant, median_ksize, resize_factor
        self.sat_shift, self.sat_scale, self.sat_rotate = sat_shift, sat_scale, sat_rotate
        super().__init__(
            [
                MedianBlur(median_ksize),
                ScaledMedian(_pick(resize_factor, v["resize_factor"]), median_ksize),
                SAT(sat_shift, sat_scale, sat_rotate),
            ]
        )


#: Function-style names of the two pipelines (the names the benchmarks and earlier code use).
gym_intensive = GYMIntensive
gym_lightweight = GYMLightweight
