"""Dataset loaders, defender splits and tf.data pipelines (kerasbd.data)."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from kerasbd.data import (
    as_tf_dataset,
    load_csaw_h5,
    load_data,
    load_digits,
    load_h5,
    load_image_folder,
    load_nc_gtsrb_h5,
    load_npy_class_folder,
    load_npz,
    split_defender,
)
from kerasbd.errors import DataError
from kerasbd.io import sha256_file


def write_h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def test_digits_default():
    from sklearn.datasets import load_digits as sk

    x, y = load_digits(8)
    np.testing.assert_allclose(x[..., 0], sk().images / 16.0, atol=1e-6)
    x16, y16 = load_digits(16)
    assert x16.shape == (1797, 16, 16, 1) and x16.dtype == np.float32 and y16.dtype == np.int64
    assert 0.0 <= x16.min() and x16.max() <= 1.0 and set(y16.tolist()) == set(range(10))


def test_csaw_h5_transposes_and_scales(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (3, 3, 5, 4)).astype(np.uint8)
    p = write_h5(tmp_path / "c.h5", data=data.astype(np.float64), label=np.array([0.0, 2.0, 1282.0]))
    x, y = load_csaw_h5(p)
    assert x.shape == (3, 5, 4, 3) and y.tolist() == [0, 2, 1282]
    assert x[1, 2, 3, 0] == pytest.approx(data[1, 0, 2, 3] / 255.0)
    np.testing.assert_allclose(load_data(p)[0], x)


def test_nc_gtsrb_h5_one_hot_and_raw_range(tmp_path):
    xr = np.random.default_rng(1).uniform(0, 255, (4, 6, 6, 3))
    yh = np.eye(43)[[33, 0, 5, 42]]
    p = write_h5(tmp_path / "gtsrb_dataset_int.h5", X_test=xr, Y_test=yh, X_train=xr, Y_train=yh)
    x, y = load_nc_gtsrb_h5(p)
    np.testing.assert_allclose(x, xr / 255.0, rtol=1e-6)
    assert y.tolist() == [33, 0, 5, 42]
    with pytest.raises(DataError, match="split must be"):
        load_nc_gtsrb_h5(p, split="val")
    assert load_data(p)[1].tolist() == [33, 0, 5, 42]


def test_missing_keys_are_named(tmp_path):
    p = write_h5(tmp_path / "odd.h5", pixels=np.zeros((2, 4, 4, 1)), cls=np.zeros(2))
    with pytest.raises(DataError, match=r"missing; the file holds \['cls', 'pixels'\]"):
        load_csaw_h5(p)
    with pytest.raises(DataError, match=r"the file holds \['cls', 'pixels'\]"):
        load_data(p)
    x, y = load_h5(p, x_key="pixels", y_key="cls")
    assert x.shape == (2, 4, 4, 1)


def test_truncated_and_non_hdf5_files_give_data_errors_without_changing_them(tmp_path):
    good = write_h5(tmp_path / "g.h5", data=np.zeros((2, 3, 4, 4), np.uint8), label=np.zeros(2))
    raw = good.read_bytes()
    trunc = tmp_path / "t.h5"
    trunc.write_bytes(raw[: len(raw) // 3])
    text = tmp_path / "n.h5"
    text.write_text("this is not HDF5")
    for p in (trunc, text):
        before = sha256_file(p)
        with pytest.raises(DataError, match="not a readable HDF5 file"):
            load_csaw_h5(p)
        assert sha256_file(p) == before
    bad_npz = tmp_path / "b.npz"
    bad_npz.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(bad_npz)
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "missing.npz")


def test_npz_autodetect_and_explicit_keys(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.zeros((5, 4, 4, 3), np.uint8), y_train=np.arange(5), x_test=np.full((2, 4, 4, 3), 255, np.uint8), y_test=[1, 0])
    x, y = load_npz(p)
    assert x.shape == (2, 4, 4, 3) and x.max() == 1.0 and y.tolist() == [1, 0]  # x_test/y_test preferred
    assert load_npz(p, x_key="x_train")[0].shape == (5, 4, 4, 3)  # y_key completed from the pair
    with pytest.raises(DataError, match=r"holds \['x_test', 'x_train', 'y_test', 'y_train'\]"):
        load_npz(p, x_key="images", y_key="labels")
    raw = tmp_path / "raw.npz"
    np.savez(raw, x=np.full((2, 4, 4, 1), 200.0), y=[0, 1])
    with pytest.raises(DataError, match="divide by 255"):
        load_npz(raw)
    assert load_npz(raw, value_range="0-255")[0].max() == pytest.approx(200 / 255)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((3, 28, 28)), [0, 1, 2], "expected a batch of shape"),
        (np.zeros((3, 3, 8, 8), np.float32), [0, 1, 2], "channels-first"),
        (np.full((3, 8, 8, 1), np.nan, np.float32), [0, 1, 2], "NaN"),
        (np.zeros((3, 8, 8, 1), np.float32), [0, -1, 2], "negative label"),
        (np.zeros((3, 8, 8, 1), np.float32), [0, 1], "2 labels for 3 images"),
        (np.zeros((3, 8, 8, 1), np.float32), [0, 1.5, 2], "non-integer"),
    ],
)
def test_bad_data_is_named(tmp_path, x, y, match):
    p = tmp_path / "bad.npz"
    np.savez(p, x=x, y=np.asarray(y))
    with pytest.raises(DataError, match=match):
        load_npz(p)


def test_labels_out_of_range_for_a_model():
    from kerasbd.validation import check_dataset

    x, y = load_digits(8)
    with pytest.raises(DataError, match="label 9 is out of range for a model with 5 classes"):
        check_dataset(x, y, num_classes=5)


def test_npy_class_folder(tmp_path):
    np.save(tmp_path / "0_test.npy", np.zeros((3, 6, 6), np.uint8))
    np.save(tmp_path / "2_test.npy", np.full((2, 6, 6), 255, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    x, y = load_npy_class_folder(tmp_path)
    assert x.shape == (5, 6, 6, 1) and y.tolist() == [0, 0, 0, 2, 2] and x[3:].min() == 1.0
    assert load_data(tmp_path)[1].tolist() == y.tolist()
    np.save(tmp_path / "3_test.npy", np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(DataError, match="differs"):
        load_npy_class_folder(tmp_path)


def test_npy_class_folder_empty_is_explained(tmp_path):
    with pytest.raises(DataError, match="no per-class .npy files"):
        load_npy_class_folder(tmp_path)


@pytest.mark.zoo
def test_zoo_mnist_test_set():
    from kerasbd.data import mnist_test_set

    try:
        x, y = mnist_test_set()
    except Exception as exc:  # ZooError when the zoo is absent
        pytest.skip(f"zoo not available: {exc}")
    assert x.shape == (10000, 28, 28, 1)
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_image_folder_reads_rgb_and_labels(tmp_path):
    for cls, bgr in (("cat", (0, 0, 255)), ("dog", (255, 0, 0))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            img = np.zeros((5, 4, 3), np.uint8)
            img[:] = bgr
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), img)
    x, y = load_image_folder(tmp_path)
    assert x.shape == (4, 5, 4, 3) and y.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(x[0, 0, 0], [1.0, 0.0, 0.0])  # red stays red (BGR → RGB)
    np.testing.assert_allclose(x[2, 0, 0], [0.0, 0.0, 1.0])
    g, _ = load_image_folder(tmp_path, grayscale=True, size=(3, 3))
    assert g.shape == (4, 3, 3, 1)
    xo, yo = load_image_folder(tmp_path, class_names=["dog", "cat"])
    assert yo[xo[:, 0, 0, 2] == 1.0].tolist() == [0, 0] and yo[xo[:, 0, 0, 0] == 1.0].tolist() == [1, 1]
    (tmp_path / "dog" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        load_image_folder(tmp_path)


def test_load_data_names_and_unknown_formats(tmp_path):
    assert load_data("digits:12")[0].shape == (1797, 12, 12, 1)
    p = tmp_path / "d.csv"
    p.write_text("1,2")
    with pytest.raises(DataError, match="unsupported data format .csv"):
        load_data(p)


def test_split_defender_is_seeded_disjoint_and_stratified():
    x, y = load_digits(8)
    x = x + np.arange(len(x), dtype=np.float32)[:, None, None, None] * 0  # same data, fresh array
    ids = np.arange(len(y))
    tagged = x.copy()
    tagged[:, 0, 0, 0] = ids / len(ids)  # identify each image by a pixel
    (xv, yv), (xt, yt) = split_defender(tagged, y, n_val=100, seed=3)
    assert len(yv) == 100 and len(yt) == len(y) - 100
    seen = np.concatenate([xv[:, 0, 0, 0], xt[:, 0, 0, 0]])
    assert len(np.unique(seen)) == len(y)  # disjoint and complete
    assert np.bincount(yv).min() >= 9  # proportional: ~10 per class
    (xv2, _), _ = split_defender(tagged, y, n_val=100, seed=3)
    np.testing.assert_array_equal(xv, xv2)
    (xv3, _), _ = split_defender(tagged, y, n_val=100, seed=4)
    assert not np.array_equal(np.sort(xv[:, 0, 0, 0]), np.sort(xv3[:, 0, 0, 0]))
    (_, yf), _ = split_defender(x, y, val_fraction=0.2, stratify=False)
    assert len(yf) == round(0.2 * len(y))
    with pytest.raises(DataError, match="not both"):
        split_defender(x, y, n_val=5, val_fraction=0.1)
    with pytest.raises(DataError, match="n_val must be"):
        split_defender(x, y, n_val=len(y))


def test_tf_dataset_batches_shuffle_and_transform():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) / 10
    y = np.arange(10)
    ds = as_tf_dataset(x, y, batch_size=4)
    batches = [(bx.numpy(), by.numpy()) for bx, by in ds]
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]).ravel(), x.ravel())
    order = lambda d: np.concatenate([by.numpy() for _, by in d])  # noqa: E731
    first = order(as_tf_dataset(x, y, batch_size=4, shuffle=True, seed=1)).tolist()
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert order(as_tf_dataset(x, y, 4, shuffle=True, seed=1)).tolist() == first  # same seed, same first epoch
    tr = as_tf_dataset(x, y, 4, transform=lambda b, rng: 1.0 - b)
    for bx, by in tr:
        np.testing.assert_allclose(bx.numpy().ravel(), 1.0 - by.numpy() / 10, atol=1e-6)
    only_x = as_tf_dataset(x, batch_size=5)
    assert [tuple(b.shape) for b in only_x] == [(5, 1, 1, 1), (5, 1, 1, 1)]
