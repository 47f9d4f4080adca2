"""Backdoor metrics on hand-made predictions, detector metrics and the MAD anomaly index (kerasbd.metrics)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasbd.attacks import AllToAll, Backdoor, PixelPattern
from kerasbd.errors import ConfigError, DataError, TriggerError
from kerasbd.metrics import evaluate_backdoor, far_frr, mad_anomaly_index, mad_null_flag_rate, roc_auc, roc_curve, softmax, tpr_at_fpr

# A 2×2 grayscale "image" encodes its class in pixels 0..2 (row-major) and the trigger in pixel 3 (bottom-right).
# The linear model scores class i with 2·pixel_i and the target class with 1.5·trigger: a class pixel at 1.0
# (logit 2) beats the trigger, one at 0.5 (logit 1) loses to it.
TRIGGER = Backdoor(PixelPattern([[1, 1]]), 0, "px")


def hand_model(target_weight=1.5, softmax_out=False):
    w = np.zeros((4, 3), np.float32)
    w[[0, 1, 2], [0, 1, 2]] = 2.0
    w[3, 0] = target_weight
    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax" if softmax_out else None)])
    net.layers[-1].set_weights([w, np.zeros(3, np.float32)])
    return net


def image(cls, strength=0.5):
    x = np.zeros((2, 2, 1), np.float32)
    x.flat[cls] = strength
    return x


# true labels, the class each image shows, and its strength
CASES = [
    (0, 0, 0.5),  # target class: never counts for ASR
    (1, 1, 0.5),  # flips to 0
    (1, 1, 1.0),  # robust: stays 1
    (2, 2, 0.5),  # flips to 0
    (2, 1, 0.5),  # misclassified clean (shows a 1), flips to 0
]
X = np.stack([image(c, s) for _, c, s in CASES])
Y = np.array([t for t, _, _ in CASES])


def test_asr_excludes_target_class_and_counts_robust_accuracy():
    r = evaluate_backdoor(hand_model(), X, Y, [TRIGGER])
    assert r["clean_acc"] == pytest.approx(4 / 5)
    p = r["per_trigger"]["px"]
    assert p["n_triggered"] == 4  # the class-0 image is not eligible
    assert r["asr"] == pytest.approx(3 / 4) and p["asr"] == r["asr"]
    assert r["robust_acc"] == pytest.approx(1 / 4)
    assert r["tcp"] == pytest.approx(1 / 5)  # clean inputs predicted as the target (only the class-0 image)
    logits = np.array([[1.5, 1, 0], [1.5, 2, 0], [1.5, 0, 1], [1.5, 1, 0]])  # triggered eligible inputs
    assert r["target_prob"] == pytest.approx(softmax(logits)[:, 0].mean())


def test_dhbe_mode_uses_only_correctly_classified_inputs():
    r = evaluate_backdoor(hand_model(), X, Y, [TRIGGER], asr_mode="correct")
    assert r["n_triggered"] == 3 and r["asr"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="asr_mode"):
        evaluate_backdoor(hand_model(), X, Y, [TRIGGER], asr_mode="dhbe")


def test_softmax_models_give_the_same_figures_and_specs_are_accepted():
    a = evaluate_backdoor(hand_model(), X, Y, [TRIGGER])
    b = evaluate_backdoor(hand_model(softmax_out=True), X, Y, [TRIGGER.to_spec()])
    for k in ("clean_acc", "asr", "robust_acc", "tcp", "target_prob"):
        assert a[k] == pytest.approx(b[k]), k


def test_all_to_all_counts_every_input_against_its_mapped_label():
    bd = Backdoor(PixelPattern([[1, 1]]), AllToAll(), "a2a")
    r = evaluate_backdoor(hand_model(), X, Y, [bd])
    assert r["n_triggered"] == 5
    # mapped labels 1,2,0,0,0; predictions on triggered inputs are 0,0,1,0,0
    assert r["asr"] == pytest.approx(2 / 5)
    assert r["tcp"] == 0.0  # no clean prediction (0, 1, 1, 2, 1) equals its mapped label (1, 2, 0, 0, 0)


def test_several_backdoors_average_and_no_backdoor():
    weak = Backdoor(PixelPattern([[0, 0, 0.0]]), 2, "noop")  # stamps nothing useful
    r = evaluate_backdoor(hand_model(), X, Y, [TRIGGER, weak])
    assert set(r["per_trigger"]) == {"px", "noop"}
    assert r["asr"] == pytest.approx((r["per_trigger"]["px"]["asr"] + r["per_trigger"]["noop"]["asr"]) / 2)
    assert r["n_triggered"] == 4 + 3
    none = evaluate_backdoor(hand_model(), X, Y)
    assert none["asr"] is None and none["per_trigger"] == {} and none["clean_acc"] == pytest.approx(0.8)


def test_bad_inputs_are_refused():
    with pytest.raises(DataError, match="out of range"):
        evaluate_backdoor(hand_model(), X, np.array([0, 1, 2, 3, 1]))
    with pytest.raises(DataError, match="does not match the model"):
        evaluate_backdoor(hand_model(), np.zeros((2, 3, 3, 1), np.float32), np.array([0, 1]))
    with pytest.raises(TriggerError, match="outside"):
        evaluate_backdoor(hand_model(), X, Y, [Backdoor(PixelPattern([[5, 5]]), 0)])


def test_detection_metrics_by_hand():
    clean, trig = np.arange(100.0), np.array([50.0, 99.5, 120.0, 200.0])
    assert roc_auc([0, 1, 2], [3, 4]) == 1.0 and roc_auc([3, 4], [0, 1, 2]) == 0.0
    assert tpr_at_fpr(clean, trig, fpr=0.01) == pytest.approx(0.75)  # threshold 99: 99.5, 120, 200 flagged
    assert tpr_at_fpr(clean, trig, fpr=0.5) == pytest.approx(1.0)
    ff = far_frr(clean, trig, threshold=94.0)
    assert ff == {"threshold": 94.0, "far": 0.25, "frr": 0.05}
    assert far_frr(clean, trig, frr=0.05)["threshold"] == 94.0
    fpr, tpr, thr = roc_curve([0.1, 0.4], [0.35, 0.8])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    with pytest.raises(ConfigError, match="exactly one"):
        far_frr(clean, trig)
    with pytest.raises(ConfigError, match="NaN"):
        roc_auc([np.nan, 1.0], [2.0])
    with pytest.raises(ConfigError, match="no triggered"):
        roc_auc([1.0], [])


def nc_like_values():
    """43 L1 norms with Neural Cleanse's README statistics: median 64.47, MAD 13.24, label 33 at 16.1."""
    med, dev = 64.47, 13.24 / 1.4826
    small, large = np.linspace(0.1, 0.9, 10) * dev, np.linspace(1.1, 2.5, 10) * dev  # all below index 2
    below = med - np.concatenate([small, large])  # 20 values + the outlier 16.1 = 21 below the median
    above = med + np.concatenate([small, [dev], large])  # 21 above
    # deviations sorted: 0, 20 small, then `dev` as the 22nd of 43 → median deviation = dev
    vals = np.concatenate([[med], below, above])
    return np.insert(vals, 33, 16.1)  # the backdoor target is label 33


