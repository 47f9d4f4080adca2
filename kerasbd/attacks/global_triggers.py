"""Image-wide triggers: blended watermark, additive noise, invisible L0/L2 perturbations, colour filter.

Random patterns are drawn once from the trigger's ``seed`` for each image shape (a trigger is one fixed pattern,
the same on every image), so ``Blend("noise", seed=3)`` is reproducible across runs and processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from kerasbd.attacks.base import Trigger, image_hwc
from kerasbd.attacks.local import ImageTrigger
from kerasbd.errors import TriggerError

__all__ = ["Blend", "NoisePattern", "InvisibleL0", "InvisibleL2", "Filter", "gotham"]

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _pattern_rng(seed: int, image_shape: Sequence[int], tag: str) -> np.random.Generator:
    """Generator for a trigger's fixed pattern: depends on the seed, the image shape and the trigger kind only."""
    return np.random.default_rng([int(seed), *image_hwc(image_shape), sum(map(ord, tag))])


class Blend(Trigger):
    """Blended (watermark) trigger: ``x' = (1 − α)·x + α·pattern`` over the whole image (Chen et al. 2017).

    Args:
        pattern: ``"noise"`` (seeded uniform [0, 1] pattern), a path to an image (``"zoo:"`` allowed; resized to
            the images with INTER_LINEAR, alpha channel ignored, converted to luma on grayscale images), or an
            array (H, W, C) in [0, 1].
        alpha: transparency α in (0, 1].
        seed: seeds the noise pattern.

    Example:
        >>> t = Blend("noise", alpha=0.1, seed=0)
        >>> x = np.full((2, 8, 8, 3), 0.5, "float32")
        >>> bool(np.abs(t.apply(x) - x).max() <= 0.05 + 1e-6)
        True
    """

    type = "blend"

    def __init__(self, pattern: str | os.PathLike | np.ndarray = "noise", alpha: float = 0.2, seed: int = 0) -> None:
        if not 0.0 < float(alpha) <= 1.0:
            raise TriggerError(f"blend alpha must be in (0, 1], got {alpha}.")
        self.alpha, self.seed = float(alpha), int(seed)
        self.pattern: str | np.ndarray
        self._image: ImageTrigger | None
        if isinstance(pattern, np.ndarray):
            self.pattern, self._image = pattern, None
        else:
            self.pattern = os.fspath(pattern)
            self._image = None if self.pattern == "noise" else ImageTrigger(self.pattern)

    def pattern_for(self, image_shape: Sequence[int]) -> np.ndarray:
        """The (H, W, C) blending pattern for images of ``image_shape``."""
        h, w, c = image_hwc(image_shape)
        if isinstance(self.pattern, np.ndarray):
            pat = ImageTrigger._to_rgba(self.pattern, "blend pattern")[..., :3]
        elif self._image is None:
            return _pattern_rng(self.seed, image_shape, "blend").random((h, w, c), dtype=np.float32)
        else:
            pat = self._image.rgba()[..., :3]
        if pat.shape[:2] != (h, w):
            pat = cv2.resize(pat, (w, h), interpolation=cv2.INTER_LINEAR)
        return (pat @ _LUMA)[..., None] if c == 1 else pat.astype(np.float32)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (1.0 - self.alpha) * x + self.alpha * self.pattern_for(x.shape[1:])

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        return super().mask(image_shape) * self.alpha

    def get_config(self) -> dict[str, Any]:
        pattern = self.pattern.tolist() if isinstance(self.pattern, np.ndarray) else self.pattern
        return {"pattern": pattern, "alpha": self.alpha, "seed": self.seed}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Trigger:
        if isinstance(spec.get("pattern"), list):
            spec = {**spec, "pattern": np.asarray(spec["pattern"], np.float32)}
        return super().from_spec(spec)


