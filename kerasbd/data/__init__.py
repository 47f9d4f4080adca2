"""Datasets as canonical arrays: loaders for the papers' formats, seeded defender splits, ``tf.data`` pipelines.

Every loader returns ``(x, y)`` with ``x`` float32 (N, H, W, C) RGB in [0, 1] and ``y`` int64 labels.

Example:
    >>> from kerasbd.data import load_digits, split_defender
    >>> x, y = load_digits(16)
    >>> (x_val, y_val), (x_test, y_test) = split_defender(x, y, n_val=100, seed=0)
    >>> x_val.shape
    (100, 16, 16, 1)
"""

from kerasbd.data.loaders import (
    IMAGE_EXTENSIONS,
    load_csaw_h5,
    load_data,
    load_digits,
    load_h5,
    load_image_folder,
    load_nc_gtsrb_h5,
    load_npy_class_folder,
    load_npz,
    load_npz_array,
    mnist_test_set,
)
from kerasbd.data.pipeline import as_tf_dataset
from kerasbd.data.splits import split_defender

__all__ = [
    "IMAGE_EXTENSIONS",
    "as_tf_dataset",
    "load_csaw_h5",
    "load_data",
    "load_digits",
    "load_h5",
    "load_image_folder",
    "load_nc_gtsrb_h5",
    "load_npy_class_folder",
    "load_npz",
    "load_npz_array",
    "mnist_test_set",
    "split_defender",
]
