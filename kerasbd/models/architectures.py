"""Architectures of the zoo's published BadNets (layer names exactly as in their weight files) and recipe nets.

Every builder returns a Keras functional model that ends in logits unless ``softmax=True``. The zoo builders
reproduce the original graphs so their weights-only files load by layer name; ``lenet5``, ``vgg16`` and
``resnet18`` are parametrised by input shape and number of classes for recipes.

Example:
    >>> build_architecture("csaw_mnist").output_shape
    (None, 10)
    >>> build_architecture("lenet5", input_shape=(32, 32, 3), num_classes=43).output_shape
    (None, 43)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import layers

from kerasbd.errors import ConfigError

__all__ = ["build_architecture", "ARCHITECTURES", "deepid", "nc_gtsrb", "nc_mnist", "badnets_mnist", "csaw_mnist", "lenet5", "vgg16", "resnet18"]


def _head(x: Any, num_classes: int, softmax: bool, name: str = "output") -> Any:
    return layers.Dense(num_classes, activation="softmax" if softmax else None, name=name)(x)


def deepid(input_shape: Sequence[int] = (55, 47, 3), num_classes: int = 1283, softmax: bool = False) -> keras.Model:
    """CSAW-HackML / NNoculation YouTube-Face DeepID net (two branches merged by Add, then ReLU)."""
    inp = keras.Input(tuple(input_shape), name="input")
    x = layers.Conv2D(20, 4, activation="relu", name="conv_1")(inp)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(40, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Conv2D(60, 3, activation="relu", name="conv_3")(x)
    p3 = layers.MaxPooling2D(2, name="pool_3")(x)
    c4 = layers.Conv2D(80, 2, activation="relu", name="conv_4")(p3)
    f1 = layers.Flatten(name="flatten_1")(p3)
    f2 = layers.Flatten(name="flatten_2")(c4)
    merged = layers.Add(name="add_1")([layers.Dense(160, name="fc_1")(f1), layers.Dense(160, name="fc_2")(f2)])
    x = layers.Activation("relu", name="activation_1")(merged)
    return keras.Model(inp, _head(x, num_classes, softmax), name="deepid")


def csaw_mnist(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, softmax: bool = False) -> keras.Model:
    """CSAW-HackML-2020 pre-release model F (MNIST): two conv/max-pool stages, linear fc_1, output."""
    inp = keras.Input(tuple(input_shape), name="input")
    x = layers.Conv2D(16, 5, activation="relu", name="conv_1")(inp)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(32, 5, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Flatten(name="flatten_1")(x)
    x = layers.Dense(512, name="fc_1")(x)
    return keras.Model(inp, _head(x, num_classes, softmax), name="csaw_mnist")


def _conv_blocks(x: Any, blocks: Sequence[tuple[int, int]], second_padding: str, dropout: float) -> Any:
    """(width, kernel) conv pairs with Keras 2's default names (conv2d, conv2d_1, ...), max-pool and dropout."""
    for i, (width, kernel) in enumerate(blocks):
        x = layers.Conv2D(width, kernel, padding="same", activation="relu", name=f"conv2d{_suffix(2 * i)}")(x)
        x = layers.Conv2D(width, kernel, padding=second_padding, activation="relu", name=f"conv2d{_suffix(2 * i + 1)}")(x)
        x = layers.MaxPooling2D(2, name=f"max_pooling2d{_suffix(i)}")(x)
        x = layers.Dropout(dropout, name=f"dropout{_suffix(i)}")(x)
    return x


def _suffix(i: int) -> str:
    return "" if i == 0 else f"_{i}"


def nc_gtsrb(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 43, softmax: bool = False) -> keras.Model:
    """Neural Cleanse GTSRB net (raw 0-255 input): 3 × [conv same, conv valid, pool, dropout 0.2], dense 512."""
    inp = keras.Input(tuple(input_shape), name="conv2d_input")
    x = _conv_blocks(inp, ((32, 3), (64, 3), (128, 3)), "valid", 0.2)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout_3")(x)
    return keras.Model(inp, _head(x, num_classes, softmax, name="logits"), name="nc_gtsrb")


