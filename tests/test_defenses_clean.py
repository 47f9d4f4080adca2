"""GYM, NNoculation pre-deployment and fine-pruning on the demo's small digits BadNet (trained once, ~10 s)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasbd.defenses import DEFENSES, GYM, FinePruning, NNoculationPre
from kerasbd.models.surgery import conv_layers, layer_output_model
from kerasbd.defenses.repair.nnoculation import select_cell, split_holdout
from kerasbd.errors import ConfigError


@pytest.fixture(scope="module")
def badnet():
    from kerasbd.demo import digits_badnet

    return digits_badnet(seed=0, epochs=8)


def test_registry_names():
    assert DEFENSES["gym"] is GYM and DEFENSES["nnoculation-pre"] is NNoculationPre and DEFENSES["fine-pruning"] is FinePruning


# --- NNoculation ---------------------------------------------------------------------------------------------

PAPER_TABLE2 = {  # NNoculation Table 2 (BadNet-FSA): CA % per γ = 10..60 % for each α; baseline 91.34 %
    0.001: [92.55, 93.3, 93.39, 92.09, 92.46, 93.58],
    0.003: [86.79, 88.27, 88.46, 90.41, 89.02, 88.46],
    0.004: [85.3, 87.53, 85.3, 86.04, 87.06, 88.46],
    0.005: [81.86, 80, 87.72, 81.39, 82.13, 86.13],
    0.006: [83.9, 81.48, 83.72, 82.41, 83.62, 84.65],
}


def _cells(grid):
    return [{"learning_rate": a, "noise": (i + 1) / 10, "holdout_acc": v / 100} for a, col in grid.items() for i, v in enumerate(col)]


def test_select_cell_reproduces_paper_pick():
    cell, within = select_cell(_cells(PAPER_TABLE2), 0.9134, 0.03)
    assert (cell["learning_rate"], cell["noise"], within) == (0.004, 0.6, True)
    # a tighter θ leaves only α = 0.001 (all its cells are above baseline): then the largest noise
    cell, _ = select_cell(_cells(PAPER_TABLE2), 0.9134, 0.0)
    assert (cell["learning_rate"], cell["noise"]) == (0.001, 0.6)


def test_select_cell_falls_back_to_most_accurate():
    cells = [{"learning_rate": 1.0, "noise": 0.1, "holdout_acc": 0.5}, {"learning_rate": 3.0, "noise": 0.1, "holdout_acc": 0.7}]
    cell, within = select_cell(cells, 0.99, 0.03)
    assert cell["holdout_acc"] == 0.7 and within is False


def test_split_holdout_is_stratified_and_disjoint():
    x = np.arange(200, dtype=np.float32).reshape(200, 1, 1, 1) / 200
    y = np.repeat(np.arange(10), 20)
    (xt, yt), (xh, yh) = split_holdout(x, y, 0.2, seed=0)
    assert len(xh) == 40 and np.all(np.bincount(yh) == 4)
    assert not set(xt.ravel()) & set(xh.ravel())


def test_nnoculation_grid_selection_and_resume(badnet, tmp_path, monkeypatch):
    defense = NNoculationPre(learning_rates=(0.5, 2.0), noise_fractions=(0.1, 0.4), epochs=2, batch_size=64)
    result = defense.run(badnet.model, badnet.val, eval_data=badnet.test, backdoors=badnet.backdoors, seed=0, verbose=0,
                         checkpoint_dir=tmp_path)
    grid = result.details["grid"]
    assert len(grid) == 4 and all("asr" in c for c in grid)
    chosen, within = select_cell(grid, result.details["baseline_holdout_acc"], 0.03)
    assert result.details["selected"] == {"learning_rate": chosen["learning_rate"], "noise": chosen["noise"]}
    assert result.details["within_threshold"] == within
    assert [r["γ"] for r in result.rows] == ["10%", "40%"] and set(result.rows[0]) == {"γ", "α=0.5", "α=2"}
    assert sum("★" in v for r in result.rows for v in r.values()) == 1
    assert "grid" in result.figures
    assert result.details["split"]["holdout"] == round(0.2 * len(badnet.val[0]))
    # the GoodNet was retrained: it differs from the BadNet
    assert any(not np.array_equal(a, b) for a, b in zip(result.model.get_weights(), badnet.model.get_weights()))
    # without the full grid: the same pick, from the learning rates down to the first with a cell within θ only
    lazy = NNoculationPre(**{**defense.get_config(), "full_grid": False}).run(badnet.model, badnet.val, seed=0, verbose=0)
    assert lazy.details["selected"] == result.details["selected"]
    rates_tried = sum(a >= chosen["learning_rate"] for a in (0.5, 2.0)) if within else 2
    assert lazy.details["cells_trained"] == 2 * rates_tried and result.details["cells_trained"] == 4
    assert sum(v == "—" for r in lazy.rows for v in r.values()) == 4 - 2 * rates_tried

    # resume: every cell is checkpointed, so a second run trains nothing and returns the same GoodNet
    assert len(list(tmp_path.glob("*.weights.h5"))) == 4
    monkeypatch.setattr(NNoculationPre, "_train_cell", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    again = defense.run(badnet.model, badnet.val, eval_data=badnet.test, backdoors=badnet.backdoors, seed=0, verbose=0,
                        checkpoint_dir=tmp_path)
    assert again.details["selected"] == result.details["selected"] and again.details["grid"] == grid
    for a, b in zip(again.model.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_nnoculation_checkpoint_of_other_seed_is_refused_unless_restarted(badnet, tmp_path):
    kw = dict(learning_rates=(1.0,), noise_fractions=(0.2,), epochs=1, batch_size=64)
    NNoculationPre(**kw).run(badnet.model, badnet.val, seed=0, verbose=0, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="differs in: seed \\(saved 0, now 1\\)"):
        NNoculationPre(**kw).run(badnet.model, badnet.val, seed=1, verbose=0, checkpoint_dir=tmp_path)
    calls = []
    original = NNoculationPre._train_cell

    def counting(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    NNoculationPre._train_cell = counting
    try:
        NNoculationPre(**kw).run(badnet.model, badnet.val, seed=1, verbose=0, checkpoint_dir=tmp_path, restart=True)
    finally:
        NNoculationPre._train_cell = original
    assert calls == [1]


def test_nnoculation_rejects_bad_config():
    with pytest.raises(ConfigError):
        NNoculationPre(holdout=1.5)
    with pytest.raises(ConfigError):
        NNoculationPre(noise_fractions=(0.1, 1.2))
    with pytest.raises(ConfigError):
        NNoculationPre(learning_rates=())


# --- Fine-pruning --------------------------------------------------------------------------------------------

def test_fine_pruning_prunes_until_drop_and_mask_survives_fine_tuning(badnet):
    defense = FinePruning(fine_tune_epochs=2)
    result = defense.run(badnet.model, badnet.val, eval_data=badnet.test, backdoors=badnet.backdoors, seed=0, verbose=0)
    d = result.details
    conv = conv_layers(result.model)[-1]
    assert d["layer"] == conv.name and d["n_pruned"] >= 1
    # the rule: every step before the last stays within 4 points, the last one reaches the drop (or all but one pruned)
    accs = [p["clean_acc"] for p in d["curve"]]
    assert all(d["validation_acc_before"] - a < 0.04 for a in accs[:-1])
    assert d["validation_acc_before"] - accs[-1] >= 0.04 or d["n_pruned"] == d["channels"] - 1
    # pruned channels are the least active ones and stay exactly zero after fine-tuning
    order = np.argsort(result.arrays["mean_activation"], kind="stable")
    assert d["pruned_channels"] == order[: d["n_pruned"]].tolist()
    kernel = conv.kernel.numpy()
    assert np.all(kernel[..., d["pruned_channels"]] == 0) and np.all(conv.bias.numpy()[d["pruned_channels"]] == 0)
    kept = np.setdiff1d(np.arange(d["channels"]), d["pruned_channels"])
    original = conv_layers(badnet.model)[-1].kernel.numpy()
    assert not np.allclose(kernel[..., kept], original[..., kept])  # fine-tuning changed the rest
    assert [r["stage"] for r in result.rows] == ["no defense", "fine-pruning", "fine-pruning (fine-tuned)"]
    assert "asr" in d["curve"][0] and "pruning_curve" in result.figures
    # the caller's model is untouched
    assert np.count_nonzero(np.abs(original).sum(axis=(0, 1, 2)) == 0) == 0


def test_fine_pruning_fixed_fraction_like_original(badnet):
    result = FinePruning(prune_fraction=0.5, fine_tune_epochs=0).run(badnet.model, badnet.val, seed=0, verbose=0)
    channels = result.details["channels"]
    assert result.details["n_pruned"] == channels // 2 and result.details["rule"] == "fixed count"
    conv = conv_layers(result.model)[-1]
    assert np.count_nonzero(np.abs(conv.kernel.numpy()).sum(axis=(0, 1, 2)) == 0) == channels // 2


def test_fine_pruning_finds_conv_in_nested_model(badnet):
    outer = keras.Sequential([keras.Input(badnet.model.input_shape[1:]), keras.layers.Identity(), badnet.model])
    conv = conv_layers(outer)[-1]
    assert conv is conv_layers(badnet.model)[-1]
    x = badnet.val[0][:16]
    nested = layer_output_model(outer, conv).predict(x, verbose=0)
    direct = layer_output_model(badnet.model, conv).predict(x, verbose=0)
    np.testing.assert_allclose(nested, direct, rtol=1e-5, atol=1e-6)


def test_fine_pruning_errors(badnet):
    dense = keras.Sequential([keras.Input(badnet.val[0].shape[1:]), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ConfigError, match="no Conv2D"):
        FinePruning().run(dense, badnet.val, verbose=0)
    with pytest.raises(ConfigError, match="no layer named"):
        FinePruning(layer="nope").run(badnet.model, badnet.val, verbose=0)
    with pytest.raises(ConfigError):
        FinePruning(prune_count=3, prune_fraction=0.5)


# --- GYM -----------------------------------------------------------------------------------------------------

def test_gym_table2_rows_and_defended_model_round_trip(badnet, tmp_path):
    from kerasbd.transforms import GYMIntensive, GYMLightweight

    # Adam instead of the original Adadelta(0.03), whose tiny first steps barely move a model in a test-sized run
    defense = GYM(rounds=3, batch_size=10, optimizer="adam", learning_rate=1e-3,
                  intensive=GYMIntensive(median_ksize=3), lightweight=GYMLightweight(median_ksize=3))
    result = defense.run(badnet.model, badnet.val, eval_data=badnet.test, backdoors=badnet.backdoors, seed=0, verbose=0)
    stages = {r["stage"]: r for r in result.rows}
    assert list(stages) == ["baseline", "inference (I)", "fine-tuning + inference (I)", "fine-tuning + inference (L)"]
    assert all(r["tcp"] is not None and r["asr"] is not None for r in result.rows)
    assert stages["baseline"]["clean_acc"] == pytest.approx(result.metrics_before["clean_acc"])
    # the defended model (random preprocessing) is measured once: summary and last stage row are the same figures
    assert (stages["fine-tuning + inference (L)"]["clean_acc"], stages["fine-tuning + inference (L)"]["asr"]) == \
        (result.metrics_after["clean_acc"], result.metrics_after["asr"])
    # fine-tuning through the intensive function teaches the model the distorted inputs
    assert stages["fine-tuning + inference (I)"]["clean_acc"] > stages["inference (I)"]["clean_acc"]
    json.dumps(result.to_dict())  # parameters (transforms included) are JSON-able

    # the defended model embeds the lightweight preprocessing and survives .keras save/load
    path = tmp_path / "gym.keras"
    result.model.save(path)
    loaded, again = keras.saving.load_model(path), keras.saving.load_model(path)
    x = badnet.test[0]
    a, b = loaded.predict(x, verbose=0), again.predict(x, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # the stored seed makes the random preprocessing reproducible
    # same model, another random draw of the preprocessing: accuracy close to the one the defense measured
    assert np.mean(a.argmax(1) == badnet.test[1]) == pytest.approx(result.metrics_after["clean_acc"], abs=0.1)
    layer_types = {type(layer).__name__ for layer in loaded._flatten_layers(include_self=False, recursive=True)}
    assert any("Transform" in t for t in layer_types), layer_types


def test_gym_rejects_bad_config():
    with pytest.raises(ConfigError):
        GYM(rounds=0)
    with pytest.raises(ConfigError):
        GYM(intensive="median")
    with pytest.raises(ConfigError, match="preset"):
        GYM.preset("cifar")


def test_gym_presets_keep_original_defaults_and_scale_small_images():
    original, small = GYM.preset("original"), GYM.preset("small-images", rounds=2)
    assert original.get_config() == GYM().get_config()
    assert (GYM().optimizer, GYM().learning_rate, GYM().rounds, GYM().batch_size, GYM().mix_clean) == ("adadelta", 0.03, 5, 10, False)
    assert small.rounds == 2 and small.mix_clean and small.mix_lightweight and small.optimizer == "adam"
    intensive, lightweight = small.intensive, small.lightweight
    steps = [type(t).__name__ for t in intensive.transforms]
    assert "Downscale" not in steps  # the 0.25 nearest down/up-scale would leave 7x7 pixels of a digit
    assert all(getattr(t, "ksize", 3) == 3 for t in (*intensive.transforms, *lightweight.transforms))
    # SAT shift: ±8 % while fine-tuning, ±5 % at inference (recipes/gym.py docstring has the measurement)
    assert intensive.transforms[-1].shift_limit == pytest.approx(0.08)
    assert lightweight.transforms[-1].shift_limit == pytest.approx(0.05)


def test_auto_presets_follow_the_data_and_scale_warnings_name_the_setting():
    from kerasbd.defenses import NNoculationPre, NeuralCleanse
    from kerasbd.defenses.base import ScaleWarning

    digits, faces = np.zeros((1000, 28, 28, 1), np.float32), np.zeros((50, 55, 47, 3), np.float32)
    assert GYM.preset("auto", digits).get_config() == GYM.preset("small-images").get_config()
    assert GYM.preset("auto", faces).preset_.name == "original"
    # NNoculation keeps the original's ~18 steps per epoch: 800 retraining images + 800 noisy copies → batch 89
    small, large = NNoculationPre.preset("auto", digits), NNoculationPre.preset("auto", np.zeros((20000, 28, 28, 1), np.float32))
    assert small.batch_size == 89 and small.fresh_noise  # and fresh noise every batch on a set that small
    assert large.batch_size == 1283 and not large.fresh_noise  # the original's
    assert NeuralCleanse.preset("auto", digits).get_config() == NeuralCleanse().get_config()
    assert "face" in GYM().scale_warnings(digits)[0] and GYM.preset("small-images").scale_warnings(digits) == []
    assert "step(s) per epoch" in NNoculationPre().scale_warnings(digits)[0]
    assert NNoculationPre.preset("auto", digits).scale_warnings(digits) == []
    with pytest.raises(ConfigError, match="auto"):
        GYM.preset("auto")  # needs the data
    with pytest.warns(ScaleWarning, match="batch_size 1283"):
        NNoculationPre()._settings(digits)


def test_gym_mix_clean_trains_on_clean_copies(badnet, monkeypatch):
    import kerasbd.training as training

    seen = {}
    real = training.fit_classifier

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "fit_classifier", spy)
    x, y = badnet.val
    GYM(rounds=1, batch_size=32, mix_clean=True).run(badnet.model, (x[:64], y[:64]), seed=0, verbose=0)
    assert seen["mix_clean"] is True and seen["epochs"] == 1 and seen["mix_transform"] is None
    gym = GYM(rounds=1, batch_size=32, mix_clean=True, mix_lightweight=True)
    gym.run(badnet.model, (x[:64], y[:64]), seed=0, verbose=0)
    assert seen["mix_transform"] is gym.lightweight
