"""NNoculation pre-deployment defense (Veldanda et al.): retrain on noise-augmented clean data at a high learning rate.

The BadNet is retrained from its own weights on the defender's clean data plus a noisy copy of every image
(a fraction γ of pixels, in 4×4 low-resolution blocks, replaced by N(128, 51.2) grey levels), over a grid of
learning rates α × noise levels γ. The patched network ("GoodNet") is picked by the paper's rule (§3.2):
(i) keep the cells whose clean accuracy is within θ of the BadNet's, (ii) of these the largest learning rate,
(iii) then the largest noise level.

Mirrors the original (akshajkumarv/NNoculation, ``augment.py`` / ``pre_deploy.py``): noise levels 0.1-0.6,
Adadelta(learning_rate=α), 10 epochs, batch 1283 (the class defaults; the ``"auto"`` preset, the CLI's default,
scales the batch so an epoch has the original's ~18 steps on the defender's data: 89 for 1000 clean images),
the noisy copies drawn once and concatenated with the clean
images (``fresh_noise=True`` draws new noise every batch instead). The α grid follows the paper (§4.2.1 and
Table 2): the BadNet's own learning rate α0 times 1, 3, 4, 5, 6 — with α0 = 1, Adadelta's rate in the original
Keras 2 code (whose shipped candidates used α = 1, 3 and 5.25).

The clean data are split (stratified by label, seeded) into a retraining part and a held-out ``holdout``
fraction on which the accuracy drop is measured — the original's ``treat.h5`` / ``eval.h5`` roles.

On a defender's set that small the ``"auto"`` preset also draws fresh noise every batch (``fresh_noise=True``):
one noisy copy of each of ~800 images is few noise draws, and on the 6 validation BadNets of
recipes/cli_defaults.py fresh noise gave a lower ASR on 4 (results/cli_defaults_validation.md).

``full_grid=False`` (the ``"auto"`` preset) trains the learning rates from the largest down and stops after the
first that has a cell within θ: the rule takes the largest such rate, so the pick is the same as the full grid's
and the cells it could never pick are not trained (on most of the zoo's MNIST models the pick is α = 6, results/nnoculation.md:
one row of six cells instead of thirty). ``full_grid=True`` (the class default, as the original) trains every
cell, as the paper's Table 2 shows them.

Every finished grid cell is checkpointed when ``run`` is given a ``checkpoint_dir`` (its weights and a JSON
record, in a :class:`~kerasbd.resume.ResumeStore` bound to the model, data, seed and settings), so an interrupted
grid resumes where it stopped; other settings are refused. When no cell is within θ, the cell with the highest held-out accuracy is returned and
``details["within_threshold"]`` is False.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.defenses.base import Defense, Preset, RunContext
from kerasbd.errors import ConfigError
from kerasbd.io import Progress
from kerasbd.models.surgery import copy_model
from kerasbd.reporting import DefenseResult
from kerasbd.reporting.figures import nnoculation_grid_rows

__all__ = ["NNoculationPre", "ORIGINAL_STEPS_PER_EPOCH", "select_cell", "split_holdout"]

#: Optimisation steps per epoch of the original retraining: ~23,000 images (clean + noisy copies of 9 images of
#: each of 1283 identities) in batches of 1283. The ``"auto"`` preset keeps this number on the defender's data.
ORIGINAL_STEPS_PER_EPOCH = 18


def select_cell(cells: Sequence[dict[str, Any]], base_acc: float, max_drop: float) -> tuple[dict[str, Any], bool]:
    """Pick a grid cell by NNoculation's rule; returns (cell, within_threshold).

    Cells are dicts with ``learning_rate``, ``noise`` and ``holdout_acc``. Among cells whose accuracy is at
    least ``base_acc − max_drop``, the largest learning rate wins, then the largest noise level. If none
    qualifies, the most accurate cell is returned with ``within_threshold=False``.

    Example (the paper's Table 2, BadNet-FSA, baseline 91.34 %, θ = 3 %):
        >>> grid = {0.001: [92.55, 93.3, 93.39, 92.09, 92.46, 93.58], 0.003: [86.79, 88.27, 88.46, 90.41, 89.02, 88.46],
        ...         0.004: [85.3, 87.53, 85.3, 86.04, 87.06, 88.46], 0.005: [81.86, 80, 87.72, 81.39, 82.13, 86.13],
        ...         0.006: [83.9, 81.48, 83.72, 82.41, 83.62, 84.65]}
        >>> cells = [{"learning_rate": a, "noise": (i + 1) / 10, "holdout_acc": v / 100}
        ...          for a, col in grid.items() for i, v in enumerate(col)]
        >>> cell, ok = select_cell(cells, 0.9134, 0.03)
        >>> cell["learning_rate"], cell["noise"], ok
        (0.004, 0.6, True)
    """
    if not cells:
        raise ConfigError("the grid is empty; give at least one learning rate and one noise level.")
    tol = 1e-9  # accuracies are ratios of counts; keep exact-threshold cells inside
    within = [c for c in cells if c["holdout_acc"] >= base_acc - max_drop - tol]
    if within:
        return max(within, key=lambda c: (c["learning_rate"], c["noise"])), True
    return max(cells, key=lambda c: c["holdout_acc"]), False


def _holdout_size(n: int, fraction: float) -> int:
    return max(1, int(round(fraction * n)))


def split_holdout(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split (x, y) into (retrain, held-out) parts; stratified by label when every class has two examples."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    n_hold = _holdout_size(len(x), fraction)
    if stratify is not None and n_hold < len(counts[counts > 0]):
        stratify = None  # too few held-out examples to cover every class
    x_tr, x_ho, y_tr, y_ho = train_test_split(x, y, test_size=n_hold, random_state=seed, stratify=stratify)
    return (x_tr, y_tr), (x_ho, y_ho)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(axis=1) == y))


class NNoculationPre(Defense):
    """Grid-searched retraining with noise-augmented clean data; returns the GoodNet picked by the paper's rule.

    Args:
        learning_rates: α grid (original: α0 × {1, 3, 4, 5, 6} with Adadelta's α0 = 1).
        noise_fractions: γ grid, fraction of replaced pixels (original: 0.1 ... 0.6).
        epochs, batch_size, optimizer: the retraining of every cell (original: 10, 1283, Adadelta(α)).
        max_drop: θ, the tolerated clean-accuracy drop on the held-out split (0.03 = 3 points).
        holdout: fraction of the clean data held out to measure the drop.
        noise: extra keyword arguments for :class:`kerasbd.transforms.NNoculationNoise` besides ``p`` (e.g.
            ``mode``: the original's row-wise imgaug quirk by default).
        fresh_noise: False (original) = one noisy copy per image drawn before training, concatenated with the
            clean images; True = new noise on every batch (with the clean batch appended; half the batch size
            per part so a step sees ``batch_size`` images).
        report_size: evaluation images used for the per-cell ASR of the grid report (random fixed subset).
        full_grid: True (original) = train every cell; False = only the learning rates down to the first with a
            cell within θ (the same pick, see the module docstring).

    ``run(..., checkpoint_dir=...)`` keeps finished cells there (resume after an interruption).
    ``result.rows`` is the grid like the paper's Table 2 (held-out accuracy per γ row and α column, ``**bold**``
    within θ, ``★`` on the pick (the paper stars it)); ``result.details["grid"]`` has every cell (with ASR when evaluation data and a
    trigger are given); ``result.figures["grid"]`` is the heatmap.

    Example:
        >>> result = NNoculationPre().run(badnet, (x_val, y_val), eval_data=(x_test, y_test), backdoors=[backdoor],
        ...                               checkpoint_dir="nnoc_ckpt")  # doctest: +SKIP
        >>> result.details["selected"]  # doctest: +SKIP
    """

    name: ClassVar[str] = "nnoculation-pre"

    def __init__(
        self,
        learning_rates: Sequence[float] = (1.0, 3.0, 4.0, 5.0, 6.0),
        noise_fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        epochs: int = 10,
        batch_size: int = 1283,
        optimizer: str = "adadelta",
        max_drop: float = 0.03,
        holdout: float = 0.2,
        noise: dict[str, Any] | None = None,
        fresh_noise: bool = False,
        report_size: int | None = 2000,
        full_grid: bool = True,
    ) -> None:
        learning_rates = tuple(float(a) for a in learning_rates)
        noise_fractions = tuple(float(g) for g in noise_fractions)
        if not learning_rates or min(learning_rates) <= 0:
            raise ConfigError(f"learning_rates must be positive values, got {learning_rates}.")
        if not noise_fractions or not all(0.0 <= g <= 1.0 for g in noise_fractions):
            raise ConfigError(f"noise_fractions must be fractions in [0, 1], got {noise_fractions}.")
        if not 0.0 <= max_drop < 1.0:
            raise ConfigError(f"max_drop must be in [0, 1), got {max_drop}.")
        if not 0.0 < holdout < 1.0:
            raise ConfigError(f"holdout must be a fraction in (0, 1), got {holdout}.")
        if epochs < 1 or batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}.")
        self.learning_rates, self.noise_fractions = learning_rates, noise_fractions
        self.epochs, self.batch_size, self.optimizer = epochs, batch_size, optimizer
        self.max_drop, self.holdout = max_drop, holdout
        self.noise = dict(noise or {})
        self.fresh_noise, self.report_size = fresh_noise, report_size
        self.full_grid = bool(full_grid)

    def _retrain_images(self, n_clean: int) -> int:
        """Images one epoch sees: the retraining part of the clean data and a noisy copy of each."""
        return 2 * (n_clean - _holdout_size(n_clean, self.holdout))

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        default = cls()
        n_epoch = default._retrain_images(len(images))
        batch = int(min(default.batch_size, max(1, round(n_epoch / ORIGINAL_STEPS_PER_EPOCH))))
        lazy = "; only the learning rates down to the first with a cell within θ are trained (the same pick)"
        if batch == default.batch_size:
            return Preset("auto", {"full_grid": False}, f"{len(images)} clean images: the original batch of {batch} gives "
                                                        f"~{ORIGINAL_STEPS_PER_EPOCH} steps per epoch as it is{lazy}")
        return Preset("auto", {"batch_size": batch, "full_grid": False, "fresh_noise": True},
                      f"keeps the original's ~{ORIGINAL_STEPS_PER_EPOCH} steps per epoch on {n_epoch} images per epoch (the "
                      f"retraining part of {len(images)} clean images and their noisy copies); the original batch of "
                      f"{default.batch_size} would give {math.ceil(n_epoch / default.batch_size)}; fresh noise every batch, as "
                      f"one noisy copy of {n_epoch // 2} images is few draws{lazy} (original constants: --preset original)")

    def scale_warnings(self, images: np.ndarray) -> list[str]:
        n_epoch = self._retrain_images(len(images))
        steps = math.ceil(n_epoch / self.batch_size)
        if steps < ORIGINAL_STEPS_PER_EPOCH / 3:
            return [f"nnoculation-pre: batch_size {self.batch_size} gives {steps} step(s) per epoch on {n_epoch} images per epoch "
                    f"(the original took ~{ORIGINAL_STEPS_PER_EPOCH}); --preset auto scales the batch to the data"]
        return []

    def _noise(self, fraction: float) -> Any:
        from kerasbd.transforms import NNoculationNoise

        return NNoculationNoise(p=fraction, **self.noise)

    def _train_cell(self, model: keras.Model, train: tuple[np.ndarray, np.ndarray], lr: float, noise: float,
                    cell_seed: int, strategy: Any) -> keras.Model:
        from kerasbd.training import fit_classifier

        x, y = train
        net = copy_model(model)
        transform = self._noise(noise)
        common = dict(epochs=self.epochs, optimizer=self.optimizer, learning_rate=lr, seed=cell_seed, strategy=strategy)
        if self.fresh_noise:
            fit_classifier(net, x, y, batch_size=max(1, self.batch_size // 2), transform=transform, mix_clean=True, **common)
        else:
            noisy = np.asarray(transform(x, np.random.default_rng(cell_seed)), dtype=np.float32)
            fit_classifier(net, np.concatenate([noisy, x]), np.concatenate([y, y]), batch_size=self.batch_size, **common)
        return net

    def _run(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> DefenseResult:
        train, held = split_holdout(*clean, self.holdout, ctx.seed)
        base_acc = _accuracy(model, *held)
        cells: list[dict[str, Any]] = []
        best: tuple[dict[str, Any], list[np.ndarray]] | None = None
        # largest learning rate first: without full_grid the search stops at the first rate with a cell within θ
        order = sorted(range(len(self.learning_rates)), key=lambda i: -self.learning_rates[i])
        grid = [(self.learning_rates[i], gamma) for i in order for gamma in self.noise_fractions]
        # cells an earlier session finished (their JSON record) count as done up front: the time left comes from cells trained now
        store = ctx.store
        resumed = sum(store.load_json(f"cell_lr{lr:g}_noise{gamma:g}") is not None for lr, gamma in grid) if store is not None else 0
        progress = Progress(len(grid), "nnoculation grid", ctx.verbose, initial=resumed, unit="cell")
        for i in order:
            lr = self.learning_rates[i]
            for j, gamma in enumerate(self.noise_fractions):
                key = f"cell_lr{lr:g}_noise{gamma:g}"
                record = ctx.store.load_json(key) if ctx.store is not None else None  # written last: marks the cell done
                trained = record is None
                if record is None:
                    cell_seed = int(np.random.SeedSequence([ctx.seed, i, j]).generate_state(1)[0] % (2**31 - 1))
                    net = self._train_cell(model, train, lr, gamma, cell_seed, ctx.strategy)
                    record = {"learning_rate": lr, "noise": gamma, "holdout_acc": _accuracy(net, *held), "seed": cell_seed}
                    if ctx.store is not None:
                        ctx.store.save_weights(key, net)
                        ctx.store.save_json(key, record)
                else:
                    net = copy_model(model)
                    ctx.store.load_weights(key, net)  # type: ignore[union-attr]
                record["drop"] = base_acc - record["holdout_acc"]
                cells.append(record)
                ctx.report.point("grid", net, subset=self.report_size, metrics=("clean_acc", "asr"), **record)
                if best is None or select_cell([best[0], record], base_acc, self.max_drop)[0] is record:
                    best = (record, net.get_weights())
                progress.update(int(trained), lr=lr, noise=gamma, acc=record["holdout_acc"])
            if not self.full_grid and select_cell(cells[-len(self.noise_fractions):], base_acc, self.max_drop)[1]:
                progress.set_total(len(cells))
                break
        progress.close()
        assert best is not None
        chosen, within = select_cell(cells, base_acc, self.max_drop)
        goodnet = copy_model(model)
        goodnet.set_weights(best[1])
        details = {
            "note": f"retrained with noise γ={chosen['noise']:g} at α={chosen['learning_rate']:g} "
                    + ("(the paper's pick within the tolerated accuracy drop)" if within else
                       f"(no cell within the {self.max_drop:g} accuracy drop: the most accurate cell)")
                    + (f"; {len(cells)} of {len(grid)} cells trained, the largest learning rates first" if len(cells) < len(grid) else ""),
            "selected": {"learning_rate": chosen["learning_rate"], "noise": chosen["noise"]},
            "within_threshold": within,
            "baseline_holdout_acc": base_acc,
            "split": {"retrain": len(train[0]), "holdout": len(held[0]), "rule": "stratified by label, seeded"},
            "cells_trained": len(cells),
        }
        rows = nnoculation_grid_rows(cells, chosen, base_acc, self.max_drop, self.learning_rates, self.noise_fractions)
        return DefenseResult(self.name, model=goodnet, details=details, rows=rows)
