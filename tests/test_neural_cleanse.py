"""Neural Cleanse: the batched inversion engine, the cost schedule, the loss quirk, MAD and unlearning."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbd.attacks.masked import apply_mask_pattern
from kerasbd.defenses import NeuralCleanse, NeuralCleanseInspector
from kerasbd.defenses.inspection.neural_cleanse import CostSchedule, MaskPatternCandidates, mask_l1_norms
from kerasbd.errors import ConfigError
from kerasbd.metrics import evaluate_backdoor, mad_anomaly_index
from kerasbd.models.spec import InputSpec
from kerasbd.resume import ResumeStore
from kerasbd.training.inversion import SWAPPED_CE_SCALE, LabelBatchedInversion, MiniBatchStream, SlotAdam, classification_loss

TARGET = 0


def _stamp(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[:, -4:-1, -4:-1, :] = 1.0  # 3×3 white patch, 1-pixel margin, bottom-right
    return out


@pytest.fixture(scope="module")
def tiny_badnet():
    """16×16 digits BadNet (3×3 patch → 0, 10 % poisoning) trained in ~3 s, with a held-out split."""
    from kerasbd.data import load_digits
    from kerasbd.training import fit_classifier

    x, y = load_digits(16)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x_train, y_train = x[order[:1400]], y[order[:1400]]
    poison = rng.random(len(x_train)) < 0.1
    x_train = np.where(poison[:, None, None, None], _stamp(x_train), x_train)
    y_train = np.where(poison, TARGET, y_train)
    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    fit_classifier(net, x_train, y_train, epochs=8, batch_size=32, learning_rate=3e-3)
    return net, (x[order[1400:]], y[order[1400:]])


def _asr(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    keep = y != TARGET
    return float(np.mean(np.argmax(model.predict(_stamp(x[keep]), verbose=0), axis=1) == TARGET))


def _dense_net(shape=(6, 6, 1), classes=4, seed=0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(classes)])


def _invert(net, x, labels, **kw):
    seed = kw.pop("seed", 0)
    store = kw.pop("store", None)
    inv = LabelBatchedInversion(**{"steps": 6, "mini_batches": 2, "batch_size": 8, **kw})
    return inv.run(net, x, labels, MaskPatternCandidates(), CostSchedule(patience=1), seed=seed, store=store, verbose=0)


# --- losses -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_swapped_ce_is_linear_in_one_minus_p(p):
    logits = tf.constant([[math.log(p), math.log(1 - p)]], tf.float32)
    quirk = float(classification_loss(logits, tf.constant([0]), "original-swapped-ce")[0])
    assert quirk == pytest.approx(16.118 * (1 - p), rel=1e-3, abs=1e-4)
    assert quirk == pytest.approx(SWAPPED_CE_SCALE * (1 - p) + 1e-7 * p, rel=1e-4, abs=1e-6)
    ce = float(classification_loss(logits, tf.constant([0]), "cross-entropy")[0])
    assert ce == pytest.approx(-math.log(p), rel=1e-4)


def test_unknown_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="cross-entropy"):
        classification_loss(tf.zeros((1, 2)), tf.constant([0]), "mse")
    with pytest.raises(ConfigError):
        NeuralCleanse().with_params(inspector__inversion__loss="swapped")
    with pytest.raises(ConfigError):
        NeuralCleanse().with_params(inspector__candidates__regularization="l0")
    with pytest.raises(ConfigError):
        NeuralCleanse().with_params(inspector__inversion__steps=0)
    with pytest.raises(ConfigError, match="no parameter 'inspector__steps'.*inspector__inversion__steps"):
        NeuralCleanse().with_params(inspector__steps=10)


# --- cost schedule ----------------------------------------------------------------------------------------

def _drive(schedule, accs, reg=10.0):
    out = []
    for a in accs:
        out.append(schedule.update(np.array([0]), np.array([a]), np.array([reg])))
    return out


def test_cost_starts_at_zero_then_init_after_patience_successes():
    s = CostSchedule(patience=5).allocate(1)
    s.reset(np.array([0]))
    _drive(s, [1.0] * 4)
    assert s.cost[0] == 0.0
    _drive(s, [1.0])
    assert s.cost[0] == pytest.approx(1e-3)
    assert not s.up_flag[0] and not s.down_flag[0]


def test_cost_goes_up_by_2_and_down_by_2_pow_1_5():
    s = CostSchedule(patience=5).allocate(1)
    s.reset(np.array([0]))
    _drive(s, [1.0] * 5)  # cost := 1e-3, and this success already counts towards going up
    _drive(s, [1.0] * 3)
    assert s.cost[0] == pytest.approx(1e-3)
    _drive(s, [1.0])
    assert s.cost[0] == pytest.approx(2e-3) and s.up_flag[0]
    _drive(s, [0.5] * 5)
    assert s.cost[0] == pytest.approx(2e-3 / 2**1.5) and s.down_flag[0]
    _drive(s, [0.98])  # just below the 0.99 threshold: a failure
    assert s.down_counter[0] == 1


def test_early_stop_needs_both_flags_and_patience():
    s = CostSchedule(patience=1, early_stop_patience=3).allocate(1)
    s.reset(np.array([0]))
    stops = [stop[0] for _, stop in _drive(s, [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])]
    # step 1: cost init; 2: up; 3: down (both flags); reg_best stays 10 from step 1 → counter 1,2,3,...
    assert stops.index(True) == 3
    assert s.reg_best[0] == 10.0


def test_no_valid_attack_never_stops_and_never_records_best():
    s = CostSchedule(patience=1, early_stop_patience=1).allocate(1)
    s.reset(np.array([0]))
    results = _drive(s, [0.5] * 20)
    assert not any(stop[0] for _, stop in results) and not any(imp[0] for imp, _ in results)
    assert np.isinf(s.reg_best[0])


def test_schedule_is_independent_per_slot():
    rng = np.random.default_rng(1)
    accs = rng.choice([0.5, 1.0], size=(40, 3), p=[0.3, 0.7])
    regs = rng.random((40, 3)) * 10
    together = CostSchedule(patience=2, early_stop_patience=4).allocate(3)
    together.reset(np.arange(3))
    alone = [CostSchedule(patience=2, early_stop_patience=4).allocate(1) for _ in range(3)]
    for a in alone:
        a.reset(np.array([0]))
    for t in range(40):
        together.update(np.arange(3), accs[t], regs[t])
        for k, a in enumerate(alone):
            a.update(np.array([0]), accs[t, k:k + 1], regs[t, k:k + 1])
    for k, a in enumerate(alone):
        for name, value in a.state_dict().items():
            assert together.state_dict()[name][k] == value[0], name


# --- optimiser, data stream, parametrisation --------------------------------------------------------------

def test_slot_adam_matches_keras_adam_and_resets_one_slot():
    rng = np.random.default_rng(0)
    var = tf.Variable(rng.normal(size=(2, 3)).astype("float32"))
    ref = tf.Variable(var.numpy()[1:2])
    adam = SlotAdam([var], learning_rate=0.1)
    keras_adam = keras.optimizers.Adam(0.1, beta_1=0.5, beta_2=0.9, epsilon=1e-7)
    for _ in range(5):
        g = rng.normal(size=(1, 3)).astype("float32")
        adam.apply(tf.constant([1]), [tf.constant(g)])
        keras_adam.apply_gradients([(tf.constant(g), ref)])
    np.testing.assert_allclose(var.numpy()[1:2], ref.numpy(), rtol=1e-5)
    before0 = var.numpy()[0].copy()
    adam.reset(np.array([1]))
    assert adam.t.numpy().tolist() == [0.0, 0.0] and not adam.m[0].numpy()[1].any()
    np.testing.assert_array_equal(var.numpy()[0], before0)  # slot 0 was never passed: it never moved


def test_stream_is_keyed_by_counter_and_drops_partial_batches():
    s = MiniBatchStream(10, 4, seed=3)
    assert s.per_epoch == 2
    first = np.concatenate([s.indices(0), s.indices(1)])
    assert len(set(first.tolist())) == 8
    np.testing.assert_array_equal(MiniBatchStream(10, 4, seed=3).indices(3), s.indices(3))
    assert not np.array_equal(s.indices(0), s.indices(2))  # a new epoch reshuffles


def test_tanh_parametrisation_round_trips_initial_values():
    c = MaskPatternCandidates().allocate((5, 4, 3), slots=2)
    c.initialize(np.array([1]), np.array([7]), seed=11)
    rng = np.random.default_rng([11, 7])
    values = c.values(np.array([1]))
    np.testing.assert_allclose(values["mask"][0], rng.random((5, 4, 1))[..., 0], atol=1e-6)
    np.testing.assert_allclose(values["pattern"][0], rng.random((5, 4, 3)), atol=1e-6)


def test_canonical_blending_equals_blending_in_the_model_domain():
    rng = np.random.default_rng(0)
    spec = InputSpec((4, 4, 3), range="0-255", mean=(125.3, 123.0, 113.9), std=(63.0, 62.1, 66.7), channel_order="BGR")
    x, mask, pattern = rng.random((3, 4, 4, 3)).astype("float32"), rng.random((4, 4)), rng.random((4, 4, 3))
    m = mask[..., None]
    raw_blend = (1 - m) * spec.to_model(x) + m * spec.to_model(pattern[None].astype("float32"))
    np.testing.assert_allclose(spec.to_model(apply_mask_pattern(x, mask, pattern)), raw_blend, rtol=1e-4, atol=1e-3)


# --- the batched engine -----------------------------------------------------------------------------------

def test_batched_equals_per_label_loop():
    x = np.random.default_rng(0).random((48, 6, 6, 1)).astype("float32")
    net = _dense_net()
    runs = [_invert(net, x, [0, 1, 2, 3], label_batch_size=b) for b in (None, 1, 3)]
    for other in runs[1:]:
        for label in range(4):
            for key in ("mask", "pattern"):
                np.testing.assert_allclose(runs[0][label][key], other[label][key], atol=2e-5)
            assert runs[0][label]["steps"] == other[label]["steps"]
            assert runs[0][label]["reg"] == pytest.approx(other[label]["reg"], rel=1e-5)


def test_label_subset_and_bad_labels():
    x = np.random.default_rng(0).random((16, 6, 6, 1)).astype("float32")
    out = _invert(_dense_net(), x, [3, 1], steps=2)
    assert list(out) == [3, 1] and out.stacked("mask").shape == (2, 6, 6)
    with pytest.raises(ConfigError, match="duplicates"):
        _invert(_dense_net(), x, [1, 1])


def test_checkpoint_resumes_after_interruption(tmp_path, monkeypatch):
    x = np.random.default_rng(0).random((32, 6, 6, 1)).astype("float32")
    net = _dense_net()
    full = _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2)

    calls = {"n": 0}
    original = LabelBatchedInversion._step

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    def store(**settings):
        return ResumeStore(tmp_path, {"run": "test", **settings})

    state = tmp_path / "inversion.npz"
    monkeypatch.setattr(LabelBatchedInversion, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2, store=store(), checkpoint_every=2)
    monkeypatch.setattr(LabelBatchedInversion, "_step", original)
    assert state.exists() and not list(tmp_path.glob(".*"))  # atomic: no temp files left
    with np.load(state) as z:
        first_session = float(z["seconds"])
    resumed = _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2, store=store(), checkpoint_every=2)
    for label in range(3):
        np.testing.assert_allclose(resumed[label]["mask"], full[label]["mask"], atol=1e-6)
        assert resumed[label]["steps"] == full[label]["steps"]
    assert full.seconds > 0 and resumed.seconds > first_session > 0  # time of both sessions
    read_back = _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2, store=store(), checkpoint_every=2)
    assert read_back.seconds == pytest.approx(resumed.seconds, abs=0.5)  # a finished run is read, not recomputed
    with np.load(state) as z:
        legacy = {k: z[k] for k in z.files if k != "seconds"}
    np.savez(state, **legacy)  # a checkpoint written before runs recorded their time
    assert _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2, store=store(), checkpoint_every=2).seconds is None
    with pytest.raises(ConfigError, match="another run; it differs in: seed"):
        store(seed=1)
    state.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="inversion.npz cannot be read.*--restart"):
        _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2, store=store(), checkpoint_every=2)
    fresh = _invert(net, x, [0, 1, 2], steps=8, label_batch_size=2, store=ResumeStore(tmp_path, {"run": "test"}, restart=True))
    np.testing.assert_allclose(fresh[1]["mask"], full[1]["mask"], atol=1e-6)


# --- MAD --------------------------------------------------------------------------------------------------

def test_mask_l1_quantisation_truncates_like_uint8_png():
    masks = np.array([[[0.5, 0.999], [0.0, 1.0]]])
    assert mask_l1_norms(masks)[0] == pytest.approx(2.499)
    assert mask_l1_norms(masks, quantize=True)[0] == pytest.approx((127 + 254 + 255) / 255)


def test_mad_ceiling_no_label_of_a_widely_spread_model_can_be_flagged():
    # L1 norms of the converged inversion of ruizegao_mnist_backdoor_7 (seed 0; target 7 has the smallest mask):
    # many labels are reachable with a few bright pixels, and no label can sit more than median/MAD below the median.
    norms = np.array([9.59, 4.63, 3.06, 23.05, 5.37, 23.07, 1.47, 0.52, 4.33, 4.40])
    r = mad_anomaly_index(norms)
    assert r["flagged"] == [] and r["median"] / r["mad"] < 2.0
    assert mad_anomaly_index(np.where(np.arange(10) == 7, 0.0, norms))["flagged"] == []  # not even with a zero mask


# --- the defense on a tiny BadNet --------------------------------------------------------------------------

FAST = {"inspector__inversion__steps": 80, "inspector__inversion__mini_batches": 5}


def _nc(steps: int = 80, **kw) -> NeuralCleanse:
    return NeuralCleanse(**{k: v for k, v in kw.items() if k == "unlearn"}).with_params(
        **{**FAST, "inspector__inversion__steps": steps}, **{f"inspector__{k}": v for k, v in kw.items() if k != "unlearn"})


def test_recovers_small_mask_flags_target_and_unlearns(tiny_badnet):
    net, (x, y) = tiny_badnet
    asr_before = _asr(net, x, y)
    assert asr_before > 0.8
    result = _nc().run(net, (x, y), seed=0, verbose=0)
    d = result.details
    norms = d["l1_norms"]
    assert d["flagged"] == [TARGET]
    assert d["anomaly_index"] > 2.0
    assert norms[TARGET] < 0.5 * d["median"]
    # the recovered trigger sits where the real one is (bottom-right corner)
    mask = result.arrays["masks"][TARGET]
    assert mask[-5:, -5:].sum() > 0.5 * mask.sum()
    assert d["reversed_attack_success"][TARGET] > 0.9
    assert d["repaired"] and result.model is not net
    assert _asr(result.model, x, y) < asr_before - 0.3
    assert _asr(net, x, y) == asr_before  # the input model is untouched
    assert set(result.figures) == {"reversed_triggers", "anomaly_index"}
    assert result.to_dict()["details"]["flagged"] == [TARGET]


def test_anomaly_index_matches_mad_formula_and_nothing_flagged_keeps_model(tiny_badnet):
    net, (x, y) = tiny_badnet
    result = _nc(20, mad_threshold=1e6).run(net, (x, y), seed=0, verbose=0)
    norms = np.array(list(result.details["l1_norms"].values()))
    median = np.median(norms)
    mad = 1.4826 * np.median(np.abs(norms - median))
    assert result.details["anomaly_index"] == pytest.approx(abs(norms.min() - median) / mad, rel=1e-3)
    assert result.details["flagged"] == [] and not result.details["repaired"]
    assert result.model is net and "unchanged" in result.details["note"]


def test_reports_mad_ceiling_and_null_flag_rate(tiny_badnet):
    net, (x, y) = tiny_badnet
    d = _nc(20, unlearn=False).run(net, (x, y), seed=0, verbose=0).details
    assert d["max_low_index"] == pytest.approx(d["median"] / d["mad"])
    assert 0.25 < d["null_flag_rate"] < 0.4  # 10 labels, threshold 2
    capped = _nc(20, unlearn=False, mad_threshold=d["max_low_index"] + 0.1).run(net, (x, y), seed=0, verbose=0)
    assert capped.details["flagged"] == [] and "cannot flag any label" in capped.details["note"]


# --- the inspector: a verdict without any trigger ---------------------------------------------------------------

def test_inspector_verdict_reversed_trigger_and_saved_folder(tiny_badnet, tmp_path):
    net, (x, y) = tiny_badnet
    inspector = NeuralCleanseInspector().with_params(inversion__steps=80, inversion__mini_batches=5)
    result = inspector.inspect(net, x, seed=0, verbose=0)  # images only: labels from the model itself
    assert result.backdoored and result.flagged == [TARGET] and result.score > result.threshold == 2.0
    assert "backdoored" in result.verdict() and f"label(s) {TARGET} flagged" in result.verdict()
    assert [r["label"] for r in result.statistics] == list(range(10))
    # the reversed trigger is an ordinary kerasbd backdoor: it stamps, evaluates and round-trips through the schema
    reversed_bd = result.backdoors()[0]
    assert evaluate_backdoor(net, x, y, [reversed_bd])["asr"] > 0.9
    from kerasbd.attacks import Backdoor, Patch, from_spec, to_spec

    again = from_spec(to_spec(result.backdoors()))[0]
    np.testing.assert_array_equal(again.trigger.apply(x[:4]), reversed_bd.trigger.apply(x[:4]))
    # with the true trigger given for reporting, the match says the reversed mask sits on it
    true = Backdoor(Patch(3, "bottom-right", margin=1), TARGET)
    matched = inspector.inspect(net, (x, y), seed=0, verbose=0, backdoors=[true])
    [row] = [r for r in matched.trigger_match if r["label"] == TARGET]
    assert row["target_flagged"] and row["mask_on_trigger"] > 0.5
    out = result.save(tmp_path / "inspect")
    names = {p.name for p in out.iterdir()}
    assert {"result.json", "result.md", "arrays.npz", "reversed_triggers.png", "anomaly_index.png", "reversed_triggers.json"} <= names
    assert "**Verdict:** neural-cleanse: backdoored" in (out / "result.md").read_text()


def test_defense_equals_inspection_then_unlearning(tiny_badnet):
    net, (x, y) = tiny_badnet
    inspection = NeuralCleanseInspector().with_params(inversion__steps=20, inversion__mini_batches=5).inspect(net, (x, y), seed=0, verbose=0)
    defended = _nc(20, unlearn=False).run(net, (x, y), seed=0, verbose=0)
    np.testing.assert_array_equal(defended.arrays["masks"], inspection.arrays["masks"])
    assert defended.details["anomaly_index"] == inspection.score and defended.rows == inspection.statistics
