"""Data-free distillation generators and DHBE's restricted adversarial distillation loop (yanzhicong/DHBE).

- :func:`sample_generator` — noise → image (DFAD's generator, generalised to any image size): a dense layer to a
  small map, nearest ×2 upsampling with 3×3 convolutions, batch normalization and leaky ReLU, a 3×3 convolution
  to the image's channels, ``tanh`` and a batch normalization **without affine parameters**, so its output is a
  per-channel zero-mean, unit-variance image: the original's *normalised* input space.
- :func:`patch_generator` — noise → a small trigger patch in [−1, 1] (``tanh`` after a batch normalization
  without affine parameters), and :func:`random_pad`, which zero-pads it at one random position per batch.
- :class:`DHBETrainer` — one iteration of the original per ``train_step``: ``student_steps`` (5) student steps
  ``L1(S(x), T(x)) + λ · L1(S(x ⊕ δ), S(x))`` on logits, one sample-generator step maximising the
  student-teacher discrepancy (with the TV terms), one trigger-generator step maximising the student's
  reaction to the patch.

The normalised space and kerasbd's canonical [0, 1] images: kerasbd's models take canonical images (a
:class:`~kerasbd.models.Classifier`'s input adapter maps them to the model's own range), so the generator's
normalised output ``g`` becomes the canonical image ``mean + std · g`` with the per-channel ``pixel_mean`` /
``pixel_std`` the defense is given (the original's dataset constants; default 0.5 / 0.25 where the data's are
unknown), and the patch is added to that canonical image, unclipped, exactly as the original adds it to the
de-normalised image before normalising again (``clip=True`` clips both to [0, 1], the range real inputs have).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from kerasbd.errors import ConfigError
from kerasbd.generators.adversarial import AdversarialModel, apply_mean_gradient

__all__ = ["DHBETrainer", "patch_generator", "place_patches", "random_pad", "sample_generator", "tv_l1", "tv_l2"]


def _bn(name: str, affine: bool = True) -> keras.layers.BatchNormalization:
    # PyTorch BatchNorm: eps 1e-5, momentum 0.1 (Keras counts the other way)
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, center=affine, scale=affine, name=name)


def sample_generator(image_shape: Sequence[int], *, nz: int = 256, ngf: int = 64, name: str = "sample_generator") -> keras.Model:
    """DFAD/DHBE's image generator: z (N, nz) → normalised images (N, H, W, C).

    Two upsamplings for images up to 32 px (28 → 7×7 start, 32 → 8×8, as the original), three above (64 → 8×8);
    sides that are not a multiple of the upsampling are generated one step larger and cropped (55×47 faces).

    Example:
        >>> import numpy as np
        >>> g = sample_generator((28, 28, 1), nz=8, ngf=8)
        >>> tuple(g(np.random.default_rng(0).normal(size=(4, 8)).astype("float32"), training=True).shape)
        (4, 28, 28, 1)
    """
    h, w, c = (int(s) for s in image_shape)
    ups = 2 if max(h, w) <= 32 else 3
    h0, w0 = math.ceil(h / 2**ups), math.ceil(w / 2**ups)
    z = keras.Input((nz,), name="noise")
    u = keras.layers.Dense(2 * ngf * h0 * w0, name="project")(z)
    u = _bn("project_bn")(keras.layers.Reshape((h0, w0, 2 * ngf))(u))
    for k in range(ups):
        u = keras.layers.UpSampling2D(2, interpolation="nearest")(u)
        u = keras.layers.Conv2D(2 * ngf if k < ups - 1 else ngf, 3, padding="same", name=f"up{k}_conv")(u)
        u = keras.layers.LeakyReLU(0.2)(_bn(f"up{k}_bn")(u))
    u = keras.layers.Conv2D(c, 3, padding="same", activation="tanh", name="to_image")(u)
    if (h0 * 2**ups, w0 * 2**ups) != (h, w):
        u = keras.layers.Cropping2D(((0, h0 * 2**ups - h), (0, w0 * 2**ups - w)), name="crop")(u)
    return keras.Model(z, _bn("normalise", affine=False)(u), name=name)


def patch_generator(channels: int, *, patch_size: int = 5, nz: int = 256, ngf: int = 64, name: str = "trigger_generator") -> keras.Model:
    """DHBE's trigger generator (``PatchGeneratorPreBN``): z (N, nz) → patches (N, p, p, C) in [−1, 1].

    Example:
        >>> import numpy as np
        >>> p = patch_generator(3, nz=8, ngf=8)
        >>> out = np.asarray(p(np.zeros((2, 8), "float32")))
        >>> out.shape, bool(np.abs(out).max() <= 1)
        ((2, 5, 5, 3), True)
    """
    z = keras.Input((nz,), name="noise")
    u = keras.layers.Dense(ngf * patch_size * patch_size, name="project")(z)
    u = _bn("project_bn")(keras.layers.Reshape((patch_size, patch_size, ngf))(u))
    u = keras.layers.Conv2D(channels, 3, padding="same", name="to_patch")(u)
    return keras.Model(z, keras.layers.Activation("tanh")(_bn("normalise", affine=False)(u)), name=name)


def random_pad(patch: Any, image_shape: Sequence[int], top: Any, left: Any) -> Any:
    """``patch`` (N, p, p, C) zero-padded to the image size with its corner at (``top``, ``left``) for the whole batch.

    Computed as :func:`place_patches` with that one position repeated: ``tf.pad`` with a random amount has no XLA
    form (its paddings must be compile-time constants), the one-hot product has.

    Example:
        >>> import numpy as np
        >>> out = np.asarray(random_pad(np.ones((1, 2, 2, 1), "float32"), (4, 5, 1), 1, 3))
        >>> out[0, :, :, 0].astype(int).tolist()
        [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    """
    n = ops.shape(patch)[:1]
    return place_patches(patch, image_shape, ops.broadcast_to(ops.cast(top, "int32"), n), ops.broadcast_to(ops.cast(left, "int32"), n))


def place_patches(patches: Any, image_shape: Sequence[int], top: Any, left: Any) -> Any:
    """Each patch ``patches[n]`` (N, p, p, C) zero-padded to the image size with its corner at (``top[n]``, ``left[n]``).

    One position per image (kerasbd's ``position="image"``), as one batched product: one-hot row and column
    selectors ``R`` (N, H, p) and ``C`` (N, W, p) give ``R · patch · Cᵀ`` per image and channel.

    Example:
        >>> import numpy as np
        >>> out = np.asarray(place_patches(np.ones((2, 2, 2, 1), "float32"), (3, 3, 1), np.array([0, 1]), np.array([1, 0])))
        >>> out[0, :, :, 0].astype(int).tolist(), out[1, :, :, 0].astype(int).tolist()
        ([[0, 1, 1], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [1, 1, 0]])
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    p = int(patches.shape[1])
    offsets = ops.arange(p, dtype="int32")
    rows = ops.one_hot(ops.cast(top, "int32")[:, None] + offsets[None], h, axis=1, dtype=patches.dtype)  # (N, H, p)
    cols = ops.one_hot(ops.cast(left, "int32")[:, None] + offsets[None], w, axis=1, dtype=patches.dtype)  # (N, W, p)
    return ops.einsum("nhi,nijc,nwj->nhwc", rows, patches, cols)


def tv_l1(x: Any) -> Any:
    """The original's ``TV_l1``: over 4 directions (right, down, both diagonals) the mean absolute difference."""
    return sum(ops.mean(ops.abs(d)) for d in _differences(x))


def tv_l2(x: Any) -> Any:
    """The original's ``TV_l2``: over the same 4 directions the Frobenius norm of the differences (not squared)."""
    return sum(ops.sqrt(ops.sum(ops.square(d))) for d in _differences(x))


def _differences(x: Any) -> list[Any]:
    return [x[:, :, 1:] - x[:, :, :-1], x[:, 1:] - x[:, :-1], x[:, 1:, 1:] - x[:, :-1, :-1], x[:, 1:, :-1] - x[:, :-1, 1:]]


def _l1(a: Any, b: Any) -> Any:
    return ops.mean(ops.abs(a - b))  # F.l1_loss: the mean over batch × logits


class DHBETrainer(AdversarialModel):
    """DHBE's loop as a two-player ``keras.Model``: the sample generator against the student, plus the trigger generator.

    Args:
        generator: :func:`sample_generator` (noise → normalised images).
        student: the model being distilled (a copy of the teacher for DHBE, a fresh one for DFAD), canonical → logits.
        teacher: the frozen suspicious model, canonical → logits.
        trigger_generator: :func:`patch_generator`; None = no backdoor regularisation (DFAD).
        pixel_mean, pixel_std: per-channel mean and std mapping normalised images to canonical ones (see the module).
        batch_size: generated images per step.
        student_steps: student steps per iteration (5 in the code, 3 in the paper).
        backdoor_weight: λ of the student's patched-vs-clean L1 term (0.1; 0 for DFAD).
        tv_l1_weight, tv_l2_weight: the sample generator's TV terms (0 and 1e-4).
        weight_decay: the student's coupled L2 (PyTorch SGD's ``weight_decay``: ``wd · w`` added to the gradient).
        position: ``"batch"`` — one random patch position for the whole batch (the original's ``random_pad``);
            ``"image"`` — one per image, so every step probes as many positions as it has images.
        clip: clip generated and patched images to [0, 1] (off: unclipped, as the original). Unclipped noise
            images reach values no real input has, where BN-free models fire their backdoor by chance (measured:
            17 % → 8 % of N(0.13, 0.31) images sent to the target of ``dillonsd_pattern_all_to_one``).
        seed: the noise and the patch positions.

    Compile with ``compile(generator_optimizer=..., discriminator_optimizer=..., trigger_optimizer=...)`` (the
    discriminator is the student); ``fit`` on any dataset of ``epoch_itrs`` steps per epoch, whose values are not
    used (every step draws its own noise).

    Example:
        >>> import keras, numpy as np
        >>> net = lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> teacher = net()
        >>> trainer = DHBETrainer(sample_generator((8, 8, 1), nz=4, ngf=4), net(), teacher, patch_generator(1, patch_size=3, nz=4, ngf=4),
        ...                       batch_size=8, student_steps=2)
        >>> trainer.compile(generator_optimizer="adam", discriminator_optimizer="sgd", trigger_optimizer="adam")
        >>> sorted(trainer.fit(np.zeros((2, 1)), epochs=1, batch_size=1, verbose=0).history)
        ['backdoor_loss', 'discriminator_loss', 'generator_loss', 'trigger_loss']
    """

    tracker_names: ClassVar[tuple[str, ...]] = ("generator_loss", "discriminator_loss", "backdoor_loss", "trigger_loss")

    def __init__(self, generator: keras.Model, student: keras.Model, teacher: keras.Model, trigger_generator: keras.Model | None = None, *,
                 pixel_mean: Sequence[float] | float = 0.5, pixel_std: Sequence[float] | float = 0.25, batch_size: int = 256,
                 student_steps: int = 5, backdoor_weight: float = 0.1, tv_l1_weight: float = 0.0, tv_l2_weight: float = 1e-4,
                 weight_decay: float = 5e-4, position: str = "batch", clip: bool = False, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(generator, student, **kwargs)
        if batch_size < 1 or student_steps < 1:
            raise ConfigError(f"batch_size and student_steps must be positive, got {batch_size} and {student_steps}.")
        if backdoor_weight < 0 or weight_decay < 0:
            raise ConfigError(f"backdoor_weight and weight_decay must be non-negative, got {backdoor_weight} and {weight_decay}.")
        if trigger_generator is None and backdoor_weight > 0:
            raise ConfigError("backdoor_weight > 0 needs a trigger_generator (DFAD: backdoor_weight=0 and no trigger generator).")
        self.teacher, self.trigger_generator = teacher, trigger_generator
        self.image_shape = tuple(int(s) for s in generator.output_shape[1:])
        channels = self.image_shape[-1]
        self.pixel_mean = ops.reshape(ops.convert_to_tensor(pixel_mean, "float32"), (-1,)) * ops.ones((channels,))
        self.pixel_std = ops.reshape(ops.convert_to_tensor(pixel_std, "float32"), (-1,)) * ops.ones((channels,))
        self.batch_size, self.student_steps = int(batch_size), int(student_steps)
        self.backdoor_weight, self.tv_l1_weight, self.tv_l2_weight = float(backdoor_weight), float(tv_l1_weight), float(tv_l2_weight)
        if position not in ("batch", "image"):
            raise ConfigError(f"position must be 'batch' (the original: one patch position per batch) or 'image', got {position!r}.")
        self.weight_decay, self.position, self.clip = float(weight_decay), position, bool(clip)
        self.nz = int(generator.inputs[0].shape[-1])
        self.nz2 = int(trigger_generator.inputs[0].shape[-1]) if trigger_generator is not None else 0
        self.noise_seed = keras.random.SeedGenerator(seed)

    def compile(self, *, generator_optimizer: Any, discriminator_optimizer: Any, trigger_optimizer: Any = None, **kwargs: Any) -> None:
        """The sample generator's, the student's and (with a trigger generator) the trigger generator's optimizers."""
        super().compile(generator_optimizer=generator_optimizer, discriminator_optimizer=discriminator_optimizer, **kwargs)
        if self.trigger_generator is not None:
            from kerasbd.training.fit import make_optimizer

            if trigger_optimizer is None:
                raise ConfigError("pass trigger_optimizer for the trigger generator.")
            with self.distribute_strategy.scope():
                self.trigger_optimizer = make_optimizer(trigger_optimizer)
                self.trigger_optimizer.build(self.trigger_generator.trainable_variables)

    # --------------------------------------------------------------------------------------------- the pieces
    def canonical(self, normalised: Any) -> Any:
        """Normalised generator output → canonical images (``mean + std · g``; clipped to [0, 1] with ``clip``)."""
        return self._range(self.pixel_mean + self.pixel_std * normalised)

    def _range(self, images: Any) -> Any:
        return ops.clip(images, 0.0, 1.0) if self.clip else images

    def patched(self, images: Any, patches: Any, top: Any, left: Any) -> Any:
        """Canonical images with the patches added (the original's ``norm(inv_norm(x) + δ)``): at one position for
        the batch when ``top``/``left`` are scalars, at one per image when they are vectors."""
        if len(ops.shape(top)) == 0:
            return self._range(images + random_pad(patches, self.image_shape, top, left))
        return self._range(images + place_patches(patches, self.image_shape, top, left))

    def _noise(self, n: Any, dim: int) -> Any:
        return keras.random.normal((n, dim), seed=self.noise_seed)

    def _position(self, n: Any) -> tuple[Any, Any]:
        assert self.trigger_generator is not None
        p = int(self.trigger_generator.output_shape[1])
        h, w = self.image_shape[:2]
        shape = () if self.position == "batch" else (n,)
        top = keras.random.randint(shape, 0, h - p + 1, seed=self.noise_seed)
        left = keras.random.randint(shape, 0, w - p + 1, seed=self.noise_seed)
        return top, left

    def _student_loss(self, x: Any) -> tuple[Any, Any]:
        """``L1(S(x), T(x)) + λ · L1(S(x ⊕ δ), S(x))`` on canonical images ``x``; returns (total, backdoor term)."""
        s_clean = self.discriminator(x, training=True)
        loss = _l1(s_clean, self.teacher(x, training=False))
        backdoor = ops.zeros(())
        if self.trigger_generator is not None and self.backdoor_weight > 0:
            delta = ops.stop_gradient(self.trigger_generator(self._noise(ops.shape(x)[0], self.nz2), training=True))
            top, left = self._position(ops.shape(x)[0])
            backdoor = _l1(self.discriminator(self.patched(x, delta, top, left), training=True), ops.stop_gradient(s_clean))
            loss = loss + self.backdoor_weight * backdoor
        return loss, backdoor

    def _apply_student(self, tape: tf.GradientTape, loss: Any) -> None:
        variables = self.discriminator_variables
        grads = tape.gradient(loss, variables)
        if self.weight_decay > 0:  # PyTorch SGD's coupled L2: wd·w joins the gradient before the momentum
            grads = [g + self.weight_decay * v if g is not None else g for g, v in zip(grads, variables, strict=True)]
        scale = 1.0 / tf.distribute.get_strategy().num_replicas_in_sync
        self.discriminator_optimizer.apply([g * scale if g is not None else g for g in grads], variables)

    def train_step(self, data: Any) -> dict[str, Any]:
        n = self.batch_size // tf.distribute.get_strategy().num_replicas_in_sync
        for _ in range(self.student_steps):
            x = ops.stop_gradient(self.canonical(self.generator(self._noise(n, self.nz), training=True)))
            with tf.GradientTape() as tape:
                s_loss, backdoor = self._student_loss(x)
            self._apply_student(tape, s_loss)
        with tf.GradientTape() as tape:
            g = self.generator(self._noise(n, self.nz), training=True)
            x = self.canonical(g)
            discrepancy = _l1(self.discriminator(x, training=True), self.teacher(x, training=False))
            g_loss = -discrepancy + self.tv_l1_weight * tv_l1(g) + self.tv_l2_weight * tv_l2(g)
        self.update_generator(tape, g_loss)
        t_loss = ops.zeros(())
        if self.trigger_generator is not None:
            x = ops.stop_gradient(self.canonical(self.generator(self._noise(n, self.nz), training=True)))
            top, left = self._position(n)
            with tf.GradientTape() as tape:
                delta = self.trigger_generator(self._noise(n, self.nz2), training=True)
                t_loss = -_l1(self.discriminator(x, training=True), self.discriminator(self.patched(x, delta, top, left), training=True))
            apply_mean_gradient(tape, t_loss, self.trigger_generator.trainable_variables, self.trigger_optimizer)
        return self.track(generator_loss=g_loss, discriminator_loss=s_loss, backdoor_loss=backdoor, trigger_loss=t_loss)
