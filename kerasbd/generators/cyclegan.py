"""CycleGAN (Zhu et al., 2017) as NNoculation uses it: learn to translate clean images into quarantined ones.

NNoculation (Veldanda et al., §3.3 and Appendix A.3) trains a CycleGAN between the defender's clean validation
images (domain A) and the inputs its ensemble quarantined (domain B, mostly triggered): the A → B generator then
*adds the attacker's trigger* to clean images, which become correctly labelled treatment data.

- :func:`cyclegan_generator`: Johnson et al.'s ResNet generator with the paper's Table 18 layers — c7s1-64, d128,
  d256, 9 residual blocks, u128, u64, c7s1-C — instance normalisation (``GroupNormalization(groups=-1,
  epsilon=1e-5)``), reflection padding, ``tanh`` output. The paper's 64 first filters are the default; the
  CycleGAN-Keras code NNoculation ran has 32 (``filters=32``). Sizes that are not multiples of 4 (55×47 faces)
  are reflect-padded to the next multiple and cropped back, never resized.
- :func:`patchgan_discriminator`: the 70×70 PatchGAN of Table 17 (c64 without normalisation, c128, c256 with
  stride 2, c512 with stride 1, a 1-filter output convolution; 4×4 kernels, LeakyReLU 0.2), one real/fake score
  per overlapping patch.
- :class:`CycleGAN`: the two generators and two discriminators as one Keras model whose ``train_step`` is one
  CycleGAN iteration — least-squares GAN losses, cycle loss λ = 10 (mean absolute error), an optional identity
  loss, the discriminators' objective halved, each discriminator shown fakes through a 50-image
  :class:`~kerasbd.generators.ImagePool`. ``fit``, checkpoints, ``tf.distribute`` and ``jit_compile`` apply.
- :class:`CycleGANTranslator`: the configured training (Adam 2e-4, β1 0.5, 200 epochs with linear decay to zero
  after the first half, batch 1) with resume, and ``translate``.

Images enter and leave in kerasbd's canonical [0, 1] range; the networks work in CycleGAN's [−1, 1]
(``2x − 1``), as CycleGAN-Keras loads images with ``x / 127.5 − 1``.

Deliberate differences from CycleGAN-Keras (the implementation NNoculation used):

- the linear decay is on (the paper's schedule; it is off by default in that code), per step rather than per
  update count, as :class:`~kerasbd.generators.LinearDecay` says;
- one iteration updates both generators, then both discriminators (PyTorch CycleGAN's order; CycleGAN-Keras
  updates the discriminators first), the discriminators judging the fakes of that generator pass;
- the identity loss, when on (``identity_weight > 0``), is added to every generator step with that weight
  (PyTorch CycleGAN's form; its default 0.5 · λ is ``identity_weight=5``), where CycleGAN-Keras takes a separate
  identity step every tenth iteration; off by default in both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasbd.config import Configurable
from kerasbd.errors import ConfigError
from kerasbd.generators.adversarial import AdversarialModel
from kerasbd.generators.layers import instance_norm
from kerasbd.generators.pool import ImagePool
from kerasbd.generators.resnet import resnet_generator
from kerasbd.generators.schedules import LinearDecay

__all__ = ["CycleGAN", "CycleGANTranslator", "cyclegan_generator", "patchgan_discriminator"]


def cyclegan_generator(image_shape: Sequence[int], *, filters: int = 64, blocks: int = 9, name: str = "cyclegan_generator") -> keras.Model:
    """CycleGAN's ResNet generator (paper Table 18), images in [−1, 1] → images in [−1, 1] of the same shape.

    Example:
        >>> g = cyclegan_generator((55, 47, 3), filters=8, blocks=2)
        >>> g.output_shape
        (None, 55, 47, 3)
        >>> [layer.name for layer in g.layers if layer.name.endswith("_conv")][:3]
        ['stem_conv', 'down1_conv', 'down2_conv']
    """
    return resnet_generator(image_shape, filters=filters, blocks=blocks, outer_kernel=7, upsampling="transpose", name=name)


def patchgan_discriminator(image_shape: Sequence[int], *, filters: int = 64, name: str = "patchgan_discriminator") -> keras.Model:
    """The 70×70 PatchGAN (paper Table 17): one unbounded score per patch, (N, ⌈H/8⌉, ⌈W/8⌉, 1).

    Example:
        >>> patchgan_discriminator((28, 28, 1)).output_shape, patchgan_discriminator((55, 47, 3)).output_shape
        ((None, 4, 4, 1), (None, 7, 6, 1))
    """
    if len(image_shape) != 3 or filters < 1:
        raise ConfigError(f"image_shape must be (H, W, C) and filters positive, got {tuple(image_shape)} and {filters}.")
    x = keras.Input(tuple(int(s) for s in image_shape), name="image")
    u = x
    for k, (mult, stride) in enumerate(((1, 2), (2, 2), (4, 2), (8, 1))):
        u = keras.layers.Conv2D(filters * mult, 4, strides=stride, padding="same", name=f"c{k}_conv")(u)
        if k:  # the first layer has no normalisation
            u = instance_norm(name=f"c{k}_norm")(u)
        u = keras.layers.LeakyReLU(0.2, name=f"c{k}_lrelu")(u)
    return keras.Model(x, keras.layers.Conv2D(1, 4, padding="same", name="score")(u), name=name)


def _mse(score: Any, target: float) -> Any:
    return ops.mean(ops.square(score - target))


def _mae(a: Any, b: Any) -> Any:
    return ops.mean(ops.abs(a - b))


class CycleGAN(AdversarialModel):
    """Two generators (A → B, B → A) and two PatchGAN discriminators trained by CycleGAN's objective.

    ``train_step`` takes a batch ``(images_a, images_b)`` in [0, 1] (unpaired: any two batches of the two
    domains) and makes one iteration::

        L_G = mse(D_B(G(a)), 1) + mse(D_A(F(b)), 1) + λ_cyc (|F(G(a)) − a| + |G(F(b)) − b|) [+ λ_id (|G(b) − b| + |F(a) − a|)]
        L_D = ½ [mse(D_A(a), 1) + mse(D_A(pool_A(F(b))), 0)] + ½ [mse(D_B(b), 1) + mse(D_B(pool_B(G(a))), 0)]

    with G = ``generator`` (A → B) and F = ``generator_ba``; means over pixels and patches. ``AdversarialModel``'s
    two optimizers are the generators' (both G and F) and the discriminators' (both D_A and D_B), as in PyTorch
    CycleGAN.

    Args:
        generator: G, A → B, [−1, 1] images (:func:`cyclegan_generator`).
        generator_ba: F, B → A.
        discriminator_a: D_A, judges domain A (:func:`patchgan_discriminator`).
        discriminator_b: D_B, judges domain B.
        cycle_weight: λ_cyc (CycleGAN: 10).
        identity_weight: λ_id (0: off, CycleGAN-Keras' default).
        pool_size: images in each discriminator's history (CycleGAN: 50; 0 disables).
        seed: the pools' swap decisions.

    Example:
        >>> import keras, numpy as np
        >>> shape = (8, 8, 1)
        >>> gan = CycleGAN(cyclegan_generator(shape, filters=4, blocks=1), cyclegan_generator(shape, filters=4, blocks=1),
        ...                patchgan_discriminator(shape, filters=4), patchgan_discriminator(shape, filters=4), seed=0)
        >>> gan.compile(generator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        ...             discriminator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
        >>> a, b = np.zeros((4, *shape), "float32"), np.ones((4, *shape), "float32")
        >>> sorted(gan.fit((a, b), epochs=1, batch_size=2, verbose=0).history)
        ['adversarial_loss', 'cycle_loss', 'discriminator_loss', 'generator_loss', 'identity_loss']
        >>> gan.translate(a).shape
        (4, 8, 8, 1)
    """

    tracker_names: ClassVar[tuple[str, ...]] = ("generator_loss", "discriminator_loss", "adversarial_loss", "cycle_loss", "identity_loss")

    def __init__(self, generator: keras.Model, generator_ba: keras.Model, discriminator_a: keras.Model, discriminator_b: keras.Model, *,
                 cycle_weight: float = 10.0, identity_weight: float = 0.0, pool_size: int = 50, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(generator, discriminator_b, **kwargs)
        for role, model in (("generator_ba", generator_ba), ("discriminator_a", discriminator_a)):
            if not isinstance(model, keras.Model) or not model.built:
                raise ConfigError(f"the {role} must be a built keras.Model: give it a keras.Input or call it on a batch first.")
        shape = tuple(generator.input_shape[1:])
        for role, model in (("generator_ba", generator_ba), ("discriminator_a", discriminator_a), ("discriminator_b", discriminator_b)):
            if tuple(model.input_shape[1:]) != shape:
                raise ConfigError(f"the {role} takes {tuple(model.input_shape[1:])} images, the generator {shape}: both domains need one shape.")
        if cycle_weight < 0 or identity_weight < 0:
            raise ConfigError(f"cycle_weight and identity_weight must not be negative, got {cycle_weight} and {identity_weight}.")
        self.generator_ba, self.discriminator_a = generator_ba, discriminator_a
        self.cycle_weight, self.identity_weight = float(cycle_weight), float(identity_weight)
        self.pool_a = ImagePool(pool_size, seed=seed, name="pool_a")
        self.pool_b = ImagePool(pool_size, seed=None if seed is None else seed + 1, name="pool_b")
        for pool in (self.pool_a, self.pool_b):
            pool.build((None, *shape))

    @property
    def generator_variables(self) -> list[keras.Variable]:
        return list(self.generator.trainable_variables) + list(self.generator_ba.trainable_variables)

    @property
    def discriminator_variables(self) -> list[keras.Variable]:
        return list(self.discriminator_a.trainable_variables) + list(self.discriminator.trainable_variables)

    def train_step(self, data: Any) -> dict[str, Any]:
        images_a, images_b = data[0] if isinstance(data[0], (tuple, list)) else data[:2]
        a, b = ops.cast(images_a, "float32") * 2.0 - 1.0, ops.cast(images_b, "float32") * 2.0 - 1.0
        g_ab, g_ba, d_a, d_b = self.generator, self.generator_ba, self.discriminator_a, self.discriminator
        with tf.GradientTape() as tape:
            fake_b, fake_a = g_ab(a, training=True), g_ba(b, training=True)
            adversarial = _mse(d_b(fake_b, training=True), 1.0) + _mse(d_a(fake_a, training=True), 1.0)
            cycle = _mae(g_ba(fake_b, training=True), a) + _mae(g_ab(fake_a, training=True), b)
            identity = _mae(g_ab(b, training=True), b) + _mae(g_ba(a, training=True), a) if self.identity_weight else ops.zeros(())
            g_loss = adversarial + self.cycle_weight * cycle + self.identity_weight * identity
        self.update_generator(tape, g_loss)
        pooled_a, pooled_b = self.pool_a(fake_a), self.pool_b(fake_b)
        with tf.GradientTape() as tape:
            d_loss = 0.5 * (_mse(d_a(a, training=True), 1.0) + _mse(d_a(pooled_a, training=True), 0.0)) + 0.5 * (
                _mse(d_b(b, training=True), 1.0) + _mse(d_b(pooled_b, training=True), 0.0))
        self.update_discriminator(tape, d_loss)
        return self.track(generator_loss=g_loss, discriminator_loss=d_loss, adversarial_loss=adversarial, cycle_loss=cycle,
                          identity_loss=identity)

    def translate(self, images: np.ndarray, *, reverse: bool = False, batch_size: int = 64) -> np.ndarray:
        """``G(images)`` (A → B; ``reverse=True``: F, B → A) for images in [0, 1], returned in [0, 1] as float32."""
        net = self.generator_ba if reverse else self.generator
        out = net.predict(np.asarray(images, np.float32) * 2.0 - 1.0, batch_size=batch_size, verbose=0)
        return np.clip((np.asarray(out) + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


class CycleGANTranslator(Configurable):
    """Train a :class:`CycleGAN` from domain A (clean images) to domain B (quarantined images) and translate with it.

    The defaults are the paper's (§4.2.2, A.3): 64 first filters, 9 residual blocks, 200 epochs of
    ``max(len(a), len(b))`` images each, Adam 2e-4 with β1 = 0.5, the rate held for the first half
    (``decay_from=0.5``) then decayed linearly to zero, batch 1, λ_cyc = 10, a 50-image pool, no identity loss.
    CycleGAN-Keras' generator, the code NNoculation ran, is ``filters=32``. A paper-length run takes hours on a
    CPU; shorter schedules (fewer epochs, fewer filters and blocks) are a configuration away.

    Args:
        epochs, batch_size, filters, blocks, learning_rate, beta_1, decay_from, cycle_weight, identity_weight,
        pool_size: as above (``decay_from``: fraction of the epochs at the initial rate).
        jit_compile: compile the training step with XLA.

    Example:
        >>> import numpy as np
        >>> a = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> b = a.copy(); b[:, :2, :2] = 1.0  # "triggered": a white corner
        >>> t = CycleGANTranslator(epochs=2, filters=4, blocks=1, batch_size=4).fit(a, b, seed=0)
        >>> t.translate(a).shape, len(t.history_["cycle_loss"])
        ((8, 8, 8, 1), 2)
    """

    def __init__(self, epochs: int = 200, batch_size: int = 1, filters: int = 64, blocks: int = 9, learning_rate: float = 2e-4,
                 beta_1: float = 0.5, decay_from: float = 0.5, cycle_weight: float = 10.0, identity_weight: float = 0.0,
                 pool_size: int = 50, jit_compile: bool = False) -> None:
        if epochs < 1 or batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}.")
        if not 0.0 <= decay_from < 1.0:
            raise ConfigError(f"decay_from is the fraction of epochs before the decay, in [0, 1), got {decay_from}.")
        self.epochs, self.batch_size, self.filters, self.blocks = int(epochs), int(batch_size), int(filters), int(blocks)
        self.learning_rate, self.beta_1, self.decay_from = float(learning_rate), float(beta_1), float(decay_from)
        self.cycle_weight, self.identity_weight, self.pool_size = float(cycle_weight), float(identity_weight), int(pool_size)
        self.jit_compile = bool(jit_compile)

    def steps_per_epoch(self, n_a: int, n_b: int) -> int:
        """Iterations per epoch: one pass over the larger domain, as CycleGAN's data loader makes."""
        return max(1, math.ceil(max(n_a, n_b) / self.batch_size))

    def build(self, image_shape: Sequence[int], steps_per_epoch: int, seed: int = 0) -> CycleGAN:
        """The compiled :class:`CycleGAN` for ``image_shape`` (build it inside a strategy's scope to distribute it)."""
        keras.utils.set_random_seed(seed)
        shape = tuple(int(s) for s in image_shape)
        nets = [cyclegan_generator(shape, filters=self.filters, blocks=self.blocks, name=n) for n in ("generator_ab", "generator_ba")]
        nets += [patchgan_discriminator(shape, name=n) for n in ("discriminator_a", "discriminator_b")]
        gan = CycleGAN(*nets, cycle_weight=self.cycle_weight, identity_weight=self.identity_weight, pool_size=self.pool_size, seed=seed)
        total = self.epochs * steps_per_epoch
        hold = int(round(self.decay_from * total))

        def adam() -> keras.optimizers.Optimizer:
            return keras.optimizers.Adam(LinearDecay(self.learning_rate, hold_steps=hold, total_steps=max(total, hold + 1)), beta_1=self.beta_1)

        gan.compile(generator_optimizer=adam(), discriminator_optimizer=adam(), jit_compile=self.jit_compile)
        return gan

    def fit(self, images_a: np.ndarray, images_b: np.ndarray, *, seed: int = 0, store: Any = None, strategy: Any = None,
            verbose: int = 0) -> CycleGANTranslator:
        """Train on clean ``images_a`` and quarantined ``images_b`` ([0, 1], one shape); returns self.

        ``store`` (a :class:`~kerasbd.resume.ResumeStore`) checkpoints every epoch and resumes a stopped run;
        ``strategy`` is a ``tf.distribute`` strategy or its name for :func:`~kerasbd.training.get_strategy`.
        Sets ``model_`` (the :class:`CycleGAN`), ``history_`` (per-epoch losses) and ``seconds_per_epoch_``.
        """
        from kerasbd.training import get_strategy
        from kerasbd.training.epochs import EpochCheckpoint, EpochProgress, resume_epoch

        a, b = np.asarray(images_a, np.float32), np.asarray(images_b, np.float32)
        if a.ndim != 4 or a.shape[1:] != b.shape[1:] or not len(a) or not len(b):
            raise ConfigError(f"the CycleGAN needs two non-empty sets of images of one shape (N, H, W, C), got {a.shape} and {b.shape}.")
        steps = self.steps_per_epoch(len(a), len(b))
        dist = get_strategy(strategy)
        with dist.scope():
            self.model_ = self.build(a.shape[1:], steps, seed)
        done = resume_epoch(store, self.model_, "cyclegan")
        saved = (store.load_json("cyclegan_history") if store is not None else None) or {}
        # the losses are saved before the checkpoint they belong to: drop those of an epoch whose checkpoint was never written
        history = {k: list(v)[:done] for k, v in saved.items()}
        show = {"cycle_loss": ("cycle", ".3f"), "adversarial_loss": ("adv", ".3f"), "discriminator_loss": ("disc", ".3f")}
        callbacks = [_History(store, history), EpochCheckpoint(store, "cyclegan"),
                     EpochProgress(self.epochs, "cyclegan", verbose, initial=done, show=show)]
        start = time.perf_counter()
        if done < self.epochs:
            self.model_.fit(self._dataset(a, b, seed), epochs=self.epochs, initial_epoch=done, steps_per_epoch=steps,
                            callbacks=callbacks, shuffle=False, verbose=2 if verbose >= 2 else 0)
        self.history_ = {k: [float(v) for v in vs] for k, vs in history.items()}
        self.seconds_per_epoch_ = (time.perf_counter() - start) / max(1, self.epochs - done) if done < self.epochs else None
        return self

    def _dataset(self, a: np.ndarray, b: np.ndarray, seed: int) -> tf.data.Dataset:
        """Unpaired batches: each domain shuffled on its own and repeated, so the smaller one wraps around."""
        def stream(x: np.ndarray, offset: int) -> tf.data.Dataset:
            return tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=seed + offset, reshuffle_each_iteration=True).repeat()

        pairs = tf.data.Dataset.zip((stream(a, 0), stream(b, 1)))
        return pairs.batch(self.batch_size, drop_remainder=True).prefetch(2)

    def translate(self, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Clean images → their "quarantined-domain" version (the learned trigger added), [0, 1]."""
        if not hasattr(self, "model_"):
            raise ConfigError("the translator is not trained yet: call fit(clean_images, quarantined_images) first.")
        return self.model_.translate(images, batch_size=batch_size)


class _History(keras.callbacks.Callback):
    """Per-epoch losses, kept in the resume store (when there is one) so a resumed run reports every epoch."""

    def __init__(self, store: Any, history: dict[str, list[float]]) -> None:
        super().__init__()
        self.store, self.history = store, history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.store is not None:
            self.store.save_json("cyclegan_history", self.history)
