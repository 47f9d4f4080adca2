"""Batched OpenCV kernels shared by the transforms.

OpenCV processes one image per call, and at 32x32 the per-call overhead dominates. These helpers make one call
cover many images while giving the same pixels as a per-image loop:

* median filters and remaps run on a *strip*: the batch stacked vertically, each tile padded with the rows the
  per-image call would have seen beyond its top/bottom edge (left/right edges are the strip's own edges, so
  OpenCV's border handling stays correct there);
* resizes stack the batch on the channel axis (OpenCV accepts up to 128 channels (OpenCV 5)), which is exact because
  resizing never mixes channels;
* nearest-neighbour resizes are plain index gathers with OpenCV's ``floor(dst * src / dst_size)`` rule.

OpenCV's remap stores coordinates as int16 internally, so strips are cut into chunks below 32k rows.
"""

from __future__ import annotations

import cv2
import numpy as np

_MAX_ROWS = 30000  # remap keeps integer coordinates in int16
_MAX_CHANNELS = 128  # OpenCV 5 images hold at most 128 channels (OpenCV 4: 512)


def _chunks(n: int, rows_per_image: int):
    step = max(1, _MAX_ROWS // max(1, rows_per_image))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _cv_image(a: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of 1; give it a 2-D image then."""
    return a[..., 0] if a.shape[-1] == 1 else a


def median_blur(u: np.ndarray, ksize: int) -> np.ndarray:
    """``cv2.medianBlur(img, ksize)`` for every image of an (N, H, W, C) batch (uint8, or float32 for ksize<=5)."""
    n, h, w, c = u.shape
    r = ksize // 2
    out = np.empty_like(u)
    tile = h + 2 * r
    for sl in _chunks(n, tile):
        part = u[sl]
        buf = np.empty((part.shape[0], tile, w, c), u.dtype)
        buf[:, r : r + h] = part
        buf[:, :r] = part[:, :1]  # medianBlur replicates the border
        buf[:, r + h :] = part[:, -1:]
        res = cv2.medianBlur(_cv_image(buf.reshape(-1, w, c)), ksize)
        out[sl] = res.reshape(part.shape[0], tile, w, c)[:, r : r + h]
    return out


def resize(x: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation)`` for every image of an (N, H, W, C) batch; size = (h, w)."""
    n, h, w, c = x.shape
    th, tw = int(size[0]), int(size[1])
    if (th, tw) == (h, w):
        return x.copy()
    if interpolation == cv2.INTER_NEAREST:
        return nearest_resize(x, (th, tw))
    out = np.empty((n, th, tw, c), x.dtype)
    step = max(1, _MAX_CHANNELS // c)
    for s in range(0, n, step):
        part = x[s : s + step]
        stacked = part.transpose(1, 2, 0, 3).reshape(h, w, -1)  # a contiguous copy: channels = images x C
        res = cv2.resize(stacked, (tw, th), interpolation=interpolation)
        out[s : s + step] = res.reshape(th, tw, len(part), c).transpose(2, 0, 1, 3)
    return out


def nearest_index(src: int, dst: int, ratio: float | None = None) -> np.ndarray:
    """Source index of every destination index under OpenCV's INTER_NEAREST: ``floor(i * ratio)``, where ratio is
    src/dst for an explicit size and 1/fx when OpenCV was given a scale factor ``fx`` instead."""
    ratio = src / dst if ratio is None else ratio
    return np.minimum(np.floor(np.arange(dst) * ratio).astype(np.intp), src - 1)


def nearest_resize(x: np.ndarray, size: tuple[int, int], scale: float | None = None) -> np.ndarray:
    """INTER_NEAREST resize of an (N, H, W, ...) batch as an index gather (``scale``: OpenCV's fx = fy)."""
    ratio = None if scale is None else 1.0 / scale
    iy = nearest_index(x.shape[1], int(size[0]), ratio)
    ix = nearest_index(x.shape[2], int(size[1]), ratio)
    return x[:, iy][:, :, ix]


def remap(
    img: np.ndarray,
    map_x: np.ndarray,
    map_y: np.ndarray,
    *,
    border: str,
    border_value: float = 0.0,
) -> np.ndarray:
    """Per-image ``cv2.remap(img[i], map_x[i], map_y[i], INTER_LINEAR, border)`` on an (N, H, W, C) batch.

    ``border`` is ``"constant"`` (value ``border_value``) or ``"reflect_101"``. Maps are (N, H', W') float32 source
    coordinates. The strip gets one shared padding row between tiles for a constant border and ``pad`` reflected
    rows per side for reflect-101; y coordinates are clamped into that padding, which only matters for samples
    falling beyond it (they read the border value / the furthest reflected row, as a per-image remap would for
    the displacements these transforms produce).
    """
    n, h, w, c = img.shape
    oh, ow = map_x.shape[1:]
    out = np.empty((n, oh, ow, c), img.dtype)
    if border == "constant":
        pad, stride, first = 1, h + 1, 1
        lo, hi = -1.0, float(h)
        cv_border = cv2.BORDER_CONSTANT
    elif border == "reflect_101":
        pad = int(min(h - 1, max(1.0, np.ceil(max(-float(map_y.min()), float(map_y.max()) - (h - 1), 0.0)) + 1)))
        stride, first = h + 2 * pad, pad
        lo, hi = -float(pad), float(h - 1 + pad)
        cv_border = cv2.BORDER_REFLECT_101
    else:
        raise ValueError(f"unknown border {border!r}")
    for sl in _chunks(n, max(stride, oh)):
        part = img[sl]
        m = part.shape[0]
        if border == "constant":
            buf = np.full((m * stride + 1, w, c), border_value, img.dtype)
            buf[1:].reshape(m, stride, w, c)[:, :h] = part
        else:
            buf = np.pad(part, ((0, 0), (pad, pad), (0, 0), (0, 0)), mode="reflect").reshape(m * stride, w, c)
        offs = (np.arange(m, dtype=np.float32) * stride + first)[:, None, None]
        my = (np.clip(map_y[sl], lo, hi) + offs).reshape(m * oh, ow)
        mx = map_x[sl].reshape(m * oh, ow)
        res = cv2.remap(
            _cv_image(buf), mx, my, cv2.INTER_LINEAR, borderMode=cv_border, borderValue=(border_value,) * 4
        )
        out[sl] = res.reshape(m, oh, ow, c)
    return out


def place(canvas: np.ndarray, images: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Write images[i] into canvas[i] at (top[i], left[i]); one slice assignment per distinct offset."""
    h, w = images.shape[1:3]
    offsets = top.astype(np.int64) * (canvas.shape[2] + 1) + left
    for key in np.unique(offsets):
        idx = np.flatnonzero(offsets == key)
        t, l = int(top[idx[0]]), int(left[idx[0]])
        canvas[idx, t : t + h, l : l + w] = images[idx]
    return canvas
