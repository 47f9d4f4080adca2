"""Neural Cleanse (Wang et al., IEEE S&P 2019) as a model inspector: reverse-engineer a trigger per label, flag outliers.

For every output label, Neural Cleanse searches for the smallest mask ``m`` and a pattern ``p`` such that
``(1 − m)·x + m·p`` sends clean images to that label. A backdoor target label needs a much smaller mask than
the others, so the reversed masks' L1 norms of infected labels are outliers by the median absolute deviation
(MAD).

This module mirrors ``bolunwang/backdoor`` (``visualizer.py``, ``gtsrb_visualize_example.py``,
``mad_outlier_detection.py``; constants and quirks in the reference notes §1): the tanh parametrisation with
ε = 1e-7, an (H, W) mask shared across channels, uniform random initialisation, Adam(0.1, β1 0.5, β2 0.9,
ε 1e-7) reset per label, 31 mini-batches of 32 per step, 1000 steps, the adaptive cost (start at 0,
init 1e-3, patience 5, ×2 up, ÷2^1.5 down), attack-success threshold 0.99 and early stop (threshold 1.0,
patience 25). Unlike the original, all labels are optimised together in one batched computation
(:mod:`kerasbd.training.inversion`); ``inversion=LabelBatchedInversion(label_batch_size=1)`` gives the per-label
loop. The mask/pattern candidates and the cost schedule are defined here, beside the method.

Loss: the default is ``"cross-entropy"``, the objective of the paper. The original code swaps the arguments of
Keras' ``categorical_crossentropy`` (maintainers' issue #11), which turns it into ``≈ 16.118·(1 − p_t)``;
``inversion__loss="original-swapped-ce"`` reproduces that for bit-level comparisons. Cross-entropy is the default because
it is what the paper states and what the maintainers agreed the code meant, and because the linear quirk's
gradient vanishes when the target's probability is near 0, which slows labels that start far from success.

Mask norms: the original computes the L1 norms from the masks it saved as 8-bit PNGs; kerasbd takes them from
the float masks (``quantize_masks=True`` for the original's round trip). How much either original variant changes
the verdicts on the zoo is measured in ``results/neural_cleanse_png.md`` (the round trip) and
``results/neural_cleanse_swapped_ce_converged.md`` (the swapped loss).

Reading the anomaly index (measured on the zoo; see ``recipes/neural_cleanse.py``):

- On the L1 scale a label can score at most ``median / MAD`` below the median, since a norm cannot go below 0.
  When the norms spread widely — a model that many labels can reach with a few bright pixels, such as the raw
  0–255 MNIST nets of the zoo — no label can pass the threshold however small its mask.
  ``details["max_low_index"]`` reports that ceiling and the note says when it is under the threshold.
- The rule tests the smallest of the labels' norms with no correction for testing many labels: even when every
  norm merely scatters normally it flags one with probability ``details["null_flag_rate"]``
  (:func:`kerasbd.metrics.mad_null_flag_rate`: ≈ 0.33 for 10 labels at threshold 2, ≈ 0.64 for 43, ≈ 1 for
  1283). Read a flag on a clean-looking model, and any flag on a many-class model, with that in mind, or raise
  ``mad_threshold``.

The repair (unlearning the reversed trigger) is :class:`kerasbd.defenses.repair.unlearning.Unlearning`; the
``neural-cleanse`` defense (:class:`kerasbd.defenses.NeuralCleanse`) is this inspector followed by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from kerasbd.attacks import AllToOne, Backdoor, MaskedPattern
from kerasbd.attacks.masked import apply_mask_pattern
from kerasbd.config import Configurable
from kerasbd.defenses.base import ModelInspector, RunContext, candidate_labels
from kerasbd.errors import ConfigError
from kerasbd.metrics import mad_anomaly_index, mad_null_flag_rate
from kerasbd.reporting import InspectionResult
from kerasbd.training.inversion import TANH_EPSILON, LabelBatchedInversion

__all__ = ["NeuralCleanseInspector", "MaskPatternCandidates", "MaskPatternSlots", "CostSchedule", "CostScheduleState",
           "ceiling_note", "mask_l1_norms", "reversed_triggers"]


def mask_l1_norms(masks: np.ndarray, *, quantize: bool = False) -> np.ndarray:
    """L1 norm of each (H, W) mask in ``masks`` (L, H, W).

    ``quantize=True`` mirrors the original, which saves each mask as an 8-bit PNG (``mask·255`` truncated to
    uint8) and computes the norm from the re-read image divided by 255.

    Example:
        >>> m = np.full((1, 2, 2), 0.999, np.float32)
        >>> mask_l1_norms(m).round(3).tolist(), mask_l1_norms(m, quantize=True).round(3).tolist()
        ([3.996], [3.984])
    """
    masks = np.asarray(masks, np.float64)
    if quantize:
        masks = np.floor(np.clip(masks, 0.0, 1.0) * 255.0) / 255.0
    return np.abs(masks).reshape(len(masks), -1).sum(axis=1)


def ceiling_note(details: dict[str, Any]) -> str:
    """``"; the MAD test cannot flag ..."`` when no label can pass the threshold on this model, else ``""``.

    On the L1 scale a label scores at most ``median / MAD`` (``max_low_index``) below the median.
    """
    ceiling, threshold = details["max_low_index"], details["mad_threshold"]
    if ceiling > threshold:
        return ""
    return (f"; the MAD test cannot flag any label on this model: the median L1 norm ({details['median']:.3g}) is only "
            f"{ceiling:.2f} MADs above 0, below the threshold {threshold:g}")


def reversed_triggers(labels: Sequence[int], masks: np.ndarray, patterns: np.ndarray) -> dict[int, Backdoor]:
    """Each label's reversed mask and pattern as an all-to-one :class:`~kerasbd.attacks.Backdoor` towards it.

    Example:
        >>> bd = reversed_triggers([4], np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 1)))[4]
        >>> bd.name, bd.target.label
        ('reversed→4', 4)
    """
    return {int(lab): Backdoor(MaskedPattern(m, p), AllToOne(int(lab)), name=f"reversed→{int(lab)}")
            for lab, m, p in zip(labels, masks, patterns, strict=True)}


class MaskPatternCandidates(Configurable):
    """Configuration of Neural Cleanse's trigger candidates (the engine's candidate family).

    Args:
        regularization: ``"l1"`` (the original's default: the mask's L1 norm) or ``"l2"`` penalty on the mask.
        epsilon: ε of the tanh parametrisation (Keras' ``K.epsilon()`` = 1e-7, as the original).

    Example:
        >>> MaskPatternCandidates().allocate((8, 8, 1), slots=3).mask_tanh.shape
        TensorShape([3, 8, 8, 1])
    """

    def __init__(self, regularization: str = "l1", epsilon: float = TANH_EPSILON) -> None:
        if regularization not in ("l1", "l2"):
            raise ConfigError(f"regularization must be 'l1' or 'l2', got {regularization!r}.")
        self.regularization, self.epsilon = regularization, float(epsilon)

    def allocate(self, image_shape: Sequence[int], slots: int) -> MaskPatternSlots:
        """Trainable candidates for ``slots`` labels of images ``image_shape`` (H, W, C)."""
        return MaskPatternSlots(image_shape, slots, regularization=self.regularization, epsilon=self.epsilon)


def _to_tanh(v: np.ndarray, epsilon: float) -> np.ndarray:
    return np.arctanh((np.clip(v, 0.0, 1.0) - 0.5) * (2.0 - epsilon))


class MaskPatternSlots:
    """Neural Cleanse's trigger candidates, one per slot: ``x' = (1 − m)·x + m·p`` (made by :class:`MaskPatternCandidates`).

    ``m`` is an (H, W) mask shared across channels, ``p`` an (H, W, C) pattern in canonical [0, 1] (the
    original's [0, 255] pattern divided by 255 — see the module note on blending). Both are stored in tanh
    space, ``m = tanh(w)/(2 − ε) + 0.5`` with ε = 1e-7, so the optimiser is unconstrained and the values stay
    in range. A label's initial values are drawn from ``default_rng([seed, label])`` (mask and pattern
    uniform in [0, 1), as the original draws them), so they do not depend on which slot or batch the label
    lands in. The regulariser is the mask's L1 norm ``Σ m`` (``"l1"``, the original's default) or
    ``sqrt(Σ m²)`` (``"l2"``); the pattern is not regularised.

    Example:
        >>> c = MaskPatternCandidates().allocate((8, 8, 1), slots=2)
        >>> c.initialize(np.array([0, 1]), np.array([3, 5]), seed=0)
        >>> sorted(c.values(np.array([1])))
        ['mask', 'pattern']
    """

    def __init__(self, image_shape: Sequence[int], slots: int, *, regularization: str, epsilon: float) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        self.regularization, self.epsilon = regularization, float(epsilon)
        h, w, c = self.image_shape
        self.mask_tanh = tf.Variable(tf.zeros((slots, h, w, 1)), trainable=False, name="mask_tanh")
        self.pattern_tanh = tf.Variable(tf.zeros((slots, h, w, c)), trainable=False, name="pattern_tanh")
        self.variables = [self.mask_tanh, self.pattern_tanh]

    def initialize(self, slots: np.ndarray, labels: np.ndarray, seed: int) -> None:
        h, w, c = self.image_shape
        masks, patterns = [], []
        for label in labels:
            rng = np.random.default_rng([int(seed), int(label)])
            masks.append(_to_tanh(rng.random((h, w, 1)), self.epsilon))
            patterns.append(_to_tanh(rng.random((h, w, c)), self.epsilon))
        idx = np.asarray(slots, np.int64)[:, None]
        self.mask_tanh.scatter_nd_update(idx, np.asarray(masks, np.float32))
        self.pattern_tanh.scatter_nd_update(idx, np.asarray(patterns, np.float32))

    def _squash(self, w: tf.Tensor) -> tf.Tensor:
        return tf.tanh(w) / (2.0 - self.epsilon) + 0.5

    def apply(self, x: tf.Tensor, params: list[tf.Tensor]) -> tf.Tensor:
        """Stamp ``x`` (S or 1, B, H, W, C) with each slot's trigger; ``params`` are the gathered variables."""
        mask = self._squash(params[0])[:, None]  # (K, 1, H, W, 1), broadcast over batch and channels
        pattern = self._squash(params[1])[:, None]
        return (1.0 - mask) * x + mask * pattern

    def regularizer(self, params: list[tf.Tensor]) -> tf.Tensor:
        mask = self._squash(params[0])
        if self.regularization == "l1":
            return tf.reduce_sum(tf.abs(mask), axis=[1, 2, 3])
        return tf.sqrt(tf.reduce_sum(tf.square(mask), axis=[1, 2, 3]))

    def values(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Current mask (K, H, W) and pattern (K, H, W, C) of ``slots`` as float32 NumPy arrays in [0, 1]."""
        idx = np.asarray(slots, np.int64)
        mask = self._squash(tf.gather(self.mask_tanh, idx)).numpy()[..., 0]
        pattern = self._squash(tf.gather(self.pattern_tanh, idx)).numpy()
        return {"mask": mask, "pattern": pattern}


class CostSchedule(Configurable):
    """Neural Cleanse's per-label cost schedule, best-result tracking and early stop (configuration).

    :meth:`allocate` gives the state for a number of slots (:class:`CostScheduleState`), vectorised over them.

    Per step (mirroring ``visualizer.py``): a step whose attack success ``acc ≥ attack_succ_threshold`` and
    whose mean regulariser beats the best so far records a new best. Early stop (once a valid best exists):
    a step whose best is not below ``early_stop_threshold ×`` the best seen at the previous step counts
    towards ``early_stop_patience``; the label stops when that count is reached *and* the cost has been moved
    both up and down. The cost starts at 0 (``reset_cost_to_zero``) and is set to ``init_cost`` after
    ``patience`` consecutive successful steps; afterwards ``patience`` successes in a row multiply it by
    ``cost_multiplier`` and ``patience`` failures divide it by ``cost_multiplier ** 1.5`` (the code's
    exponent; its comment says square root).

    Example:
        >>> s = CostSchedule(patience=2).allocate(1); s.reset(np.array([0]))
        >>> for _ in range(2):
        ...     _ = s.update(np.array([0]), np.array([1.0]), np.array([5.0]))
        >>> float(s.cost[0])
        0.001
    """

    def __init__(
        self,
        init_cost: float = 1e-3,
        attack_succ_threshold: float = 0.99,
        patience: int = 5,
        cost_multiplier: float = 2.0,
        reset_cost_to_zero: bool = True,
        early_stop: bool = True,
        early_stop_threshold: float = 1.0,
        early_stop_patience: int = 25,
    ) -> None:
        if init_cost < 0 or cost_multiplier <= 1 or patience < 1 or early_stop_patience < 1:
            raise ConfigError("need init_cost ≥ 0, cost_multiplier > 1, patience ≥ 1 and early_stop_patience ≥ 1.")
        if not 0 < attack_succ_threshold <= 1:
            raise ConfigError(f"attack_succ_threshold must be in (0, 1], got {attack_succ_threshold}.")
        self.init_cost, self.attack_succ_threshold, self.patience = float(init_cost), float(attack_succ_threshold), int(patience)
        self.cost_multiplier, self.reset_cost_to_zero, self.early_stop = float(cost_multiplier), bool(reset_cost_to_zero), bool(early_stop)
        self.early_stop_threshold, self.early_stop_patience = float(early_stop_threshold), int(early_stop_patience)

    def allocate(self, slots: int) -> CostScheduleState:
        """Fresh schedule state for ``slots`` labels."""
        return CostScheduleState(self, slots)


class CostScheduleState:
    """The per-slot state of a :class:`CostSchedule` and its update rule (plain NumPy, unit-testable)."""

    _FIELDS = ("cost", "set_counter", "up_counter", "down_counter", "up_flag", "down_flag", "reg_best", "es_counter", "es_reg_best")

    def __init__(self, config: CostSchedule, slots: int) -> None:
        self.init_cost, self.threshold, self.patience = config.init_cost, config.attack_succ_threshold, config.patience
        self.up, self.down = config.cost_multiplier, config.cost_multiplier ** 1.5
        self.reset_cost_to_zero, self.early_stop = config.reset_cost_to_zero, config.early_stop
        self.es_threshold, self.es_patience = config.early_stop_threshold, config.early_stop_patience
        self.cost = np.zeros(slots)
        self.set_counter = np.zeros(slots, np.int64)
        self.up_counter = np.zeros(slots, np.int64)
        self.down_counter = np.zeros(slots, np.int64)
        self.up_flag = np.zeros(slots, bool)
        self.down_flag = np.zeros(slots, bool)
        self.reg_best = np.full(slots, np.inf)
        self.es_counter = np.zeros(slots, np.int64)
        self.es_reg_best = np.full(slots, np.inf)

    def reset(self, slots: np.ndarray) -> None:
        """Fresh state for the labels that just entered ``slots``."""
        self.cost[slots] = 0.0 if self.reset_cost_to_zero else self.init_cost
        for name in ("set_counter", "up_counter", "down_counter", "es_counter"):
            getattr(self, name)[slots] = 0
        self.up_flag[slots] = self.down_flag[slots] = False
        self.reg_best[slots] = self.es_reg_best[slots] = np.inf

    def update(self, slots: np.ndarray, acc: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance one step for ``slots`` given their mean attack success and regulariser.

        Returns ``(improved, stop)`` boolean vectors: a new best was recorded; the label should stop.
        """
        s = np.asarray(slots)
        success = np.asarray(acc) >= self.threshold
        improved = success & (np.asarray(reg) < self.reg_best[s])
        self.reg_best[s] = np.where(improved, reg, self.reg_best[s])

        stop = np.zeros(len(s), bool)
        if self.early_stop:
            valid = np.isfinite(self.reg_best[s])
            stalled = self.reg_best[s] >= self.es_threshold * self.es_reg_best[s]
            self.es_counter[s] = np.where(valid, np.where(stalled, self.es_counter[s] + 1, 0), self.es_counter[s])
            self.es_reg_best[s] = np.minimum(self.reg_best[s], self.es_reg_best[s])
            stop = self.up_flag[s] & self.down_flag[s] & (self.es_counter[s] >= self.es_patience)

        live = s[~stop]  # a stopping label's cost no longer matters; the original breaks before updating it
        ok = success[~stop]
        start = (self.cost[live] == 0) & ok
        self.set_counter[live] = np.where(start, self.set_counter[live] + 1, 0)
        begin = live[self.set_counter[live] >= self.patience]
        self.cost[begin] = self.init_cost
        self.up_counter[begin] = self.down_counter[begin] = 0
        self.up_flag[begin] = self.down_flag[begin] = False

        self.up_counter[live] = np.where(ok, self.up_counter[live] + 1, 0)
        self.down_counter[live] = np.where(ok, 0, self.down_counter[live] + 1)
        go_up = live[self.up_counter[live] >= self.patience]
        go_down = np.setdiff1d(live[self.down_counter[live] >= self.patience], go_up)
        self.up_counter[go_up] = 0
        self.cost[go_up] *= self.up
        self.up_flag[go_up] = True
        self.down_counter[go_down] = 0
        self.cost[go_down] /= self.down
        self.down_flag[go_down] = True
        return improved, stop

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in self._FIELDS}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self._FIELDS:
            getattr(self, name)[...] = state[name]




