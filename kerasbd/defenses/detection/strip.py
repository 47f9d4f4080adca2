"""STRIP: flag triggered inputs by the low entropy of their predictions under superimposition.

Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks" (ACSAC 2019); constants from the
original notebook (garrisongys/STRIP): each input is superimposed with **N = 100** clean images by a plain sum
(``cv2.addWeighted(x, 1, overlay, 1, 0)``: α = β = 1, **no clipping**, values up to 2), the model predicts all
N blends, and the input's entropy is ``−Σ_n Σ_c p log2 p / N``. A trigger dominates whatever it is blended
with, so triggered inputs keep predicting the target class and have low entropy. The threshold is the
``frr`` quantile of a **normal distribution fitted** to clean entropies (``scipy.stats.norm.fit`` then
``norm.ppf``), FRR 1 % by default; ``threshold_rule="quantile"`` uses the empirical quantile instead.

Data split: :meth:`STRIP.fit` draws the overlay pool from the clean data (``overlay_fraction`` of it, at
random with the fit's seed) and calibrates the threshold on the *rest*, so no calibration input is blended
with itself — as the original keeps its overlay images (``x_train[40000:49999]``) apart from its calibration
inputs (``x_train[26000:28000]``). Pass ``overlays=`` to :meth:`fit` to supply the pool explicitly; then all
of ``clean_x`` calibrates.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import stats

from kerasbd.defenses.base import InputDetector
from kerasbd.defenses.detection.common import SoftmaxPredictor, far_frr_report
from kerasbd.errors import ConfigError
from kerasbd.validation import check_images

__all__ = ["STRIP"]


class STRIP(InputDetector):
    """STRIP input detector; ``score`` is the negative entropy (higher = more suspicious).

    Args:
        n_overlays: clean images blended with each input (original: 100).
        overlay_fraction: share of ``fit``'s clean data used as the overlay pool; the rest calibrates.
        threshold_rule: ``"normal"`` (the original: normal fit + ppf) or ``"quantile"`` (empirical).
        alpha, beta: blend weights of the input and the overlay (original: 1, 1).
        clip: clip blends to [0, 1] (original: False).
        batch_size: images per forward pass; the N blends of ``batch_size // n_overlays`` inputs go together.

    Example:
        >>> import keras, numpy as np
        >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
        >>> strip = STRIP(n_overlays=10).fit(net, x, fpr=0.05, seed=0)
        >>> strip.detect(x[:4]).shape
        (4,)
    """

    name: ClassVar[str] = "strip"

    def __init__(
        self,
        n_overlays: int = 100,
        overlay_fraction: float = 0.5,
        threshold_rule: str = "normal",
        alpha: float = 1.0,
        beta: float = 1.0,
        clip: bool = False,
        batch_size: int = 4000,
    ) -> None:
        if int(n_overlays) < 2:
            raise ConfigError(f"n_overlays must be at least 2 (entropy of one prediction says nothing), got {n_overlays}.")
        if not 0.0 < overlay_fraction < 1.0:
            raise ConfigError(f"overlay_fraction must be in (0, 1): part of the clean data overlays, the rest calibrates; got {overlay_fraction}.")
        if threshold_rule not in ("normal", "quantile"):
            raise ConfigError(f"threshold_rule must be 'normal' (original STRIP) or 'quantile', got {threshold_rule!r}.")
        self.n_overlays, self.overlay_fraction, self.threshold_rule = int(n_overlays), float(overlay_fraction), threshold_rule
        self.alpha, self.beta, self.clip, self.batch_size = float(alpha), float(beta), bool(clip), int(batch_size)

    # -- fitting -------------------------------------------------------------------------------------------
    def fit(self, model: Any, clean_x: np.ndarray, *, fpr: float = 0.01, seed: int = 0, overlays: np.ndarray | None = None) -> STRIP:
        """Split ``clean_x`` into overlay pool and calibration inputs, then set the threshold at FRR ``fpr``."""
        if not 0.0 < fpr < 1.0:
            raise ConfigError(f"fpr (the false-rejection rate on clean inputs) must be in (0, 1), got {fpr}.")
        clean_x = check_images(clean_x, name="clean inputs", min_images=2)
        if overlays is None:
            order = np.random.default_rng(seed).permutation(len(clean_x))
            n_pool = int(round(len(clean_x) * self.overlay_fraction))
            if not 0 < n_pool < len(clean_x):
                raise ConfigError(f"{len(clean_x)} clean images cannot be split into overlays and calibration inputs; pass more.")
            self.overlays_, clean_x = clean_x[order[:n_pool]], clean_x[order[n_pool:]]
        else:
            self.overlays_ = check_images(overlays, name="overlay images", image_shape=clean_x.shape[1:])
        return super().fit(model, clean_x, fpr=fpr, seed=seed)

    def _fit(self, clean_x: np.ndarray, rng: np.random.Generator) -> None:
        shape = tuple(self.model_.input_shape[1:])
        if self.overlays_.shape[1:] != shape:
            raise ConfigError(f"overlay images have shape {self.overlays_.shape[1:]}, the model expects {shape}.")
        self._predict = SoftmaxPredictor(self.model_, self.batch_size)

    def _threshold(self, clean_scores: np.ndarray, fpr: float) -> float:
        if self.threshold_rule == "quantile":
            return super()._threshold(clean_scores, fpr)
        # The original flags entropy < norm.ppf(frr, μ, σ) with μ, σ the maximum-likelihood normal fit;
        # in score units (−entropy) that is score > −ppf.
        mu, sigma = stats.norm.fit(-np.asarray(clean_scores, np.float64))
        if sigma == 0:  # every clean input has the same entropy: flag anything below it
            return float(-mu)
        return float(-stats.norm.ppf(fpr, mu, sigma))

    @property
    def entropy_threshold_(self) -> float:
        """The threshold in entropy units: inputs with entropy below it are flagged."""
        return -self.threshold_

    # -- scoring -------------------------------------------------------------------------------------------
    def overlay_indices(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """The (n, n_overlays) overlay-pool indices used for n inputs; ``rng=None`` uses the fit's seed."""
        gen = np.random.default_rng(self.seed_ if rng is None else rng)
        return gen.integers(0, len(self.overlays_), size=(n, self.n_overlays))

    def entropy(self, x: np.ndarray, rng: np.random.Generator | int | None = None, *, indices: np.ndarray | None = None) -> np.ndarray:
        """Normalised prediction entropy (bits) of each input over its N superimpositions.

        Overlays are drawn uniformly with replacement, fresh for every input, as in the original; with
        ``rng=None`` the draw restarts from the fit's seed each call, so scoring is deterministic.
        """
        if not hasattr(self, "overlays_"):
            raise ConfigError("STRIP is not fitted; call fit(model, clean_x) first.")
        x = check_images(x, name="inputs", image_shape=self.overlays_.shape[1:])
        idx = self.overlay_indices(len(x), rng) if indices is None else np.asarray(indices)
        if idx.shape != (len(x), self.n_overlays):
            raise ConfigError(f"indices must have shape {(len(x), self.n_overlays)}, got {idx.shape}.")
        per_chunk = max(1, self.batch_size // self.n_overlays)
        return np.concatenate([self._chunk_entropy(x[i : i + per_chunk], idx[i : i + per_chunk]) for i in range(0, len(x), per_chunk)])

    def _chunk_entropy(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        from kerasbd.transforms import superimpose

        overlays = self.overlays_[idx.ravel()]  # (len(x) * N, H, W, C), input-major
        blends = superimpose(np.repeat(x, self.n_overlays, axis=0), overlays, alpha=self.alpha, beta=self.beta)
        if self.clip:
            np.clip(blends, 0.0, 1.0, out=blends)
        p = self._predict(blends).astype(np.float64).reshape(len(x), self.n_overlays, -1)
        plogp = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)  # the original's nansum: 0·log 0 = 0
        return -plogp.sum(axis=(1, 2)) / self.n_overlays

    def score(self, x: np.ndarray) -> np.ndarray:
        """Negative entropy: triggered inputs (low entropy) score high."""
        return -self.entropy(x)

    def far_frr(self, clean_x: np.ndarray, triggered_x: np.ndarray, *, clean_acc: float | None = None, asr: float | None = None) -> dict[str, Any]:
        """FAR (triggered accepted), FRR (clean rejected) and NNoculation's ASR/CA translation; see
        :func:`kerasbd.defenses.detection.common.far_frr_report`."""
        return far_frr_report(self, clean_x, triggered_x, clean_acc=clean_acc, asr=asr)
