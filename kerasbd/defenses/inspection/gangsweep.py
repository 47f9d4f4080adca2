"""GangSweep (Zhu et al., ACM MM 2020): per-label GAN perturbation generators and the persistence / shift test.

For every hypothetical target label ``t`` a ResNet perturbation generator ``G_t`` is trained on the defender's
clean images so that ``x + G_t(x)`` is classified as ``t`` with a small perturbation (Eq. 1-4; all labels in one
batched computation, :class:`~kerasbd.generators.PerturbationTrainer`). Then, per target ``t`` and source class
``s ≠ t`` on ``sample_size`` images of ``s`` (Algorithm 1):

- persistence ``P`` (Eq. 5): the share of images ``x_j`` that ``x_j + G_t(x_c)`` sends to ``t``, for the masks of
  the *other* images ``x_c`` of the same class (every ordered pair);
- shift variance ``V`` (Eq. 6): the variance, over the images, of the logit shift ``φ(x + G_t(x)) − φ(x)``,
  averaged over the logits;
- shift distance ``D`` (Eq. 7): the mean of ``max φ(x + G_t(x)) − max φ(x)``.

Each label's P, V and D are the means over its source classes. The z-scores use the median and MAD
(consistency 1.4826, Eq. 8), signed so that a *small* V and a *large* D score high; the anomaly index is
``AI = (Z_V + Z_D) / 2``. A label is flagged when its persistence reaches ``persistence_threshold`` (0.9) and its
AI exceeds ``ai_threshold`` (2); no persistent label means no backdoor (Algorithm 1, line 10). Algorithm 1 as
printed gates only the model on persistence (line 10: no label persistent → none) and then takes every label whose
AI exceeds 2 (lines 13-16), while the text calls a persistent label "potentially malicious" before the AI test:
``persistence_gate="label"`` (the default) reads it per label, ``"model"`` as Algorithm 1 prints it.

No code of GangSweep is published. Constants the paper gives: Adam at learning rate 0.01, fewer than 15 epochs
(here 10), α = 2 at the start and Eq. 4, κ = 0, persistence threshold 0.9, AI threshold 2. Chosen here, with the
reason:

- the generator: AdvGAN's sizes (8/16/32 filters, 4 residual blocks; :func:`~kerasbd.generators.resnet_generator`),
  the closest public generator of this kind;
- the perturbation is ``tanh`` in [−1, 1] added to the image, and the result clipped to [0, 1] (the paper's
  "scaled to [0, 1]^n"): a perturbation confined to [0, 1] could only brighten, and a zero perturbation would
  sit where ``tanh`` saturates (``perturbation="unit"`` gives that reading, ``(tanh + 1) / 2``);
- Eq. 4 read as halving / doubling α (``alpha_rule="multiplicative"``, within 1e-3..1e3); ``"literal"`` sets α
  to ½ or 2 as printed;
- batch 32; ``sample_size`` 20 images per source class (the paper's ``n`` is not given);
- images of class ``t`` carry no adversarial term for ``G_t`` (they already are ``t``);
- V and D on the logits as given (``logits="raw"``); ``logits="centered"`` subtracts each image's mean logit
  first, because a softmax model's logits are only defined up to a constant per image: on the zoo's
  ``ruizegao_mnist_backdoor_7`` (stored with softmax; two runs with ``alpha_rule="success"``) the raw logits gave
  the target's masks D = −352 (others −70..+33), the centered ones D = +234, z_D 11.6;
- V read as each logit's variance over the images, averaged over the logits (``variance="per-logit"``), or as
  ``variance="cosine"``: 1 − the mean cosine similarity of each image's logit shift with the mean shift, the
  "shift similarity" of the paper's Table 2, which does not grow with the logits' scale. A model whose logits are
  large on triggered inputs has the largest per-logit variance at its target even where every shift points the same
  way: on ``ruizegao_mnist_backdoor_7`` (success rule, ``alpha_every="step"``, seed 0) the target's z_V is −19.1
  per-logit and +0.7 cosine, its AI −0.7 and 9.2. Not the default: on the recipe's 14 runs of the auto preset
  (recomputed from the same generators) cosine V adds false labels (``dillonsd_baseline`` seed 1: label 6 at AI
  2.3; the pattern BadNet seed 1: 6 beside 0; ``ruizegao_mnist_backdoor_7`` seed 2: 2 beside 7) where per-logit V
  flags only true targets;
- ``alpha_rule="success"`` (``alpha_every="epoch"``, ``success_target``) replaces Eq. 4 by a rule whose masks do
  succeed (see :class:`~kerasbd.generators.PerturbationTrainer`): both readings of Eq. 4 settle where the hinge
  equals the masks' L2 norm, so their masks need not flip their images and no label need reach persistence 0.9;
  α updated per step instead (``alpha_every="step"``) found ``ruizegao_mnist_backdoor_7``'s trigger in seeds 0 and
  2 (with cosine V: AI 9.2 and 13.6; seed 1 misses it), but its masks patched the pattern BadNet only to ASR
  43.9 % (seed 0);
- the ``auto`` preset (the CLI's default) uses the success rule at 0.99 per epoch and centered logits
  (:data:`SUCCEEDING_MASKS`), and searches each flagged label for one further trigger (:data:`FURTHER_TRIGGERS`,
  below); the constructor keeps the paper's Eq. 4 and raw logits (``--preset original``), and
  the fast scan keeps them too, because its shipped calibration was fitted with them. Measured with the recipe's
  1,000 clean MNIST images (recipes/inspection.py, seeds 0-2; README): the auto preset flags the pattern BadNet's
  target 0 in 3 of 3 seeds (Eq. 4: 2 of 3) and the recipe's two-trigger and polymorphic LeNet-5 BadNets' in 3 of 3
  each (Eq. 4, seed 0: neither), and leaves both clean models unflagged in 3 of 3 (largest AI 1.98); it misses
  ``ruizegao_mnist_backdoor_7`` in seeds 0-2. With every label's masks succeeding, most labels pass persistence 0.9
  and the anomaly index decides;
- each label's reversed trigger (``result.triggers``) is its mean perturbation over the sampled images, an
  :class:`~kerasbd.attacks.AdditivePerturbation`; the patching of :class:`~kerasbd.defenses.GangSweep` uses the
  generators' per-image masks;
- further triggers (``further_triggers``, kerasbd's addition; the ``auto`` preset searches for one, the paper and
  ``--preset original`` for none). One generator per label settles on the cheapest trigger: on the recipe's
  two-trigger LeNet-5 (seed 0) label 0's masks restricted to the pixel pattern's region sent 99.4 % of the images
  to 0, restricted to the other trigger's region 0.4 %. So each flagged label gets another generator, trained as
  the first but multiplied by 0 over :func:`keep_out_region` of the masks found so far (the fewest pixels holding
  half of the mean mask's mass, grown by 2 pixels); its masks are taken as a further trigger when they reach the
  persistence threshold and their mean L2 norm lies more than ``ai_threshold`` MADs (× 1.4826) below the median of
  the unflagged labels' — as cheap as a backdoor, not as a natural perturbation towards the label. A found
  trigger's mean mask is added to the label's reversed trigger, and its generator gives the masks of every other
  image the patching stamps (:class:`SweptGenerators`). The flagging itself uses the first generators only.
  Measured (recipes/inspection.py, seeds 0-2, README): it found the two-trigger LeNet-5's second trigger in seed 0
  and nothing on the pattern BadNet or in the other multi-trigger runs, where the first masks already spanned both
  triggers or the second generator's L2 stayed within 2 MADs of the unflagged labels'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.attacks import AdditivePerturbation, AllToOne, Backdoor
from kerasbd.defenses.base import MAX_STACKED_PIXELS, ModelInspector, Preset, RunContext, candidate_labels
from kerasbd.errors import ConfigError
from kerasbd.generators.perturbation import ALPHA_EVERY, ALPHA_RULES, PerturbationTrainer
from kerasbd.generators.resnet import resnet_generator, stacked_output
from kerasbd.io import Progress
from kerasbd.reporting import InspectionResult

__all__ = ["SUCCEEDING_MASKS", "GangSweepInspector", "SweptGenerators", "algorithm_1", "keep_out_region"]

PERTURBATIONS = ("signed", "unit")
LOGITS = ("centered", "raw")
VARIANCES = ("per-logit", "cosine")
PERSISTENCE_GATES = ("label", "model")
#: What the ``auto`` preset (the CLI's default) puts on top of the paper's constants; ``--preset original`` drops it.
SUCCEEDING_MASKS: dict[str, Any] = {"alpha_rule": "success", "alpha_every": "epoch", "success_target": 0.99, "logits": "centered"}
#: The ``auto`` preset's ``further_triggers`` (the paper's GangSweep searches once per label: 0).
FURTHER_TRIGGERS = 1


def algorithm_1(labels: Sequence[int], persistence: np.ndarray, ai: np.ndarray, persistence_threshold: float = 0.9,
                ai_threshold: float = 2.0, gate: str = "label") -> tuple[list[int], float]:
    """Algorithm 1's decision: (flagged labels by decreasing AI, the largest AI the test may flag, 0 if none).

    ``gate="label"``: only labels with persistence ≥ the threshold may be flagged; ``"model"`` (as printed): once
    any label is persistent, every label may be.

    Example:
        >>> algorithm_1([0, 1, 2], np.array([0.95, 0.5, 0.2]), np.array([1.0, 3.0, 0.0]), gate="model")
        ([1], 3.0)
    """
    persistent = np.asarray(persistence) >= persistence_threshold
    eligible = persistent if gate == "label" else np.full_like(persistent, persistent.any())
    flagged = [int(labels[i]) for i in np.argsort(-ai, kind="stable") if eligible[i] and ai[i] > ai_threshold]
    return flagged, float(ai[eligible].max()) if eligible.any() else 0.0


def keep_out_region(mean_mask: np.ndarray, share: float = 0.5, dilation: int = 2) -> np.ndarray:
    """The pixels (H, W) a label's further generator may not perturb: the fewest pixels that hold ``share`` of the
    mean mask's absolute mass (summed over channels), grown by ``dilation`` pixels in every direction.

    Example:
        >>> m = np.zeros((6, 6, 1)); m[0, 0] = 1.0; m[5, 5] = 0.1
        >>> int(keep_out_region(m, dilation=1)[:3, :3].sum()), bool(keep_out_region(m, dilation=1)[5, 5])
        (4, False)
    """
    import cv2

    mass = np.abs(np.asarray(mean_mask, np.float64)).sum(axis=-1)
    order = np.argsort(mass, axis=None)[::-1]
    cumulative = np.cumsum(mass.flat[order])
    core = np.zeros(mass.size, np.uint8)
    core[order[:int(np.searchsorted(cumulative, share * cumulative[-1])) + 1]] = 1
    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8)
    return cv2.dilate(core.reshape(mass.shape), kernel).astype(bool)


@dataclasses.dataclass
class SweptGenerators:
    """The trained generators of a sweep: ``perturb(x, label)`` gives ``G_label(x)`` (N, H, W, C) in image units.

    ``further`` holds, per label, the generators of the further triggers found (each with its copy index); where a
    label has some, ``perturb`` takes image ``i``'s mask from its ``i mod (1 + len(further))``-th generator, so a
    patching set stamped with it carries every trigger found, in equal shares.
    """

    labels: list[int]
    generators: list[tuple[list[int], keras.Model]]
    further: dict[int, list[tuple[keras.Model, int]]] = dataclasses.field(default_factory=dict)

    def perturb(self, x: np.ndarray, label: int) -> np.ndarray:
        sources = [(generator, len(labels), labels.index(label)) for labels, generator in self.generators if label in labels]
        if not sources:
            raise ConfigError(f"label {label} was not swept; swept labels: {self.labels}.")
        sources += [(generator, _copies(generator), k) for generator, k in self.further.get(label, [])]
        out = np.zeros(x.shape, np.float32)
        for r, (generator, copies, k) in enumerate(sources):
            idx = np.arange(r, len(x), len(sources))
            out[idx] = self._masks(generator, copies, x[idx])[:, k]
        return out

    def perturb_all(self, x: np.ndarray) -> np.ndarray:
        """Every swept label's masks for ``x``: (N, len(labels), H, W, C), in the order of ``labels``."""
        return np.concatenate([self._masks(generator, len(labels), x) for labels, generator in self.generators], axis=1)

    def _masks(self, generator: keras.Model, copies: int, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """One chunk's masks (N, copies, H, W, C) in image units."""
        out = [np.asarray(stacked_output(generator, x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, copies, *x.shape[1:]), np.float32)


def _copies(generator: keras.Model) -> int:
    return int(generator.output_shape[1]) if len(generator.output_shape) == 5 else 1


class GangSweepInspector(ModelInspector):
    """GangSweep's detection: perturbation generators per label, persistence, shift variance and distance, AI.

    Args:
        epochs, batch_size, learning_rate: the generators' training (10, 32, Adam 0.01).
        alpha, alpha_rule, kappa: Eq. 1-4's adversarial weight, its update and margin (2, halve/double, 0).
        success_target: with ``alpha_rule="success"``, the share of images the masks must flip (see
            :class:`~kerasbd.generators.PerturbationTrainer`).
        filters, blocks: generator size (AdvGAN's 8 filters, 4 residual blocks).
        perturbation: ``"signed"`` = ``tanh`` added as is; ``"unit"`` = ``(tanh + 1) / 2`` (see the module).
        sample_size: images per source class for P, V and D.
        logits: ``"raw"`` (default) computes V and D on the logits as the model gives them; ``"centered"`` on the
            logits minus their per-image mean (see the module).
        variance: V as ``"per-logit"`` (default: each logit's shift's variance over the images, averaged) or
            ``"cosine"`` (1 − the mean cosine similarity of each image's logit shift with the mean shift; see the module).
        persistence_threshold, ai_threshold: Algorithm 1's thresholds (0.9, 2).
        persistence_gate: ``"label"`` — a label must itself reach the persistence threshold to be flagged; ``"model"``
            — Algorithm 1 as printed: some label must, then any label with AI above the threshold is flagged.
        further_triggers: after the test, how many more triggers to search for per flagged label (0, the paper's;
            the ``auto`` preset: 1): a new generator for the label, kept out of the regions of the triggers found
            so far (:func:`keep_out_region`), is accepted as one when its masks reach the persistence threshold and
            their L2 norm is an outlier below the unflagged labels' (MAD index above ``ai_threshold``); its
            masks join the patching (see the module).
        labels: hypothetical targets (default: all); the MAD test runs over these.
        label_chunk: generators trained together in one computation (None: all labels at once); smaller
            chunks bound memory for many labels.

    Example:
        >>> GangSweepInspector(epochs=3).with_params(sample_size=10).get_config()["sample_size"]
        10

        ``GangSweepInspector().inspect(model, (x_val, y_val))`` gives ``result.flagged``, ``result.score`` (the
        largest AI among persistent labels), ``result.statistics`` (P, V, D, Z_V, Z_D, AI per label) and
        ``result.arrays["masks"]`` (each label's mean perturbation).
    """

    name: ClassVar[str] = "gangsweep"

    def __init__(
        self,
        epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 0.01,
        alpha: float = 2.0,
        alpha_rule: str = "multiplicative",
        alpha_every: str = "step",
        kappa: float = 0.0,
        success_target: float = 0.9,
        filters: int = 8,
        blocks: int = 4,
        perturbation: str = "signed",
        sample_size: int = 20,
        logits: str = "raw",
        variance: str = "per-logit",
        persistence_threshold: float = 0.9,
        ai_threshold: float = 2.0,
        persistence_gate: str = "label",
        further_triggers: int = 0,
        labels: Sequence[int] | None = None,
        label_chunk: int | None = None,
    ) -> None:
        if epochs < 1 or batch_size < 1 or sample_size < 2:
            raise ConfigError(f"epochs and batch_size must be positive and sample_size at least 2, got {epochs}, {batch_size}, {sample_size}.")
        if learning_rate <= 0 or alpha <= 0:
            raise ConfigError(f"learning_rate and alpha must be positive, got {learning_rate} and {alpha}.")
        if alpha_rule not in ALPHA_RULES:
            raise ConfigError(f"alpha_rule must be one of {', '.join(ALPHA_RULES)}, got {alpha_rule!r}.")
        if perturbation not in PERTURBATIONS:
            raise ConfigError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}.")
        if logits not in LOGITS:
            raise ConfigError(f"logits must be one of {', '.join(LOGITS)}, got {logits!r}.")
        if variance not in VARIANCES:
            raise ConfigError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}.")
        if not 0.0 < persistence_threshold <= 1.0 or ai_threshold <= 0:
            raise ConfigError(f"persistence_threshold must be in (0, 1] and ai_threshold positive, got {persistence_threshold}, {ai_threshold}.")
        if persistence_gate not in PERSISTENCE_GATES:
            raise ConfigError(f"persistence_gate must be one of {', '.join(PERSISTENCE_GATES)}, got {persistence_gate!r}.")
        if further_triggers < 0:
            raise ConfigError(f"further_triggers must be 0 or more, got {further_triggers}.")
        if label_chunk is not None and label_chunk < 1:
            raise ConfigError(f"label_chunk must be positive or None, got {label_chunk}.")
        self.epochs, self.batch_size, self.learning_rate = int(epochs), int(batch_size), float(learning_rate)
        if alpha_every not in ALPHA_EVERY:
            raise ConfigError(f"alpha_every must be one of {', '.join(ALPHA_EVERY)}, got {alpha_every!r}.")
        if not 0.0 < success_target <= 1.0:
            raise ConfigError(f"success_target must be in (0, 1], got {success_target}.")
        self.alpha, self.alpha_rule, self.alpha_every, self.kappa = float(alpha), alpha_rule, alpha_every, float(kappa)
        self.success_target = float(success_target)
        self.filters, self.blocks, self.perturbation = int(filters), int(blocks), perturbation
        self.sample_size, self.logits, self.variance = int(sample_size), logits, variance
        self.persistence_threshold, self.ai_threshold = float(persistence_threshold), float(ai_threshold)
        self.persistence_gate, self.further_triggers = persistence_gate, int(further_triggers)
        self.labels = None if labels is None else [int(lab) for lab in labels]
        self.label_chunk = label_chunk

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        batch = cls().batch_size
        pixels = int(np.prod(images.shape[1:]))
        chunk = max(1, MAX_STACKED_PIXELS // (batch * pixels))
        return Preset("auto", {"label_chunk": chunk, **SUCCEEDING_MASKS, "further_triggers": FURTHER_TRIGGERS},
                      f"at most {chunk} labels' generators train together on {images.shape[1]}×{images.shape[2]}×{images.shape[3]} images "
                      f"(≤ {MAX_STACKED_PIXELS:,} input pixels per step); masks that flip {SUCCEEDING_MASKS['success_target']:.0%} of their "
                      "images and centered logits instead of Eq. 4 and raw logits, and a search for one further trigger per flagged label "
                      "(module docstring); the paper's constants otherwise")

    # ------------------------------------------------------------------------------------------------ training
    def sweep(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> SweptGenerators:
        """Train the generators of every label (resuming finished chunks from ``ctx.store``)."""
        labels = candidate_labels(self.labels, int(model.output_shape[-1]))
        size = self.label_chunk or len(labels)
        chunks = [labels[i:i + size] for i in range(0, len(labels), size)]
        keys = [f"generators_{k}_{len(chunk)}" for k, chunk in enumerate(chunks)]
        resumed = sum(len(chunk) for chunk, key in zip(chunks, keys, strict=True) if ctx.store is not None and ctx.store.has(key))
        progress = Progress(len(labels), "gangsweep generators", ctx.verbose, initial=resumed, unit="label")
        out: list[tuple[list[int], keras.Model]] = []
        for k, (chunk, key) in enumerate(zip(chunks, keys, strict=True)):
            generator, trained = self._generators(model, clean, chunk, key, [ctx.seed, k], ctx)
            if trained:
                progress.update(len(chunk))
            out.append((chunk, generator))
        progress.close()
        return SweptGenerators(labels, out)

    def _generators(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], targets: list[int], key: str, seed: list[int],
                    ctx: RunContext, allowed: np.ndarray | None = None) -> tuple[keras.Model, bool]:
        """One stack of generators for ``targets`` (perturbing only where ``allowed`` is 1), loaded from ``ctx.store``
        under ``key`` or trained and stored there; and whether it was trained."""
        from kerasbd.generators.layers import FixedMask
        from kerasbd.training import get_strategy

        x, y = clean
        strategy = get_strategy(ctx.strategy)
        keras.utils.set_random_seed(int(np.random.SeedSequence(seed).generate_state(1)[0] % (2**31 - 1)))
        with strategy.scope():
            generator = resnet_generator(x.shape[1:], copies=len(targets), filters=self.filters, blocks=self.blocks,
                                         name=f"gangsweep_{key}")
            if self.perturbation == "unit" or allowed is not None:
                inputs = keras.Input(x.shape[1:])
                out = generator(inputs)
                if self.perturbation == "unit":  # (tanh + 1) / 2, trained as it is used
                    out = keras.layers.Rescaling(0.5, offset=0.5)(out)
                if allowed is not None:
                    out = FixedMask(allowed if len(targets) > 1 else allowed[0])(out)
                generator = keras.Model(inputs, out, name=f"gangsweep_{key}_masked")
        if ctx.store is not None and ctx.store.has(key):
            ctx.store.load_weights(key, generator)
            return generator, False
        with strategy.scope():
            trainer = PerturbationTrainer(generator, model, targets, alpha=self.alpha, alpha_rule=self.alpha_rule,
                                         alpha_every=self.alpha_every, kappa=self.kappa, success_target=self.success_target)
            trainer.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        trainer.fit(x, y, epochs=self.epochs, batch_size=self.batch_size * strategy.num_replicas_in_sync, shuffle=True,
                    verbose=2 if ctx.verbose >= 2 else 0)
        if ctx.store is not None:
            ctx.store.save_weights(key, generator)
        return generator, True

    def _further(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext, swept: SweptGenerators,
                 sources: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], stats: dict[int, dict[str, Any]],
                 flagged: list[int]) -> tuple[dict[int, list[dict[str, Any]]], dict[int, list[np.ndarray]]]:
        """Search each flagged label for ``further_triggers`` more triggers, each generator kept out of the regions of
        the triggers found before it; the accepted generators join ``swept.further``. Returns each label's rounds
        (their statistics and verdict) and the accepted rounds' mean masks."""
        center = self.logits == "centered"
        reference = [stats[t]["mask_l2"] for t in swept.labels if t not in flagged]
        regions = {t: keep_out_region(stats[t]["mean_mask"]) for t in flagged}
        rounds: dict[int, list[dict[str, Any]]] = {t: [] for t in flagged}
        means: dict[int, list[np.ndarray]] = {t: [] for t in flagged}
        active = list(flagged)
        for r in range(1, self.further_triggers + 1):
            if not active or len(reference) < 2:
                break
            allowed = np.stack([~regions[t] for t in active]).astype(np.float32)[..., None]
            key = f"further_{r}_" + "-".join(map(str, active))
            progress = Progress(len(active), f"gangsweep further triggers, round {r}", ctx.verbose, unit="label")
            generator, trained = self._generators(model, clean, active, key, [ctx.seed, 10_000 + r], ctx, allowed=allowed)
            progress.update(len(active) if trained else 0)
            progress.close()
            masks = SweptGenerators(active, [(active, generator)])
            round_sources = {s: (xs, before, masks.perturb_all(xs)) for s, (xs, before, _) in sources.items()}
            found = []
            for k, t in enumerate(active):
                st = _label_statistics(model, round_sources, t, k, center, self.variance)
                index = _below(reference, st["mask_l2"])
                accepted = st["persistence"] >= self.persistence_threshold and index > self.ai_threshold
                rounds[t].append({"round": r, "kept_out_pixels": int(regions[t].sum()), "persistence": round(st["persistence"], 4),
                                  "success": round(st["success"], 4), "mask_l2": round(st["mask_l2"], 4),
                                  "mask_l2_anomaly_index": round(index, 4), "accepted": accepted})
                if accepted:
                    swept.further.setdefault(t, []).append((generator, k))
                    means[t].append(st["mean_mask"])
                    regions[t] |= keep_out_region(st["mean_mask"])
                    found.append(t)
            active = found
        return rounds, means

    # ------------------------------------------------------------------------------------------------ statistics
    def _inspect(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> InspectionResult:
        return self.inspect_swept(model, clean, ctx)[0]

    def inspect_swept(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> tuple[InspectionResult, SweptGenerators]:
        """The inspection and the trained generators (the repair stamps their masks)."""
        from kerasbd.metrics import mad_anomaly_index

        x, y = clean
        swept = self.sweep(model, clean, ctx)
        labels = swept.labels
        sample = {int(s): idx for s in np.unique(y) if len(idx := _sample(y, int(s), self.sample_size, ctx.seed)) >= 2}
        if len(sample) < 2:
            raise ConfigError(f"GangSweep needs at least 2 clean images of at least 2 classes; the clean labels have {len(sample)} such class.")
        # per source class, once: its images, their clean logits and every label's masks
        center = self.logits == "centered"
        sources = {s: (x[idx], _predict(model, x[idx], center), swept.perturb_all(x[idx])) for s, idx in sample.items()}
        stats = {t: _label_statistics(model, sources, t, k, center, self.variance) for k, t in enumerate(labels)}
        p = np.array([stats[t]["persistence"] for t in labels])
        v = np.array([stats[t]["shift_variance"] for t in labels])
        d = np.array([stats[t]["shift_distance"] for t in labels])
        z_v, z_d = _robust_z(v, sign=-1.0), _robust_z(d, sign=1.0)
        ai = (z_v + z_d) / 2.0
        persistent = p >= self.persistence_threshold
        flagged, score = algorithm_1(labels, p, ai, self.persistence_threshold, self.ai_threshold, self.persistence_gate)
        masks = np.stack([stats[t]["mean_mask"] for t in labels])
        rounds, further = self._further(model, clean, ctx, swept, sources, stats, flagged) if self.further_triggers and flagged else ({}, {})
        details = {
            "labels": labels,
            "persistence": dict(zip(labels, p.round(4).tolist(), strict=True)),
            "shift_variance": dict(zip(labels, v.round(6).tolist(), strict=True)),
            "shift_distance": dict(zip(labels, d.round(4).tolist(), strict=True)),
            "anomaly_indices": dict(zip(labels, ai.round(4).tolist(), strict=True)),
            "persistent_labels": [int(labels[i]) for i in np.flatnonzero(persistent)],
            "flagged": flagged,
            "ai_threshold": self.ai_threshold,
            "persistence_threshold": self.persistence_threshold,
            "persistence_gate": self.persistence_gate,
            "sample": {s: len(idx) for s, idx in sample.items()},
            # for reference beside AI: NC's one-sided MAD test on the mean perturbation L2 (small = suspicious)
            "mask_l2_anomaly_index": mad_anomaly_index([stats[t]["mask_l2"] for t in labels], side="low")["anomaly_index"],
            "further_triggers": rounds,
        }
        found = {t: len(m) for t, m in further.items() if m}
        details["note"] = ((f"label(s) {flagged} flagged" + "".join(f"; label {t}: {n} further trigger(s)" for t, n in found.items()))
                           if flagged else "no label flagged" +
                           ("" if persistent.any() else f" (no label reaches persistence {self.persistence_threshold:g})"))
        statistics = [{"label": t, "persistence": float(p[i]), "shift_variance": float(v[i]), "shift_distance": float(d[i]),
                       "z_variance": float(z_v[i]), "z_distance": float(z_d[i]), "anomaly_index": float(ai[i]),
                       "mask_l2": float(stats[t]["mask_l2"]), "success": float(stats[t]["success"]), "flagged": t in flagged}
                      for i, t in enumerate(labels)]
        # a label's reversed trigger: its mean mask, plus those of its further triggers (they lie outside it)
        triggers = {int(t): Backdoor(AdditivePerturbation(np.clip(masks[i] + sum(further.get(t, [])), -1.0, 1.0)), AllToOne(int(t)),
                                     name=f"gangsweep→{int(t)}") for i, t in enumerate(labels)}
        result = InspectionResult(
            self.name, labels=labels, statistics=statistics, flagged=flagged, score=score, threshold=self.ai_threshold,
            rule=(f"largest anomaly index (Z_V + Z_D) / 2 among labels with persistence ≥ {self.persistence_threshold:g} > {self.ai_threshold:g}"
                  if self.persistence_gate == "label" else f"largest anomaly index (Z_V + Z_D) / 2 > {self.ai_threshold:g}, "
                  f"once some label has persistence ≥ {self.persistence_threshold:g}"),
            triggers=triggers, facts={"persistent_labels": float(persistent.sum()), "max_persistence": float(p.max())},
            details=details,
            arrays={"labels": np.asarray(labels), "masks": masks, "persistence": p, "shift_variance": v, "shift_distance": d,
                    "anomaly_index": ai},
        )
        return result, swept


def _sample(y: np.ndarray, label: int, n: int, seed: int) -> np.ndarray:
    idx = np.flatnonzero(y == label)
    return np.sort(np.random.default_rng([seed, label]).permutation(idx)[:n])


def _median_mad(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The median and the MAD × 1.4826 (Eq. 8)."""
    v = np.asarray(values, np.float64)
    median = float(np.median(v))
    return median, 1.4826 * float(np.median(np.abs(v - median)))


def _below(reference: Sequence[float], value: float) -> float:
    """How far ``value`` lies below the median of ``reference``, in its MADs: Eq. 8 against a fixed population."""
    median, mad = _median_mad(reference)
    return (median - value) / mad if mad > 0 else (math.inf if value < median else 0.0)


def _robust_z(values: np.ndarray, sign: float) -> np.ndarray:
    """``sign · (u − median) / (1.4826 · MAD)`` (Eq. 8); a zero MAD gives 0 at the median and ±inf elsewhere."""
    median, mad = _median_mad(values)
    diff = sign * (values - median)
    if mad > 0:
        return diff / mad
    out = np.zeros_like(diff)
    out[diff != 0] = np.copysign(math.inf, diff[diff != 0])
    return out


def _label_statistics(model: keras.Model, sources: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], t: int, k: int,
                      center: bool, variance: str = "per-logit") -> dict[str, Any]:
    """P, V, D of target ``t`` (the ``k``-th swept label) over the source classes s ≠ t, the masks' mean L2, the
    masks' own success and the mean mask; ``sources`` maps s to (images, clean logits, all labels' masks)."""
    persistence, spread, distance, l2, success, masks = [], [], [], [], [], []
    for s, (xs, before, all_masks) in sources.items():
        if s == t:
            continue
        m = all_masks[:, k]
        n = len(xs)
        # every ordered pair (j, c), c ≠ j: image j stamped with the mask generated from image c
        j, c = np.nonzero(~np.eye(n, dtype=bool))
        pairs = np.clip(xs[j] + m[c], 0.0, 1.0)
        persistence.append(float(np.mean(_predict(model, pairs, center).argmax(1) == t)))
        after = _predict(model, np.clip(xs + m, 0.0, 1.0), center)
        spread.append(_shift_variance(after - before, cosine=variance == "cosine"))
        distance.append(float(np.mean(after.max(1) - before.max(1))))
        success.append(float(np.mean(after.argmax(1) == t)))
        l2.append(float(np.linalg.norm(m.reshape(n, -1), axis=1).mean()))
        masks.append(m)
    return {"persistence": float(np.mean(persistence)), "shift_variance": float(np.mean(spread)), "shift_distance": float(np.mean(distance)),
            "mask_l2": float(np.mean(l2)), "success": float(np.mean(success)), "mean_mask": np.concatenate(masks).mean(axis=0)}


def _shift_variance(shift: np.ndarray, cosine: bool) -> float:
    """Eq. 6 on the logit shifts (N, K): each logit's variance over the images, averaged; or, scale-free,
    1 − the mean cosine similarity of each image's shift with the mean shift."""
    if not cosine:
        return float(np.var(shift, axis=0).mean())
    mean = shift.mean(axis=0)
    norms = np.linalg.norm(shift, axis=1) * np.linalg.norm(mean)
    return float(1.0 - np.mean(shift @ mean / np.maximum(norms, 1e-12)))


def _predict(model: keras.Model, x: np.ndarray, center: bool) -> np.ndarray:
    z = np.asarray(model.predict(x, batch_size=512, verbose=0), np.float64)
    return z - z.mean(axis=1, keepdims=True) if center else z
