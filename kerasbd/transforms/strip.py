"""STRIP superimposition (Gao et al.; garrisongys/STRIP): ``cv2.addWeighted(background, 1, overlay, 1, 0)`` on
float [0, 1] images, i.e. a plain sum **without clipping**.

The result lies in [0, 2], outside kerasbd's canonical range, so these are functions rather than
:class:`~kerasbd.transforms.Transform` objects (whose outputs are canonical). The STRIP detector must feed the
raw sums straight to the model's ``predict`` (not through :func:`kerasbd.validation.check_images`, which would
refuse values above 1), exactly as the original fed them to its CNN; the model must accept such inputs.
"""

from __future__ import annotations

import numpy as np

from kerasbd.errors import ConfigError, DataError
from kerasbd.transforms.base import RngLike, as_generator
from kerasbd.validation import check_images

__all__ = ["superimpose", "strip_superimpose"]


def superimpose(background: np.ndarray, overlay: np.ndarray, alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0) -> np.ndarray:
    """``alpha * background + beta * overlay + gamma`` on canonical batches (broadcast), unclipped float32.

    Example:
        >>> import numpy as np
        >>> float(superimpose(np.full((1, 2, 2, 1), .8, np.float32), np.full((1, 2, 2, 1), .7, np.float32)).max())
        1.5
    """
    b = check_images(background, name="background")
    o = check_images(overlay, name="overlay")
    if b.shape[1:] != o.shape[1:] or (len(b) != len(o) and 1 not in (len(b), len(o))):
        raise DataError(f"background {b.shape} and overlay {o.shape} must have equal images and batch sizes (or 1).")
    return (np.float32(alpha) * b + np.float32(beta) * o + np.float32(gamma)).astype(np.float32)


def strip_superimpose(x: np.ndarray, pool: np.ndarray, n: int = 100, rng: RngLike = None) -> np.ndarray:
    """For every input, ``n`` overlays drawn uniformly (with replacement) from ``pool``, summed with the input.

    Returns float32 of shape (len(x), n, H, W, C) with values in [0, 2]; chunk ``x`` to bound memory.

    Example:
        >>> import numpy as np
        >>> strip_superimpose(np.zeros((2, 8, 8, 3), np.float32), np.ones((5, 8, 8, 3), np.float32), n=4, rng=0).shape
        (2, 4, 8, 8, 3)
    """
    xc = check_images(x, name="STRIP inputs")
    pc = check_images(pool, name="STRIP overlay pool")
    if xc.shape[1:] != pc.shape[1:]:
        raise DataError(f"inputs {xc.shape[1:]} and overlay pool {pc.shape[1:]} have different image shapes.")
    if n < 1:
        raise ConfigError(f"n (overlays per input) must be positive, got {n}.")
    idx = as_generator(rng).integers(0, len(pc), size=(len(xc), int(n)))
    return xc[:, None] + pc[idx]
