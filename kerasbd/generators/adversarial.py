"""The base of two-player training loops (GANs, critics, data-free distillation) as a ``keras.Model``.

A method subclasses :class:`AdversarialModel` and writes one ``train_step``; everything Keras gives a model then
applies unchanged: ``fit`` with its callbacks and per-epoch metric logs, ``save_weights`` / ``load_weights`` and
``ModelCheckpoint(save_weights_only=True)`` (both players, their layers' state such as an ``ImagePool``'s, and
both optimizers' state once compiled, so training resumes), ``tf.distribute`` (build and compile the model inside
``strategy.scope()``) and ``jit_compile``. The pair has no ``.keras`` form of its own (its training step is code):
rebuild it and load its weights, or save a trained player, a plain ``keras.Model``, to ``.keras``.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeAlias

import keras
import tensorflow as tf

from kerasbd.errors import ConfigError
from kerasbd.training.fit import make_optimizer

__all__ = ["AdversarialModel", "apply_mean_gradient"]

OptimizerLike: TypeAlias = str | dict | keras.optimizers.Optimizer
# compile() arguments of a supervised model that a two-player loop has no use for
_SUPERVISED_ARGS = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")


class AdversarialModel(keras.Model):
    """Two players, a generator and a discriminator, each with its own optimizer, trained by a subclass' ``train_step``.

    The "discriminator" is whichever model plays against the generator: a GAN's discriminator, a WGAN critic,
    DHBE's student. Frozen models a method also needs (the suspect classifier, a teacher) are plain attributes
    of the subclass. The contract of a subclass:

    - pass built sub-models (with an ``Input``, or called once) and build any further layers in ``__init__``
      (e.g. ``ImagePool.build(shape)``): Keras then never needs a forward pass of the whole model;
    - name every value it logs in ``tracker_names``;
    - implement ``train_step(data)``: compute each player's loss (the mean over the batch) under a
      ``tf.GradientTape``, update with :meth:`update_discriminator` / :meth:`update_generator`, and
      ``return self.track(generator_loss=..., discriminator_loss=...)``. For example::

          def train_step(self, data):
              real = data
              z = keras.random.normal((tf.shape(real)[0], 16), seed=self.noise_seed)  # a SeedGenerator made in __init__
              with tf.GradientTape() as tape:
                  fake = self.generator(z, training=True)
                  d_loss = bce(1, self.discriminator(real, training=True)) + bce(0, self.discriminator(fake, training=True))
              self.update_discriminator(tape, d_loss)
              with tf.GradientTape() as tape:
                  g_loss = bce(1, self.discriminator(self.generator(z, training=True), training=True))
              self.update_generator(tape, g_loss)
              return self.track(generator_loss=g_loss, discriminator_loss=d_loss)

    The updates scale each gradient by one over the number of replicas, because the optimizer sums the replicas'
    gradients: so a per-replica batch mean gives the gradient of the global batch mean. Compute losses with loss
    functions (``keras.losses.binary_crossentropy``, ``keras.ops.mean``), not reducing ``keras.losses.Loss``
    objects, which already divide by the replica count. A ``SeedGenerator`` is mirrored, so every replica draws
    the same numbers from it; fold in the replica id where that matters, as :class:`~kerasbd.generators.ImagePool`
    does. The trackers are ``keras.metrics.Mean`` objects, exposed
    as ``metrics``, so ``fit`` logs their running means and resets them every epoch. Several generators or
    discriminators (CycleGAN) override :attr:`generator_variables` / :attr:`discriminator_variables`.
    ``model.optimizer`` stays ``None``: schedule learning rates with a ``LearningRateSchedule`` (e.g.
    :class:`~kerasbd.generators.LinearDecay`) per optimizer.

    Example:
        >>> import keras
        >>> g = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
        >>> d = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model = AdversarialModel(g, d)
        >>> model.compile(generator_optimizer="adam", discriminator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
        >>> [m.name for m in model.metrics], type(model.generator_optimizer).__name__, model.optimizer
        (['generator_loss', 'discriminator_loss'], 'Adam', None)
    """

    tracker_names: ClassVar[tuple[str, ...]] = ("generator_loss", "discriminator_loss")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for role, model in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(model, keras.Model) or not model.built:
                raise ConfigError(f"the {role} must be a built keras.Model: give it a keras.Input or call it on a batch first.")
        self.generator = generator
        self.discriminator = discriminator
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracker_names}
        self.built = True  # the players are built; there is no forward pass of the pair to trace

    def compile(self, *, generator_optimizer: OptimizerLike, discriminator_optimizer: OptimizerLike, **kwargs: Any) -> None:
        """Give each player its optimizer (a name, a Keras config dict or an instance); ``kwargs`` go to Keras
        (``jit_compile``, ``steps_per_execution``, ``run_eagerly``)."""
        supervised = sorted(set(kwargs) & set(_SUPERVISED_ARGS))
        if supervised:
            raise ConfigError(
                f"{type(self).__name__}.compile does not take {', '.join(supervised)}: pass generator_optimizer and "
                "discriminator_optimizer, compute the losses in train_step and report them with track()."
            )
        if isinstance(generator_optimizer, keras.optimizers.Optimizer) and generator_optimizer is discriminator_optimizer:
            raise ConfigError("the generator and the discriminator need separate optimizer instances (each keeps state per variable).")
        super().compile(optimizer=None, **kwargs)
        # built here, in the model's strategy scope, so no optimizer variable is created inside a replica's step
        with self.distribute_strategy.scope():
            self.generator_optimizer = make_optimizer(generator_optimizer)
            self.discriminator_optimizer = make_optimizer(discriminator_optimizer)
            self.generator_optimizer.build(self.generator_variables)
            self.discriminator_optimizer.build(self.discriminator_variables)

    @property
    def generator_variables(self) -> list[keras.Variable]:
        """What :meth:`update_generator` trains; override when the generator side has several models."""
        return list(self.generator.trainable_variables)

    @property
    def discriminator_variables(self) -> list[keras.Variable]:
        """What :meth:`update_discriminator` trains; override when the discriminator side has several models."""
        return list(self.discriminator.trainable_variables)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def train_step(self, data: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement train_step(data): update both players and return self.track(...).")

    def update_generator(self, tape: tf.GradientTape, loss: tf.Tensor) -> None:
        """One step of the generator optimizer on the gradient of ``loss`` (a batch mean) recorded on ``tape``."""
        apply_mean_gradient(tape, loss, self.generator_variables, self.generator_optimizer)

    def update_discriminator(self, tape: tf.GradientTape, loss: tf.Tensor) -> None:
        """One step of the discriminator optimizer on the gradient of ``loss`` (a batch mean) recorded on ``tape``."""
        apply_mean_gradient(tape, loss, self.discriminator_variables, self.discriminator_optimizer)

    def track(self, **values: Any) -> dict[str, Any]:
        """Add this step's values to their trackers and return every tracker's running mean (``train_step``'s logs)."""
        unknown = sorted(set(values) - set(self.trackers))
        if unknown:
            raise ConfigError(f"no tracker named {', '.join(unknown)}; add the name(s) to {type(self).__name__}.tracker_names.")
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return self.get_metrics_result()


def apply_mean_gradient(tape: tf.GradientTape, loss: tf.Tensor, variables: list[keras.Variable], optimizer: keras.optimizers.Optimizer) -> None:
    """One optimizer step on the gradient of ``loss`` (a per-replica batch mean) as the global batch mean's: the
    optimizer sums the replicas' gradients, so each is scaled by one over the number of replicas."""
    scale = tf.constant(1.0 / tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)
    optimizer.apply(tape.gradient(loss, variables, output_gradients=scale), variables)