def test_mad_anomaly_index_reproduces_neural_cleanse_readme_example():
    vals = nc_like_values()
    r = mad_anomaly_index(vals)
    assert r["median"] == pytest.approx(64.47, abs=1e-9)
    assert r["mad"] == pytest.approx(13.24, abs=1e-9)
    assert r["anomaly_index"] == pytest.approx(3.65, abs=0.005)  # NC README: anomaly index 3.65
    assert r["flagged"] == [33]  # only the small outlier; large values are above the median and skipped
    assert r["indices"][33] == pytest.approx((64.47 - 16.1) / 13.24)


def test_mad_sides_zero_mad_and_errors():
    v = [10.0, 11.0, 9.0, 10.5, 9.5, 30.0]
    assert mad_anomaly_index(v)["flagged"] == []
    high = mad_anomaly_index(v, side="high")
    assert high["flagged"] == [5] and high["anomaly_index"] > 2
    assert mad_anomaly_index(v, side="both", labels=[3, 4, 5, 6, 7, 8])["flagged"] == [8]
    z = mad_anomaly_index([5.0, 5.0, 5.0, 1.0])
    assert z["anomaly_index"] == np.inf and z["flagged"] == [3]
    with pytest.raises(ConfigError, match="at least 3"):
        mad_anomaly_index([1.0, 2.0])
    with pytest.raises(ConfigError, match="side"):
        mad_anomaly_index(v, side="left")


def test_mad_null_flag_rate_grows_with_labels_and_falls_with_threshold():
    ten = mad_null_flag_rate(10)
    assert 0.3 < ten < 0.37  # the minimum of 10 normal values passes 2 MADs about a third of the time
    assert mad_null_flag_rate(43) > ten > mad_null_flag_rate(10, threshold=3.0)
    assert mad_null_flag_rate(1283, trials=500) > 0.99
    assert mad_null_flag_rate(10, seed=1) != ten  # seeded Monte-Carlo, not a table
    with pytest.raises(ConfigError):
        mad_null_flag_rate(2)


def test_region_asr_says_which_true_trigger_the_reversed_one_holds():
    """A model that answers 1 when the top-left or the bottom-right 2×2 corner is bright, 0 otherwise; a reversed
    trigger covering both corners holds both true triggers, one covering the top-left holds only that one."""
    import keras

    from kerasbd.attacks import AllToOne, Backdoor, MaskedPattern, Patch
    from kerasbd.reporting import InspectionResult
    from kerasbd.reporting.triggers import trigger_match

    w = np.zeros((8, 8, 1, 2), np.float32)
    w[:2, :2, 0, 1] = w[6:, 6:, 0, 1] = 1.0
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.layers[-1].set_weights([w.reshape(64, 2), np.array([0.0, -2.0], np.float32)])
    x = np.zeros((20, 8, 8, 1), np.float32)
    true = [Backdoor(Patch(2, "top-left", margin=0), 1, name="tl"), Backdoor(Patch(2, "bottom-right", margin=0), 1, name="br")]
    for corners, expected in (((slice(0, 2), slice(6, 8)), {"tl": 1.0, "br": 1.0}), ((slice(0, 2),), {"tl": 1.0, "br": 0.0})):
        m = np.zeros((8, 8), np.float32)
        for c in corners:
            m[c, c] = 1.0
        found = InspectionResult("demo", labels=[1], flagged=[1], triggers={1: Backdoor(MaskedPattern(m, np.ones((8, 8, 1))), AllToOne(1))})
        rows = trigger_match(found, true, x, model)
        assert {r["backdoor"]: r["region_asr"] for r in rows} == expected
