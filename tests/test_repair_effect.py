"""The repair defenses remove a real backdoor: GYM, NNoculation-pre and fine-pruning on a small digits BadNet.

``tests/test_defenses_clean.py`` checks the defenses' mechanics (rows, grids, masks); this module checks their
*effect*. A module-scoped fixture trains a 16×16 digits BadNet (two conv layers, a 64-unit dense layer; 3×3
white patch one pixel from the bottom-right corner → label 0, 10 % dirty-label poisoning through
:func:`kerasbd.attacks.train_badnet`) and a clean twin trained the same way without poisoning. Each defense runs
through its public ``run(...)`` with budgets far below the papers' (CI has two CPU cores) and must

- cut the attack success rate on the held-out split to a bound measured with margin, and
- keep clean accuracy within a stated drop, on the BadNet and on the clean twin.

The bounds come from running this whole module with ``SEED`` = 0, 1, 2, 3, 4 (BadNet training, data split and
defense seed all follow it); each test's docstring gives the measured range (held-out split, 359 images, 36 of
them of the target class, so ASR is over 323 triggered images). They check these defenses with these settings
on this BadNet, nothing more general.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from kerasbd.attacks import AllToOne, Backdoor, Patch, train_badnet
from kerasbd.data import load_digits, split_defender
from kerasbd.defenses import GYM, FinePruning, NNoculationPre
from kerasbd.training import fit_classifier

SEED = 0
SIZE = 16
TARGET = 0


@dataclasses.dataclass
class Case:
    badnet: keras.Model
    clean_net: keras.Model
    backdoor: Backdoor
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _net(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


@pytest.fixture(scope="module")
def case() -> Case:
    """60 % attacker's training set (1078 images), 20 % defender's clean set (360), 20 % held-out test set (359)."""
    x, y = load_digits(SIZE)
    held, train = split_defender(x, y, val_fraction=0.4, seed=SEED)
    val, test = split_defender(*held, val_fraction=0.5, seed=SEED)
    backdoor = Backdoor(Patch(3, "bottom-right", margin=1), AllToOne(TARGET), name="patch")
    common = dict(epochs=10, batch_size=32, learning_rate=3e-3, seed=SEED)
    badnet = _net(SEED)
    train_badnet(badnet, *train, backdoor, rate=0.1, **common)
    clean_net = _net(SEED)
    fit_classifier(clean_net, *train, **common)
    return Case(badnet, clean_net, backdoor, val, test)


def _defend(defense, model: keras.Model, case: Case) -> tuple[dict, dict]:
    result = defense.run(model, case.val, eval_data=case.test, backdoors=[case.backdoor], seed=SEED, verbose=0)
    return result.metrics_before, result.metrics_after


def _check_repair(defense, case: Case, *, asr_after: float, max_drop: float) -> None:
    before, after = _defend(defense, case.badnet, case)
    summary = f"before {before['clean_acc']:.3f}/{before['asr']:.3f}, after {after['clean_acc']:.3f}/{after['asr']:.3f} (acc/ASR)"
    assert before["asr"] >= 0.9, f"the BadNet's backdoor did not take: {summary}"
    assert after["asr"] <= asr_after, f"the backdoor survived: {summary}"
    assert after["asr"] <= before["asr"] / 2, summary
    assert after["clean_acc"] >= before["clean_acc"] - max_drop, f"clean accuracy fell too far: {summary}"


def _check_clean(defense, case: Case, *, max_drop: float) -> None:
    before, after = _defend(defense, case.clean_net, case)
    summary = f"clean model: before {before['clean_acc']:.3f}, after {after['clean_acc']:.3f}"
    assert before["clean_acc"] >= 0.9 and before["asr"] <= 0.1, summary
    assert after["clean_acc"] >= before["clean_acc"] - max_drop, summary
    assert after["asr"] <= 0.1, summary  # repairing a clean model plants no backdoor


# --- GYM -------------------------------------------------------------------------------------------------------


def _gym() -> GYM:
    """The ``"small-images"`` preset (3×3 medians, SAT ±8 % / ±5 %, Adam 1e-3, batch 32, mixed clean copies) for 10
    rounds instead of 50."""
    return GYM.preset("small-images", rounds=10)


def test_gym_removes_the_backdoor(case):
    """GYM: ASR 0.97-1.00 → ≤ 0.35 (measured 0.05-0.19 over seeds 0-4); clean accuracy drops by at most 0.2
    (measured 0.03-0.13: the lightweight preprocessing at inference costs 16×16 digits several points)."""
    _check_repair(_gym(), case, asr_after=0.35, max_drop=0.2)


def test_gym_on_a_clean_model(case):
    """GYM on the clean twin: clean accuracy drops by at most 0.2 (measured 0.04-0.11 over seeds 0-4)."""
    _check_clean(_gym(), case, max_drop=0.2)


# --- NNoculation pre-deployment ------------------------------------------------------------------------------


def _nnoculation() -> NNoculationPre:
    """One grid cell, α = 5 (Adadelta), γ = 60 % noise, 10 epochs of batch 32 (the paper: a 5×6 grid, batch 1283;
    with a single cell the selection rule has nothing to choose between)."""
    return NNoculationPre(learning_rates=(5.0,), noise_fractions=(0.6,), epochs=10, batch_size=32)


def test_nnoculation_pre_removes_the_backdoor(case):
    """NNoculation-pre: ASR 0.97-1.00 → ≤ 0.5 (measured 0.06-0.26 over seeds 0-4); clean accuracy drops by at most
    0.07 (measured −0.03 to 0.03, i.e. from a 0.03 gain to a 0.03 loss)."""
    _check_repair(_nnoculation(), case, asr_after=0.5, max_drop=0.07)


def test_nnoculation_pre_on_a_clean_model(case):
    """NNoculation-pre on the clean twin: clean accuracy drops by at most 0.07 (measured 0.00-0.02 over seeds 0-4)."""
    _check_clean(_nnoculation(), case, max_drop=0.07)


# --- Fine-pruning ----------------------------------------------------------------------------------------------


def _fine_pruning() -> FinePruning:
    """Prune a fixed 14 of the last conv layer's 16 channels (``prune_fraction=0.875``; the original code's fixed
    48-of-60 rule, not the paper's 4 % accuracy-drop rule), then fine-tune 5 epochs with Adam 3e-3 (default: 1 epoch,
    1e-3)."""
    return FinePruning(prune_fraction=0.875, fine_tune_epochs=5, learning_rate=3e-3, curve_eval_size=100)


def test_fine_pruning_removes_the_backdoor(case):
    """Fine-pruning, with the settings of :func:`_fine_pruning`, removes *this* BadNet's backdoor: ASR 0.97-1.00 →
    ≤ 0.35 (measured 0.03-0.16 over seeds 0-4); clean accuracy drops by at most 0.1 (measured 0.03-0.05).

    This is not the paper's setting. With the paper's rule (prune until validation accuracy falls 4 points, then
    one epoch of fine-tuning: ``FinePruning()``) fine-pruning leaves the backdoor in place on the zoo's models
    (``results/fine_pruning.md``) and on this BadNet too (ASR 0.77-0.97 after, seeds 0-4, 3-8 channels pruned);
    fine-tuning alone with these settings (5 epochs, Adam 3e-3, nothing pruned) leaves it as well (ASR 0.71-0.85).
    Only pruning nearly all of the last conv layer plus the longer fine-tuning removes it here; the test checks
    exactly that combination on this BadNet and claims nothing about fine-pruning in general.
    """
    _check_repair(_fine_pruning(), case, asr_after=0.35, max_drop=0.1)


def test_fine_pruning_on_a_clean_model(case):
    """Fine-pruning on the clean twin: clean accuracy drops by at most 0.12 (measured 0.01-0.06 over seeds 0-4):
    14 of 16 channels go whether or not there is a backdoor."""
    _check_clean(_fine_pruning(), case, max_drop=0.12)