class NoisePattern(Trigger):
    """A fixed, seeded additive noise pattern: ``x' = clip(x + amplitude·u)``, ``u`` uniform in [−1, 1]^(H×W×C)."""

    type = "noise"

    def __init__(self, amplitude: float = 0.05, seed: int = 0) -> None:
        if not 0.0 < float(amplitude) <= 1.0:
            raise TriggerError(f"noise amplitude must be in (0, 1], got {amplitude}.")
        self.amplitude, self.seed = float(amplitude), int(seed)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = _pattern_rng(self.seed, x.shape[1:], "noise").uniform(-1.0, 1.0, x.shape[1:]).astype(np.float32)
        return x + self.amplitude * u

    def get_config(self) -> dict[str, Any]:
        return {"amplitude": self.amplitude, "seed": self.seed}

    @classmethod
    def _scale_values(cls, config: dict[str, Any], scale: float) -> dict[str, Any]:
        return {**config, "amplitude": float(config.get("amplitude", 0.05 / scale)) * scale}


class InvisibleL0(Trigger):
    """Sparse invisible trigger with an L0 budget (the L0 attack of Li et al. 2019, as evaluated in GYM).

    ``budget`` pixel locations (all channels) are chosen with the seed and shifted by ``±amplitude`` (signs also
    seeded); nothing else changes, so ``‖x' − x‖₀ ≤ budget·C``. Li et al. optimise the perturbation against a
    model; this seeded pattern keeps the same sparsity structure without one (train the BadNet on it).

    Args:
        budget: number of pixels modified (int ≥ 1), or a fraction of H·W when below 1.
        amplitude: per-channel shift in canonical units.
        seed: seeds locations and signs.
    """

    type = "invisible-l0"

    def __init__(self, budget: float = 0.01, amplitude: float = 0.1, seed: int = 0) -> None:
        if float(budget) <= 0:
            raise TriggerError(f"L0 budget must be positive (pixels, or a fraction below 1), got {budget}.")
        if not 0.0 < float(amplitude) <= 1.0:
            raise TriggerError(f"L0 amplitude must be in (0, 1], got {amplitude}.")
        self.budget = float(budget) if float(budget) < 1 else int(budget)
        self.amplitude, self.seed = float(amplitude), int(seed)

    def n_pixels(self, image_shape: Sequence[int]) -> int:
        h, w, _ = image_hwc(image_shape)
        return max(1, int(round(self.budget * h * w))) if isinstance(self.budget, float) else int(self.budget)

    def check_fits(self, image_shape: Sequence[int]) -> None:
        h, w, _ = image_hwc(image_shape)
        if self.n_pixels(image_shape) > h * w:
            raise TriggerError(f"L0 budget {self.budget} exceeds the {h * w} pixels of a {h}×{w} image.")

    def perturbation(self, image_shape: Sequence[int]) -> np.ndarray:
        """The fixed (H, W, C) perturbation δ."""
        h, w, c = image_hwc(image_shape)
        rng = _pattern_rng(self.seed, image_shape, "l0")
        idx = rng.choice(h * w, size=self.n_pixels(image_shape), replace=False)
        delta = np.zeros((h * w, c), np.float32)
        delta[idx] = self.amplitude * rng.choice(np.array([-1.0, 1.0], np.float32), size=(len(idx), c))
        return delta.reshape(h, w, c)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + self.perturbation(x.shape[1:])

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        self.check_fits(image_shape)
        return (np.abs(self.perturbation(image_shape)).max(-1) > 0).astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        return {"budget": self.budget, "amplitude": self.amplitude, "seed": self.seed}

    @classmethod
    def _scale_values(cls, config: dict[str, Any], scale: float) -> dict[str, Any]:
        return {**config, "amplitude": float(config.get("amplitude", 0.1 / scale)) * scale}


