"""CycleGAN's history of generated images, as a layer that runs inside a compiled ``train_step``."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from kerasbd.errors import ConfigError

__all__ = ["ImagePool"]


@keras.saving.register_keras_serializable(package="kerasbd")
class ImagePool(keras.layers.Layer):
    """A buffer of up to ``pool_size`` earlier generated images that the discriminator is shown instead of the newest.

    Calling the pool with a batch ("a query") treats the images one by one, as CycleGAN's ``ImagePool.query``
    does: while the buffer is filling, an image is stored and returned; once it is full, with probability 0.5
    the image replaces a uniformly chosen stored one, which is returned instead, otherwise the image itself is
    returned. Later images of a batch see the swaps of earlier ones. ``pool_size=0`` returns the batch unchanged.
    The output feeds the discriminator only, so it carries no gradient.

    It is a Keras layer rather than a ``tf.Module`` because then the model that owns it tracks its state: the
    buffer, the fill count and the :class:`keras.random.SeedGenerator` state are created in the model's
    ``tf.distribute`` scope, the buffer and the count are saved and restored with the model's weights (a resumed
    run continues the same history; Keras does not save seed states, so the swap decisions start again from
    ``seed``), and queries are plain graph ops (a ``tf.while_loop`` over the batch and stateless random draws),
    fine under ``tf.function`` and ``jit_compile``. Under a ``tf.distribute`` strategy every replica keeps its
    own history, as every process of CycleGAN's data-parallel PyTorch training does (on-read variables), and
    draws its own random stream (the seed is folded with the replica id); a checkpoint stores the first
    replica's buffer and restores it to all.

    Args:
        pool_size: how many images the buffer holds (CycleGAN: 50).
        seed: seeds the swap decisions; the same seed and the same queries give the same outputs.

    Example:
        >>> import numpy as np
        >>> pool = ImagePool(pool_size=2, seed=0)
        >>> batch = lambda v: np.full((1, 2, 2, 1), v, "float32")
        >>> [float(np.asarray(pool(batch(v)))[0, 0, 0, 0]) for v in (1.0, 2.0)]  # filling: stored and returned
        [1.0, 2.0]
        >>> outs = [float(np.asarray(pool(batch(v)))[0, 0, 0, 0]) for v in range(3, 103)]
        >>> 30 < sum(o != v for o, v in zip(outs, range(3, 103))) < 70  # about half are swapped for a stored image
        True
    """

    def __init__(self, pool_size: int = 50, seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if int(pool_size) != pool_size or pool_size < 0:
            raise ConfigError(f"pool_size must be a non-negative integer (0 disables the pool), got {pool_size!r}.")
        self.pool_size = int(pool_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        image_shape = tuple(input_shape[1:])
        if len(image_shape) != 3 or None in image_shape:
            raise ConfigError(f"ImagePool needs batches of fixed-size images (N, H, W, C), got shape {tuple(input_shape)}.")
        # on-read: each replica owns its copy (its own history); checkpoints read and write the first replica's
        per_replica = {"trainable": False, "synchronization": "on_read", "aggregation": "only_first_replica"}
        zeros = keras.initializers.Zeros()
        self.images = keras.Variable(zeros, shape=(self.pool_size, *image_shape), dtype=self.compute_dtype, name="images", **per_replica)
        self.count = keras.Variable(0, dtype="int32", name="count", **per_replica)

    def call(self, inputs: Any) -> Any:
        images = ops.cast(inputs, self.compute_dtype)
        if self.pool_size == 0:
            return tf.stop_gradient(images)
        n = tf.shape(images)[0]
        swap_seed, slot_seed = tf.unstack(tf.random.experimental.stateless_split(self._replica_seed(), 2))
        # CycleGAN swaps when uniform(0, 1) > 0.5
        swaps = tf.random.stateless_uniform([n], swap_seed) > 0.5
        slots = tf.random.stateless_uniform([n], slot_seed, minval=0, maxval=self.pool_size, dtype=tf.int32)

        def query(i: tf.Tensor, pool: tf.Tensor, count: tf.Tensor, out: tf.Tensor) -> tuple[tf.Tensor, ...]:
            # gathers, not slicing: XLA would make a sliced index a compile-time constant and recompile every step
            image, swap = tf.gather(images, i), tf.gather(swaps, i)
            filling = count < self.pool_size
            slot = tf.where(filling, count, tf.gather(slots, i))
            stored = tf.gather(pool, slot)
            out = tf.tensor_scatter_nd_update(out, [[i]], tf.where(filling | ~swap, image, stored)[None])
            pool = tf.tensor_scatter_nd_update(pool, [[slot]], tf.where(filling | swap, image, stored)[None])
            return i + 1, pool, tf.minimum(count + 1, self.pool_size), out

        _, pool, count, out = tf.while_loop(
            lambda i, *_: i < n, query, (tf.constant(0), tf.convert_to_tensor(self.images), tf.convert_to_tensor(self.count), tf.zeros_like(images))
        )
        self.images.assign(pool)
        self.count.assign(count)
        return tf.stop_gradient(out)

    def _replica_seed(self) -> tf.Tensor:
        """This query's seed, distinct per replica so that replicas do not make the same swap decisions."""
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group
        return tf.random.experimental.stateless_fold_in(self.seed_generator.next(), replica)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": self.pool_size, "seed": self.seed}
