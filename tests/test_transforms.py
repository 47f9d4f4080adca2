"""Faithfulness, seeding, size, error and Keras-integration tests for kerasbd.transforms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import kerasbd.transforms as T
from kerasbd.errors import ConfigError, DataError
from kerasbd.transforms import _ops
from kerasbd.transforms.sat import affine_matrices

SIZES = [(28, 28, 1), (32, 32, 3), (55, 47, 3), (224, 224, 3)]


def _batch(shape, n=4, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _u8(shape, n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


ALL = [
    T.gym_intensive(),
    T.gym_intensive(variant="paper"),
    T.gym_lightweight(),
    T.OpticalDistortion(),
    T.OpticalDistortion.pincushion(),
    T.SAT(),
    T.ShrinkPad(4),
    T.Flip(),
    T.BitDepth(5),
    T.MedianSmoothing(2),
    T.MedianSmoothing(3),
    T.NNoculationNoise(0.3),
    T.NNoculationNoise(0.3, mode="intended"),
    T.RandomShrinkPad(1.25),
    T.Downscale(0.25),
]


# --- GYM components against albumentations 0.4.x semantics ---------------------------------------------------
def test_gamma_lut_values():
    lut = T.Gamma(0.6).lut
    assert lut[0] == 0 and lut[255] == 255
    assert lut[128] == 168 and lut[1] == 9  # 168.63 and 9.18: truncation, not rounding
    assert T.Gamma(2.6).lut[128] == 42  # 42.49
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert np.array_equal(T.Gamma(0.6)(x), lut.reshape(1, 16, 16, 1) / np.float32(255))


def test_multiply_lut_float32_truncation():
    lut = T.Multiply(1.53).lut
    assert lut[10] == 15 and lut[166] == 253 and lut[167] == 255 and lut[255] == 255  # 15.3 -> 15; clipped at 255
    assert lut[100] == 153  # float32(100) * float32(1.53) rounds up to exactly 153.0


def test_gym_luts_match_albumentations():
    A = pytest.importorskip("albumentations")
    u = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    ours = lambda t: t(u[None])[0] * 255  # noqa: E731
    for gamma in (0.6, 2.6):
        ref = A.RandomGamma(gamma_limit=(gamma * 100, gamma * 100), p=1)(image=u)["image"]
        np.testing.assert_array_equal(np.round(ours(T.Gamma(gamma))), ref)
    ref = A.MultiplicativeNoise(multiplier=(1.53, 1.53), p=1)(image=u)["image"]
    np.testing.assert_array_equal(np.round(ours(T.Multiply(1.53))), ref)


@pytest.mark.parametrize("k", [0.05, -0.05, -0.5])
def test_distortion_map_matches_opencv(k):
    h, w = 55, 47
    cam = np.array([[w, 0, w / 2], [0, h, h / 2], [0, 0, 1]], np.float32)
    mx, my = cv2.initUndistortRectifyMap(cam, np.array([k, k, 0, 0, 0], np.float32), None, None, (w, h), cv2.CV_32FC1)
    ax, ay = T.distortion_maps(np.array([k]), h, w)
    np.testing.assert_allclose(ax[0], mx, atol=1e-4)
    np.testing.assert_allclose(ay[0], my, atol=1e-4)
    # known pixels: the corner moves by k*(r2 + r2^2) of its offset from the optical axis
    x0, y0 = (0 - (w - 1) / 2) / w, (0 - (h - 1) / 2) / h
    r2 = x0 * x0 + y0 * y0
    assert ax[0, 0, 0] == pytest.approx(w * x0 * (1 + k * r2 + k * r2 * r2) + w / 2, abs=1e-4)


def test_optical_distortion_matches_albumentations_functional():
    A = pytest.importorskip("albumentations")
    from albumentations.augmentations.geometric import functional as fg

    u = _u8((55, 47, 3), n=1)[0]
    k = 0.04
    mx, my = fg.get_camera_matrix_distortion_maps((55, 47), k)
    ref = cv2.remap(u, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)  # 0.4.x border
    t = T.OpticalDistortion(distort_limit=(k, k))
    ours = np.round(t(u[None], rng=0)[0] * 255).astype(int)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert A.OpticalDistortion().border_mode == cv2.BORDER_CONSTANT  # 2.x default differs from 0.4.x: we pin reflect-101


def test_pincushion_has_zero_free_interior_and_constant_border():
    x = np.ones((1, 32, 32, 3), np.float32)
    y = T.OpticalDistortion.pincushion()(x)
    assert y.min() == 1.0  # k = -0.5 pulls samples inward: nothing reads outside
    t = T.OpticalDistortion.pincushion(0.5)  # barrel the other way: corners read the zero border
    assert t(x)[0, 0, 0, 0] == 0.0


def test_median_blur_matches_per_image_opencv_and_albumentations():
    for shape in [(28, 28, 1), (55, 47, 3)]:
        u = _u8(shape)
        ref = np.stack([cv2.medianBlur(i, 5).reshape(shape) for i in u])
        np.testing.assert_array_equal(_ops.median_blur(u, 5), ref)
    A = pytest.importorskip("albumentations")
    u = _u8((32, 32, 3), n=1)[0]
    ref = A.MedianBlur(blur_limit=(5, 5), p=1)(image=u)["image"]
    np.testing.assert_array_equal(np.round(T.MedianBlur(5)(u[None])[0] * 255), ref)


def test_downscale_matches_opencv_nearest():
    for shape in [(32, 32, 3), (55, 47, 3)]:
        u = _u8(shape, n=2)
        h, w = shape[:2]
        ref = [cv2.resize(cv2.resize(i, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_NEAREST), (w, h), interpolation=cv2.INTER_NEAREST) for i in u]
        np.testing.assert_array_equal(np.round(T.Downscale(0.25)(u) * 255), np.stack(ref))


@pytest.mark.parametrize("ksize", [3, 5, 7])
def test_mosaic_median_is_bit_identical_across_bands(monkeypatch, ksize):
    monkeypatch.setattr(_ops, "_MEDIAN_WIDTH", 100)  # a few tiles per mosaic row: several bands, a partial last one
    for shape in [(5, 5, 1), (28, 28, 1), (32, 32, 3), (9, 40, 3)]:
        u = _u8(shape, n=7, seed=ksize)
        ref = np.stack([cv2.medianBlur(i, ksize).reshape(shape) for i in u])
        np.testing.assert_array_equal(_ops.median_blur(u, ksize), ref)
    if ksize <= 5:  # OpenCV's float median stops at 5x5
        x = _batch((11, 13, 3), n=5)
        np.testing.assert_array_equal(_ops.median_blur(x, ksize), np.stack([cv2.medianBlur(i, ksize) for i in x]))


def test_resize_matches_opencv():
    for shape, size in [((55, 47, 3), (44, 38)), ((28, 28, 1), (23, 23))]:
        x = _batch(shape, n=3)
        ref = np.stack([cv2.resize(i, size[::-1]).reshape(*size, shape[2]) for i in x])
        np.testing.assert_array_equal(T.Resize(size=size)(x), ref)  # the same OpenCV call per image: bit-identical
    assert T.Resize(factor=180 / 224).output_shape((224, 224, 3)) == (180, 180, 3)


def test_sat_matches_warp_affine_and_respects_limits():
    h, w = 32, 32
    u = _u8((h, w, 3), n=8)
    rng = np.random.default_rng(3)
    params = T.SAT().sample(8, rng)
    assert np.all(np.abs(params["angle"]) <= 4) and np.all(np.abs(params["scale"] - 1) <= 0.16)
    assert np.all(np.abs(params["dx"]) <= 0.16) and np.all(np.abs(params["dy"]) <= 0.16)
    m = affine_matrices(**params, height=h, width=w)
    ref_m = cv2.getRotationMatrix2D((w / 2, h / 2), float(params["angle"][0]), float(params["scale"][0]))
    np.testing.assert_allclose(m[0, :, :2], ref_m[:, :2], atol=1e-12)
    ref = np.stack([cv2.warpAffine(u[i], m[i], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) for i in range(8)])
    np.testing.assert_array_equal(np.round(T.SAT()(u, rng=3) * 255), ref)  # same draws, same per-image call
    # zero limits: identity on uint8-exact pixels
    exact = u.astype(np.float32) / 255
    np.testing.assert_array_equal(T.SAT(0, 0, 0)(exact, rng=0), exact)


def test_gym_lightweight_matches_per_image_opencv_loop():
    """The batched pipeline against the original's calls image by image (SAT parameters drawn the same way)."""
    for shape in [(32, 32, 3), (55, 47, 3)]:
        x = _batch(shape, n=40, seed=5)
        h, w = shape[:2]
        small = (round(w * 180 / 224), round(h * 180 / 224))
        m = affine_matrices(**T.SAT().sample(len(x), np.random.default_rng(9)), height=h, width=w)
        ref = []
        for img, mi in zip(x, m):
            u = cv2.medianBlur((img * 255).astype(np.uint8), 5)
            u = cv2.medianBlur((cv2.resize(u / np.float32(255), small) * 255).astype(np.uint8), 5)
            u = (cv2.resize(u / np.float32(255), (w, h)) * 255).astype(np.uint8)
            ref.append(cv2.warpAffine(u, mi, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
        np.testing.assert_array_equal(np.round(T.gym_lightweight()(x, rng=9) * 255), np.stack(ref))


def test_gym_lightweight_matches_loop_across_chunks(monkeypatch):
    """Several chunks and a partial one (CHUNK shrunk to keep the test fast): each chunk draws SAT's parameters
    from its own stream spawned from the seed, so the output is the same for any number of worker threads."""
    from kerasbd.transforms import base

    monkeypatch.setattr(base, "CHUNK", 16)
    x = _batch((55, 47, 3), n=37, seed=2)
    h, w = 55, 47
    streams = np.random.default_rng(4).spawn(3)
    m = np.concatenate([affine_matrices(**T.SAT().sample(len(x[s : s + 16]), g), height=h, width=w) for s, g in zip(range(0, len(x), 16), streams)])
    ref = []
    for img, mi in zip(x, m):
        u = cv2.medianBlur((img * 255).astype(np.uint8), 5)
        u = cv2.medianBlur((cv2.resize(u / np.float32(255), (38, 44)) * 255).astype(np.uint8), 5)
        u = (cv2.resize(u / np.float32(255), (w, h)) * 255).astype(np.uint8)
        ref.append(cv2.warpAffine(u, mi, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) / np.float32(255))
    for workers in (1, 2, 3):
        np.testing.assert_array_equal(T.gym_lightweight()(x, rng=4, workers=workers), np.stack(ref))
    with pytest.raises(ConfigError, match="workers"):
        T.gym_lightweight()(x, rng=4, workers=0)
    buf = np.full(x.shape, np.nan, np.float32)
    assert T.gym_lightweight()(x, rng=4, out=buf) is buf
    np.testing.assert_array_equal(buf, np.stack(ref))
    with pytest.raises(ConfigError, match="out must be a float32 array"):
        T.gym_lightweight()(x, rng=4, out=np.zeros(x.shape, np.float64))


def test_row_interleaved_batches_resize_without_changing_values():
    x = _batch((28, 20, 3), n=5)
    inter = _ops.row_interleaved(x.shape, np.float32)
    inter[...] = x
    assert inter.shape == x.shape and not inter.flags.c_contiguous
    ref = np.stack([cv2.resize(i, (13, 17)) for i in x])
    np.testing.assert_array_equal(_ops.resize(inter, (17, 13)), ref)
    np.testing.assert_array_equal(_ops.resize(x, (17, 13)), ref)
    np.testing.assert_array_equal(_ops.resize(inter, (28, 13)), np.stack([cv2.resize(i, (13, 28)) for i in x]))  # one axis


def test_quantisation_truncates_like_astype():
    x = np.array([0.0, 1 / 255, 0.5, 0.99999994, 1.0, np.nextafter(np.float32(2 / 255), 0)], np.float32).reshape(1, 1, 6, 1)
    ref = (x * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(T.base.to_uint8(x), ref)
    tiles = _ops.to_mosaic(x, 1, 1, "replicate", dtype=np.uint8, scale=255.0)
    np.testing.assert_array_equal(tiles[1:-1, 1:-1], ref[0])


@pytest.mark.parametrize("border", ["replicate", "reflect_101", "constant"])
def test_mosaic_borders_match_copy_make_border(border):
    u = _u8((6, 5, 3), n=5)
    mode = {"replicate": cv2.BORDER_REPLICATE, "reflect_101": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}[border]
    m = _ops.to_mosaic(u, 2, 2, border, value=7)
    grid = m.reshape(3, 10, 2, 9, 3).transpose(0, 2, 1, 3, 4).reshape(6, 10, 9, 3)[:5]
    ref = np.stack([cv2.copyMakeBorder(i, 2, 2, 2, 2, mode, value=(7, 7, 7)) for i in u])
    np.testing.assert_array_equal(grid, ref)


def test_nested_compose_and_mixed_steps_match_stepwise():
    x = _batch((32, 32, 3), n=6)
    inner = T.Compose([T.MedianBlur(5), T.ScaledMedian(0.8)])
    nested = T.Compose([T.Gamma(0.6), inner, T.SAT()])
    a = T.SAT()(inner(T.Gamma(0.6)(x)), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(nested(x, rng=1), a)


def test_random_shrink_pad_bounds():
    x = np.ones((200, 40, 40, 1), np.float32)
    y = T.RandomShrinkPad(scalimit=1.25)(x, rng=0)
    frac = y.mean(axis=(1, 2, 3))
    assert frac.min() >= (1 / 1.25) ** 2 - 0.05 and frac.max() <= 1.0
    assert frac.std() > 0.01  # random sizes


def test_gym_variants_differ_and_expose_constants():
    code, paper = T.gym_intensive(), T.gym_intensive(variant="paper")
    names = [type(t).__name__ for t in code]
    assert names == ["OpticalDistortion", "Gamma", "MedianBlur", "Multiply", "Gamma", "Downscale", "MedianBlur",
                     "ScaledMedian", "RandomShrinkPad", "SAT"]
    assert [type(t).__name__ for t in paper][5] == "ScaledMedian" and paper[5].factor == 0.75
    assert code[-2].scalimit == 1.1 and paper[-2].scalimit == 1.25
    assert T.gym_intensive(scalimit=1.3)[-2].scalimit == 1.3
    assert [type(t).__name__ for t in T.gym_lightweight()] == ["MedianBlur", "ScaledMedian", "SAT"]
    with pytest.raises(ConfigError):
        T.gym_intensive(variant="cifar")


def test_compose_keeps_uint8_steps_exact():
    x = _batch((32, 32, 3))
    fused = T.Compose([T.Gamma(0.6), T.MedianBlur(5), T.Multiply(1.53)])(x)
    step = T.Multiply(1.53)(T.MedianBlur(5)(T.Gamma(0.6)(x)))
    np.testing.assert_array_equal(fused, step)


# --- feature squeezing ---------------------------------------------------------------------------------------
def test_bit_depth_values():
    x = np.array([0.0, 0.1, 0.49, 0.51, 1.0], np.float32).reshape(1, 1, 5, 1)
    assert T.BitDepth(1)(x).ravel().tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(T.BitDepth(3)(x).ravel(), np.rint(x.ravel() * 7) / 7)


def test_median_smoothing_hand_computed_2x2_upper_median_top_left_window():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32).reshape(1, 3, 3, 1) / 10
    y = T.MedianSmoothing(2)(x)[0, :, :, 0] * 10
    # window of (i, j) = rows i-1..i, cols j-1..j with reflected (repeated) edges; rank 2 of 4
    expected = [[1, 2, 3], [4, 4, 5], [7, 7, 8]]
    np.testing.assert_allclose(y, expected, atol=1e-6)
    y3 = T.MedianSmoothing(3)(x)[0, :, :, 0] * 10
    np.testing.assert_allclose(y3, [[2, 3, 3], [4, 5, 6], [7, 7, 8]], atol=1e-6)


@pytest.mark.parametrize("size", [2, 3, (2, 3), 5])
def test_median_smoothing_matches_scipy(size):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _batch((11, 9, 3), n=3)
    kh, kw = (size, size) if isinstance(size, int) else size
    ref = ndimage.median_filter(x, size=(1, kh, kw, 1), mode="reflect")
    np.testing.assert_array_equal(T.MedianSmoothing(size)(x), ref)


def test_non_local_means_bgr_quirk():
    x = _u8((32, 32, 3), n=2).astype(np.float32) / 255
    u = np.rint(x * 255).astype(np.uint8)
    ref = np.stack([cv2.fastNlMeansDenoisingColored(i, None, 2, 2, 3, 13) for i in u]) / np.float32(255)
    np.testing.assert_allclose(T.NonLocalMeans()(x), ref, atol=1e-6)
    assert not np.array_equal(T.NonLocalMeans(bgr_quirk=False)(x), ref)


# --- NNoculation noise ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["original-rowwise", "intended"])
def test_nnoculation_noise_fraction_and_values(mode):
    p = 0.3
    t = T.NNoculationNoise(p, mode=mode)
    x = np.full((300, 55, 47, 3), 0.001, np.float32)  # not a multiple of 1/255: replaced values are recognisable
    y = t(x, rng=0)
    replaced = y != x
    assert abs(replaced.mean() - p) < 0.03
    vals = y[replaced] * 255
    np.testing.assert_allclose(vals, np.round(vals), atol=1e-3)  # rounded grey levels
    assert vals.min() >= 0 and vals.max() <= 255
    assert abs(vals.mean() - 128) < 1.5 and abs(vals.std() - 51.2) < 1.5


def test_nnoculation_rowwise_quirk_structure():
    h, w, c = 55, 47, 3
    rows = T.NNoculationNoise(0.5).mask((400, h, w, c), np.random.default_rng(0))
    blocks = T.NNoculationNoise(0.5, mode="intended").mask((400, h, w, c), np.random.default_rng(0))
    # row-wise: columns 0..11 share the first low-res cell (floor(j*4/47) == 0), rows are independent
    assert np.all(rows[:, :, :12] == rows[:, :, :1])
    adjacent_rows = (rows[:, :-1] == rows[:, 1:]).mean()
    assert abs(adjacent_rows - 0.5) < 0.03
    # intended: 4x4 blocks, so adjacent rows almost always agree
    assert (blocks[:, :-1] == blocks[:, 1:]).mean() > 0.9
    # channel pattern of the 4 -> 3 nearest resize: channel j takes low-res column floor(j*4/3) = 0, 1, 2
    assert _ops.nearest_index(4, 3).tolist() == [0, 1, 2]


# --- ShrinkPad, Flip, STRIP ----------------------------------------------------------------------------------
def test_shrinkpad_geometry():
    x = np.ones((400, 32, 32, 3), np.float32)
    y = T.ShrinkPad(4)(x, rng=0)
    assert np.allclose(y.sum(axis=(1, 2, 3)), 28 * 28 * 3)
    tops = np.argmax(y[..., 0].max(axis=2) > 0, axis=1)
    lefts = np.argmax(y[..., 0].max(axis=1) > 0, axis=1)
    assert set(tops.tolist()) == set(range(5)) and set(lefts.tolist()) == set(range(5))
    z = T.ShrinkPad(4)(_batch((32, 32, 3), n=1), rng=1)[0]
    assert (z == 0).all(axis=-1).sum() >= 32 * 32 - 28 * 28


def test_flip_and_superimpose():
    x = _batch((8, 6, 3), n=2)
    np.testing.assert_array_equal(T.Flip()(x), x[:, :, ::-1])
    s = T.superimpose(np.full((1, 4, 4, 3), 0.9, np.float32), np.full((1, 4, 4, 3), 0.8, np.float32))
    assert s.max() == pytest.approx(1.7)  # no clipping
    pool = _batch((8, 6, 3), n=5, seed=1)
    a = T.strip_superimpose(x, pool, n=7, rng=0)
    assert a.shape == (2, 7, 8, 6, 3) and a.max() > 1
    np.testing.assert_array_equal(a, T.strip_superimpose(x, pool, n=7, rng=0))
    with pytest.raises(DataError):
        T.strip_superimpose(x, _batch((6, 8, 3)), n=2)


# --- contract: seeding, sizes, config, errors -----------------------------------------------------------------
@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_seeded_and_sizes(t):
    for shape in SIZES:
        n = 2 if shape[0] > 100 else 4
        x = _batch(shape, n=n)
        y = t(x, rng=7)
        assert y.shape == x.shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
        np.testing.assert_array_equal(y, t(x, rng=np.random.default_rng(7)))
    if not isinstance(t, (T.Flip, T.BitDepth, T.MedianSmoothing, T.Downscale)) and t is not ALL[4]:  # ALL[4]: fixed k
        x = _batch((32, 32, 3))
        assert not np.array_equal(t(x, rng=1), t(x, rng=2))


@pytest.mark.parametrize("t", ALL + [T.NonLocalMeans(), T.Resize(factor=0.5), T.ScaledMedian(0.8)], ids=lambda t: type(t).__name__)
def test_config_round_trip(t):
    import json

    spec = json.loads(json.dumps(T.serialize(t)))
    back = T.deserialize(spec)
    assert back.get_config() == t.get_config()
    x = _batch((32, 32, 3), n=2)
    np.testing.assert_array_equal(back(x, rng=3), t(x, rng=3))


def test_bad_input_errors():
    x = _batch((32, 32, 3))
    with pytest.raises(DataError, match="outside"):
        T.SAT()(x * 255)
    with pytest.raises(DataError, match="ambiguous"):
        T.SAT()(x.astype(np.int32))
    with pytest.raises(DataError, match="RGB"):
        T.NonLocalMeans()(_batch((28, 28, 1)))
    with pytest.raises(DataError, match="empty"):
        T.gym_lightweight()(np.zeros((0, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match="smaller than"):
        T.MedianBlur(5)(_batch((4, 4, 3)))
    with pytest.raises(DataError, match="smaller than"):
        T.gym_lightweight()(_batch((5, 5, 3)))
    with pytest.raises(ConfigError):
        T.MedianBlur(4)
    with pytest.raises(ConfigError):
        T.deserialize({"class_name": "NoSuchTransform", "config": {}})
    u8 = (x * 255).astype(np.uint8)  # documented conversion: uint8 / 255
    np.testing.assert_allclose(T.Flip()(u8), u8[:, :, ::-1] / np.float32(255))


def test_callable_as_fit_transform():
    from kerasbd.training.fit import TransformedBatches

    x, y = _batch((28, 28, 1), n=8), np.arange(8) % 2
    batches = TransformedBatches(x, y, batch_size=4, transform=T.ShrinkPad(2), seed=0)
    xb, yb = batches[0]
    assert np.asarray(xb).shape == (4, 28, 28, 1)


# --- Keras / tf.data -------------------------------------------------------------------------------------------
def test_with_preprocessing_saves_and_loads(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = _batch((32, 32, 3), n=5)
    model = T.with_preprocessing(base, T.Flip())
    np.testing.assert_allclose(model.predict(x, verbose=0), base.predict(x[:, :, ::-1], verbose=0), atol=1e-5)
    seeded = T.with_preprocessing(base, T.gym_lightweight(), seed=3)
    first = seeded.predict(x, verbose=0)
    path = tmp_path / "defended.keras"
    seeded.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), first, atol=1e-5)  # same seed -> same sequence
    layer = loaded.get_layer("preprocessing")
    assert isinstance(layer, T.TransformLayer) and layer.supports_jit is False
    assert [type(t).__name__ for t in layer.transform] == ["MedianBlur", "ScaledMedian", "SAT"]
    with pytest.raises(ConfigError):
        T.with_preprocessing(base, T.Resize(factor=0.5))


def test_tf_map_batched_and_single():
    import tensorflow as tf

    x = _batch((28, 28, 1), n=4)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(4)))
    single = [a.numpy() for a, _ in ds.map(T.tf_map(T.Flip()))]
    np.testing.assert_array_equal(np.stack(single), x[:, :, ::-1])
    batched = ds.batch(2).map(T.tf_map(T.ShrinkPad(2), seed=0))
    assert batched.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    out = np.concatenate([a.numpy() for a, _ in batched])
    again = np.concatenate([a.numpy() for a, _ in ds.batch(2).map(T.tf_map(T.ShrinkPad(2), seed=0))])
    np.testing.assert_array_equal(out, again)
