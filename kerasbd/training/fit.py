"""The supervised training loop shared by BadNet training and every fine-tuning defense.

:func:`fit_classifier` trains a logits model on canonical images with sparse cross-entropy, optionally
through a per-batch image transform (GYM's intensive function, NNoculation's noise), under the strategy from
:func:`kerasbd.training.get_strategy`. Models created outside a strategy scope are cloned into it, trained,
and their weights copied back, so callers never care where their model was built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasbd.errors import ConfigError
from kerasbd.training.strategy import get_strategy
from kerasbd.validation import check_dataset

__all__ = ["TransformedBatches", "fit_classifier", "make_optimizer"]

BatchTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class TransformedBatches(keras.utils.PyDataset):
    """A ``PyDataset`` that shuffles (x, y) each epoch and applies an image transform to every batch.

    Feed it to ``model.fit`` to turn any fine-tuning into a GYM or NNoculation-style defense: the transform
    gets the batch (canonical float32 images) and a ``numpy.random.Generator`` seeded from ``seed``, epoch and
    batch index, so a run is reproducible. ``mix_clean=True`` appends the untransformed batch as NNoculation
    does (clean + augmented copies), or the batch through ``mix_transform`` when one is given.

    Example:
        >>> import numpy as np
        >>> x = np.random.rand(10, 8, 8, 1).astype("float32"); y = np.arange(10) % 2
        >>> ds = TransformedBatches(x, y, batch_size=4, transform=lambda b, rng: 1.0 - b, seed=0)
        >>> len(ds), ds[0][0].shape
        (3, (4, 8, 8, 1))
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 32,
        transform: BatchTransform | None = None,
        *,
        seed: int = 0,
        shuffle: bool = True,
        mix_clean: bool = False,
        mix_transform: BatchTransform | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}.")
        self.x, self.y = x, y
        self.batch_size, self.transform, self.seed = int(batch_size), transform, int(seed)
        self.shuffle, self.mix_clean, self.mix_transform = shuffle, mix_clean, mix_transform
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        n = len(self.x)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        xb, yb = self.x[idx], self.y[idx]
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            xt = np.asarray(self.transform(xb, rng), dtype=np.float32)
            if self.mix_clean:
                if self.mix_transform is not None:
                    xb = np.asarray(self.mix_transform(xb, np.random.default_rng([self.seed, self.epoch, index, 1])), dtype=np.float32)
                return np.concatenate([xt, xb]), np.concatenate([yb, yb])
            return xt, yb
        return xb, yb

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation()


def make_optimizer(optimizer: str | dict | keras.optimizers.Optimizer, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    """Build an optimizer from a name, a Keras config dict, or pass an instance through.

    Names take Keras 3 defaults except ``learning_rate`` when given; note Keras 3's Adadelta default learning rate
    is 0.001 whereas the Keras 2 code of the papers used 1.0 — pass it explicitly when mirroring them.
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        cfg: dict[str, Any] = {"class_name": optimizer, "config": {}}
    else:
        cfg = {"class_name": optimizer["class_name"], "config": dict(optimizer.get("config", {}))}
    if learning_rate is not None:
        cfg["config"]["learning_rate"] = float(learning_rate)
    try:
        return keras.optimizers.get(cfg)
    except ValueError as exc:
        raise ConfigError(f"unknown optimizer {optimizer!r}: {exc}") from exc


def fit_classifier(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    optimizer: str | dict | keras.optimizers.Optimizer = "adam",
    learning_rate: float | None = None,
    transform: BatchTransform | None = None,
    mix_clean: bool = False,
    mix_transform: BatchTransform | None = None,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    seed: int = 0,
    strategy: str | tf.distribute.Strategy | None = None,
    verbose: int = 0,
) -> keras.callbacks.History:
    """Train ``model`` (canonical images → logits) in place with sparse categorical cross-entropy.

    Args:
        model: a Keras model producing logits.
        x, y: canonical images and integer labels (validated).
        epochs, batch_size, optimizer, learning_rate: the usual; ``optimizer`` is a name, config or instance.
        transform: optional per-batch image transform ``f(batch, rng) -> batch``.
        mix_clean: with ``transform``, train on transformed and clean copies of each batch.
        mix_transform: with ``mix_clean``, the transform the mixed-in copy passes through (default: none).
        validation_data: optional (x, y) evaluated each epoch (``val_accuracy`` in the history).
        callbacks: Keras callbacks (e.g. :class:`kerasbd.callbacks.BackdoorMetrics`).
        seed: seeds shuffling, the transform and Keras' own randomness (dropout).
        strategy: anything :func:`get_strategy` accepts.
        verbose: kerasbd verbosity: 0 and 1 print nothing (1 is the command line's default, whose output is the
            verdict), 2 one line per epoch, 3 or more Keras' per-batch progress bar.

    Returns:
        The Keras ``History``; ``model``'s weights hold the trained values.
    """
    num_classes = int(model.output_shape[-1])
    x, y = check_dataset(x, y, num_classes=num_classes, image_shape=model.input_shape[1:], name="training data")
    if validation_data is not None:
        validation_data = check_dataset(*validation_data, num_classes=num_classes, name="validation data")
    keras.utils.set_random_seed(seed)
    strat = get_strategy(strategy)
    global_batch = batch_size * strat.num_replicas_in_sync if strat.num_replicas_in_sync > 1 else batch_size
    data = TransformedBatches(x, y, global_batch, transform, seed=seed, mix_clean=mix_clean, mix_transform=mix_transform)
    distributed = strat is not tf.distribute.get_strategy()
    with strat.scope():
        net = keras.models.clone_model(model) if distributed else model
        if distributed:
            net.set_weights(model.get_weights())
        net.compile(
            optimizer=make_optimizer(optimizer, learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    keras_verbose = 0 if verbose <= 1 else 2 if verbose == 2 else 1  # Keras: 2 = one line per epoch, 1 = progress bar
    history = net.fit(data, epochs=epochs, validation_data=validation_data, callbacks=list(callbacks), verbose=keras_verbose)
    if distributed:
        model.set_weights(net.get_weights())
    return history
