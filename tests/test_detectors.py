"""Input-time defenses: STRIP, feature squeezing, the (prediction, flag) Keras wrapper, purification wrappers.

The detectors are checked on a tiny BadNet trained here: 8×8 grayscale images of four noisy, shifted stroke
shapes, 10 % of the training set stamped with a 2×2 white bottom-right patch and relabelled 0.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import stats

from kerasbd.defenses.detection import common as detectors
from kerasbd.defenses.detection.common import detector_model, far_frr_report
from kerasbd.defenses.detection.feature_squeezing import SQUEEZER_SETS, FeatureSqueezing, make_squeezer
from kerasbd.defenses.purification.wrappers import FlipDefense, GYMInference, ShrinkPadDefense
from kerasbd.defenses.detection.strip import STRIP
from kerasbd.errors import ConfigError, DataError

SHAPE = (8, 8, 1)
TARGET = 0


def _templates() -> np.ndarray:
    # Stroke-like shapes on a dark background, like digits: blending two gives an ambiguous image.
    t = np.zeros((4, *SHAPE), np.float32)
    t[0, 1:3, 1:6] = 1  # horizontal bar
    t[1, 1:6, 1:3] = 1  # vertical bar
    for i in range(6):  # diagonal
        t[2, i, i : i + 2] = 1
    t[3, 2:6, [2, 5]] = 1  # ring
    t[3, [2, 5], 2:6] = 1
    return t


def clean_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    shifts = rng.integers(0, 2, (n, 2))
    x = np.stack([np.roll(_templates()[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts)])
    x = x * rng.uniform(0.7, 1.0, (n, 1, 1, 1)) + rng.uniform(0, 0.2, (n, *SHAPE))
    return np.clip(x, 0, 1).astype(np.float32), y


def stamp(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[:, -2:, -2:, :] = 1.0
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def badnet() -> keras.Model:
    keras.utils.set_random_seed(0)
    x, y = clean_images(2000, seed=1)
    poison = np.random.default_rng(2).random(len(x)) < 0.1
    x[poison], y[poison] = stamp(x[poison]), TARGET
    net = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)])
    net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    net.fit(x, y, epochs=15, batch_size=64, verbose=0)
    xt, yt = clean_images(400, seed=3)
    nontarget = yt != TARGET
    assert (net.predict(xt, verbose=0).argmax(1) == yt).mean() > 0.95  # a working classifier ...
    assert (net.predict(stamp(xt[nontarget]), verbose=0).argmax(1) == TARGET).mean() > 0.9  # ... with a backdoor
    return net


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    x, y = clean_images(600, seed=4)
    return x, stamp(x[y != TARGET])


def _auc(clean_scores: np.ndarray, trig_scores: np.ndarray) -> float:
    # Mann-Whitney statistic written out, so the test does not lean on the metric under test elsewhere.
    diff = trig_scores[:, None] - clean_scores[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _binomial_tol(p: float, n: int) -> float:
    # Calibration and evaluation each err by ~sqrt(p(1-p)/n); allow 4 combined standard deviations.
    return 4 * np.sqrt(2 * p * (1 - p) / n) + 1.0 / n


class TestSTRIP:
    def test_detects_triggered_inputs(self, badnet, held_out):
        clean, trig = held_out
        strip = STRIP(n_overlays=50).fit(badnet, clean_images(600, seed=5)[0], fpr=0.05, seed=0)
        assert _auc(strip.score(clean), strip.score(trig)) > 0.85
        assert strip.detect(trig).mean() > 0.5 and strip.detect(clean).mean() < 0.15

    def test_batched_equals_per_input_loop(self, badnet):
        x = clean_images(7, seed=6)[0]
        x[:3] = stamp(x[:3])
        strip = STRIP(n_overlays=20, batch_size=45).fit(badnet, clean_images(100, seed=7)[0], seed=1)
        idx = strip.overlay_indices(len(x))
        batched = strip.entropy(x, indices=idx)
        loop = []
        for i in range(len(x)):
            p = softmax(badnet.predict(x[i] + strip.overlays_[idx[i]], verbose=0).astype(np.float64))
            loop.append(-np.sum(p * np.log2(p)) / strip.n_overlays)
        np.testing.assert_allclose(batched, loop, rtol=1e-4, atol=1e-5)
        # the default draw is the same indices (fit's seed), so scoring is deterministic and chunk-independent
        np.testing.assert_allclose(strip.entropy(x), batched, rtol=1e-6)
        assert not np.allclose(strip.entropy(x, rng=99), batched)

    def test_blend_is_unclipped_plain_sum(self, badnet):
        # Original: cv2.addWeighted(x, 1, overlay, 1, 0) — values up to 2 reach the model.
        x = np.ones((1, *SHAPE), np.float32)
        strip = STRIP(n_overlays=2).fit(badnet, np.ones((4, *SHAPE), np.float32), seed=0)
        z = badnet.predict(np.full((1, *SHAPE), 2.0, np.float32), verbose=0)
        p = softmax(z.astype(np.float64))
        np.testing.assert_allclose(strip.entropy(x), [-np.sum(p * np.log2(p))], rtol=1e-4)

    def test_normal_threshold_mirrors_original(self, badnet):
        strip = STRIP(n_overlays=10).fit(badnet, clean_images(300, seed=8)[0], fpr=0.01, seed=0)
        entropies = -strip.clean_scores_
        assert len(entropies) == 150 and len(strip.overlays_) == 150  # overlay pool held out from calibration
        mu, sigma = entropies.mean(), entropies.std()
        assert strip.entropy_threshold_ == pytest.approx(stats.norm.ppf(0.01, mu, sigma), rel=1e-9)

    def test_quantile_threshold_holds_fpr_on_fresh_clean_data(self, badnet):
        strip = STRIP(n_overlays=10, threshold_rule="quantile")
        strip.fit(badnet, clean_images(1000, seed=9)[0], fpr=0.05, seed=0, overlays=clean_images(200, seed=10)[0])
        assert len(strip.clean_scores_) == 1000
        observed = strip.detect(clean_images(1000, seed=11)[0]).mean()
        assert abs(observed - 0.05) < _binomial_tol(0.05, 1000)

    def test_far_frr_and_nnoculation_translation(self, badnet, held_out):
        clean, trig = held_out
        strip = STRIP(n_overlays=20).fit(badnet, clean_images(400, seed=12)[0], fpr=0.05, seed=0)
        rep = strip.far_frr(clean, trig, clean_acc=0.9, asr=1.0)
        assert rep["frr"] == pytest.approx(strip.detect(clean).mean())
        assert rep["far"] == pytest.approx(1 - strip.detect(trig).mean())
        assert rep["asr_strip"] == pytest.approx(rep["far"]) and rep["clean_acc_strip"] == pytest.approx(0.9 * (1 - rep["frr"]))

    def test_errors(self, badnet):
        with pytest.raises(ConfigError, match="n_overlays"):
            STRIP(n_overlays=1)
        with pytest.raises(ConfigError, match="threshold_rule"):
            STRIP(threshold_rule="median")
        with pytest.raises(ConfigError, match="fpr"):
            STRIP().fit(badnet, clean_images(20, seed=0)[0], fpr=1.5)
        with pytest.raises(ConfigError, match="not fitted"):
            STRIP().detect(np.zeros((1, *SHAPE), np.float32))
        strip = STRIP(n_overlays=4).fit(badnet, clean_images(20, seed=0)[0])
        with pytest.raises(DataError, match="does not match"):
            strip.score(np.zeros((2, 9, 9, 1), np.float32))
        assert STRIP.from_config(strip.get_config()).get_config() == strip.get_config()


class TestFeatureSqueezing:
    def test_original_squeezer_sets(self):
        assert SQUEEZER_SETS["mnist"] == ("bit_depth_1", "median_2_2")
        assert SQUEEZER_SETS["cifar"][-1] == "non_local_means_color_13_3_2"
        for names in SQUEEZER_SETS.values():
            assert all(make_squeezer(n) is not None for n in names)
        with pytest.raises(ConfigError, match="unknown squeezer"):
            FeatureSqueezing(["bit_depth_x"])
        with pytest.raises(ConfigError, match="unknown squeezer set"):
            FeatureSqueezing("svhn")

    def test_score_is_max_l1_over_squeezers(self, badnet):
        x = clean_images(16, seed=13)[0]
        fs = FeatureSqueezing("mnist").fit(badnet, clean_images(50, seed=14)[0])
        p = softmax(badnet.predict(x, verbose=0))
        expected = np.stack([np.abs(softmax(badnet.predict(make_squeezer(n)(x), verbose=0)) - p).sum(1) for n in SQUEEZER_SETS["mnist"]], 1)
        np.testing.assert_allclose(fs.distances(x), expected, atol=1e-5)
        np.testing.assert_allclose(fs.score(x), expected.max(1), atol=1e-5)

    def test_threshold_holds_fpr_on_fresh_clean_data(self, badnet):
        fs = FeatureSqueezing("mnist").fit(badnet, clean_images(1000, seed=15)[0], fpr=0.05)
        observed = fs.detect(clean_images(1000, seed=16)[0]).mean()
        assert abs(observed - 0.05) < _binomial_tol(0.05, 1000)

    def test_detects_triggered_inputs_better_than_chance(self, badnet, held_out):
        clean, trig = held_out
        fs = FeatureSqueezing("mnist").fit(badnet, clean_images(300, seed=17)[0], fpr=0.05)
        assert _auc(fs.score(clean), fs.score(trig)) > 0.6


class TestDetectorModel:
    @pytest.mark.skipif(detectors._inter_op_threads() < 2, reason="one TensorFlow inter-op thread: as_model() refuses (tested below)")
    @pytest.mark.parametrize("make", [lambda: STRIP(n_overlays=10), lambda: FeatureSqueezing("mnist")])
    def test_two_outputs_match_model_and_detector(self, badnet, held_out, make):
        clean, trig = held_out
        det = make().fit(badnet, clean_images(200, seed=18)[0], fpr=0.05)
        x = np.concatenate([clean[:20], trig[:20]])
        logits, flags = det.as_model().predict(x, batch_size=16, verbose=0)
        np.testing.assert_allclose(logits, badnet.predict(x, verbose=0), atol=1e-5)
        # STRIP's draw restarts per call, so compare per Keras batch of 16.
        expected = np.concatenate([det.detect(x[i : i + 16]) for i in range(0, len(x), 16)])
        assert flags.dtype == bool and np.array_equal(flags, expected)
        assert far_frr_report(det, clean, trig)["n_triggered"] == len(trig)

    def test_unfitted_detector_refused(self):
        with pytest.raises(ConfigError, match="not fitted"):
            detector_model(STRIP())

    def test_single_inter_op_thread_refused_instead_of_deadlocking(self, badnet, monkeypatch):
        det = STRIP(n_overlays=4).fit(badnet, clean_images(20, seed=19)[0])
        monkeypatch.setattr(detectors, "_inter_op_threads", lambda: 1)
        with pytest.raises(ConfigError, match="TF_NUM_INTEROP_THREADS"):
            det.as_model()


class TestPurification:
    def test_flip_undoes_a_flipped_image_and_round_trips(self, badnet, held_out, tmp_path):
        clean, _ = held_out
        y = np.zeros(len(clean), np.int64)
        result = FlipDefense().run(badnet, (clean[:50], y[:50]), verbose=0)
        assert result.method == "flip" and result.params == {}
        flipped = clean[:, :, ::-1, :].copy()
        np.testing.assert_allclose(result.model.predict(flipped, verbose=0), badnet.predict(clean, verbose=0), atol=1e-5)
        assert not np.allclose(result.model.predict(clean, verbose=0), badnet.predict(clean, verbose=0), atol=1e-3)
        path = tmp_path / "flip.keras"
        result.model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded.predict(flipped, verbose=0), badnet.predict(clean, verbose=0), atol=1e-5)

    @pytest.mark.parametrize("defense", [ShrinkPadDefense(pad=2), GYMInference()], ids=["shrinkpad", "gym"])
    def test_random_purifiers_serve_and_round_trip(self, badnet, held_out, tmp_path, defense):
        clean, trig = held_out
        y = np.zeros(len(clean), np.int64)
        result = defense.run(badnet, (clean[:50], y[:50]), seed=3, verbose=0)
        out = result.model.predict(trig, verbose=0)
        assert out.shape == (len(trig), 4) and np.isfinite(out).all()
        assert not np.allclose(out, badnet.predict(trig, verbose=0), atol=1e-3)  # inputs really are transformed
        path = tmp_path / f"{defense.name}.keras"
        result.model.save(path)
        loaded = keras.models.load_model(path)
        assert loaded.predict(trig, verbose=0).shape == out.shape

    def test_bad_config(self):
        with pytest.raises(ConfigError, match="pad"):
            ShrinkPadDefense(pad=0)
        with pytest.raises(ConfigError, match="variant"):
            GYMInference("fancy")
