"""Neural Cleanse (Wang et al., IEEE S&P 2019): reverse-engineer a trigger per label, flag outliers, unlearn.

For every output label, Neural Cleanse searches for the smallest mask ``m`` and a pattern ``p`` such that
``(1 − m)·x + m·p`` sends clean images to that label. A backdoor target label needs a much smaller mask than
the others, so the reversed masks' L1 norms of infected labels are outliers by the median absolute deviation
(MAD). A model is repaired by *unlearning*: fine-tuning on clean data where a share of the images carry the
reversed trigger but keep their correct labels.

This module mirrors ``bolunwang/backdoor`` (``visualizer.py``, ``gtsrb_visualize_example.py``,
``mad_outlier_detection.py``; constants and quirks in the reference notes §1): the tanh parametrisation with
ε = 1e-7, an (H, W) mask shared across channels, uniform random initialisation, Adam(0.1, β1 0.5, β2 0.9,
ε 1e-7) reset per label, 31 mini-batches of 32 per step, 1000 steps, the adaptive cost (start at 0,
init 1e-3, patience 5, ×2 up, ÷2^1.5 down), attack-success threshold 0.99 and early stop (threshold 1.0,
patience 25). Unlike the original, all labels are optimised together in one batched computation
(:mod:`kerasbd.training.inversion`); ``label_batch_size=1`` gives the per-label loop.

Loss: the default is ``"cross-entropy"``, the objective of the paper. The original code swaps the arguments of
Keras' ``categorical_crossentropy`` (maintainers' issue #11), which turns it into ``≈ 16.118·(1 − p_t)``;
``loss="original-swapped-ce"`` reproduces that for bit-level comparisons. Cross-entropy is the default because
it is what the paper states and what the maintainers agreed the code meant, and because the linear quirk's
gradient vanishes when the target's probability is near 0, which slows labels that start far from success.

Mask norms: the original computes the L1 norms from the masks it saved as 8-bit PNGs; kerasbd takes them from
the float masks (``quantize_masks=True`` for the original's round trip). Both choices were measured on the same
reversed masks of three zoo models over three seeds (``results/neural_cleanse_png.md``): the round trip moved the
anomaly index by at most 0.05 and changed no verdict. The swapped loss, run on the same models and seeds
(``results/neural_cleanse_swapped_ce_converged.md``), gave the same outcome in every run (target flagged or not,
clean model flagged or not) and left two labels of ``ruizegao_mnist_backdoor_7`` short of the attack-success
threshold after 300 steps in two of the three seeds.

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

Unlearning is described only in the paper (no code was published): fine-tune one epoch on clean data of
which ~20 % carry the reversed trigger of a flagged label with their correct labels. The optimiser is not
known; kerasbd uses Adam at Keras' default learning rate 1e-3, batch 32 (our choice: with a defender's set of
~1000 images one epoch is ~30 updates, and 1e-4 left the backdoor in place on the test BadNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerasbd.defenses.base import Defense, RunContext
from kerasbd.errors import ConfigError
from kerasbd.metrics import mad_anomaly_index, mad_null_flag_rate
from kerasbd.results import DefenseResult
from kerasbd.training import fit_classifier
from kerasbd.training.inversion import LOSSES, CostSchedule, InversionResult, LabelBatchedInversion, MaskPatternCandidates

__all__ = ["NeuralCleanse", "mask_l1_norms", "apply_mask_pattern"]


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


def apply_mask_pattern(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Stamp canonical images ``x`` (N, H, W, C) with a reversed trigger: ``(1 − m)·x + m·p``.

    Example:
        >>> x = np.zeros((1, 2, 2, 1), np.float32)
        >>> apply_mask_pattern(x, np.eye(2), np.ones((2, 2, 1)))[0, ..., 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    m = np.asarray(mask, np.float32)[..., None]
    return ((1.0 - m) * x + m * np.asarray(pattern, np.float32)).astype(np.float32)


class NeuralCleanse(Defense):
    """Neural Cleanse: batched per-label trigger reverse engineering, MAD outlier test, unlearning.

    Args:
        steps, mini_batches, batch_size: optimisation length (1000 steps of 31 mini-batches of 32).
        init_cost, patience, cost_multiplier, attack_succ_threshold, early_stop, early_stop_threshold,
        early_stop_patience: the original's cost schedule and early stop (see
            :class:`~kerasbd.training.inversion.CostSchedule`).
        learning_rate: Adam learning rate of the inversion (0.1; β1 0.5, β2 0.9, ε 1e-7 fixed as the original).
        regularization: ``"l1"`` (default) or ``"l2"`` penalty on the mask.
        loss: ``"cross-entropy"`` (default) or ``"original-swapped-ce"`` (the original code's quirk).
        labels: candidate labels to invert (default: all); the MAD test runs over these.
        label_batch_size: labels optimised together (None = all, memory-capped; 1 = the per-label loop).
        mad_threshold: anomaly-index threshold (2, i.e. > 95 % confidence for a normal distribution).
        quantize_masks: compute L1 norms from uint8-quantised masks as the original's PNG round trip does.
        unlearn: fine-tune the model when a label is flagged.
        unlearn_fraction: share of the clean images stamped with a reversed trigger (0.2, the paper's ratio).
        unlearn_epochs, unlearn_batch_size, unlearn_optimizer, unlearn_learning_rate: the fine-tuning
            (1 epoch as the paper; Adam 1e-3 and batch 32 are kerasbd's choice — the original's are unknown).
        checkpoint_dir: folder for an atomic checkpoint of the inversion; a rerun resumes from it.

    Both stages run under ``run``'s ``strategy``: the inversion splits each update's mini-batch across the
    replicas (:class:`~kerasbd.training.inversion.LabelBatchedInversion`), the unlearning fine-tune goes through
    :func:`kerasbd.training.fit_classifier`.

    Example:
        >>> nc = NeuralCleanse(steps=300, labels=[0, 1, 7])
        >>> nc.get_config()["loss"]
        'cross-entropy'

        A run (``result = nc.run(model, clean=(x_val, y_val), eval_data=(x_test, y_test),
        backdoors=[backdoor])``) gives ``result.details["flagged"]``, the anomaly index, the reversed
        ``result.arrays["masks"]`` and the unlearned ``result.model``.
    """

    name = "neural-cleanse"

    def __init__(
        self,
        *,
        steps: int = 1000,
        mini_batches: int = 31,
        batch_size: int = 32,
        init_cost: float = 1e-3,
        learning_rate: float = 0.1,
        patience: int = 5,
        cost_multiplier: float = 2.0,
        attack_succ_threshold: float = 0.99,
        early_stop: bool = True,
        early_stop_threshold: float = 1.0,
        early_stop_patience: int = 25,
        regularization: str = "l1",
        loss: str = "cross-entropy",
        labels: Sequence[int] | None = None,
        label_batch_size: int | None = None,
        mad_threshold: float = 2.0,
        quantize_masks: bool = False,
        unlearn: bool = True,
        unlearn_fraction: float = 0.2,
        unlearn_epochs: int = 1,
        unlearn_batch_size: int = 32,
        unlearn_optimizer: str = "adam",
        unlearn_learning_rate: float = 1e-3,
        checkpoint_dir: str | None = None,
    ) -> None:
        self.steps, self.mini_batches, self.batch_size = steps, mini_batches, batch_size
        self.init_cost, self.learning_rate, self.patience, self.cost_multiplier = init_cost, learning_rate, patience, cost_multiplier
        self.attack_succ_threshold, self.early_stop = attack_succ_threshold, early_stop
        self.early_stop_threshold, self.early_stop_patience = early_stop_threshold, early_stop_patience
        self.regularization, self.loss = regularization, loss
        self.labels = None if labels is None else [int(l) for l in labels]
        self.label_batch_size, self.mad_threshold, self.quantize_masks = label_batch_size, mad_threshold, quantize_masks
        self.unlearn, self.unlearn_fraction, self.unlearn_epochs = unlearn, unlearn_fraction, unlearn_epochs
        self.unlearn_batch_size, self.unlearn_optimizer, self.unlearn_learning_rate = unlearn_batch_size, unlearn_optimizer, unlearn_learning_rate
        self.checkpoint_dir = checkpoint_dir
        if regularization not in ("l1", "l2"):
            raise ConfigError(f"regularization must be 'l1' or 'l2', got {regularization!r}.")
        if loss not in LOSSES:
            raise ConfigError(f"loss {loss!r} is unknown; choose one of {', '.join(LOSSES)}.")
        if not 0.0 < unlearn_fraction <= 1.0:
            raise ConfigError(f"unlearn_fraction must be in (0, 1], got {unlearn_fraction}.")
        if mad_threshold <= 0:
            raise ConfigError(f"mad_threshold must be positive, got {mad_threshold}.")
        self._inversion()  # validates the optimisation settings now rather than mid-run
        self._schedule(1)

    def _inversion(self) -> LabelBatchedInversion:
        return LabelBatchedInversion(
            steps=self.steps,
            mini_batches=self.mini_batches,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            loss=self.loss,
            label_batch_size=self.label_batch_size,
        )

    def _schedule(self, slots: int) -> CostSchedule:
        return CostSchedule(
            slots,
            init_cost=self.init_cost,
            attack_succ_threshold=self.attack_succ_threshold,
            patience=self.patience,
            cost_multiplier=self.cost_multiplier,
            early_stop=self.early_stop,
            early_stop_threshold=self.early_stop_threshold,
            early_stop_patience=self.early_stop_patience,
        )

    def reverse_engineer(
        self, model: keras.Model, x: np.ndarray, labels: Sequence[int], *, seed: int = 0, strategy: Any = None, verbose: int = 1
    ) -> InversionResult:
        """Only the trigger inversion: per-label reversed mask/pattern records (see :class:`InversionResult`);
        ``strategy`` is anything :func:`kerasbd.training.get_strategy` accepts."""
        shape = tuple(model.input_shape[1:])
        return self._inversion().run(
            model,
            x,
            labels,
            lambda slots: MaskPatternCandidates(shape, slots, regularization=self.regularization),
            self._schedule,
            seed=seed,
            checkpoint_dir=self.checkpoint_dir,
            strategy=strategy,
            verbose=verbose,
        )

    def _run(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> DefenseResult:
        x, y = clean
        num_classes = int(model.output_shape[-1])
        labels = list(range(num_classes)) if self.labels is None else self.labels
        bad = [l for l in labels if not 0 <= l < num_classes]
        if bad or len(labels) < 3:
            raise ConfigError(f"labels must be ≥ 3 distinct classes in 0..{num_classes - 1} for a MAD test; got {labels}.")
        inverted = self.reverse_engineer(model, x, labels, seed=ctx.seed, strategy=ctx.strategy, verbose=ctx.verbose)
        masks, patterns = inverted.stacked("mask", labels), inverted.stacked("pattern", labels)
        norms = mask_l1_norms(masks, quantize=self.quantize_masks)
        mad_test = mad_anomaly_index(norms, threshold=self.mad_threshold, side="low", labels=labels)  # small masks only
        index, median, mad, flagged = np.asarray(mad_test["indices"]), mad_test["median"], mad_test["mad"], mad_test["flagged"]
        below = norms <= median
        max_low_index = median / mad if mad > 0 else math.inf
        success = self._reversed_success(model, x, y, labels, masks, patterns)

        repaired, note = model, "no label flagged: the model is returned unchanged"
        if max_low_index <= self.mad_threshold:
            note += (f"; the MAD test cannot flag any label on this model: the median L1 norm ({median:.3g}) is only "
                     f"{max_low_index:.2f} MADs above 0, below the threshold {self.mad_threshold:g}")
        if flagged and self.unlearn:
            repaired = self._unlearn(model, x, y, [labels.index(l) for l in flagged], masks, patterns, ctx.rng, ctx.seed, ctx.strategy)
            note = f"unlearned the reversed trigger(s) of label(s) {flagged}"
        elif flagged:
            note = "label(s) flagged; unlearning disabled (unlearn=False): the model is returned unchanged"

        details = {
            "labels": labels,
            "l1_norms": dict(zip(labels, norms.round(4).tolist())),
            "median": median,
            "mad": mad,
            "anomaly_index": mad_test["anomaly_index"],
            "max_low_index": max_low_index,
            "null_flag_rate": mad_null_flag_rate(len(labels), threshold=self.mad_threshold, seed=ctx.seed),
            "anomaly_indices": dict(zip(labels, index.round(4).tolist())),
            "flagged": flagged,
            "reversed_attack_success": dict(zip(labels, success.round(4).tolist())),
            "reached_threshold": {l: inverted[l]["valid"] for l in labels},
            "steps_run": {l: inverted[l]["steps"] for l in labels},
            "inversion_seconds": inverted.seconds,
            "unlearned": repaired is not model,
            "note": note,
        }
        rows = [
            {"label": l, "l1_norm": float(n), "anomaly_index": float(i), "below_median": bool(b), "flagged": l in flagged,
             "reversed_asr": float(s), "steps": inverted[l]["steps"]}
            for l, n, i, b, s in zip(labels, norms, index, below, success)
        ]
        return DefenseResult(
            self.name,
            model=repaired,
            details=details,
            rows=rows,
            arrays={"labels": np.asarray(labels), "masks": masks, "patterns": patterns, "l1_norms": norms},
            figures={"reversed_triggers": _trigger_grid(labels, masks, patterns, norms, flagged),
                     "anomaly_index": _anomaly_plot(labels, norms, median, mad, self.mad_threshold, flagged)},
        )

    @staticmethod
    def _reversed_success(model: keras.Model, x: np.ndarray, y: np.ndarray, labels: list[int], masks: np.ndarray, patterns: np.ndarray, limit: int = 1000) -> np.ndarray:
        """Share of clean inputs not already of label t that the reversed trigger of t sends to t."""
        out = np.zeros(len(labels))
        for i, label in enumerate(labels):
            xs = x[y != label][:limit]
            if len(xs):
                pred = np.argmax(model.predict(apply_mask_pattern(xs, masks[i], patterns[i]), batch_size=256, verbose=0), axis=1)
                out[i] = float(np.mean(pred == label))
        return out

    def _unlearn(self, model: keras.Model, x: np.ndarray, y: np.ndarray, flagged_idx: list[int], masks: np.ndarray, patterns: np.ndarray,
                 rng: np.random.Generator, seed: int, strategy: Any) -> keras.Model:
        """Fine-tune a copy of ``model`` on clean data where ``unlearn_fraction`` carry reversed triggers, true labels."""
        n = len(x)
        chosen = rng.choice(n, size=max(1, int(round(self.unlearn_fraction * n))), replace=False)
        which = np.asarray(flagged_idx)[np.arange(len(chosen)) % len(flagged_idx)]
        x_unlearn = x.copy()
        for j in np.unique(which):
            rows = chosen[which == j]
            x_unlearn[rows] = apply_mask_pattern(x[rows], masks[j], patterns[j])
        repaired = keras.models.clone_model(model)
        repaired.set_weights(model.get_weights())
        fit_classifier(
            repaired,
            x_unlearn,
            y,
            epochs=self.unlearn_epochs,
            batch_size=self.unlearn_batch_size,
            optimizer=self.unlearn_optimizer,
            learning_rate=self.unlearn_learning_rate,
            seed=seed,
            strategy=strategy,
        )
        return repaired


def _trigger_grid(labels: list[int], masks: np.ndarray, patterns: np.ndarray, norms: np.ndarray, flagged: list[int], max_labels: int = 50) -> Any:
    """Reversed mask (top) and pattern·mask (bottom) per label; the ``max_labels`` smallest masks when there are more."""
    from matplotlib.figure import Figure

    order = np.argsort(norms)[:max_labels] if len(labels) > max_labels else np.arange(len(labels))
    cols = min(10, len(order))
    blocks = math.ceil(len(order) / cols)
    fig = Figure(figsize=(1.3 * cols, 2.8 * blocks), layout="constrained")
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(order):
        r, c = 2 * (k // cols), k % cols
        fusion = masks[i][..., None] * patterns[i]
        axes[r, c].imshow(masks[i], cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_title(f"{labels[i]}{' *' if labels[i] in flagged else ''}\nL1 {norms[i]:.1f}", fontsize=7, color="red" if labels[i] in flagged else "black")
        axes[r + 1, c].imshow(fusion[..., 0] if fusion.shape[-1] == 1 else fusion, cmap="gray" if fusion.shape[-1] == 1 else None, vmin=0, vmax=1)
    fig.suptitle("Neural Cleanse reversed triggers: mask / pattern·mask (* = flagged)", fontsize=9)
    return fig


def _anomaly_plot(labels: list[int], norms: np.ndarray, median: float, mad: float, threshold: float, flagged: list[int]) -> Any:
    """Signed anomaly index ``(median − L1)/MAD`` per label with the flagging threshold."""
    from matplotlib.figure import Figure

    signed = (median - norms) / mad if mad > 0 else np.zeros_like(norms)
    fig = Figure(figsize=(max(4.0, 0.3 * len(labels)), 3.0))
    ax = fig.subplots()
    ax.bar(range(len(labels)), signed, color=["tab:red" if l in flagged else "tab:blue" for l in labels])
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if len(labels) <= 60:
        ax.set_xticks(range(len(labels)), [str(l) for l in labels], fontsize=7)
    ax.set_xlabel("label")
    ax.set_ylabel("(median − L1) / MAD")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
