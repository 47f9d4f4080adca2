"""Label-conditioned trigger generators trained against a frozen classifier (DeepInspect's ``G(z, t)``).

:func:`conditional_generator` maps a noise vector ``z`` and a target label ``t`` (one-hot) to a perturbation in
[−1, 1] of the image's shape; one generator serves every label, so all label hypotheses train in one batched
computation. :class:`ConditionalTriggerTrainer` trains it (Chen et al., IJCAI 2019, Eq. 1-3)::

    L_G = mean_{x: y ≠ t} CE(f(x'), t) + γ · mean ‖G(z, t)‖₁ [+ γ_gan · BCE(D(x'), 1)],   x' = clip(x + G(z, t), 0, 1)

on the classifier's logits: the trojan term sends the perturbed image to ``t``, the magnitude term keeps the
perturbation small, and the optional GAN term (a small discriminator ``D`` told to separate the images from
their perturbed copies) keeps the perturbed images close to the data. Every image of a batch is paired with every
target label of the step (``labels_per_step`` of them, rotating through all labels when fewer than all), each pair
with its own noise, so each label gets the same training whether it trains alone or beside others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from kerasbd.errors import ConfigError
from kerasbd.generators.adversarial import AdversarialModel

__all__ = ["ConditionalTriggerTrainer", "conditional_generator", "patch_discriminator"]


def conditional_generator(image_shape: Sequence[int], num_classes: int, *, noise_dim: int = 100, embed_dim: int = 128,
                          filters: int = 64, name: str = "conditional_generator") -> keras.Model:
    """``G([z, onehot(t)])`` → perturbation (N, H, W, C) in [−1, 1] (tanh).

    The label goes through a dense embedding (ReLU), is joined to the noise, a dense layer makes a
    ``ceil(H/4) × ceil(W/4) × filters`` map, and two stride-2 transposed 5×5 convolutions (``filters/2``, then C
    channels; batch normalization and ReLU between) bring it to the image size, cropped where H or W is not a
    multiple of 4.

    Example:
        >>> import numpy as np
        >>> g = conditional_generator((28, 28, 1), 10, noise_dim=8)
        >>> out = g([np.zeros((2, 8), "float32"), np.eye(10, dtype="float32")[:2]])
        >>> tuple(out.shape), float(np.abs(out).max()) <= 1.0
        ((2, 28, 28, 1), True)
    """
    h, w, c = (int(s) for s in image_shape)
    if num_classes < 2 or noise_dim < 1 or embed_dim < 1 or filters < 2:
        raise ConfigError(f"num_classes ≥ 2, noise_dim, embed_dim ≥ 1 and filters ≥ 2 needed, got {num_classes}, {noise_dim}, "
                          f"{embed_dim}, {filters}.")
    h0, w0 = math.ceil(h / 4), math.ceil(w / 4)
    z = keras.Input((noise_dim,), name="noise")
    label = keras.Input((num_classes,), name="label")
    e = keras.layers.Dense(embed_dim, activation="relu", name="label_embedding")(label)
    u = keras.layers.Dense(h0 * w0 * filters, use_bias=False, name="project")(keras.layers.Concatenate()([z, e]))
    u = keras.layers.ReLU()(keras.layers.BatchNormalization(name="project_bn")(u))
    u = keras.layers.Reshape((h0, w0, filters))(u)
    u = keras.layers.Conv2DTranspose(filters // 2, 5, strides=2, padding="same", use_bias=False, name="up1")(u)
    u = keras.layers.ReLU()(keras.layers.BatchNormalization(name="up1_bn")(u))
    u = keras.layers.Conv2DTranspose(c, 5, strides=2, padding="same", activation="tanh", name="up2")(u)
    if (4 * h0, 4 * w0) != (h, w):
        u = keras.layers.Cropping2D(((0, 4 * h0 - h), (0, 4 * w0 - w)), name="crop")(u)
    return keras.Model([z, label], u, name=name)


def patch_discriminator(image_shape: Sequence[int], *, filters: int = 32, name: str = "discriminator") -> keras.Model:
    """A small convolutional discriminator (two stride-2 4×4 convolutions with leaky ReLU, one logit per image).

    Example:
        >>> import numpy as np
        >>> tuple(patch_discriminator((28, 28, 1))(np.zeros((3, 28, 28, 1), "float32")).shape)
        (3, 1)
    """
    x = keras.Input(tuple(int(s) for s in image_shape), name="image")
    u = keras.layers.Conv2D(filters, 4, strides=2, padding="same")(x)
    u = keras.layers.LeakyReLU(0.2)(u)
    u = keras.layers.Conv2D(2 * filters, 4, strides=2, padding="same")(u)
    u = keras.layers.LeakyReLU(0.2)(u)
    return keras.Model(x, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(u)), name=name)


class ConditionalTriggerTrainer(AdversarialModel):
    """Train a :func:`conditional_generator` towards every target label against a frozen logits classifier.

    Args:
        generator: ``G([z, onehot(t)])`` with outputs in [−1, 1], the classifier's input shape.
        discriminator: the GAN term's discriminator (:func:`patch_discriminator`); trained only when
            ``gan_weight > 0``.
        classifier: the frozen suspect model, canonical images → logits.
        targets: the hypothetical target labels.
        magnitude_weight: γ, the weight of the perturbation's L1 norm (summed over pixels, averaged over pairs).
        gan_weight: γ_gan (0: no GAN term, the discriminator is left alone).
        labels_per_step: target labels each image is paired with per step (None: all), rotating through ``targets``.
        seed: the noise and the label rotation.

    Train with ``fit(x, y)`` on (substitute) images and their labels; ``y`` selects, per label, the images that
    carry a trojan term (those not already of that label).

    Example:
        >>> import keras, numpy as np
        >>> clf = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> g = conditional_generator((8, 8, 1), 3, noise_dim=4, filters=8)
        >>> trainer = ConditionalTriggerTrainer(g, patch_discriminator((8, 8, 1)), clf, targets=[0, 1, 2])
        >>> trainer.compile(generator_optimizer=keras.optimizers.Adam(0.01), discriminator_optimizer="adam")
        >>> x, y = np.random.rand(16, 8, 8, 1).astype("float32"), np.arange(16) % 3
        >>> sorted(trainer.fit(x, y, epochs=1, batch_size=8, verbose=0).history)
        ['discriminator_loss', 'generator_loss', 'magnitude', 'success', 'trojan']
        >>> tuple(trainer.perturbation(np.zeros((5, 4), "float32"), [1] * 5).shape)
        (5, 8, 8, 1)
    """

    tracker_names: ClassVar[tuple[str, ...]] = ("generator_loss", "discriminator_loss", "trojan", "magnitude", "success")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, classifier: keras.Model, targets: Sequence[int], *,
                 magnitude_weight: float = 0.02, gan_weight: float = 0.0, labels_per_step: int | None = None, seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(generator, discriminator, **kwargs)
        if not targets:
            raise ConfigError("give at least one target label.")
        if magnitude_weight < 0 or gan_weight < 0:
            raise ConfigError(f"magnitude_weight and gan_weight must be non-negative, got {magnitude_weight} and {gan_weight}.")
        if labels_per_step is not None and labels_per_step < 1:
            raise ConfigError(f"labels_per_step must be positive or None, got {labels_per_step}.")
        self.classifier = classifier  # frozen: never among the trained variables
        self.targets = [int(t) for t in targets]
        self.num_classes = int(generator.inputs[1].shape[-1])
        self.noise_dim = int(generator.inputs[0].shape[-1])
        self.magnitude_weight, self.gan_weight = float(magnitude_weight), float(gan_weight)
        self.labels_per_step = min(labels_per_step or len(self.targets), len(self.targets))
        self.noise_seed = keras.random.SeedGenerator(seed)
        # where the label rotation stands (only the first replica's value is kept under tf.distribute)
        self._offset = keras.Variable(0, dtype="int32", trainable=False, name="label_offset", aggregation="only_first_replica")

    def perturbation(self, z: Any, labels: Any, training: bool = False) -> Any:
        """``G(z, t)`` for noise ``z`` (N, noise_dim) and labels (N,)."""
        onehot = ops.one_hot(ops.convert_to_tensor(labels, "int32"), self.num_classes)
        return self.generator([ops.convert_to_tensor(z, "float32"), onehot], training=training)

    def _step_labels(self) -> Any:
        k, n = self.labels_per_step, len(self.targets)
        idx = (self._offset + ops.arange(k, dtype="int32")) % n
        self._offset.assign((self._offset + k) % n)
        return ops.take(ops.convert_to_tensor(self.targets, "int32"), idx)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data[0], ops.cast(data[1], "int32")
        labels = self._step_labels()
        n, k = ops.shape(x)[0], self.labels_per_step
        xs = ops.reshape(ops.repeat(ops.expand_dims(x, 1), k, axis=1), (-1, *x.shape[1:]))  # image i with every label
        ys, ts = ops.repeat(y, k), ops.tile(labels, [n])
        z = keras.random.normal((n * k, self.noise_dim), seed=self.noise_seed)
        with tf.GradientTape() as tape:
            delta = self.perturbation(z, ts, training=True)
            stamped = ops.clip(xs + delta, 0.0, 1.0)
            logits = self.classifier(stamped, training=False)
            eligible = ops.cast(ops.not_equal(ys, ts), "float32")
            count = ops.maximum(ops.sum(eligible), 1.0)
            ce = keras.losses.sparse_categorical_crossentropy(ts, logits, from_logits=True)
            trojan = ops.sum(ce * eligible) / count
            magnitude = ops.mean(ops.sum(ops.abs(delta), axis=(1, 2, 3)))
            g_loss = trojan + self.magnitude_weight * magnitude
            if self.gan_weight > 0:
                fooled = keras.losses.binary_crossentropy(ops.ones((n * k, 1)), self.discriminator(stamped, training=False), from_logits=True)
                g_loss = g_loss + self.gan_weight * ops.mean(fooled)
        self.update_generator(tape, g_loss)
        d_loss = ops.zeros(())
        if self.gan_weight > 0:
            with tf.GradientTape() as tape:
                real = keras.losses.binary_crossentropy(ops.ones((n, 1)), self.discriminator(x, training=True), from_logits=True)
                fake = keras.losses.binary_crossentropy(ops.zeros((n * k, 1)), self.discriminator(ops.stop_gradient(stamped), training=True),
                                                        from_logits=True)
                d_loss = ops.mean(real) + ops.mean(fake)
            self.update_discriminator(tape, d_loss)
        hit = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), ts), "float32")
        return self.track(generator_loss=g_loss, discriminator_loss=d_loss, trojan=trojan, magnitude=magnitude,
                          success=ops.sum(hit * eligible) / count)
