"""Core conventions: validation, atomic IO, results, InputSpec/InputAdapter, strategy and the shared fit loop."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasbd.metrics import der, threshold_at_fpr
from kerasbd.errors import ConfigError, DataError
from kerasbd.io import atomic_path, sha256_file, write_json
from kerasbd.models.spec import InputAdapter, InputSpec
from kerasbd.reporting import DefenseResult, markdown_table
from kerasbd.training import TransformedBatches, fit_classifier, get_strategy
from kerasbd.validation import check_images, check_labels


class TestValidation:
    def test_uint8_converted(self):
        x = np.full((2, 4, 4, 3), 255, np.uint8)
        out = check_images(x)
        assert out.dtype == np.float32 and out.max() == 1.0

    def test_grayscale_gets_channel_axis_for_one_channel_model(self):
        assert check_images(np.zeros((3, 5, 5), np.float32), image_shape=(5, 5, 1)).shape == (3, 5, 5, 1)

    @pytest.mark.parametrize(
        "x, needle",
        [
            (np.zeros((2, 3, 8, 8), np.float32), "channels-first"),
            (np.full((2, 8, 8, 1), np.nan, np.float32), "NaN"),
            (np.full((2, 8, 8, 1), 200.0, np.float32), "divide by 255"),
            (np.zeros((8, 8), np.float32), "(N, H, W, C)"),
            (np.zeros((0, 8, 8, 1), np.float32), "empty"),
            (np.zeros((2, 8, 8, 1), np.int32), "ambiguous"),
        ],
    )
    def test_bad_images_named(self, x, needle):
        with pytest.raises(DataError, match=None) as info:
            check_images(x)
        assert needle in str(info.value)

    def test_shape_mismatch_suggests_transpose(self):
        with pytest.raises(DataError, match="transpose"):
            check_images(np.zeros((2, 3, 8, 8), np.float32), image_shape=(8, 8, 3))

    def test_labels(self):
        assert check_labels(np.eye(3)[[2, 0]]).tolist() == [2, 0]
        with pytest.raises(DataError, match="out of range"):
            check_labels([0, 10], num_classes=10)
        with pytest.raises(DataError, match="negative"):
            check_labels([-1, 0])
        with pytest.raises(DataError, match="3 labels for 2 images"):
            check_labels([0, 1, 2], n=2)


class TestIO:
    def test_atomic_path_keeps_old_file_on_failure(self, tmp_path):
        target = tmp_path / "r.json"
        write_json(target, {"a": 1})
        with pytest.raises(RuntimeError):
            with atomic_path(target) as tmp:
                tmp.write_text("partial")
                raise RuntimeError("interrupted")
        assert json.loads(target.read_text()) == {"a": 1}
        assert [p.name for p in tmp_path.iterdir()] == ["r.json"]

    def test_json_handles_numpy(self, tmp_path):
        p = write_json(tmp_path / "x.json", {"v": np.float32(0.5), "a": np.arange(3), "n": float("nan")})
        assert json.loads(p.read_text()) == {"v": 0.5, "a": [0, 1, 2], "n": None}
        assert len(sha256_file(p)) == 64


class TestResults:
    def test_der(self):
        assert der({"clean_acc": 0.9, "asr": 1.0}, {"clean_acc": 0.9, "asr": 1.0}) == 0.5
        assert der({"clean_acc": 0.9, "asr": 1.0}, {"clean_acc": 0.8, "asr": 0.0}) == pytest.approx(0.95)
        assert der({}, {"asr": 0.0}) is None

    def test_save_writes_all_parts(self, tmp_path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure()
        r = DefenseResult("x", seed=3, metrics_before={"clean_acc": 1.0, "asr": 1.0}, metrics_after={"clean_acc": 0.9, "asr": 0.1},
                          rows=[{"k": 1}], arrays={"m": np.ones(2)}, figures={"plot": fig})
        out = r.save(tmp_path / "res")
        assert {p.name for p in out.iterdir()} == {"result.json", "result.md", "arrays.npz", "plot.png"}
        data = json.loads((out / "result.json").read_text())
        assert data["seed"] == 3 and data["der"] == pytest.approx(0.9)
        assert "| k |" in (out / "result.md").read_text()

    def test_markdown_table_formats_floats(self):
        assert "0.1235" in markdown_table([{"a": 0.123456}])


class TestInputSpec:
    def test_adapter_matches_numpy_and_roundtrips(self, tmp_path):
        spec = InputSpec((4, 4, 3), range="0-255", mean=(125.3, 122.9, 113.8), std=(63.0, 62.1, 66.7), channel_order="BGR")
        x = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
        inp = keras.Input((4, 4, 3))
        model = keras.Model(inp, InputAdapter(spec.to_dict())(inp))
        np.testing.assert_allclose(model.predict(x, verbose=0), spec.to_model(x), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(spec.from_model(spec.to_model(x)), x, atol=1e-5)
        model.save(tmp_path / "m.keras")
        again = keras.models.load_model(tmp_path / "m.keras")
        np.testing.assert_allclose(again.predict(x, verbose=0), spec.to_model(x), rtol=1e-5, atol=1e-4)

    def test_bad_spec(self):
        with pytest.raises(ConfigError, match="range"):
            InputSpec((4, 4, 1), range="0-65535")
        with pytest.raises(ConfigError, match="unknown key"):
            InputSpec.from_dict({"shape": [4, 4, 1], "scale": 3})


def _tiny_model(shape=(8, 8, 1), classes=2):
    inp = keras.Input(shape)
    h = keras.layers.Flatten()(inp)
    return keras.Model(inp, keras.layers.Dense(classes)(h))


class TestTraining:
    def test_threshold_at_fpr_is_empirical_quantile(self):
        scores = np.random.default_rng(1).normal(size=10_000)
        t = threshold_at_fpr(scores, 0.05)
        assert np.mean(scores > t) <= 0.05 and np.mean(scores > t) > 0.045

    def test_transformed_batches_seeded(self):
        x = np.random.default_rng(0).random((10, 8, 8, 1)).astype("float32")
        noisy = lambda b, rng: np.clip(b + rng.normal(0, 0.1, b.shape), 0, 1)
        a = TransformedBatches(x, np.zeros(10, int), 4, noisy, seed=5)[1][0]
        b = TransformedBatches(x, np.zeros(10, int), 4, noisy, seed=5)[1][0]
        np.testing.assert_array_equal(a, b)
        mixed = TransformedBatches(x, np.zeros(10, int), 4, noisy, seed=5, mix_clean=True)[0]
        assert mixed[0].shape[0] == 8
        clean_half = TransformedBatches(x, np.zeros(10, int), 4, noisy, seed=5, mix_clean=True, shuffle=False)[0][0][4:]
        np.testing.assert_array_equal(clean_half, x[:4])
        # GYM's mix_lightweight: the mixed-in copy goes through its own transform instead
        through = TransformedBatches(x, np.zeros(10, int), 4, noisy, seed=5, mix_clean=True, shuffle=False, mix_transform=lambda b, rng: 1 - b)
        np.testing.assert_allclose(through[0][0][4:], 1 - x[:4])

    def test_fit_learns_separable_task(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 256)
        x = np.where(y[:, None, None, None] == 1, 0.8, 0.2) + rng.normal(0, 0.05, (256, 8, 8, 1))
        x = np.clip(x, 0, 1).astype("float32")
        model = _tiny_model()
        fit_classifier(model, x, y, epochs=5, batch_size=32, learning_rate=0.05, seed=0)
        assert (model.predict(x, verbose=0).argmax(1) == y).mean() > 0.95

    def test_fit_rejects_bad_labels(self):
        with pytest.raises(DataError, match="out of range"):
            fit_classifier(_tiny_model(), np.zeros((4, 8, 8, 1), "float32"), np.array([0, 1, 2, 5]))

    def test_strategy_names(self):
        assert get_strategy("default").num_replicas_in_sync == 1
        with pytest.raises(ConfigError, match="unknown"):
            get_strategy("tpu-pod")
