"""Input checks shared by every public entry point.

kerasbd's canonical image batch is a float32 NumPy array of shape (N, H, W, C), channels last, RGB,
values in [0, 1]. Models loaded or wrapped by :mod:`kerasbd.models` map such batches to logits, so data,
triggers, transforms, metrics and defenses all agree on one convention. These helpers turn anything a user
may pass into that form or raise a :class:`~kerasbd.errors.DataError` that names the problem.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasbd.errors import DataError

__all__ = ["check_images", "check_labels", "check_dataset"]


def check_images(
    x: np.ndarray,
    *,
    name: str = "images",
    image_shape: Sequence[int] | None = None,
    min_images: int = 1,
    allow_uint8: bool = True,
) -> np.ndarray:
    """Validate a batch of images and return it as canonical float32 (N, H, W, C) in [0, 1].

    uint8 batches are converted by dividing by 255 (a documented conversion, never a guess on floats).
    Float batches must already lie in [0, 1]; a float batch whose maximum exceeds 1 is refused because it is
    almost always raw 0-255 pixels, and scaling it silently would hide a preprocessing mistake.

    Args:
        x: array-like batch.
        name: what to call the batch in error messages.
        image_shape: expected (H, W, C); checked when given.
        min_images: smallest accepted batch size.
        allow_uint8: accept uint8 input (converted by /255).

    Returns:
        float32 array, a copy only when conversion was needed.

    Example:
        >>> import numpy as np
        >>> check_images(np.zeros((2, 28, 28, 1), np.uint8)).dtype
        dtype('float32')
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise DataError(f"{name}: cannot convert to an array ({exc}).") from exc
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{name}: dtype {x.dtype} is not numeric; pass uint8 0-255 or float 0-1 pixels.")
    if x.ndim == 3 and image_shape is not None and len(image_shape) == 3 and image_shape[-1] == 1 and x.shape[1:] == tuple(image_shape[:2]):
        x = x[..., None]  # (N, H, W) grayscale for a one-channel model: add the channel axis
    if x.ndim != 4:
        raise DataError(
            f"{name}: expected a batch of shape (N, H, W, C), got shape {tuple(x.shape)}. "
            "Add a batch axis for a single image (x[None]) or a channel axis for grayscale (x[..., None])."
        )
    if x.shape[0] < min_images:
        raise DataError(f"{name}: the batch is empty; at least {min_images} image(s) are needed.")
    channels = x.shape[-1]
    if channels not in (1, 3, 4):
        if x.shape[1] in (1, 3):
            raise DataError(
                f"{name}: shape {tuple(x.shape)} looks channels-first (N, C, H, W); kerasbd expects channels-last. "
                "Transpose with x.transpose(0, 2, 3, 1)."
            )
        raise DataError(f"{name}: last axis has {channels} channels; expected 1 (grayscale) or 3 (RGB).")
    if image_shape is not None:
        expected = tuple(int(s) for s in image_shape)
        if tuple(x.shape[1:]) != expected:
            hint = ""
            if x.shape[1] == expected[-1] and tuple(x.shape[2:]) == expected[:2]:
                hint = " The batch looks channels-first; transpose with x.transpose(0, 2, 3, 1)."
            raise DataError(f"{name}: image shape {tuple(x.shape[1:])} does not match the model's {expected}.{hint}")
    if x.dtype == np.uint8:
        if not allow_uint8:
            raise DataError(f"{name}: uint8 is not accepted here; pass float32 in [0, 1].")
        return np.divide(x, np.float32(255.0), dtype=np.float32)  # one pass, same float32 division
    if x.dtype == bool:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{name}: integer dtype {x.dtype} is ambiguous; pass uint8 (0-255) or float in [0, 1].")
    xf = x.astype(np.float32, copy=False)
    lo, hi = float(xf.min()), float(xf.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN propagates into min/max and inf is an extreme: two passes
        bad = int(np.size(xf) - np.count_nonzero(np.isfinite(xf)))
        raise DataError(f"{name}: {bad} value(s) are NaN or infinite; clean the data before using it.")
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        hint = " It looks like raw 0-255 pixels: divide by 255." if hi > 1.5 and lo >= 0 else ""
        raise DataError(f"{name}: float values span [{lo:.4g}, {hi:.4g}], outside the expected [0, 1].{hint}")
    return np.clip(xf, 0.0, 1.0) if (lo < 0 or hi > 1) else xf


def check_labels(y: np.ndarray, *, num_classes: int | None = None, n: int | None = None, name: str = "labels") -> np.ndarray:
    """Validate integer class labels (1-D, or one-hot 2-D) and return them as an int64 vector.

    2-D labels must be one-hot rows (one 1, the rest 0): anything else (soft labels, all-zero rows, a table of
    features) is refused rather than argmaxed into a wrong class.

    Example:
        >>> check_labels([0, 2, 1], num_classes=3).tolist()
        [0, 2, 1]
        >>> check_labels([[0, 1, 0], [1, 0, 0]]).tolist()
        [1, 0]
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{name}: dtype {y.dtype} is not numeric.")
        onehot = np.isin(y, (0, 1)).all(axis=1) & (y.sum(axis=1) == 1)
        if not onehot.all():
            row = int(np.flatnonzero(~onehot)[0])
            raise DataError(f"{name}: 2-D labels must be one-hot rows, but row {row} is {y[row][:10].tolist()}"
                            f"{' ...' if y.shape[1] > 10 else ''}; pass class indices (a vector) or one-hot rows.")
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: expected a vector of class indices, got shape {tuple(y.shape)}.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise DataError(f"{name}: contains NaN or infinite values.")
        if not np.all(y == np.round(y)):
            raise DataError(f"{name}: contains non-integer values; pass class indices.")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: dtype {y.dtype} is not numeric.")
    y = y.astype(np.int64)
    if n is not None and y.shape[0] != n:
        raise DataError(f"{name}: {y.shape[0]} labels for {n} images.")
    if y.size and y.min() < 0:
        raise DataError(f"{name}: negative label {int(y.min())}; labels must be in [0, num_classes).")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise DataError(
            f"{name}: label {int(y.max())} is out of range for a model with {num_classes} classes "
            f"(valid: 0..{num_classes - 1})."
        )
    return y


def check_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None = None,
    image_shape: Sequence[int] | None = None,
    name: str = "data",
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (images, labels) pair together; returns canonical images and int64 labels."""
    xc = check_images(x, name=f"{name} images", image_shape=image_shape)
    yc = check_labels(y, num_classes=num_classes, n=xc.shape[0], name=f"{name} labels")
    return xc, yc
