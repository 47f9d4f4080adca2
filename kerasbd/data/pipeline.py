"""Batched ``tf.data`` pipelines over canonical arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from kerasbd.errors import DataError
from kerasbd.validation import check_images, check_labels

__all__ = ["as_tf_dataset"]

BatchTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def as_tf_dataset(
    x: np.ndarray,
    y: np.ndarray | None = None,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    seed: int = 0,
    transform: BatchTransform | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched ``tf.data.Dataset`` of canonical images (and labels when ``y`` is given).

    Args:
        x: canonical images (validated).
        y: optional integer labels; batches are then ``(images, labels)``.
        batch_size: batch size (the last batch may be smaller).
        shuffle: reshuffle each epoch with a seeded order.
        seed: seeds shuffling and the transform.
        transform: optional ``f(batch, rng) -> batch`` on NumPy batches (a :class:`kerasbd.transforms.Transform`
            or a :class:`kerasbd.attacks.Trigger`'s ``apply`` fit). The generator for batch ``i`` is seeded with
            ``(seed, i)``, so the same batch index gets the same randomness in every epoch.

    Example:
        >>> import numpy as np
        >>> ds = as_tf_dataset(np.zeros((10, 4, 4, 1), "float32"), np.arange(10) % 2, batch_size=4)
        >>> [tuple(b[0].shape) for b in ds]
        [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
    """
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}.")
    x = check_images(x)
    tensors = x if y is None else (x, check_labels(y, n=len(x)))
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size))
    if transform is not None:
        shape = (None, *x.shape[1:])

        def _np_apply(index: np.ndarray, batch: np.ndarray) -> np.ndarray:
            rng = np.random.default_rng([int(seed), int(index)])
            return np.asarray(transform(batch, rng), dtype=np.float32)

        def _apply(index: tf.Tensor, item: tf.Tensor | tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
            images = item if y is None else item[0]
            out = tf.numpy_function(_np_apply, [index, images], tf.float32, stateful=False)
            out.set_shape(shape)
            return out if y is None else (out, item[1])

        ds = ds.enumerate().map(_apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
