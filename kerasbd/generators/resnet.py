"""The ResNet image-to-image generator of Johnson et al. (2016), and a stack of such generators run as one model.

The layout follows AdvGAN's generator, the closest public generator of GangSweep's kind (GangSweep's own code is
not published): a reflect-padded 3×3 convolution, two stride-2 3×3 downsamplings, ``blocks`` reflect-padded
residual blocks, two ×2 upsamplings and a 3×3 convolution to the image's channels with a ``tanh`` output;
instance normalisation and ReLU after every convolution but the last. Filters double with each downsampling
(AdvGAN: 8, 16, 32 and 4 residual blocks, the defaults).

Two deliberate differences from AdvGAN's layers:

- upsampling is nearest-neighbour ×2 followed by a 3×3 convolution (Odena et al.'s resize-convolution) instead
  of a transposed convolution: a transposed convolution has no grouped form, which the stack below needs, and the
  resize-convolution has no checkerboard artefacts;
- an image whose height or width is not a multiple of 4 is reflect-padded at the bottom and right up to the next
  multiple before the first layer and the output cropped back, so any image size works (55×47 faces), never resized.

The CycleGAN generator (:func:`kerasbd.generators.cyclegan_generator`) is the same network with CycleGAN's
choices: 7×7 outer convolutions (``outer_kernel=7``), 64 first filters, 9 residual blocks and stride-2 transposed
convolutions (``upsampling="transpose"``) for its two fractionally strided layers.

``copies > 1`` builds that many independent generators as one computation (GangSweep trains one per
hypothetical target label): the image is repeated along the channels and every convolution is a grouped one
(:class:`~kerasbd.generators.layers.GroupedConv2D` with ``groups=copies``), so no weight is shared between the
copies, and instance normalisation is per channel anyway.
The output is then ``(batch, copies, H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from kerasbd.errors import ConfigError
from kerasbd.generators.layers import GroupedConv2D, ReflectionPadding2D, instance_norm

__all__ = ["resnet_generator", "stacked_output"]


def _conv(x: Any, filters: int, copies: int, kernel: int = 3, strides: int = 1, *, reflect: bool = True, norm: bool = True,
          activation: str | None = "relu", name: str) -> Any:
    if reflect and kernel > 1:
        x = ReflectionPadding2D(kernel // 2, name=f"{name}_pad")(x)
    padding = "valid" if reflect else "same"
    if copies > 1:
        x = GroupedConv2D(filters * copies, kernel, strides=strides, padding=padding, groups=copies, name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, name=f"{name}_conv")(x)
    if norm:
        x = instance_norm(name=f"{name}_norm")(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x) if activation else x


def resnet_generator(input_shape: Sequence[int], *, copies: int = 1, filters: int = 8, blocks: int = 4, outer_kernel: int = 3,
                     upsampling: str = "resize", name: str = "resnet_generator") -> keras.Model:
    """An image-to-image ResNet generator (or ``copies`` of them) whose output lies in [−1, 1].

    Args:
        input_shape: (H, W, C) of the images.
        copies: independent generators computed together; the output is (N, copies, H, W, C) when above 1,
            else (N, H, W, C).
        filters: filters of the first convolution (doubled by each downsampling).
        blocks: residual blocks at the lowest resolution.
        outer_kernel: kernel size of the first and the last convolution (AdvGAN 3, CycleGAN 7).
        upsampling: ``"resize"`` (nearest ×2, then a 3×3 convolution) or ``"transpose"`` (a stride-2 3×3
            transposed convolution, CycleGAN's; single generators only).

    Example:
        >>> import numpy as np
        >>> g = resnet_generator((28, 28, 1), copies=3)
        >>> y = np.asarray(g(np.zeros((2, 28, 28, 1), "float32")))
        >>> y.shape, bool(np.abs(y).max() <= 1.0)
        ((2, 3, 28, 28, 1), True)
        >>> resnet_generator((55, 47, 3)).output_shape
        (None, 55, 47, 3)
    """
    if len(input_shape) != 3:
        raise ConfigError(f"input_shape must be (H, W, C), got {tuple(input_shape)}.")
    if copies < 1 or filters < 1 or blocks < 0:
        raise ConfigError(f"copies and filters must be positive and blocks not negative, got {copies}, {filters}, {blocks}.")
    if upsampling not in ("resize", "transpose"):
        raise ConfigError(f"upsampling must be 'resize' or 'transpose', got {upsampling!r}.")
    if upsampling == "transpose" and copies > 1:
        raise ConfigError("a transposed convolution has no grouped form: stacked generators (copies > 1) need upsampling='resize'.")
    if outer_kernel < 1 or outer_kernel % 2 == 0:
        raise ConfigError(f"outer_kernel must be a positive odd number, got {outer_kernel}.")
    h, w, c = (int(s) for s in input_shape)
    side = max(8, outer_kernel)
    if min(h, w) < side:
        raise ConfigError(f"the generator downsamples twice: images need at least {side}×{side} pixels, got {h}×{w}.")
    inputs = keras.Input((h, w, c))
    x = keras.layers.Concatenate(name="copies")([inputs] * copies) if copies > 1 else inputs
    if h % 4 or w % 4:
        x = ReflectionPadding2D(((0, -h % 4), (0, -w % 4)), name="pad_to_4")(x)
    x = _conv(x, filters, copies, outer_kernel, name="stem")
    x = _conv(x, 2 * filters, copies, strides=2, reflect=False, name="down1")
    x = _conv(x, 4 * filters, copies, strides=2, reflect=False, name="down2")
    for b in range(blocks):
        skip = x
        x = _conv(x, 4 * filters, copies, name=f"res{b}a")
        x = _conv(x, 4 * filters, copies, activation=None, name=f"res{b}b")
        x = keras.layers.Add(name=f"res{b}_add")([skip, x])
    for k, f in ((1, 2 * filters), (2, filters)):
        if upsampling == "transpose":
            x = keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same", name=f"up{k}_conv")(x)
            x = keras.layers.Activation("relu", name=f"up{k}_relu")(instance_norm(name=f"up{k}_norm")(x))
        else:
            x = keras.layers.UpSampling2D(2, name=f"up{k}_resize")(x)
            x = _conv(x, f, copies, name=f"up{k}")
    x = _conv(x, c, copies, outer_kernel, norm=False, activation="tanh", name="out")
    x = keras.layers.Cropping2D(((0, x.shape[1] - h), (0, x.shape[2] - w)), name="crop")(x)
    if copies > 1:  # grouped channels [copy0 c0..cC, copy1 ...] → (N, copies, H, W, C)
        x = keras.layers.Reshape((h, w, copies, c), name="split")(x)
        x = keras.layers.Permute((3, 1, 2, 4), name="copies_first")(x)
    return keras.Model(inputs, x, name=name)


def stacked_output(generator: keras.Model, x: Any, training: bool = False) -> Any:
    """``generator(x)`` as (N, copies, H, W, C) whether it has one copy or several."""
    y = generator(x, training=training)
    return y if len(y.shape) == 5 else ops.expand_dims(y, 1)
