"""Batched OpenCV kernels shared by the transforms, each bit-identical to the per-image OpenCV call.

Medians. OpenCV's SIMD 5x5 median runs far faster over long rows than over 32-pixel ones: over a wide mosaic it is
5-10x faster per pixel than over the same pixels as separate images (OpenCV 5.0, one thread). ``median_blur``
therefore lays a chunk of images out as a *mosaic*, a grid of tiles each padded by ksize//2 replicated pixels (the
border ``cv2.medianBlur`` synthesises), calls ``cv2.medianBlur`` once and crops the tiles back. The copies in and
out of the mosaic also do the ``(x * 255).astype(uint8)`` / ``/ 255`` conversions around it, so they cost nothing
extra.

Resizes. Bilinear float resizes are separable in OpenCV: each output row is a horizontal pass over two source rows,
then a vertical blend of the two, with coefficients that depend only on the source and destination lengths along
that axis. ``resize`` therefore runs the horizontal pass over the whole batch as one tall image (its vertical
coefficients are then exactly (1, 0)) and the vertical pass over the batch laid side by side as one wide image
(horizontal coefficients (1, 0)): two OpenCV calls per batch (float32 only; OpenCV's uint8 path rounds between the
passes). Both shapes are views of one *row-interleaved* layout, (H, N, W, C) in memory (:func:`row_interleaved`):
read as (H*N, W) it is the tall image, as (H, N*W) the wide one, so the resize needs no transpose, and the median
copies its result straight into that layout. Batches in this layout are ordinary (N, H, W, C) views. Other
interpolations stay per image, writing into one output array (``dst=``, no per-image allocation);
nearest-neighbour resizes are index gathers with OpenCV's ``floor(dst * src / dst_size)`` rule.

Warps. ``warp_affine`` and ``remap`` stay per image, and no exact batched form exists in OpenCV 5.0: its
``warpAffine`` no longer uses the fixed-point coordinates (AB_BITS = 10, 1/32-pixel bilinear tables) of OpenCV <=
4.10, which a single fixed-point ``remap`` over a mosaic could have reproduced. It computes float32 source
coordinates per pixel (``fma(M0, x, y * M1 + M2)``) and interpolates with the float32 fractions of those
coordinates; a mosaic ``remap`` needs the coordinates shifted by each tile's offset, and float32 cannot hold
``coordinate + offset`` exactly (fraction bits are lost once the offset is large), so the result differs from the
per-image call. The per-image call is compute-bound (about 20 us for a 55x47x3 image, 1 us of it call overhead).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

_MEDIAN_WIDTH = 8192  # mosaic width (px) for medianBlur: wide rows keep OpenCV's SIMD loop busy


def _cv_image(a: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing channel axis of 1; give it a 2-D image then."""
    return a[..., 0] if a.shape[-1] == 1 else a


