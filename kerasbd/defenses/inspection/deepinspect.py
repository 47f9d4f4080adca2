"""DeepInspect (Chen et al., IJCAI 2019): data-free trojan detection with a conditional trigger generator.

DeepInspect needs no clean data. It recovers a substitute set from the model by model inversion
(:class:`~kerasbd.training.ModelInversion`), trains one label-conditioned generator ``G(z, t)`` against the frozen
model so that ``clip(x + G(z, t), 0, 1)`` is classified as ``t`` with a small perturbation (the trojan loss, the
magnitude term γ·‖G‖₁ and an optional GAN term; :class:`~kerasbd.generators.ConditionalTriggerTrainer`, all
labels in one batched computation), and then tests the perturbation magnitudes across labels: a trojan target
needs an abnormally *small* perturbation. The test is the double MAD (:func:`~kerasbd.metrics.mad_anomaly_index`
with ``spread="double"``, the values below the median scaled by their own MAD) at significance α = 0.05.

No code of DeepInspect is published (the survey ``003`` §IV.D describes it; third-party ports disagree). Chosen
here, with the reason:

- γ = 0.02 on the L1 norm of the perturbation (summed over pixels), Adam 0.01, 20 epochs, noise of 100
  dimensions: TrojanZoo's port, the only port with a detection step; its GAN weight is 0, as here by default
  (``gan_weight`` > 0 adds the GAN term with :func:`~kerasbd.generators.patch_discriminator`);
- the perturbation is ``tanh`` in [−1, 1] added to the image and clipped (as kerasbd's GangSweep; the port's
  sigmoid mark cannot be zero, so it starts as a half-grey image);
- the generator (:func:`~kerasbd.generators.conditional_generator`): a 128-unit label embedding and two stride-2
  transposed convolutions from a quarter-size map (the port's dense layer to full resolution has 55 M weights on
  MNIST);
- model inversion: 20 images per class, 200 Adam steps at 0.1 on sigmoid-parametrised images, total-variation
  weight 1 (the paper cites Fredrikson et al. without constants); ``substitute="clean"`` uses the defender's
  clean images instead, when there are any;
- the decision: a label is flagged when its deviation factor ``(median − m_t) / MAD_low`` exceeds the two-sided
  normal quantile of α (1.96 at α = 0.05, the convention behind Neural Cleanse's 2) *and* its generated triggers
  send at least ``min_success`` (0.5) of the other classes' images to it (a small perturbation that fails is no
  trigger). The magnitude of a label is the mean L1 of ``eval_noise`` (20) generated triggers per image, over
  the substitute images of the other classes.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.attacks import AdditivePerturbation, AllToOne, Backdoor
from kerasbd.defenses.base import MAX_STACKED_PIXELS, ModelInspector, Preset, RunContext, candidate_labels
from kerasbd.errors import ConfigError
from kerasbd.generators.conditional import ConditionalTriggerTrainer, conditional_generator, patch_discriminator
from kerasbd.reporting import InspectionResult
from kerasbd.training.epochs import EpochProgress
from kerasbd.training.model_inversion import ModelInversion

__all__ = ["ConditionalTriggers", "DeepInspectInspector"]

SUBSTITUTES = ("inversion", "clean")


@dataclass
class ConditionalTriggers:
    """A trained ``G(z, t)``: ``perturb(x, label)`` draws one trigger per image (seeded by ``seed`` and the label)."""

    generator: keras.Model
    num_classes: int
    noise_dim: int
    seed: int = 0

    def perturb(self, x: np.ndarray, label: int, rng: np.random.Generator | None = None, batch_size: int = 256) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng([self.seed, int(label)])
        z = rng.normal(size=(len(x), self.noise_dim)).astype(np.float32)
        onehot = np.zeros((len(x), self.num_classes), np.float32)
        onehot[:, int(label)] = 1.0
        out = [np.asarray(self.generator([z[i:i + batch_size], onehot[i:i + batch_size]], training=False)) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, *x.shape[1:]), np.float32)


class DeepInspectInspector(ModelInspector):
    """DeepInspect's detection: model inversion, a conditional trigger generator, the double-MAD test.

    Args:
        substitute: ``"inversion"`` (the paper: no clean data) or ``"clean"`` (the defender's clean images).
        inversion: the model inversion (:class:`~kerasbd.training.ModelInversion`; see the module for its constants).
        epochs, batch_size, learning_rate: the generator's training (20, 32 images per step, Adam 0.01).
        magnitude_weight, gan_weight: γ on the perturbation's L1 norm (0.02) and the GAN term's weight (0).
        noise_dim, embed_dim, filters: the generator (100, 128, 64).
        labels: hypothetical targets (default: all); the test runs over these.
        labels_per_step: labels each image is paired with per training step (None: all).
        eval_noise: noise draws per image when measuring each label's magnitude and success.
        significance: α of the double-MAD test (0.05: deviation factor > 1.96).
        min_success: the share of other classes' images a label's triggers must send to it to be flagged.

    Example:
        >>> DeepInspectInspector(epochs=2).with_params(inversion__per_class=5).inversion.per_class
        5
        >>> round(DeepInspectInspector().threshold, 2)
        1.96

        ``DeepInspectInspector().inspect(model, None)`` (no data) gives ``result.flagged``, ``result.score`` (the
        largest deviation factor among labels whose triggers succeed) and per label the magnitude, the success
        and the deviation factor in ``result.statistics``.
    """

    name: ClassVar[str] = "deepinspect"
    requires_clean: ClassVar[bool] = False

    def __init__(
        self,
        substitute: str = "inversion",
        inversion: ModelInversion | None = None,
        epochs: int = 20,
        batch_size: int = 32,
        learning_rate: float = 0.01,
        magnitude_weight: float = 0.02,
        gan_weight: float = 0.0,
        noise_dim: int = 100,
        embed_dim: int = 128,
        filters: int = 64,
        labels: Sequence[int] | None = None,
        labels_per_step: int | None = None,
        eval_noise: int = 20,
        significance: float = 0.05,
        min_success: float = 0.5,
    ) -> None:
        if substitute not in SUBSTITUTES:
            raise ConfigError(f"substitute must be one of {', '.join(SUBSTITUTES)}, got {substitute!r}.")
        if inversion is not None and not isinstance(inversion, ModelInversion):
            raise ConfigError(f"inversion must be a ModelInversion, got {type(inversion).__name__}.")
        if epochs < 1 or batch_size < 1 or eval_noise < 1:
            raise ConfigError(f"epochs, batch_size and eval_noise must be positive, got {epochs}, {batch_size}, {eval_noise}.")
        if learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}.")
        if not 0.0 < significance < 1.0 or not 0.0 <= min_success <= 1.0:
            raise ConfigError(f"significance must be in (0, 1) and min_success in [0, 1], got {significance} and {min_success}.")
        if labels_per_step is not None and labels_per_step < 1:
            raise ConfigError(f"labels_per_step must be positive or None, got {labels_per_step}.")
        self.substitute = substitute
        self.inversion = inversion if inversion is not None else ModelInversion()
        self.epochs, self.batch_size, self.learning_rate = int(epochs), int(batch_size), float(learning_rate)
        self.magnitude_weight, self.gan_weight = float(magnitude_weight), float(gan_weight)
        self.noise_dim, self.embed_dim, self.filters = int(noise_dim), int(embed_dim), int(filters)
        self.labels = None if labels is None else [int(lab) for lab in labels]
        self.labels_per_step = labels_per_step
        self.eval_noise, self.significance, self.min_success = int(eval_noise), float(significance), float(min_success)

    @property
    def threshold(self) -> float:
        """The deviation factor above which a label is an outlier at ``significance`` (the two-sided normal quantile,
        to 3 decimals: 1.96 at 0.05)."""
        return round(statistics.NormalDist().inv_cdf(1.0 - self.significance / 2.0), 3)

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        pixels = int(np.prod(images.shape[1:]))
        per_step = max(1, MAX_STACKED_PIXELS // (cls().batch_size * pixels))
        return Preset("auto", {"labels_per_step": per_step}, f"each image is paired with at most {per_step} labels per step on "
                      f"{images.shape[1]}×{images.shape[2]}×{images.shape[3]} images (≤ {MAX_STACKED_PIXELS:,} input pixels per step); "
                      "the paper's constants otherwise")

    # ------------------------------------------------------------------------------------------------ pieces
    def substitute_set(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray],
                       ctx: RunContext) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The images the generator trains on: model inversion's (resumed from ``ctx.store``) or the clean ones."""
        if self.substitute == "clean":
            if len(clean[0]) == 0:
                raise ConfigError("substitute='clean' needs clean images; pass them, or keep substitute='inversion' (data-free).")
            return clean[0], clean[1], {"substitute": "clean", "substitute_images": len(clean[0])}
        key = "substitute"
        if ctx.store is not None and ctx.store.has(key):
            saved = ctx.store.load_arrays(key)
            assert saved is not None
            x, y, success = saved["x"], saved["y"], float(saved["success"])
        else:
            x, y, success = self.inversion.run(model, seed=ctx.seed, verbose=ctx.verbose)
            if ctx.store is not None:
                ctx.store.save_arrays(key, {"x": x, "y": y, "success": np.asarray(success)})
        info = {"substitute": "inversion", "substitute_images": len(x), "inversion_success": round(success, 4)}
        if len(clean[0]):
            info["clean_images_unused"] = len(clean[0])
        return x, y, info

    def train_generator(self, model: keras.Model, x: np.ndarray, y: np.ndarray, labels: list[int], ctx: RunContext) -> ConditionalTriggers:
        """Train ``G(z, t)`` for ``labels`` on ``(x, y)`` (resumed from ``ctx.store`` when finished before)."""
        from kerasbd.training import get_strategy

        num_classes = int(model.output_shape[-1])
        keras.utils.set_random_seed(int(np.random.SeedSequence([ctx.seed, 7]).generate_state(1)[0] % (2**31 - 1)))
        strategy = get_strategy(ctx.strategy)
        with strategy.scope():
            generator = conditional_generator(x.shape[1:], num_classes, noise_dim=self.noise_dim, embed_dim=self.embed_dim,
                                              filters=self.filters, name="deepinspect_generator")
        key = "generator"
        if ctx.store is not None and ctx.store.has(key):
            ctx.store.load_weights(key, generator)
        else:
            with strategy.scope():
                trainer = ConditionalTriggerTrainer(generator, patch_discriminator(x.shape[1:]), model, labels,
                                                    magnitude_weight=self.magnitude_weight, gan_weight=self.gan_weight,
                                                    labels_per_step=self.labels_per_step, seed=ctx.seed)
                trainer.compile(generator_optimizer=keras.optimizers.Adam(self.learning_rate), discriminator_optimizer=keras.optimizers.Adam(2e-4))
            show = {"success": ("success", ".2f"), "magnitude": ("magnitude", ".1f")}
            callbacks = [EpochProgress(self.epochs, "deepinspect generator", ctx.verbose, show=show)]
            trainer.fit(x, y, epochs=self.epochs, batch_size=self.batch_size * strategy.num_replicas_in_sync, shuffle=True,
                        verbose=2 if ctx.verbose >= 2 else 0, callbacks=callbacks)
            if ctx.store is not None:
                ctx.store.save_weights(key, generator)
        return ConditionalTriggers(generator, num_classes, self.noise_dim, seed=ctx.seed)

    # ------------------------------------------------------------------------------------------------ inspection
    def _inspect(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> InspectionResult:
        return self.inspect_generated(model, clean, ctx)[0]

    def inspect_generated(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> tuple[InspectionResult, Any]:
        """The inspection and ``(triggers, substitute set)`` (the repair stamps the generated triggers on it)."""
        from kerasbd.metrics import mad_anomaly_index

        labels = candidate_labels(self.labels, int(model.output_shape[-1]))
        x, y, info = self.substitute_set(model, clean, ctx)
        triggers = self.train_generator(model, x, y, labels, ctx)
        rows = [_label_statistics(model, triggers, x, y, t, self.eval_noise, ctx.seed) for t in labels]
        magnitude = np.array([r["magnitude"] for r in rows])
        test = mad_anomaly_index(magnitude, side="low", spread="double", threshold=self.threshold, labels=labels)
        deviation = np.where(magnitude <= test["median"], np.asarray(test["indices"]), 0.0)
        succeeds = np.array([r["success"] >= self.min_success for r in rows])
        flagged = [int(t) for t in test["flagged"] if succeeds[labels.index(t)]]
        score = float(deviation[succeeds].max()) if succeeds.any() else 0.0
        masks = np.stack([r["mean_trigger"] for r in rows])
        statistics_rows = [{"label": t, "magnitude": float(magnitude[i]), "success": float(rows[i]["success"]),
                            "deviation": float(deviation[i]), "flagged": t in flagged} for i, t in enumerate(labels)]
        details = {
            **info,
            "labels": labels,
            "magnitude": dict(zip(labels, magnitude.round(4).tolist(), strict=True)),
            "success": {t: round(float(r["success"]), 4) for t, r in zip(labels, rows, strict=True)},
            "deviation": dict(zip(labels, deviation.round(4).tolist(), strict=True)),
            "median": test["median"], "mad_low": test["mad_low"], "threshold": self.threshold, "significance": self.significance,
            "flagged": flagged,
            "note": f"label(s) {flagged} flagged" if flagged else "no label flagged",
        }
        result = InspectionResult(
            self.name, labels=labels, statistics=statistics_rows, flagged=flagged, score=score, threshold=self.threshold,
            rule=(f"largest double-MAD deviation factor of the generated triggers' L1 magnitude (small = suspicious) among labels "
                  f"whose triggers succeed on ≥ {self.min_success:.0%} > {self.threshold:g} (significance {self.significance:g})"),
            triggers={int(t): Backdoor(AdditivePerturbation(np.clip(masks[i], -1.0, 1.0)), AllToOne(int(t)), name=f"deepinspect→{int(t)}")
                      for i, t in enumerate(labels)},
            facts={"succeeding_labels": float(succeeds.sum())},
            details=details,
            arrays={"labels": np.asarray(labels), "masks": masks, "magnitude": magnitude, "success": np.array([r["success"] for r in rows]),
                    "deviation": deviation},
        )
        return result, (triggers, (x, y))


def _label_statistics(model: keras.Model, triggers: ConditionalTriggers, x: np.ndarray, y: np.ndarray, t: int, draws: int,
                      seed: int) -> dict[str, Any]:
    """Label ``t``'s triggers on the images of other classes, ``draws`` noise draws each: mean L1, success, mean trigger."""
    others = x[y != t]
    if len(others) == 0:
        raise ConfigError(f"no substitute image of a class other than {t}; DeepInspect needs images of at least two classes.")
    rng = np.random.default_rng([seed, t, 1])
    rep = np.repeat(others, draws, axis=0)
    delta = triggers.perturb(rep, t, rng)
    hits = np.argmax(np.asarray(model.predict(np.clip(rep + delta, 0.0, 1.0), batch_size=512, verbose=0)), axis=1) == t
    return {"magnitude": float(np.abs(delta).reshape(len(rep), -1).sum(axis=1).mean()), "success": float(hits.mean()),
            "mean_trigger": delta.mean(axis=0)}
