"""Model inversion: a substitute labelled image set recovered from a classifier alone (no data).

For data-free methods (DeepInspect) the model is the only source of images: for every class ``c`` a set of images
is optimised from random starts so that the model assigns them to ``c`` (Fredrikson et al., CCS 2015, as
DeepInspect uses it), with a total-variation prior that keeps them image-like rather than pixel noise::

    min_x  CE(f(x), c) + λ_TV · TV(x) / pixels,   x = sigmoid(w) ∈ [0, 1]

The images are the weights of a ``keras.Model`` (:class:`InvertedImages`) whose ``train_step`` takes one Adam
step on all of them, so ``fit`` with its callbacks, ``tf.distribute`` and ``jit_compile`` apply. This is not
:mod:`kerasbd.training.inversion`, which reverses *triggers* against clean images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasbd.config import Configurable
from kerasbd.errors import ConfigError
from kerasbd.io import Progress

__all__ = ["InvertedImages", "ModelInversion"]


class InvertedImages(keras.Model):
    """Images (N, H, W, C) optimised so that a frozen classifier assigns each its label.

    Example:
        >>> import keras, numpy as np
        >>> clf = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> inv = InvertedImages(clf, labels=[0, 1, 2], seed=0)
        >>> inv.compile(optimizer=keras.optimizers.Adam(0.1))
        >>> logs = inv.fit(np.zeros((5, 1)), batch_size=1, verbose=0).history
        >>> inv.images().shape, sorted(logs)
        ((3, 6, 6, 1), ['loss', 'success', 'tv'])
    """

    def __init__(self, classifier: keras.Model, labels: Sequence[int], *, tv_weight: float = 1.0, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier  # frozen: only the latent images train
        self.labels = np.asarray(labels, np.int32)
        self.tv_weight = float(tv_weight)
        shape = (len(self.labels), *(int(s) for s in classifier.input_shape[1:]))
        start = np.random.default_rng(seed).normal(0.0, 0.5, size=shape).astype(np.float32)  # around grey: sigmoid(0) = 0.5
        self.latent = keras.Variable(start, name="latent")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "tv", "success")}
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def images(self) -> np.ndarray:
        """The current images in [0, 1]."""
        return np.asarray(ops.sigmoid(self.latent), np.float32)

    def train_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf

        labels = ops.convert_to_tensor(self.labels)
        with tf.GradientTape() as tape:
            x = ops.sigmoid(self.latent)
            logits = self.classifier(x, training=False)
            ce = ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            tv = ops.mean(ops.abs(x[:, 1:] - x[:, :-1])) + ops.mean(ops.abs(x[:, :, 1:] - x[:, :, :-1]))
            loss = ce + self.tv_weight * tv
        self.optimizer.apply(tape.gradient(loss, [self.latent]), [self.latent])
        hit = ops.mean(ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32"))
        for name, value in (("loss", loss), ("tv", tv), ("success", hit)):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


class ModelInversion(Configurable):
    """Recover ``per_class`` images of every class from a classifier (see the module).

    Args:
        per_class: images per class.
        steps: Adam steps on each chunk of images.
        learning_rate: Adam's learning rate on the latent images.
        tv_weight: λ_TV, the weight of the mean absolute difference between neighbouring pixels.
        chunk: images optimised together (bounds memory for many classes).

    ``run(model, seed=...)`` returns ``(x, y, success)``: the images, the classes they were inverted for and the
    share of them the model assigns to their class.

    Example:
        >>> import keras
        >>> clf = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> x, y, success = ModelInversion(per_class=2, steps=5).run(clf, seed=0)
        >>> x.shape, y.tolist()
        ((6, 6, 6, 1), [0, 0, 1, 1, 2, 2])
    """

    def __init__(self, per_class: int = 100, steps: int = 200, learning_rate: float = 0.1, tv_weight: float = 1.0, chunk: int = 512) -> None:
        if per_class < 1 or steps < 1 or chunk < 1:
            raise ConfigError(f"per_class, steps and chunk must be positive, got {per_class}, {steps}, {chunk}.")
        if learning_rate <= 0 or tv_weight < 0:
            raise ConfigError(f"learning_rate must be positive and tv_weight non-negative, got {learning_rate} and {tv_weight}.")
        self.per_class, self.steps, self.learning_rate = int(per_class), int(steps), float(learning_rate)
        self.tv_weight, self.chunk = float(tv_weight), int(chunk)

    def run(self, model: keras.Model, *, seed: int = 0, verbose: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
        """The substitute set ``(x, y)`` for the logits ``model`` and the share of it the model assigns to ``y``."""
        num_classes = int(model.output_shape[-1])
        y = np.repeat(np.arange(num_classes, dtype=np.int64), self.per_class)
        chunks = [y[i:i + self.chunk] for i in range(0, len(y), self.chunk)]
        progress = Progress(len(y), "model inversion", verbose, unit="image")
        out, hits = [], []
        for k, labels in enumerate(chunks):
            keras.utils.set_random_seed(int(np.random.SeedSequence([seed, k]).generate_state(1)[0] % (2**31 - 1)))
            start = int(np.random.SeedSequence([seed, k, 1]).generate_state(1)[0])
            inv = InvertedImages(model, labels.tolist(), tv_weight=self.tv_weight, seed=start)
            inv.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
            inv.fit(np.zeros((self.steps, 1), np.float32), batch_size=1, epochs=1, verbose=0)
            images = inv.images()
            out.append(images)
            hits.append(np.argmax(np.asarray(model.predict(images, batch_size=256, verbose=0)), axis=1) == labels)
            progress.update(len(labels))
        progress.close()
        return np.concatenate(out), y, float(np.concatenate(hits).mean())