def nc_mnist(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, softmax: bool = False) -> keras.Model:
    """NC-recipe MNIST BadNet (ruizegao v1): 2 × [conv, conv (same), pool, dropout 0.25] with 32 then 64 filters."""
    inp = keras.Input(tuple(input_shape), name="conv2d_input")
    x = _conv_blocks(inp, ((32, 5), (64, 3)), "same", 0.25)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.5, name="dropout_2")(x)
    return keras.Model(inp, _head(x, num_classes, softmax, name="dense_1"), name="nc_mnist")


def badnets_mnist(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, softmax: bool = False) -> keras.Model:
    """Dillonsd's Gu et al. BadNets MNIST net: conv 16@5 → avg-pool → conv 32@5 → avg-pool → dense 512 relu."""
    inp = keras.Input(tuple(input_shape), name="conv2d_input")
    x = layers.Conv2D(16, 5, activation="relu", name="conv2d")(inp)
    x = layers.AveragePooling2D(2, name="average_pooling2d")(x)
    x = layers.Conv2D(32, 5, activation="relu", name="conv2d_1")(x)
    x = layers.AveragePooling2D(2, name="average_pooling2d_1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    return keras.Model(inp, _head(x, num_classes, softmax, name="dense_1"), name="badnets_mnist")


def lenet5(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, softmax: bool = False) -> keras.Model:
    """LeNet-5 (ReLU, max-pooling variant): conv 6@5 (same) → pool → conv 16@5 → pool → 120 → 84 → classes."""
    inp = keras.Input(tuple(input_shape), name="input")
    x = layers.Conv2D(6, 5, padding="same", activation="relu", name="conv_1")(inp)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(16, 5, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="fc_1")(x)
    x = layers.Dense(84, activation="relu", name="fc_2")(x)
    return keras.Model(inp, _head(x, num_classes, softmax), name="lenet5")


def vgg16(
    input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, softmax: bool = False, batch_norm: bool = True, dense_units: int = 512
) -> keras.Model:
    """VGG-16: 13 3×3 conv layers in 5 blocks (64-128-256-512-512), optional batch norm, two dense layers."""
    inp = keras.Input(tuple(input_shape), name="input")
    x = inp
    for b, (width, reps) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for r in range(1, reps + 1):
            x = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=f"block{b}_conv{r}")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"block{b}_bn{r}")(x)
            x = layers.Activation("relu", name=f"block{b}_relu{r}")(x)
        if min(x.shape[1], x.shape[2]) >= 2:  # small inputs (e.g. 28×28) cannot be halved five times
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x) if min(x.shape[1], x.shape[2]) > 1 else layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(dense_units, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(0.5, name=f"fc{i}_dropout")(x)
    return keras.Model(inp, _head(x, num_classes, softmax), name="vgg16")


def _basic_block(x: Any, width: int, stride: int, name: str) -> Any:
    shortcut = x
    y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != width:
        shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet18(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, softmax: bool = False, width: int = 64) -> keras.Model:
    """ResNet-18 (basic blocks 2-2-2-2). Inputs under 64 px use the CIFAR stem (3×3 conv, no max-pool)."""
    inp = keras.Input(tuple(input_shape), name="input")
    if min(input_shape[0], input_shape[1]) < 64:
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inp)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.Activation("relu", name="stem_relu")(x)
    else:
        x = layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.Activation("relu", name="stem_relu")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, mult in enumerate((1, 2, 4, 8), start=1):
        for block in (1, 2):
            stride = 2 if (block == 1 and stage > 1) else 1
            x = _basic_block(x, width * mult, stride, name=f"stage{stage}_block{block}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, _head(x, num_classes, softmax), name="resnet18")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "deepid": deepid,
    "nc_gtsrb": nc_gtsrb,
    "nc_mnist": nc_mnist,
    "badnets_mnist": badnets_mnist,
    "csaw_mnist": csaw_mnist,
    "lenet5": lenet5,
    "vgg16": vgg16,
    "resnet18": resnet18,
}


def build_architecture(name: str, **kwargs: Any) -> keras.Model:
    """Build a named architecture (see :data:`ARCHITECTURES`); keyword arguments go to its builder.

    Raises:
        ConfigError: unknown name or invalid arguments.
    """
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}.")
    try:
        return ARCHITECTURES[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"architecture {name!r}: {exc}") from None
