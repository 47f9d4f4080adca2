"""DeepInspect: the conditional generator and its trainer, model inversion, the double-MAD test, data-free detection
and patching of a BadNet the tests train, the CLI without --clean, resuming."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import run_script_result

from kerasbd.attacks import from_spec
from kerasbd.cli import main
from kerasbd.defenses import DEFENSES, INSPECTORS, DeepInspect, DeepInspectInspector
from kerasbd.errors import ConfigError
from kerasbd.generators import ConditionalTriggerTrainer, conditional_generator, patch_discriminator
from kerasbd.metrics import mad_anomaly_index
from kerasbd.models import load_model
from kerasbd.training import ModelInversion

#: small enough for CI on 12×12 digits, large enough to find the 3×3 corner trigger
QUICK = {"inversion": ModelInversion(per_class=40, steps=150), "epochs": 15, "eval_noise": 4, "filters": 16, "noise_dim": 16}


@pytest.mark.parametrize("shape", [(12, 12, 1), (28, 28, 1), (55, 47, 3)])
def test_conditional_generator_gives_bounded_perturbations_of_the_image_shape(shape):
    g = conditional_generator(shape, 10, noise_dim=8, filters=8)
    z = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    out = np.asarray(g([z, np.eye(10, dtype="float32")[[0, 4, 9]]]))
    assert out.shape == (3, *shape) and np.abs(out).max() <= 1.0
    other = np.asarray(g([z, np.eye(10, dtype="float32")[[1, 4, 9]]]))
    assert not np.allclose(out[0], other[0]) and np.allclose(out[1:], other[1:])  # the label conditions the output


def test_trainer_rotates_through_every_label_and_leaves_the_classifier_alone():
    keras.utils.set_random_seed(0)
    clf = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    frozen = [w.copy() for w in clf.get_weights()]
    trainer = ConditionalTriggerTrainer(conditional_generator((8, 8, 1), 3, noise_dim=4, filters=8), patch_discriminator((8, 8, 1)), clf,
                                        targets=[0, 1, 2], labels_per_step=2, gan_weight=0.5)
    trainer.compile(generator_optimizer=keras.optimizers.Adam(0.01), discriminator_optimizer="adam")
    assert [np.asarray(trainer._step_labels()).tolist() for _ in range(3)] == [[0, 1], [2, 0], [1, 2]]
    x, y = np.random.default_rng(1).random((16, 8, 8, 1)).astype("float32"), np.arange(16) % 3
    logs = trainer.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    assert all(np.allclose(a, b) for a, b in zip(frozen, clf.get_weights(), strict=True))
    assert logs["discriminator_loss"][-1] > 0  # the GAN term trains the discriminator when its weight is positive
    with pytest.raises(ConfigError, match="labels_per_step"):
        ConditionalTriggerTrainer(trainer.generator, trainer.discriminator, clf, [0], labels_per_step=0)


def test_model_inversion_recovers_images_the_model_assigns_to_each_class():
    keras.utils.set_random_seed(0)
    clf = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    x, y, success = ModelInversion(per_class=3, steps=100).run(clf, seed=0)
    assert x.shape == (12, 6, 6, 1) and 0.0 <= x.min() and x.max() <= 1.0 and y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert success == float(np.mean(clf.predict(x, verbose=0).argmax(1) == y)) and success > 0.9


def test_double_mad_scales_each_side_by_its_own_spread():
    # below the median (10): 2, 8, 9, 10 → deviations 8, 2, 1, 0 → MAD_low = 1.4826 · 1.5; above: 10, 30, 50, 70
    values = [2.0, 8.0, 9.0, 10.0, 30.0, 50.0, 70.0]
    double = mad_anomaly_index(values, spread="double", threshold=1.96)
    assert double["mad_low"] == pytest.approx(1.4826 * 1.5) and double["anomaly_index"] == pytest.approx(8 / (1.4826 * 1.5))
    assert double["flagged"] == [0]
    assert mad_anomaly_index(values, threshold=1.96)["flagged"] == []  # one MAD for both sides: the wide upper side hides it


@pytest.fixture(scope="module")
def badnet(badnet_files):
    spec = json.loads((badnet_files / "trigger.json").read_text())
    data = np.load(badnet_files / "clean.npz")
    return load_model(badnet_files / "badnet.h5"), from_spec(spec), (data["x"], data["y"])


def test_data_free_inspection_flags_the_target_and_patching_removes_the_backdoor(badnet, tmp_path):
    clf, backdoors, (x, y) = badnet
    defense = DeepInspect(DeepInspectInspector(**QUICK))
    result = defense.run(clf, None, eval_data=(x, y), backdoors=backdoors, seed=0, checkpoint_dir=tmp_path / "ckpt")
    d = result.details
    assert d["flagged"] == [0] and d["substitute"] == "inversion" and d["repaired"], d["deviation"]
    assert result.metrics_before["asr"] > 0.9 and result.metrics_after["asr"] < 0.2
    assert result.metrics_after["clean_acc"] > result.metrics_before["clean_acc"] - 0.1
    assert "deepinspect: backdoored — label(s) 0 flagged" in d["verdict"] and {"triggers", "anomaly_index"} <= set(result.figures)
    match = next(m for m in d["trigger_match"] if m["label"] == 0)  # the known trigger, for the report only
    assert match["target_flagged"] and match["trigger_covered"] is not None
    # resumed from the checkpoint: the inversion and the generator are not redone, the findings are the same
    again = defense.run(clf, None, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert again.details["flagged"] == [0] and again.seconds < result.seconds / 2
    np.testing.assert_allclose(again.arrays["magnitude"], result.arrays["magnitude"], rtol=1e-5)


def test_cli_runs_deepinspect_without_clean_data_and_other_methods_ask_for_it(badnet_files, tmp_path, capsys):
    model = str(badnet_files / "badnet.h5")
    sets = ["--set", "epochs=2", "--set", "inversion__per_class=5", "--set", "inversion__steps=10", "--set", "eval_noise=2"]
    assert main(["inspect", "deepinspect", "--model", model, *sets, "--out", str(tmp_path / "di")]) == 0
    out = capsys.readouterr().out
    assert "settings: deepinspect preset auto" in out and "deepinspect: " in out
    saved = json.loads((tmp_path / "di" / "result.json").read_text())
    assert saved["details"]["substitute_images"] == 50 and saved["details"]["substitute"] == "inversion"
    assert main(["defend", "gym", "--model", model, "--out", str(tmp_path / "gym")]) == 2
    assert "defense gym needs the defender's clean data: pass --clean FILE" in capsys.readouterr().err
    assert not (tmp_path / "gym").exists()


def test_registered_and_configured_like_every_method():
    assert INSPECTORS["deepinspect"] is DeepInspectInspector and DEFENSES["deepinspect"] is DeepInspect
    d = DeepInspect.preset("auto", np.zeros((0, 28, 28, 1), np.float32))
    assert d.inspector.labels_per_step == 2**22 // (32 * 28 * 28) and d.preset_.name == "auto"  # all 10 labels: capped by the trainer
    assert DeepInspect.from_config(d.get_config()).get_config() == d.get_config()
    with pytest.raises(ConfigError, match="substitute"):
        DeepInspectInspector(substitute="noise")
    with pytest.raises(ConfigError, match="substitute='clean' needs clean images"):
        DeepInspectInspector(substitute="clean", epochs=1).inspect(keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                                                                                     keras.layers.Dense(3)]), None)


MIRRORED_SCRIPT = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from kerasbd.generators import ConditionalTriggerTrainer, conditional_generator, patch_discriminator
from kerasbd.training import get_strategy

x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
y = np.arange(32) % 3
out = {}
for kind in ("default", "mirrored"):
    strategy = get_strategy(kind)
    keras.utils.set_random_seed(0)
    clf = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with strategy.scope():
        trainer = ConditionalTriggerTrainer(conditional_generator((8, 8, 1), 3, noise_dim=4, filters=8), patch_discriminator((8, 8, 1)),
                                            clf, targets=[0, 1, 2], labels_per_step=2, gan_weight=0.1)
        trainer.compile(generator_optimizer=keras.optimizers.Adam(0.01), discriminator_optimizer="adam")
    logs = trainer.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    out[kind] = {"replicas": strategy.num_replicas_in_sync, "offset": int(np.asarray(trainer._offset)),
                 "trojan": logs["trojan"], "magnitude": logs["magnitude"]}
print("RESULT " + json.dumps(out))
"""


def test_conditional_trainer_runs_under_the_mirrored_strategy():
    res = run_script_result(MIRRORED_SCRIPT)
    assert res["default"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    # 4 steps of 2 labels rotate through 3 labels the same way on one device and on two replicas
    assert res["default"]["offset"] == res["mirrored"]["offset"] == 8 % 3
    for kind in ("default", "mirrored"):
        assert all(np.isfinite(res[kind]["trojan"])) and res[kind]["trojan"][-1] < res[kind]["trojan"][0]
