"""Targeted perturbation generators trained against a frozen classifier, all hypothetical target labels at once.

:class:`PerturbationTrainer` is a ``keras.Model`` whose ``train_step`` trains a stack of generators (one per
target label, :func:`~kerasbd.generators.resnet_generator` with ``copies=len(targets)``) so that
``x + G_t(x)`` is classified as ``t`` with a small perturbation. For every copy ``t`` the loss is GangSweep's
Eq. 1-3 (Zhu et al., MM 2020)::

    L_t = mean_x ‖G_t(x)‖₂ + α_t · mean_{x: y ≠ t} max(max_{i≠t} z_i(x') − z_t(x'), −κ),   x' = clip(x + G_t(x), 0, 1)

on the classifier's logits ``z`` (κ = 0 in the paper). Images whose label already is ``t`` carry no adversarial
term for that copy. ``α_t`` starts at ``alpha`` (2 in the paper) and follows Eq. 4 after every step
(``alpha_every="step"``) or after every epoch on the epoch's mean terms (``"epoch"``):
``alpha_rule="multiplicative"`` halves it when the perturbation term exceeds the adversarial term and doubles it
otherwise (kept within ``alpha_bounds``); ``"literal"`` sets it to ½ or 2, as Eq. 4 is printed; ``"fixed"``
keeps it (DeepInspect's constant trade-off); ``"success"`` doubles it while the copy's masks succeed on fewer than
``success_target`` of its images and halves it otherwise (Neural Cleanse's cost schedule, in Eq. 4's steps). Both
readings of Eq. 4 settle where the two terms are equal, i.e. at a mean hinge as large as the masks' L2 norm, so
the masks need not succeed (on the zoo's ``ruizegao_mnist_backdoor_7`` each label's masks flipped 1-71 % of its
own images); ``"success"`` settles at the smallest masks that flip ``success_target`` of them. The copies share
no weight, so summing their losses trains each on its own loss, in one batched computation.

Everything Keras gives a model applies: ``fit`` with callbacks, ``save_weights``/``load_weights`` (generator,
optimizer state and each label's α), ``tf.distribute`` (build and compile inside ``strategy.scope()``) and
``jit_compile``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasbd.errors import ConfigError
from kerasbd.generators.adversarial import apply_mean_gradient
from kerasbd.generators.resnet import stacked_output

__all__ = ["ALPHA_EVERY", "ALPHA_RULES", "PerturbationTrainer"]

ALPHA_RULES = ("multiplicative", "literal", "fixed", "success")
ALPHA_EVERY = ("step", "epoch")


class PerturbationTrainer(keras.Model):
    """Train stacked targeted perturbation generators against a frozen logits classifier.

    Args:
        generator: maps images (N, H, W, C) to perturbations (N, L, H, W, C) in [−1, 1] (L = len(targets)), or
            (N, H, W, C) for one target.
        classifier: the frozen suspect model, canonical images → logits.
        targets: the target label of each generator copy.
        alpha, alpha_rule, alpha_bounds, alpha_every: the adversarial weight's start value, its update and when
            it is updated (see the module).
        kappa: the confidence margin κ of the hinge (0: stop pushing once ``t`` wins).
        success_target: the share of images the masks must send to ``t`` (``alpha_rule="success"``).

    Train with ``fit(x, y)`` (labels select, per copy, the images that carry an adversarial term).

    Example:
        >>> import keras, numpy as np
        >>> from kerasbd.generators import resnet_generator
        >>> clf = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> trainer = PerturbationTrainer(resnet_generator((8, 8, 1), copies=3, blocks=1), clf, targets=[0, 1, 2])
        >>> trainer.compile(optimizer=keras.optimizers.Adam(0.01))
        >>> x, y = np.random.rand(16, 8, 8, 1).astype("float32"), np.arange(16) % 3
        >>> history = trainer.fit(x, y, epochs=1, batch_size=8, verbose=0)
        >>> sorted(history.history), tuple(trainer.perturb(x[:2]).shape)
        (['adversarial', 'alpha', 'loss', 'perturbation', 'success'], (2, 3, 8, 8, 1))
    """

    def __init__(self, generator: keras.Model, classifier: keras.Model, targets: Sequence[int], *, alpha: float = 2.0,
                 alpha_rule: str = "multiplicative", alpha_bounds: tuple[float, float] = (1e-3, 1e3), alpha_every: str = "step",
                 kappa: float = 0.0, success_target: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if alpha_rule not in ALPHA_RULES:
            raise ConfigError(f"alpha_rule must be one of {', '.join(ALPHA_RULES)}, got {alpha_rule!r}.")
        if alpha_every not in ALPHA_EVERY:
            raise ConfigError(f"alpha_every must be one of {', '.join(ALPHA_EVERY)}, got {alpha_every!r}.")
        if alpha <= 0 or not 0 < alpha_bounds[0] <= alpha <= alpha_bounds[1]:
            raise ConfigError(f"alpha must be positive and within alpha_bounds {alpha_bounds}, got {alpha}.")
        if not targets:
            raise ConfigError("give at least one target label.")
        if not 0.0 < success_target <= 1.0:
            raise ConfigError(f"success_target must be in (0, 1], got {success_target}.")
        self.success_target = float(success_target)
        self.generator, self.classifier = generator, classifier  # only the generator's variables are trained
        self.targets = [int(t) for t in targets]
        self.alpha_rule, self.alpha_bounds, self.kappa = alpha_rule, (float(alpha_bounds[0]), float(alpha_bounds[1])), float(kappa)
        n = len(self.targets)
        # one α per copy, updated from the step's own losses; the first replica's value is kept under tf.distribute
        self.alpha = keras.Variable(np.full(n, alpha, np.float32), trainable=False, name="alpha", aggregation="only_first_replica")
        self.alpha_every = alpha_every
        # the epoch's summed terms, success and step count, for alpha_every="epoch"
        self._sums = keras.Variable(np.zeros((4, n), np.float32), trainable=False, name="epoch_sums", aggregation="only_first_replica")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "perturbation", "adversarial", "success", "alpha")}
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def perturb(self, x: Any, training: bool = False) -> Any:
        """The perturbations (N, L, H, W, C) of every copy for images ``x``."""
        return stacked_output(self.generator, x, training=training)

    def losses_of(self, x: Any, y: Any, training: bool = False) -> dict[str, Any]:
        """Per-copy terms for a batch: ``perturbation`` and ``adversarial`` (L,), ``success`` (L,), and ``total``."""
        p = self.perturb(x, training=training)
        n, copies = ops.shape(p)[0], len(self.targets)
        stamped = ops.clip(ops.expand_dims(x, 1) + p, 0.0, 1.0)
        logits = self.classifier(ops.reshape(stamped, (-1, *x.shape[1:])), training=False)
        logits = ops.reshape(logits, (n, copies, -1))
        target = ops.one_hot(ops.convert_to_tensor(self.targets), ops.shape(logits)[-1])  # (L, K)
        z_t = ops.sum(logits * target, axis=-1)
        z_other = ops.max(logits - 1e9 * target, axis=-1)
        hinge = ops.maximum(z_other - z_t, -self.kappa)  # (N, L)
        eligible = ops.cast(ops.not_equal(ops.expand_dims(ops.cast(y, "int32"), 1), ops.convert_to_tensor(self.targets, "int32")), "float32")
        count = ops.maximum(ops.sum(eligible, axis=0), 1.0)
        adversarial = ops.sum(hinge * eligible, axis=0) / count
        perturbation = ops.mean(ops.sqrt(ops.sum(ops.square(p), axis=(2, 3, 4)) + 1e-12), axis=0)
        hit = ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), ops.convert_to_tensor(self.targets, "int32"))
        success = ops.sum(ops.cast(hit, "float32") * eligible, axis=0) / count
        total = ops.sum(perturbation + self.alpha * adversarial)
        return {"perturbation": perturbation, "adversarial": adversarial, "success": success, "total": total}

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            terms = self.losses_of(x, y, training=True)
        apply_mean_gradient(tape, terms["total"], self.generator.trainable_variables, self.optimizer)
        if self.alpha_every == "step":
            self._update_alpha(terms["perturbation"], terms["adversarial"], terms["success"])
        else:
            self._sums.assign_add(ops.stack([terms["perturbation"], terms["adversarial"], terms["success"], ops.ones_like(terms["perturbation"])]))
        return self._track(terms)

    def test_step(self, data: Any) -> dict[str, Any]:
        return self._track(self.losses_of(data[0], data[1]))

    def fit(self, *args: Any, callbacks: Sequence[keras.callbacks.Callback] | None = None, **kwargs: Any) -> Any:
        """``keras.Model.fit``; with ``alpha_every="epoch"`` α is updated at the end of every epoch."""
        extra = [_EpochAlpha()] if self.alpha_every == "epoch" else []
        return super().fit(*args, callbacks=[*(callbacks or []), *extra], **kwargs)

    def end_epoch(self) -> None:
        """Apply Eq. 4 to the epoch's mean terms and start the next epoch's sums (``alpha_every="epoch"``)."""
        pert, adv, success, steps = np.asarray(self._sums)
        if steps.max() > 0:
            self._update_alpha(pert / steps, adv / steps, success / steps)
        self._sums.assign(np.zeros_like(np.asarray(self._sums)))

    def _update_alpha(self, perturbation: Any, adversarial: Any, success: Any) -> None:
        if self.alpha_rule == "fixed":
            return
        shrink = success >= self.success_target if self.alpha_rule == "success" else perturbation > adversarial
        if self.alpha_rule == "literal":
            new = ops.where(shrink, 0.5, 2.0)
        else:
            new = ops.clip(ops.where(shrink, self.alpha * 0.5, self.alpha * 2.0), *self.alpha_bounds)
        self.alpha.assign(ops.cast(new, "float32"))

    def _track(self, terms: dict[str, Any]) -> dict[str, Any]:
        values = {"loss": terms["total"], "perturbation": ops.mean(terms["perturbation"]), "adversarial": ops.mean(terms["adversarial"]),
                  "success": ops.mean(terms["success"]), "alpha": ops.mean(self.alpha)}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


class _EpochAlpha(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.end_epoch()