class NeuralCleanseInspector(ModelInspector):
    """Neural Cleanse: batched per-label trigger reverse engineering and the MAD outlier test.

    Args:
        inversion: the optimisation engine (:class:`~kerasbd.training.inversion.LabelBatchedInversion`; default
            the original's 1000 steps × 31 mini-batches of 32, Adam 0.1 / 0.5 / 0.9 / 1e-7, cross-entropy).
        candidates: :class:`MaskPatternCandidates` (mask regularisation ``"l1"`` or ``"l2"``).
        schedule: :class:`CostSchedule` (the original's adaptive cost and early stop).
        labels: candidate labels to invert (default: all); the MAD test runs over these.
        mad_threshold: anomaly-index threshold (2, i.e. > 95 % confidence for a normal distribution).
        quantize_masks: compute L1 norms from uint8-quantised masks as the original's PNG round trip does.

    The model-level score is the anomaly index of the smallest reversed mask; the model is called backdoored
    when it exceeds ``mad_threshold`` (then at least one label is flagged).

    Example:
        >>> nc = NeuralCleanseInspector(labels=[0, 1, 7]).with_params(inversion__steps=300)
        >>> nc.inversion.steps, nc.get_config()["inversion"]["config"]["loss"]
        (300, 'cross-entropy')

        ``nc.inspect(model, (x_val, y_val))`` gives ``result.flagged``, ``result.score`` (the anomaly index),
        ``result.triggers`` (reversed triggers) and ``result.arrays["masks"]``.
    """

    name: ClassVar[str] = "neural-cleanse"

    def __init__(
        self,
        inversion: LabelBatchedInversion | None = None,
        candidates: MaskPatternCandidates | None = None,
        schedule: CostSchedule | None = None,
        labels: Sequence[int] | None = None,
        mad_threshold: float = 2.0,
        quantize_masks: bool = False,
    ) -> None:
        if mad_threshold <= 0:
            raise ConfigError(f"mad_threshold must be positive, got {mad_threshold}.")
        for key, value, cls in (("inversion", inversion, LabelBatchedInversion), ("candidates", candidates, MaskPatternCandidates),
                                ("schedule", schedule, CostSchedule)):
            if value is not None and not isinstance(value, cls):
                raise ConfigError(f"{key} must be a {cls.__name__}, got {type(value).__name__}.")
        self.inversion = inversion if inversion is not None else LabelBatchedInversion()
        self.candidates = candidates if candidates is not None else MaskPatternCandidates()
        self.schedule = schedule if schedule is not None else CostSchedule()
        self.labels = None if labels is None else [int(lab) for lab in labels]
        self.mad_threshold, self.quantize_masks = float(mad_threshold), bool(quantize_masks)

    def _inspect(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> InspectionResult:
        x, y = clean
        labels = candidate_labels(self.labels, int(model.output_shape[-1]))
        inverted = self.inversion.run(model, x, labels, self.candidates, self.schedule, seed=ctx.seed, store=ctx.store,
                                      strategy=ctx.strategy, verbose=ctx.verbose)
        masks, patterns = inverted.stacked("mask", labels), inverted.stacked("pattern", labels)
        norms = mask_l1_norms(masks, quantize=self.quantize_masks)
        mad_test = mad_anomaly_index(norms, threshold=self.mad_threshold, side="low", labels=labels)  # small masks only
        index, median, mad, flagged = np.asarray(mad_test["indices"]), mad_test["median"], mad_test["mad"], mad_test["flagged"]
        max_low_index = median / mad if mad > 0 else math.inf
        success = self._reversed_success(model, x, y, labels, masks, patterns)
        details = {
            "labels": labels,
            "l1_norms": dict(zip(labels, norms.round(4).tolist(), strict=True)),
            "median": median,
            "mad": mad,
            "mad_threshold": self.mad_threshold,
            "anomaly_index": mad_test["anomaly_index"],
            "max_low_index": max_low_index,
            "null_flag_rate": mad_null_flag_rate(len(labels), threshold=self.mad_threshold, seed=ctx.seed),
            "anomaly_indices": dict(zip(labels, index.round(4).tolist(), strict=True)),
            "flagged": flagged,
            "reversed_attack_success": dict(zip(labels, success.round(4).tolist(), strict=True)),
            "reached_threshold": {lab: inverted[lab]["valid"] for lab in labels},
            "steps_run": {lab: inverted[lab]["steps"] for lab in labels},
            "inversion_seconds": inverted.seconds,
        }
        details["note"] = (f"label(s) {flagged} flagged" if flagged else "no label flagged") + ceiling_note(details)
        statistics = [
            {"label": lab, "l1_norm": float(n), "anomaly_index": float(i), "below_median": bool(n <= median), "flagged": lab in flagged,
             "reversed_asr": float(s), "steps": inverted[lab]["steps"]}
            for lab, n, i, s in zip(labels, norms, index, success, strict=True)
        ]
        return InspectionResult(
            self.name,
            labels=labels,
            statistics=statistics,
            flagged=flagged,
            score=float(mad_test["anomaly_index"]),
            threshold=self.mad_threshold,
            rule=f"MAD anomaly index of the smallest reversed-mask L1 norm (consistency 1.4826) > {self.mad_threshold:g}",
            triggers=reversed_triggers(labels, masks, patterns),
            facts={"max_low_index": max_low_index, "null_flag_rate": details["null_flag_rate"]},
            details=details,
            arrays={"labels": np.asarray(labels), "masks": masks, "patterns": patterns, "l1_norms": norms},
        )

    @staticmethod
    def _reversed_success(model: keras.Model, x: np.ndarray, y: np.ndarray, labels: list[int], masks: np.ndarray, patterns: np.ndarray,
                          limit: int = 1000) -> np.ndarray:
        """Share of clean inputs not already of label t that the reversed trigger of t sends to t."""
        out = np.zeros(len(labels))
        for i, label in enumerate(labels):
            xs = x[y != label][:limit]
            if len(xs):
                pred = np.argmax(model.predict(apply_mask_pattern(xs, masks[i], patterns[i]), batch_size=256, verbose=0), axis=1)
                out[i] = float(np.mean(pred == label))
        return out
