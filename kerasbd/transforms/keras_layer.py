"""Keras and tf.data adapters: a transform as a saveable preprocessing layer, a defended model with its
inference preprocessing inside, and a ``Dataset.map`` function.

The transforms are NumPy/OpenCV code, so the layer runs them through ``tf.numpy_function``: the layer has no
gradient (adaptive attacks that differentiate through the preprocessing need a BPDA-style surrogate), cannot be
XLA-compiled (the layer sets ``supports_jit = False`` so Keras' automatic ``jit_compile`` leaves such models
alone) and runs in the Python process that serves the model. A ``.keras`` file stores only the transform's
config, so loading needs ``import kerasbd.transforms`` (which registers the layer under package "kerasbd").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.transforms.base import Transform, as_generator, deserialize, serialize

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["TransformLayer", "with_preprocessing", "tf_map"]


@keras.saving.register_keras_serializable(package="kerasbd")
class TransformLayer(keras.layers.Layer):
    """Apply a :class:`Transform` to every batch, in training and at inference.

    ``seed`` seeds one Generator per layer instance, so a given model instance produces a reproducible sequence
    of outputs; ``None`` draws fresh randomness.

    Example:
        >>> import numpy as np
        >>> from kerasbd.transforms import Flip
        >>> layer = TransformLayer(Flip())
        >>> np.asarray(layer(np.eye(2, dtype=np.float32)[None, :, :, None]))[0, 0, :, 0].tolist()
        [0.0, 1.0]
    """

    def __init__(self, transform: Transform | dict, seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.transform = deserialize(transform)
        self.seed = seed
        self._rng = as_generator(seed)
        self.supports_jit = False

    def _numpy_call(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.transform(x, self._rng), dtype=np.float32)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        out = tf.numpy_function(self._numpy_call, [tf.cast(inputs, tf.float32)], tf.float32, stateful=True)
        out.set_shape(self.compute_output_shape(tuple(inputs.shape)))
        return out

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        input_shape = tuple(input_shape)
        image = tuple(s for s in input_shape[1:] if s is not None)
        if len(image) < len(input_shape) - 1:
            return (input_shape[0],) + (None,) * (len(input_shape) - 1)
        return (input_shape[0],) + tuple(self.transform.output_shape(image))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "transform": serialize(self.transform), "seed": self.seed}


def with_preprocessing(model: Any, transform: Transform, *, seed: int | None = None, name: str | None = None) -> keras.Model:
    """A keras.Model computing ``model(transform(x))``, saveable to ``.keras`` with the preprocessing inside.

    ``model`` is a keras.Model or a kerasbd ``Classifier`` (its canonical-to-logits ``.model`` is used). The
    transform must keep the image shape the model expects.

    Example:
        >>> import keras, numpy as np
        >>> from kerasbd.transforms import ShrinkPad
        >>> base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
        >>> defended = with_preprocessing(base, ShrinkPad(4), seed=0)
        >>> defended.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).shape
        (2, 10)
    """
    inner = model if isinstance(model, keras.Model) else getattr(model, "model", None)
    if not isinstance(inner, keras.Model):
        raise ConfigError(f"with_preprocessing needs a keras.Model or a kerasbd Classifier, got {type(model).__name__}.")
    shape = tuple(inner.input_shape[1:])
    if None not in shape and tuple(transform.output_shape(shape)) != shape:
        raise ConfigError(f"{type(transform).__name__} maps {shape} to {transform.output_shape(shape)}; the model needs {shape}.")
    inputs = keras.Input(shape=shape, name="image")
    outputs = inner(TransformLayer(transform, seed=seed, name="preprocessing")(inputs))
    return keras.Model(inputs, outputs, name=name or f"{inner.name}_preprocessed")


def tf_map(transform: Transform, seed: int | None = None) -> Callable:
    """A function for ``tf.data.Dataset.map`` applying ``transform`` to the first element (a batch (N, H, W, C)
    or a single image (H, W, C)); other elements (labels) pass through. The Generator is shared by all calls, so
    the output is reproducible when the map runs sequentially (no ``num_parallel_calls``).

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> from kerasbd.transforms import Flip
        >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 1), np.float32), np.arange(4))).batch(2)
        >>> [tuple(x.shape) for x, _ in ds.map(tf_map(Flip()))]
        [(2, 8, 8, 1), (2, 8, 8, 1)]
    """
    import tensorflow as tf

    rng = as_generator(seed)

    def run(x: np.ndarray) -> np.ndarray:
        batch = x if x.ndim == 4 else x[None]
        out = np.asarray(transform(batch, rng), dtype=np.float32)
        return out if x.ndim == 4 else out[0]

    def fn(x: tf.Tensor, *rest: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, ...]:
        shape = tuple(x.shape)
        out = tf.numpy_function(run, [tf.cast(x, tf.float32)], tf.float32, stateful=True)
        image = shape[-3:]
        if None not in image:
            out.set_shape(shape[:-3] + tuple(transform.output_shape(image)))
        return (out, *rest) if rest else out

    return fn
