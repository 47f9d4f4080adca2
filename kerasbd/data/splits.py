"""Seeded splits of a dataset into the defender's small clean validation set and a held-out test set."""

from __future__ import annotations

import numpy as np

from kerasbd.errors import DataError
from kerasbd.validation import check_dataset

__all__ = ["split_defender", "subsample"]

Dataset = tuple[np.ndarray, np.ndarray]


def _proportional_counts(class_sizes: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class counts summing to ``n_val``, proportional to class sizes (largest remainder, random tie-break)."""
    exact = class_sizes * n_val / class_sizes.sum()  # multiply first: exact for whole-number shares
    counts = np.floor(exact).astype(np.int64)
    remainder = n_val - int(counts.sum())
    if remainder:
        frac = exact - counts + rng.random(len(exact)) * 1e-9  # random tie-break among equal remainders
        frac[counts >= class_sizes] = -1.0
        counts[np.argsort(-frac)[:remainder]] += 1
    return counts


def split_defender(
    x: np.ndarray,
    y: np.ndarray,
    n_val: int | None = None,
    val_fraction: float | None = None,
    *,
    seed: int = 0,
    stratify: bool = True,
) -> tuple[Dataset, Dataset]:
    """Split ``(x, y)`` into the defender's clean validation set and the held-out test set.

    Exactly one of ``n_val`` / ``val_fraction`` is given (default ``val_fraction=0.1``). With ``stratify`` each
    class contributes in proportion to its size (largest-remainder rounding), so a small validation set still
    covers the classes. The split depends only on ``seed``; order within each part is random.

    Returns:
        ``((x_val, y_val), (x_test, y_test))``.

    Example:
        >>> import numpy as np
        >>> x = np.zeros((100, 4, 4, 1), "float32"); y = np.arange(100) % 10
        >>> (xv, yv), (xt, yt) = split_defender(x, y, n_val=20, seed=1)
        >>> len(yv), len(yt), np.bincount(yv).tolist()
        (20, 80, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    x, y = check_dataset(x, y, name="split")
    n = len(y)
    if n_val is not None and val_fraction is not None:
        raise DataError("give n_val or val_fraction, not both.")
    if n_val is None:
        frac = 0.1 if val_fraction is None else float(val_fraction)
        if not 0.0 < frac < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}.")
        n_val = int(round(frac * n))
    n_val = int(n_val)
    if not 0 < n_val < n:
        raise DataError(f"n_val must be between 1 and {n - 1} for {n} samples, got {n_val}.")
    rng = np.random.default_rng(seed)
    if stratify:
        _, inverse = np.unique(y, return_inverse=True)
        counts = _proportional_counts(np.bincount(inverse).astype(np.float64), n_val, rng)
        val_idx = np.concatenate([rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(counts)])
    else:
        val_idx = rng.permutation(n)[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[val_idx] = True
    val_idx = rng.permutation(np.flatnonzero(is_val))
    test_idx = rng.permutation(np.flatnonzero(~is_val))
    return (x[val_idx], y[val_idx]), (x[test_idx], y[test_idx])


def subsample(data: tuple[np.ndarray, np.ndarray], size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of ``size`` examples (all when ``size`` is None or larger than the set)."""
    x, y = data
    if size is None or size >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=int(size), replace=False))
    return x[idx], y[idx]
