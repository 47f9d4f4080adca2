"""NNoculation post-deployment: the CycleGAN's networks and objective, the ensemble's quarantine rule, streams,
the deployment folder, and a tiny end-to-end treatment that lowers the ASR of a BadNet trained here."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import run_script_result

from kerasbd.errors import ConfigError
from kerasbd.generators import CycleGAN, CycleGANTranslator, cyclegan_generator, patchgan_discriminator


def _convs(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]


@pytest.mark.parametrize("shape", [(28, 28, 1), (55, 47, 3)])
def test_generator_is_the_papers_table_18_and_keeps_the_image_shape(shape, rng):
    g = cyclegan_generator(shape)
    convs = _convs(g)
    # c7s1-64, d128, d256, 9 residual blocks of two 256-filter convolutions, u128, u64, c7s1-C
    assert [c.filters for c in convs] == [64, 128, 256] + [256] * 18 + [128, 64, shape[-1]]
    assert [c.kernel_size for c in (convs[0], convs[-1])] == [(7, 7), (7, 7)]
    assert [c.strides for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert all(isinstance(c, keras.layers.Conv2DTranspose) and c.strides == (2, 2) for c in convs[21:23])
    norms = [layer for layer in g.layers if isinstance(layer, keras.layers.GroupNormalization)]
    # instance normalisation: one group per channel (Keras resolves groups=-1 to the channel count), PyTorch's epsilon
    assert len(norms) == 1 + 2 + 18 + 2 and all(n.groups == n.input.shape[-1] and n.epsilon == 1e-5 for n in norms)
    y = np.asarray(g(rng.random((2, *shape), dtype=np.float32) * 2 - 1))
    assert y.shape == (2, *shape) and np.abs(y).max() <= 1.0


@pytest.mark.parametrize(("shape", "patches"), [((28, 28, 1), (4, 4)), ((55, 47, 3), (7, 6)), ((256, 256, 3), (32, 32))])
def test_patchgan_is_the_papers_table_17(shape, patches):
    d = patchgan_discriminator(shape)
    convs = _convs(d)
    assert [(c.filters, c.strides[0], c.kernel_size[0]) for c in convs] == [(64, 2, 4), (128, 2, 4), (256, 2, 4), (512, 1, 4), (1, 1, 4)]
    assert d.output_shape == (None, *patches, 1)
    # receptive field of 4×4 kernels with strides 2, 2, 2, 1, 1: the 70×70 PatchGAN
    rf, jump = 1, 1
    for c in convs:
        rf, jump = rf + (c.kernel_size[0] - 1) * jump, jump * c.strides[0]
    assert rf == 70


def _tiny_gan(identity_weight: float = 0.0) -> CycleGAN:
    keras.utils.set_random_seed(0)
    shape = (8, 8, 1)
    return CycleGAN(cyclegan_generator(shape, filters=4, blocks=1, name="g_ab"), cyclegan_generator(shape, filters=4, blocks=1, name="g_ba"),
                    patchgan_discriminator(shape, filters=4, name="d_a"), patchgan_discriminator(shape, filters=4, name="d_b"),
                    identity_weight=identity_weight, seed=0)


@pytest.mark.parametrize("identity_weight", [0.0, 5.0])
def test_one_step_losses_match_numpy(identity_weight, rng):
    gan = _tiny_gan(identity_weight)
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.0), discriminator_optimizer=keras.optimizers.SGD(0.0))
    a, b = rng.random((4, 8, 8, 1), dtype=np.float32), rng.random((4, 8, 8, 1), dtype=np.float32)
    sa, sb = a * 2 - 1, b * 2 - 1

    def f(model, x):
        return np.asarray(model(x, training=True), np.float64)

    fake_b, fake_a = f(gan.generator, sa), f(gan.generator_ba, sb)
    adv = np.mean((f(gan.discriminator, fake_b) - 1) ** 2) + np.mean((f(gan.discriminator_a, fake_a) - 1) ** 2)
    cyc = np.mean(np.abs(f(gan.generator_ba, fake_b) - sa)) + np.mean(np.abs(f(gan.generator, fake_a) - sb))
    idt = np.mean(np.abs(f(gan.generator, sb) - sb)) + np.mean(np.abs(f(gan.generator_ba, sa) - sa))
    # the pools are filling, so each discriminator sees this step's fakes; objective halved
    d = 0.5 * (np.mean((f(gan.discriminator_a, sa) - 1) ** 2) + np.mean(f(gan.discriminator_a, fake_a) ** 2)) + 0.5 * (
        np.mean((f(gan.discriminator, sb) - 1) ** 2) + np.mean(f(gan.discriminator, fake_b) ** 2))
    logs = gan.fit((a, b), batch_size=4, epochs=1, shuffle=False, verbose=0).history
    assert logs["adversarial_loss"][0] == pytest.approx(adv, rel=1e-4)
    assert logs["cycle_loss"][0] == pytest.approx(cyc, rel=1e-4)
    assert logs["identity_loss"][0] == pytest.approx(idt if identity_weight else 0.0, rel=1e-4, abs=1e-7)
    assert logs["generator_loss"][0] == pytest.approx(adv + 10 * cyc + identity_weight * idt, rel=1e-4)
    assert logs["discriminator_loss"][0] == pytest.approx(d, rel=1e-4)
    assert int(np.asarray(gan.pool_a.count)) == 4 and int(np.asarray(gan.pool_b.count)) == 4


def test_translator_schedule_checkpoints_and_resume(tmp_path, rng):
    from kerasbd.resume import ResumeStore

    a, b = rng.random((6, 8, 8, 1), dtype=np.float32), rng.random((3, 8, 8, 1), dtype=np.float32)
    t = CycleGANTranslator(epochs=4, filters=4, blocks=1, batch_size=2)
    assert t.steps_per_epoch(6, 3) == 3
    full = t.fit(a, b, seed=1)
    lr = full.model_.generator_optimizer.learning_rate
    # 4 epochs × 3 steps, decay after half: constant for 6 steps, then linearly to 0 at 12
    assert float(full.model_.generator_optimizer.iterations) == 12
    schedule = full.model_.generator_optimizer._learning_rate
    assert [round(float(schedule(s)), 7) for s in (0, 6, 9, 12)] == [2e-4, 2e-4, 1e-4, 0.0] and float(lr) == 0.0
    settings = {"run": "translator"}
    CycleGANTranslator(epochs=2, filters=4, blocks=1, batch_size=2).fit(a, b, seed=1, store=ResumeStore(tmp_path, settings))
    resumed = t.fit(a, b, seed=1, store=ResumeStore(tmp_path, settings))  # 2 of 4 epochs found in the store
    assert len(resumed.history_["cycle_loss"]) == 4
    assert float(resumed.model_.generator_optimizer.iterations) == 12
    assert json.loads((tmp_path / "cyclegan_epoch.json").read_text()) == 4
    with pytest.raises(ConfigError, match="one shape"):
        t.fit(a, rng.random((3, 9, 9, 1), dtype=np.float32))
    with pytest.raises(ConfigError, match="not trained"):
        CycleGANTranslator().translate(a)


def _fixed(logits: np.ndarray) -> keras.Model:
    """A model whose logits for input k (the value of its first pixel) are row k of ``logits``."""
    table = keras.initializers.Constant(logits)
    inp = keras.Input((2, 2, 1))
    idx = keras.layers.Lambda(lambda x: keras.ops.cast(x[:, 0, 0, 0] * 10, "int32"))(inp)
    return keras.Model(inp, keras.layers.Embedding(len(logits), logits.shape[1], embeddings_initializer=table)(idx))


def test_ensemble_serves_goodnets_label_and_quarantines_disagreements(tmp_path):
    from kerasbd.serving import Ensemble

    bad = _fixed(np.array([[5, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5]], "float32"))
    good = _fixed(np.array([[5, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]], "float32"))
    x = np.zeros((4, 2, 2, 1), "float32")
    x[:, 0, 0, 0] = np.arange(4) / 10 + 0.01
    added = []

    class Store:
        def add(self, images, badnet_labels, goodnet_labels, *, model_version, sources=None):
            added.append((images, list(badnet_labels), list(goodnet_labels), model_version, sources))
            return [7, 8]

    ens = Ensemble(bad, good, version="v0")
    out = ens.predict(x, store=Store(), sources=["a", "b", "c", "d"])
    assert out.labels.tolist() == [0, 0, 1, 2] and out.badnet_labels.tolist() == [0, 1, 0, 2]
    assert out.quarantined.tolist() == [False, True, True, False] and out.ids == [7, 8]
    images, bl, gl, version, sources = added[0]
    assert np.array_equal(images, x[1:3]) and bl == [1, 0] and gl == [0, 1] and version == "v0" and sources == ["b", "c"]
    model_out = ens.as_model()(x)
    assert np.asarray(model_out["quarantine"])[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert np.argmax(np.asarray(model_out["logits"]), 1).tolist() == [0, 0, 1, 2]
    with pytest.raises(ConfigError, match="one input shape"):
        Ensemble(bad, keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]))


def test_serving_report_precision_recall_and_the_simulated_stream():
    from kerasbd.attacks import from_spec
    from kerasbd.serving import EnsemblePrediction, ServingReport
    from kerasbd.serving.streams import simulated_stream

    rep = ServingReport("v0")
    q = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    trig = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    labels = np.arange(8) % 3
    rep.add(EnsemblePrediction(labels, q, labels, labels, []), labels, trig)
    d = rep.to_dict()
    assert (d["precision"], d["recall"], d["false_quarantine_rate"], d["quarantine_rate"]) == (2 / 4, 2 / 3, 2 / 5, 4 / 8)
    backdoors = from_spec({"trigger": {"type": "patch", "size": 2, "position": "bottom-right", "value": 1.0}, "target": 0})
    s = simulated_stream(np.zeros((50, 6, 6, 1), "float32"), np.arange(50) % 5, backdoors, poison_fraction=0.2, seed=3)
    assert s.triggered.sum() == 10 and (s.x[s.triggered][:, 4:, 4:] == 1).all() and (s.x[~s.triggered] == 0).all()
    again = simulated_stream(np.zeros((50, 6, 6, 1), "float32"), np.arange(50) % 5, backdoors, poison_fraction=0.2, seed=3)
    assert np.array_equal(again.triggered, s.triggered) and again.sources == s.sources
    with pytest.raises(ConfigError, match="trigger"):
        simulated_stream(np.zeros((5, 6, 6, 1), "float32"), np.zeros(5, int), [], poison_fraction=0.2)


def test_treatment_presets_and_refusals():
    from kerasbd.defenses import NNoculationTreatment

    auto = NNoculationTreatment.preset("auto", np.zeros((1000, 28, 28, 1), np.float32))
    assert auto.batch_size == 56 and auto.cyclegan.epochs == 5 and auto.cyclegan.filters == 16 and auto.retrain == "both"
    faces = NNoculationTreatment.preset("auto", np.zeros((11547, 55, 47, 3), np.float32))
    assert faces.cyclegan.filters == 16 and faces.batch_size == 56  # 500 of them are used
    large = NNoculationTreatment.preset("auto", np.zeros((100, 128, 128, 3), np.float32))
    assert large.cyclegan.filters == 64 and large.cyclegan.epochs == 200 and large.batch_size == 11
    code = NNoculationTreatment.preset("code")
    assert code.retrain == "goodnet" and code.cyclegan.filters == 32
    with pytest.raises(ConfigError, match="retrain"):
        NNoculationTreatment(retrain="badnet")


def test_tiny_treatment_lowers_the_asr_of_a_badnet_trained_here(tmp_path):
    """The whole online cycle on a 12×12 digits BadNet: pre-deployment GoodNet, a deployment with its SQLite store,
    a stream with 30 % triggered inputs, one treatment round as soon as 100 are quarantined, the next version."""
    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.data import load_digits, split_defender
    from kerasbd.defenses import NNoculationPre, NNoculationTreatment
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.serving.deployment import Deployment
    from kerasbd.serving.streams import simulated_stream

    backdoors = from_spec({"trigger": {"type": "patch", "size": 3, "position": "bottom-right", "value": 1.0}, "target": 0})
    x, y = load_digits(size=12)
    (xc, yc), (xtr, ytr) = split_defender(x, y, val_fraction=0.6, seed=0)
    val, stream_data, test = (xc[:300], yc[:300]), (xc[300:780], yc[300:780]), (xc[780:], yc[780:])
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(inp)))
    bad = keras.Model(inp, keras.layers.Dense(10)(h))
    train_badnet(bad, xtr, ytr, backdoors, rate=0.1, epochs=8, batch_size=32, seed=0)
    before = evaluate_backdoor(bad, *test, backdoors)
    assert before["asr"] > 0.9
    good = NNoculationPre(learning_rates=(1.0,), noise_fractions=(0.4,), epochs=10, batch_size=16).run(bad, val, seed=0).model
    dep = Deployment.create(tmp_path / "dep", bad, good)
    treatment = NNoculationTreatment(quarantine_size=100, clean_size=300, epochs=10, batch_size=16,
                                     cyclegan=CycleGANTranslator(epochs=4, filters=8, blocks=1, batch_size=4))
    stream = simulated_stream(*stream_data, backdoors, poison_fraction=0.3, seed=0, batch_size=25)
    report = dep.run(stream, treatment=treatment, clean=val, seed=0)
    first = report["stages"][0]
    assert first["quarantined"] >= 100 and first["precision"] > 0.6 and first["recall"] > 0.5
    assert dep.current == "v1" and [v["parent"] for v in dep.versions] == [None, "v0"]
    assert dep.store.count(model_version="v0") == first["quarantined"]
    result = report["rounds"][0]["result"]
    assert result.treatment_images.shape == result.clean_images.shape == (300, 12, 12, 1)
    served = Deployment(tmp_path / "dep").ensemble()  # reloaded from its files, weights checked
    after_bad = evaluate_backdoor(served.badnet, *test, backdoors)
    after_good = evaluate_backdoor(served.goodnet, *test, backdoors)
    assert after_bad["asr"] < before["asr"] - 0.4, (before["asr"], after_bad["asr"])
    assert after_good["asr"] <= evaluate_backdoor(good, *test, backdoors)["asr"] + 0.05
    assert after_good["clean_acc"] > before["clean_acc"] - 0.1
    dep.close()


def test_cli_deploy_stream_treat_status_export(badnet_files, tmp_path, capsys):
    from kerasbd.cli import main

    f = badnet_files
    dep = tmp_path / "dep"
    common = ["--set", "cyclegan__epochs=2", "--set", "cyclegan__filters=8", "--set", "cyclegan__blocks=1", "--set", "clean_size=100",
              "--set", "epochs=3", "--set", "cyclegan__jit_compile=false"]
    assert main(["-q", "nnoculation", "deploy", "--model", str(f / "badnet.h5"), "--clean", str(f / "clean.npz"), "--out", str(dep),
                 "--set", "learning_rates=[1.0]", "--set", "noise_fractions=[0.4]", "--test", str(f / "clean.npz"),
                 "--trigger", str(f / "trigger.json")]) == 0
    out = capsys.readouterr().out
    assert "deployed v0" in out and "goodnet CA" in out
    assert main(["-q", "nnoculation", "stream", "--deployment", str(dep), "--simulate", "--test", str(f / "clean.npz"), "--trigger",
                 str(f / "trigger.json"), "--poison-fraction", "0.3", "--treat", "--clean", str(f / "clean.npz"), "--max-rounds", "1",
                 "--out", str(tmp_path / "report"), "--quarantine-size", "40", *common]) == 0
    out = capsys.readouterr().out
    assert "quarantine precision" in out and "treated v0 → deployed v1" in out and "now serving v1" in out
    saved = json.loads((tmp_path / "report" / "result.json").read_text())
    assert saved["stages"][0]["version"] == "v0" and saved["rounds"][0]["version"] == "v1"
    assert (tmp_path / "report" / "cyclegan_v1.png").exists()
    assert main(["-q", "nnoculation", "status", "--deployment", str(dep)]) == 0
    assert "serving v1" in capsys.readouterr().out
    assert main(["-q", "nnoculation", "export", "--deployment", str(dep), "--version", "v0", "--out", str(tmp_path / "q.npz")]) == 0
    with np.load(tmp_path / "q.npz") as z:
        assert len(z["x"]) == saved["stages"][0]["quarantined"]
    # mistakes: one line, exit status 2, nothing changed
    assert main(["-q", "nnoculation", "status", "--deployment", str(tmp_path)]) == 2
    assert "not a kerasbd deployment" in capsys.readouterr().err
    assert main(["-q", "nnoculation", "deploy", "--model", str(f / "badnet.h5"), "--clean", str(f / "clean.npz"), "--out", str(dep)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["-q", "nnoculation", "treat", "--deployment", str(dep), "--clean", str(f / "clean.npz"), "--quarantine-size", "10000",
                 *common]) == 2
    assert "the treatment waits for 10000" in capsys.readouterr().err
    assert main(["-q", "nnoculation", "stream", "--deployment", str(dep), "--simulate"]) == 2
    assert "--test" in capsys.readouterr().err


MIRRORED_CYCLEGAN = """
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from kerasbd.generators import CycleGAN, cyclegan_generator, patchgan_discriminator
from kerasbd.training import get_strategy