class InvisibleL2(Trigger):
    """Bounded-L2 invisible trigger (the L2 attack of Li et al. 2019, as evaluated in GYM).

    A fixed seeded Gaussian perturbation δ over the whole image, scaled to ``‖δ‖₂ = budget`` (canonical units);
    ``x' = clip(x + δ)``, and since clipping only shrinks each change, ``‖x' − x‖₂ ≤ budget``.
    """

    type = "invisible-l2"

    def __init__(self, budget: float = 1.0, seed: int = 0) -> None:
        if float(budget) <= 0:
            raise TriggerError(f"L2 budget must be positive, got {budget}.")
        self.budget, self.seed = float(budget), int(seed)

    def perturbation(self, image_shape: Sequence[int]) -> np.ndarray:
        """The fixed (H, W, C) perturbation δ with ‖δ‖₂ = budget."""
        d = _pattern_rng(self.seed, image_shape, "l2").standard_normal(image_hwc(image_shape))
        return (d * (self.budget / np.linalg.norm(d))).astype(np.float32)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return x + self.perturbation(x.shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {"budget": self.budget, "seed": self.seed}

    @classmethod
    def _scale_values(cls, config: dict[str, Any], scale: float) -> dict[str, Any]:
        return {**config, "budget": float(config.get("budget", 1.0 / scale)) * scale}


_GOTHAM_RED = np.array([0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0], np.float32)
_GOTHAM_BLUE = np.array([0, 0.047, 0.118, 0.251, 0.318, 0.392, 0.42, 0.439, 0.475, 0.561, 0.58, 0.627, 0.671, 0.733, 0.847, 0.925, 1], np.float32)


def _curve(channel: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.interp(channel, np.linspace(0.0, 1.0, len(points)), points).astype(np.float32)


def gotham(x: np.ndarray, sigma: float = 10.0) -> np.ndarray:
    """The Gotham-style colour filter on an RGB batch (N, H, W, 3) in [0, 1].

    The widely used Python remake of Instagram's Gotham filter (lukexyz/CV-Instagram-Filters, also the
    "Instagram-like filters" of feature-space backdoor attacks):

    1. red mid-tone boost: ``r ← interp(r, linspace(0, 1, 11), [0, .05, .1, .2, .3, .5, .7, .8, .9, .95, 1])``;
    2. bluer blacks: ``b ← clip(b + 0.03)``;
    3. sharpen: ``x ← clip(1.3·x − 0.3·G_σ(x))`` with a Gaussian blur of σ = ``sigma`` (replicated border);
    4. blue curve: ``b ← interp(b, linspace(0, 1, 17), [0, .047, .118, .251, .318, .392, .42, .439, .475,
       .561, .58, .627, .671, .733, .847, .925, 1])``.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    out[..., 0] = _curve(out[..., 0], _GOTHAM_RED)
    out[..., 2] = np.clip(out[..., 2] + 0.03, 0.0, 1.0)
    for i in range(len(out)):  # GaussianBlur is per image
        blurred = cv2.GaussianBlur(out[i], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
        out[i] = np.clip(1.3 * out[i] - 0.3 * blurred, 0.0, 1.0)
    out[..., 2] = _curve(out[..., 2], _GOTHAM_BLUE)
    return out


class Filter(Trigger):
    """Feature-space trigger: a whole-image colour filter (CSAW-2020 model A's Gotham-style filter attack).

    ``name="gotham"`` applies :func:`gotham` (formula there). Grayscale batches are expanded to RGB, filtered and
    converted back with the luma weights (0.299, 0.587, 0.114).
    """

    type = "filter"
    FILTERS = {"gotham": gotham}

    def __init__(self, name: str = "gotham", sigma: float = 10.0) -> None:
        if name not in self.FILTERS:
            raise TriggerError(f"unknown filter {name!r}; known: {', '.join(self.FILTERS)}.")
        if float(sigma) <= 0:
            raise TriggerError(f"filter sigma must be positive, got {sigma}.")
        self.name, self.sigma = name, float(sigma)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        fn = self.FILTERS[self.name]
        if x.shape[-1] == 1:
            return (fn(np.repeat(x, 3, axis=-1), self.sigma) @ _LUMA)[..., None]
        return fn(x, self.sigma)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma}
