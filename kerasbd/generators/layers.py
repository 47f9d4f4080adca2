"""Layers that image-to-image generators need and core Keras lacks under these names.

- :func:`instance_norm` — instance normalisation as Keras' own ``GroupNormalization`` with one group per channel
  (tensorflow-addons' ``InstanceNormalization`` is end-of-life and not used).
- :class:`ReflectionPadding2D` — pads height and width by mirroring the image, CycleGAN's and pix2pix' padding
  in front of every convolution, so borders carry no zero-padding artefacts.
- :class:`FixedMask` — multiplies by a constant, non-trainable mask: where a generator may not perturb (GangSweep's
  search for a label's further triggers keeps the region of the ones found out).
- :class:`GroupedConv2D` — a grouped convolution through TensorFlow's own kernel: Keras' ``Conv2D(groups=...)``
  runs grouped convolutions on CPU through XLA, which took minutes per epoch for a stack of 10 generators
  (TensorFlow's native grouped kernel: 39 ms for a forward and backward pass of the largest layer).

They work on channels-last (N, H, W, C) batches, the repo's canonical layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from kerasbd.errors import ConfigError

__all__ = ["FixedMask", "GroupedConv2D", "ReflectionPadding2D", "instance_norm"]

Padding = tuple[tuple[int, int], tuple[int, int]]


def instance_norm(name: str | None = None, **kw: Any) -> keras.layers.GroupNormalization:
    """Instance normalisation: each sample's channels normalised over height and width separately.

    ``GroupNormalization(groups=-1, epsilon=1e-5)``: one group per channel is instance norm, and ``1e-5`` is
    PyTorch's ``InstanceNorm2d`` epsilon. The learned per-channel scale and offset stay on (as in tensorflow-addons'
    layer); pass ``center=False, scale=False`` for PyTorch's default, affine-free version. Other keyword arguments
    go to ``GroupNormalization``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(3.0, 2.0, (2, 8, 8, 3)).astype("float32")
        >>> y = np.asarray(instance_norm()(x))
        >>> bool(np.allclose(y.mean(axis=(1, 2)), 0, atol=1e-4)), bool(np.allclose(y.std(axis=(1, 2)), 1, atol=1e-3))
        (True, True)
    """
    if "groups" in kw:
        raise ConfigError("instance_norm always uses one group per channel; use keras.layers.GroupNormalization for other groupings.")
    return keras.layers.GroupNormalization(groups=-1, **{"epsilon": 1e-5, **kw}, name=name)


def _normalize_padding(padding: int | Sequence[int] | Sequence[Sequence[int]]) -> Padding:
    """``((top, bottom), (left, right))`` from an int, ``(rows, cols)`` or the explicit pairs (lists from JSON too)."""
    if isinstance(padding, int):
        pairs: list[Any] = [(padding, padding), (padding, padding)]
    elif len(padding) == 2 and all(isinstance(p, int) for p in padding):
        pairs = [(padding[0], padding[0]), (padding[1], padding[1])]
    elif len(padding) == 2 and all(isinstance(p, Sequence) and len(p) == 2 for p in padding):
        pairs = list(padding)
    else:
        raise ConfigError(f"padding must be an int, (rows, cols) or ((top, bottom), (left, right)); got {padding!r}.")
    (top, bottom), (left, right) = ((int(a), int(b)) for a, b in pairs)
    if min(top, bottom, left, right) < 0:
        raise ConfigError(f"padding must not be negative, got {padding!r}.")
    return (top, bottom), (left, right)


@keras.saving.register_keras_serializable(package="kerasbd")
class ReflectionPadding2D(keras.layers.Layer):
    """Pad height and width of a channels-last batch by reflection (the edge pixel is not repeated).

    Same as ``np.pad(x, ..., mode="reflect")``; every padding amount must be smaller than the dimension it pads.

    Args:
        padding: an int (all four sides), ``(rows, cols)`` (symmetric), or ``((top, bottom), (left, right))``,
            as for ``keras.layers.ZeroPadding2D``.

    Example:
        >>> import numpy as np
        >>> x = np.arange(3, dtype="float32").reshape(1, 1, 3, 1)
        >>> np.asarray(ReflectionPadding2D((0, 2))(x))[0, 0, :, 0].tolist()
        [2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, padding: int | Sequence[int] | Sequence[Sequence[int]] = (1, 1), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = _normalize_padding(padding)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for size, (before, after), axis in zip(input_shape[1:3], self.padding, ("height", "width"), strict=True):
            if size is not None and max(before, after) >= size:
                raise ConfigError(
                    f"reflection padding of {max(before, after)} needs a {axis} above it, got {size}; pad less or pad in several layers."
                )

    def call(self, inputs: Any) -> Any:
        return ops.pad(inputs, ((0, 0), *self.padding, (0, 0)), mode="reflect")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        (top, bottom), (left, right) = self.padding
        height, width = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if height is None else height + top + bottom,
            None if width is None else width + left + right,
            input_shape[3],
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="kerasbd")
class GroupedConv2D(keras.layers.Layer):
    """A 2-D convolution whose input and output channels are split into ``groups`` independent groups.

    Group ``g`` maps input channels ``[g·C/groups, (g+1)·C/groups)`` to output channels
    ``[g·filters/groups, (g+1)·filters/groups)`` with its own kernel, as ``keras.layers.Conv2D(groups=...)``,
    computed by ``tf.nn.conv2d`` (TensorFlow infers the groups from the kernel's input depth).

    Example:
        >>> import numpy as np
        >>> layer = GroupedConv2D(4, 3, groups=2, padding="same")
        >>> tuple(layer(np.zeros((1, 5, 5, 6), "float32")).shape), tuple(layer.kernel.shape)
        ((1, 5, 5, 4), (3, 3, 3, 4))
    """

    def __init__(self, filters: int, kernel_size: int, *, groups: int = 1, strides: int = 1, padding: str = "valid",
                 use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if filters % groups:
            raise ConfigError(f"filters ({filters}) must be a multiple of groups ({groups}).")
        if padding not in ("valid", "same"):
            raise ConfigError(f"padding must be 'valid' or 'same', got {padding!r}.")
        self.filters, self.kernel_size, self.groups = int(filters), int(kernel_size), int(groups)
        self.strides, self.padding, self.use_bias = int(strides), padding, bool(use_bias)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = int(input_shape[-1])  # type: ignore[arg-type]
        if channels % self.groups:
            raise ConfigError(f"input channels ({channels}) must be a multiple of groups ({self.groups}).")
        k = self.kernel_size
        self.kernel = self.add_weight(shape=(k, k, channels // self.groups, self.filters), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias") if self.use_bias else None

    def call(self, inputs: Any) -> Any:
        y = tf.nn.conv2d(inputs, self.kernel, strides=self.strides, padding=self.padding.upper())
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        def size(n: int | None) -> int | None:
            if n is None:
                return None
            return -(-n // self.strides) if self.padding == "same" else (n - self.kernel_size) // self.strides + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "groups": self.groups,
                "strides": self.strides, "padding": self.padding, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="kerasbd")
class FixedMask(keras.layers.Layer):
    """Multiplies its input by a constant mask that broadcasts against it (a non-trainable weight, so it is saved and
    restored with the model's weights).

    Example:
        >>> import numpy as np
        >>> allow = np.ones((4, 4, 1), "float32"); allow[:2, :2] = 0
        >>> out = FixedMask(allow)(np.ones((1, 4, 4, 3), "float32"))
        >>> float(out[0, 0, 0, 0]), float(out[0, 3, 3, 2])
        (0.0, 1.0)
    """

    def __init__(self, mask: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._initial = ops.convert_to_numpy(mask).astype("float32")
        self.allowed = self.add_weight(shape=self._initial.shape, initializer=keras.initializers.Constant(self._initial),
                                       trainable=False, name="allowed")

    def call(self, inputs: Any) -> Any:
        return inputs * ops.cast(self.allowed, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mask": self._initial.tolist()}