def _per_row(n: int, tile_w: int, width: int) -> int:
    """Tiles per mosaic row: about ``width`` px wide, bands balanced so the last one is not mostly empty."""
    bands = -(-n // max(1, width // tile_w))
    return -(-n // bands)


def _fill_border(t: np.ndarray, pad: int, h: int, w: int, border: str, value: float) -> None:
    """Fill the ``pad``-wide frame of tiles t[..., h + 2 pad, w + 2 pad, C] around their interiors in place."""
    if border == "constant":
        t[..., :pad, :, :] = value
        t[..., pad + h :, :, :] = value
        t[..., :, :pad, :] = value
        t[..., :, pad + w :, :] = value
        return
    # pixels as single void items: copying a column of C-byte pixels is then one strided loop, not C-long ones
    px = t.view(np.dtype((np.void, t.shape[-1] * t.itemsize)))[..., 0]
    step = 0 if border == "replicate" else 1  # reflect-101 mirrors about the edge pixel
    for i in range(1, pad + 1):
        px[..., pad - i, pad : pad + w] = px[..., pad + i * step, pad : pad + w]
        px[..., pad + h - 1 + i, pad : pad + w] = px[..., pad + h - 1 - i * step, pad : pad + w]
    for i in range(1, pad + 1):
        px[..., :, pad - i] = px[..., :, pad + i * step]
        px[..., :, pad + w - 1 + i] = px[..., :, pad + w - 1 - i * step]


def to_mosaic(
    u: np.ndarray, pad: int, per_row: int, border: str, value: float = 0.0, dtype: npt.DTypeLike | None = None, scale: float | None = None
) -> np.ndarray:
    """Lay an (N, H, W, C) batch out as a (bands * (H + 2 pad), per_row * (W + 2 pad), C) mosaic of padded tiles.

    ``border`` (``"replicate"``, ``"reflect_101"`` or ``"constant"`` with ``value``) synthesises each tile's
    frame like OpenCV's border mode of that name. Unused tiles of the last band are zero. ``dtype`` (default
    ``u.dtype``) is the mosaic's; a float batch copied into a uint8 mosaic is truncated, as ``astype`` does.
    ``scale`` multiplies the batch (in float32) in the same copy: ``scale=255`` with a uint8 mosaic is the
    ``(x * 255).astype(uint8)`` quantisation. ``u`` may be any strided view (e.g. a row-interleaved batch).
    """
    n, h, w, c = u.shape
    th, tw = h + 2 * pad, w + 2 * pad
    full, rem = divmod(n, per_row)
    bands = full + (rem > 0)
    grid = np.empty((bands, th, per_row, tw, c), u.dtype if dtype is None else dtype)
    tiles = grid.transpose(0, 2, 1, 3, 4)  # (bands, per_row, th, tw, C) view
    parts = [(tiles[:full, :, pad : pad + h, pad : pad + w], u[: full * per_row].reshape(full, per_row, h, w, c))]
    if rem:
        parts.append((tiles[full, :rem, pad : pad + h, pad : pad + w], u[full * per_row :]))
        tiles[full, rem:, pad : pad + h, pad : pad + w] = 0
    for dst, src in parts:
        if scale is None:
            dst[...] = src
        else:  # one pass: float32 product cast straight into the mosaic (truncation, like astype)
            np.multiply(src, np.float32(scale), out=dst, dtype=np.float32, casting="unsafe")
    _fill_border(tiles, pad, h, w, border, value)
    return grid.reshape(bands * th, per_row * tw, c)


def row_interleaved(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """An uninitialised (N, H, W, ...) batch stored as (H, N, W, ...): row y of every image side by side.

    In this layout the batch *is* a tall (H*N, W) image (rows in (y, image) order) and a wide (H, N*W) image at
    once, the two shapes the separable resize needs, so consecutive steps pass it on without transposing.
    """
    n, h = shape[:2]
    return np.empty((h, n, *shape[2:]), dtype).swapaxes(0, 1)


def from_mosaic(
    m: np.ndarray,
    n: int,
    per_row: int,
    tile: tuple[int, int],
    crop: tuple[int, int],
    pad: int = 0,
    divisor: float | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The (N, *crop, C) images at offset ``pad`` inside the (th, tw) tiles of a mosaic (inverse of to_mosaic);
    with ``divisor`` they come back as float32 divided by it, in the same single copy. The result is written into
    ``out`` when given (any (N, *crop, C) view), else into a new :func:`row_interleaved` batch."""
    th, tw = tile
    c = m.shape[2] if m.ndim == 3 else 1
    tiles = m.reshape(-1, th, per_row, tw, c)[:, pad : pad + crop[0], :, pad : pad + crop[1]].transpose(0, 2, 1, 3, 4)
    tiles = tiles.reshape(-1, *crop, c)[:n]
    if out is None:
        out = row_interleaved((n, *crop, c), m.dtype if divisor is None else np.float32)
    if divisor is None:
        out[...] = tiles
    else:
        np.divide(tiles, np.float32(divisor), out=out, dtype=np.float32)
    return out


def median_blur(u: np.ndarray, ksize: int, *, quantize: bool = False, dequantize: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """``cv2.medianBlur(img, ksize)`` for every image of an (N, H, W, C) batch (uint8, or float32 for ksize<=5),
    bit-identical to the per-image call. The result is a :func:`row_interleaved` batch, or ``out`` when given.

    ``quantize`` takes a float batch in [0, 1] to uint8 by ``(x * 255).astype(uint8)`` and ``dequantize`` returns
    ``result / 255`` as float32 (the albumentations wrapper's round trip), each fused into a mosaic copy.
    """
    n, h, w, c = u.shape
    r = ksize // 2
    per_row = _per_row(n, w + 2 * r, _MEDIAN_WIDTH)
    mosaic = to_mosaic(u, r, per_row, "replicate", dtype=np.uint8 if quantize else None, scale=255.0 if quantize else None)
    res = cv2.medianBlur(_cv_image(mosaic), ksize)
    return from_mosaic(res, n, per_row, (h + 2 * r, w + 2 * r), (h, w), pad=r, divisor=255.0 if dequantize else None, out=out)


def resize(x: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation)`` for every image of an (N, H, W, C) batch; size = (h, w).

    The float bilinear path returns a :func:`row_interleaved` batch (a non-contiguous view) and runs without
    any copy when given one.
    """
    n, h, w, c = x.shape
    th, tw = int(size[0]), int(size[1])
    if (th, tw) == (h, w):
        return x.copy()
    if interpolation == cv2.INTER_NEAREST:
        return nearest_resize(x, (th, tw))
    if interpolation == cv2.INTER_LINEAR and x.dtype == np.float32:
        return _separable_linear(x, th, tw)
    out = np.empty((n, th, tw, c), x.dtype)
    for i in range(n):  # writing into dst saves an allocation and a copy per image
        cv2.resize(_cv_image(x[i]), (tw, th), dst=_cv_image(out[i]), interpolation=interpolation)
    return out


def _separable_linear(x: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Float32 bilinear resize of a batch in two OpenCV calls (see the module docstring); exact per image."""
    n, h, w, c = x.shape
    if tw != w and not x.swapaxes(0, 1).flags.c_contiguous:
        # batch-major input is a tall (N*H, W) image too: resize it horizontally first, interleave the narrower result
        x = np.ascontiguousarray(x).reshape(n * h, w, c)
        x = cv2.resize(_cv_image(x), (tw, n * h)).reshape(n, h, tw, c)
    rows = np.ascontiguousarray(x.swapaxes(0, 1))  # (H, N, W, C): no copy for a row-interleaved batch
    if rows.shape[2] != tw:  # horizontal pass over the tall (H*N, W) image: every row's vertical coefficients are (1, 0)
        rows = cv2.resize(_cv_image(rows.reshape(h * n, w, c)), (tw, h * n)).reshape(h, n, tw, c)
    if th != h:  # vertical pass over the wide (H, N*W') image: a row holds row y of every image
        rows = cv2.resize(_cv_image(rows.reshape(h, n * tw, c)), (n * tw, th)).reshape(th, n, tw, c)
    return rows.swapaxes(0, 1)


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
    """``cv2.remap(img[i], map_x[i], map_y[i], INTER_LINEAR, border)`` for every image of an (N, H, W, C) batch.

    ``border`` is ``"constant"`` (value ``border_value``) or ``"reflect_101"``; maps are (N, H', W') float32
    source coordinates.
    """
    if border not in _BORDERS:
        raise ValueError(f"unknown border {border!r}")
    n, c = img.shape[0], img.shape[3]
    oh, ow = map_x.shape[1:]
    out = np.empty((n, oh, ow, c), img.dtype)
    value = (border_value,) * 4
    for i in range(n):
        cv2.remap(_cv_image(img[i]), map_x[i], map_y[i], cv2.INTER_LINEAR, dst=_cv_image(out[i]), borderMode=_BORDERS[border], borderValue=value)
    return out


def warp_affine(img: np.ndarray, m: np.ndarray, border_value: float = 0.0) -> np.ndarray:
    """``cv2.warpAffine(img[i], m[i], (W, H), INTER_LINEAR, BORDER_CONSTANT)`` for every image of a batch; m is
    (N, 2, 3). Per image: OpenCV derives the coordinates on the fly, faster than any precomputed map."""
    n, h, w, _ = img.shape
    out = np.empty_like(img)
    value = (border_value,) * 4
    for i in range(n):
        cv2.warpAffine(
            _cv_image(img[i]), m[i], (w, h), dst=_cv_image(out[i]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=value
        )
    return out


_BORDERS = {"constant": cv2.BORDER_CONSTANT, "reflect_101": cv2.BORDER_REFLECT_101}


def place(canvas: np.ndarray, images: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Write images[i] into canvas[i] at (top[i], left[i]).

    One basic-slice copy per image: at a chunk's size (64 images, up to 25+ distinct offsets) that beats grouping
    images by offset, whose fancy-indexed copies cost more per call than they save."""
    h, w = images.shape[1:3]
    for i, (t, lft) in enumerate(zip(top.tolist(), left.tolist(), strict=True)):
        canvas[i, t : t + h, lft : lft + w] = images[i]
    return canvas