rng = np.random.default_rng(0)
a, b = rng.random((8, 8, 8, 1), dtype=np.float32), rng.random((8, 8, 8, 1), dtype=np.float32)
out = {}
for kind in ("default", "mirrored"):
    strategy = get_strategy(kind)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        s = (8, 8, 1)
        gan = CycleGAN(cyclegan_generator(s, filters=4, blocks=1, name="g_ab"), cyclegan_generator(s, filters=4, blocks=1, name="g_ba"),
                       patchgan_discriminator(s, filters=4, name="d_a"), patchgan_discriminator(s, filters=4, name="d_b"),
                       pool_size=64, seed=0)
        gan.compile(generator_optimizer=keras.optimizers.SGD(0.1), discriminator_optimizer=keras.optimizers.SGD(0.1))
    history = gan.fit((a, b), batch_size=4, epochs=1, shuffle=False, verbose=0).history
    weights = [w.ravel() for net in (gan.generator, gan.generator_ba, gan.discriminator_a, gan.discriminator) for w in net.get_weights()]
    out[kind] = {"replicas": strategy.num_replicas_in_sync, "history": history, "weights": np.concatenate(weights).tolist()}
print("RESULT " + json.dumps(out))
"""


def test_cyclegan_trains_under_mirrored_strategy_like_one_device():
    res = run_script_result(MIRRORED_CYCLEGAN)
    assert res["default"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    # instance norm is per image, so half batches on two replicas give the full batch's gradients
    one, two = np.asarray(res["default"]["weights"]), np.asarray(res["mirrored"]["weights"])
    assert np.abs(one - two).max() < 1e-4, np.abs(one - two).max()
    for name in ("generator_loss", "discriminator_loss", "cycle_loss"):
        np.testing.assert_allclose(res["mirrored"]["history"][name], res["default"]["history"][name], rtol=1e-4)


def test_folder_and_npz_streams(tmp_path):
    import cv2

    from kerasbd.errors import DataError
    from kerasbd.serving.streams import open_stream

    folder = tmp_path / "incoming"
    folder.mkdir()
    images = (np.arange(3 * 6 * 5) % 256).reshape(3, 6, 5).astype(np.uint8)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"in{i}.png"), img)
    (folder / "notes.txt").write_text("skipped")
    s = open_stream(folder, (6, 5, 1), batch_size=2)
    assert len(s) == 3 and s.sources == ["in0.png", "in1.png", "in2.png"] and [len(b.x) for b in s] == [2, 1]
    assert np.allclose(s.x[..., 0] * 255, images)
    with pytest.raises(DataError, match=r"in0.png: image of shape \(6, 5, 1\), the model takes \(7, 5, 1\)"):
        open_stream(folder, (7, 5, 1))
    np.savez(tmp_path / "s.npz", x=images[..., None], triggered=np.array([0, 1, 0], bool), y=np.array([1, 2, 3]))
    s = open_stream(tmp_path / "s.npz", (6, 5, 1))
    assert s.triggered.tolist() == [False, True, False] and s.labels.tolist() == [1, 2, 3] and s.sources[1] == "s.npz[1]"
    np.savez(tmp_path / "bad.npz", pixels=images)
    with pytest.raises(DataError, match="no inputs found"):
        open_stream(tmp_path / "bad.npz", (6, 5, 1))
