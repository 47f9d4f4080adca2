"""Metrics for input detectors: scores are higher for more suspicious inputs; triggered inputs are positives."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from kerasbd.errors import ConfigError

__all__ = ["roc_auc", "roc_curve", "threshold_at_fpr", "tpr_at_fpr", "far_frr"]


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """Smallest threshold whose false-positive rate on ``clean_scores`` is at most ``fpr`` (flag: score > t).

    This is the empirical (1 − fpr) quantile, the rule of Feature Squeezing's original code
    (``sorted(scores)[ceil(N·(1−fpr)) − 1]``).

    Example:
        >>> threshold_at_fpr(np.arange(100.0), 0.05)
        94.0
    """
    if not 0.0 <= fpr < 1.0:
        raise ConfigError(f"fpr must be in [0, 1), got {fpr}.")
    s = np.sort(np.asarray(clean_scores, dtype=np.float64))
    if s.size == 0:
        raise ConfigError("cannot set a threshold from zero clean scores.")
    k = int(np.ceil(s.size * (1.0 - fpr))) - 1
    return float(s[min(max(k, 0), s.size - 1)])


def _scores(scores_clean: np.ndarray, scores_triggered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for name, s in (("clean", scores_clean), ("triggered", scores_triggered)):
        a = np.asarray(s, dtype=np.float64).reshape(-1)
        if a.size == 0:
            raise ConfigError(f"no {name} scores given.")
        if not np.isfinite(a).all():
            raise ConfigError(f"{name} scores contain NaN or infinite values.")
        out.append(a)
    return out[0], out[1]


def _labelled(scores_clean: np.ndarray, scores_triggered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, t = _scores(scores_clean, scores_triggered)
    return np.concatenate([np.zeros(c.size), np.ones(t.size)]), np.concatenate([c, t])


def roc_auc(scores_clean: np.ndarray, scores_triggered: np.ndarray) -> float:
    """Area under the ROC curve (triggered = positive); 0.5 is chance, 1.0 perfect separation.

    Example:
        >>> roc_auc([0.1, 0.2, 0.3], [0.25, 0.9])
        0.8333333333333334
    """
    labels, scores = _labelled(scores_clean, scores_triggered)
    return float(skm.roc_auc_score(labels, scores))


def roc_curve(scores_clean: np.ndarray, scores_triggered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` as :func:`sklearn.metrics.roc_curve` (flag: score ≥ threshold)."""
    labels, scores = _labelled(scores_clean, scores_triggered)
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    return fpr, tpr, thresholds


def tpr_at_fpr(scores_clean: np.ndarray, scores_triggered: np.ndarray, fpr: float = 0.05) -> float:
    """Detection rate of triggered inputs at the threshold giving false-positive rate ≤ ``fpr`` on clean scores.

    The threshold is :func:`threshold_at_fpr` (flag: score > threshold), the rule every
    kerasbd detector uses.

    Example:
        >>> tpr_at_fpr(np.arange(100.0), [50.0, 99.5, 120.0], fpr=0.01)
        0.6666666666666666
    """
    c, t = _scores(scores_clean, scores_triggered)
    return float((t > threshold_at_fpr(c, fpr)).mean())


def far_frr(scores_clean: np.ndarray, scores_triggered: np.ndarray, *, threshold: float | None = None, frr: float | None = None) -> dict[str, float]:
    """STRIP's false acceptance / false rejection rates at a threshold (flag: score > threshold).

    FRR = fraction of clean inputs rejected (flagged); FAR = fraction of triggered inputs accepted (not flagged).
    Give ``threshold`` directly, or ``frr`` to choose the threshold at that clean rejection rate.

    Example:
        >>> far_frr([0.0, 1.0, 2.0, 3.0], [2.5, 5.0], threshold=2.0)
        {'threshold': 2.0, 'far': 0.0, 'frr': 0.25}
    """
    if (threshold is None) == (frr is None):
        raise ConfigError("give exactly one of threshold= or frr=.")
    c, t = _scores(scores_clean, scores_triggered)
    thr = float(threshold) if threshold is not None else threshold_at_fpr(c, float(frr))  # type: ignore[arg-type]
    return {"threshold": thr, "far": float((t <= thr).mean()), "frr": float((c > thr).mean())}
