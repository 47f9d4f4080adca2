"""DHBE: the sample and trigger generators, the patch padding and mixing arithmetic, the loss terms against NumPy,
per-image patch placement against hand-computed values, the amplified-trigger and activation-difference metrics,
a run with no clean data and its resumption, the CLI with no clean data. (A tiny run that lowers ASR is still
missing: no short schedule tried lowered the ASR of an MNIST or digits BadNet except by damaging the student as
much as plain distillation does, see issue #16 and recipes/dhbe_probe.py.)"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasbd.attacks import from_spec
from kerasbd.cli import main
from kerasbd.defenses import DEFENSES, DHBE
from kerasbd.errors import ConfigError
from kerasbd.generators import DHBETrainer, patch_generator, random_pad, sample_generator
from kerasbd.generators.data_free import tv_l1, tv_l2
from kerasbd.models import load_model


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (55, 47, 3), (64, 64, 3)])
def test_sample_generator_gives_normalised_images_of_the_model_shape(shape):
    g = sample_generator(shape, nz=16, ngf=8)
    out = np.asarray(g(np.random.default_rng(0).normal(size=(64, 16)).astype("float32"), training=True))
    assert out.shape == (64, *shape)
    # the last batch normalization has no affine parameters: per channel zero mean, unit variance over the batch
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-2)
    assert not g.get_layer("normalise").center and not g.get_layer("normalise").scale


def test_trigger_patch_is_bounded_and_padded_at_one_position_per_batch():
    p = patch_generator(3, patch_size=5, nz=8, ngf=8)
    patch = np.asarray(p(np.random.default_rng(0).normal(size=(4, 8)).astype("float32"), training=True))
    assert patch.shape == (4, 5, 5, 3) and np.abs(patch).max() <= 1.0
    padded = np.array(random_pad(patch, (32, 32, 3), 7, 20))
    assert padded.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(padded[:, 7:12, 20:25], patch)
    padded[:, 7:12, 20:25] = 0
    assert not padded.any()  # zero everywhere else, for every image of the batch


def test_patched_images_are_canonical_images_plus_the_padded_patch_unclipped():
    teacher = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    trainer = DHBETrainer(sample_generator((6, 6, 1), nz=4, ngf=4), keras.models.clone_model(teacher), teacher,
                          patch_generator(1, patch_size=2, nz=4, ngf=4), pixel_mean=0.1307, pixel_std=0.3081)
    g = np.full((1, 6, 6, 1), 2.0, np.float32)
    x = np.asarray(trainer.canonical(g))
    np.testing.assert_allclose(x, 0.1307 + 0.3081 * 2.0, rtol=1e-6)  # inv_norm: mean + std · g
    out = np.asarray(trainer.patched(x, np.ones((1, 2, 2, 1), np.float32), 4, 0))
    expected = x.copy()
    expected[:, 4:6, 0:2] += 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.max() > 1.0  # no clipping, as the original
    # with clip both the generated and the patched images stay in the canonical range
    trainer.clip = True
    np.testing.assert_allclose(np.asarray(trainer.canonical(g)), 0.1307 + 0.3081 * 2.0, rtol=1e-6)  # 0.747: inside [0, 1]
    np.testing.assert_allclose(np.asarray(trainer.canonical(-g)), 0.0)  # 0.1307 - 0.616 < 0
    clipped = np.asarray(trainer.patched(x, np.ones((1, 2, 2, 1), np.float32), 4, 0))
    np.testing.assert_allclose(clipped, np.minimum(expected, 1.0), rtol=1e-6)
    assert DHBE(clip=True).get_params()["clip"] is True


def test_patches_are_placed_at_one_position_per_image():
    from kerasbd.generators import place_patches

    patches = np.arange(2 * 2 * 2 * 1, dtype=np.float32).reshape(2, 2, 2, 1) + 1
    out = np.asarray(place_patches(patches, (4, 5, 1), np.array([2, 0]), np.array([0, 3])))
    expected = np.zeros((2, 4, 5, 1), np.float32)
    expected[0, 2:4, 0:2] = patches[0]
    expected[1, 0:2, 3:5] = patches[1]
    np.testing.assert_array_equal(out, expected)


def test_amplified_triggers_and_activation_differences():
    from kerasbd.attacks import Backdoor, Patch
    from kerasbd.metrics import activation_difference, evaluate_backdoor

    # a model that answers 1 iff the bottom-right 2x2 corner is bright: one copy of the trigger fires it, and the
    # 4 copies include that corner
    inp = keras.Input((6, 6, 1))
    corner = keras.layers.Lambda(lambda t: t[:, 4:, 4:, 0])(inp)
    score = keras.layers.Reshape((4,))(corner)
    logits = keras.layers.Dense(2)(score)
    net = keras.Model(inp, logits)
    net.layers[-1].set_weights([np.array([[0.0, 1.0]] * 4, np.float32), np.array([2.0, 0.0], np.float32)])
    x, y = np.zeros((6, 6, 6, 1), np.float32), np.array([0, 0, 0, 1, 1, 0])
    bd = Backdoor(Patch(2, "bottom-right", margin=0), 1)
    r = evaluate_backdoor(net, x, y, [bd], amplify=(4, 9))
    assert r["asr"] == 1.0 and r["amplified"]["x4"]["asr"] == 1.0 and r["amplified"]["x9"]["n_triggered"] == 4
    d = activation_difference(net, x, y, bd)
    # penultimate = the 4 corner pixels: 0 → 1 each (L1 4, L2 2); logits move by (0, 4): L1 4, L2 4
    assert d["n"] == 4
    np.testing.assert_allclose(d["penultimate"]["l1"], 4.0)
    np.testing.assert_allclose(d["penultimate"]["l2"], 2.0)
    np.testing.assert_allclose(d["output"]["l1"], 4.0)
    np.testing.assert_allclose(d["output"]["l2"], 4.0)


def test_tv_terms_match_numpy():
    x = np.random.default_rng(0).normal(size=(2, 5, 4, 3)).astype("float32")
    diffs = [x[:, :, 1:] - x[:, :, :-1], x[:, 1:] - x[:, :-1], x[:, 1:, 1:] - x[:, :-1, :-1], x[:, 1:, :-1] - x[:, :-1, 1:]]
    assert float(tv_l1(x)) == pytest.approx(sum(np.abs(d).mean() for d in diffs), rel=1e-5)
    assert float(tv_l2(x)) == pytest.approx(sum(np.sqrt((d ** 2).sum()) for d in diffs), rel=1e-5)


def test_student_loss_matches_numpy_and_only_the_student_learns():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    student = keras.models.clone_model(teacher)
    trainer = DHBETrainer(sample_generator((6, 6, 1), nz=4, ngf=4), student, teacher, patch_generator(1, patch_size=2, nz=4, ngf=4),
                          batch_size=8, student_steps=2, backdoor_weight=0.1)
    trainer.compile(generator_optimizer="adam", discriminator_optimizer=keras.optimizers.SGD(0.01), trigger_optimizer="adam")
    x = np.random.default_rng(1).random((8, 6, 6, 1)).astype("float32")
    loss, backdoor = trainer._student_loss(x)
    s, t = np.asarray(student(x)), np.asarray(teacher(x))
    # L1 on logits, mean over batch × classes, plus λ times the patched-vs-clean term
    assert float(loss) == pytest.approx(np.abs(s - t).mean() + 0.1 * float(backdoor), rel=1e-5)
    frozen = [w.copy() for w in teacher.get_weights()]
    before = [w.copy() for w in student.get_weights()]
    trainer.fit(np.zeros((3, 1)), batch_size=1, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(frozen, teacher.get_weights(), strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights(), strict=True))
    with pytest.raises(ConfigError, match="trigger_generator"):
        DHBETrainer(trainer.generator, student, teacher, None, backdoor_weight=0.1)


@pytest.mark.parametrize("position", ["batch", "image"])
def test_training_step_compiles_under_xla(position):
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    trainer = DHBETrainer(sample_generator((6, 6, 1), nz=4, ngf=4), keras.models.clone_model(teacher), teacher,
                          patch_generator(1, patch_size=2, nz=4, ngf=4), batch_size=8, student_steps=2, backdoor_weight=0.1,
                          position=position)
    trainer.compile(generator_optimizer="adam", discriminator_optimizer="sgd", trigger_optimizer="adam", jit_compile=True)
    logs = trainer.fit(np.zeros((2, 1)), batch_size=1, epochs=1, verbose=0).history
    assert all(np.isfinite(v[0]) for v in logs.values())


@pytest.fixture(scope="module")
def badnet(badnet_files):
    spec = json.loads((badnet_files / "trigger.json").read_text())
    data = np.load(badnet_files / "clean.npz")
    return load_model(badnet_files / "badnet.h5"), from_spec(spec), (data["x"], data["y"])


#: small enough for CI on 12×12 digits: 60 iterations of 32 images
TINY = {"epochs": 6, "epoch_itrs": 10, "batch_size": 32, "patch_size": 3, "nz": 16, "nz2": 16, "ngf": 16, "student_lr": 0.01}


def test_dhbe_distils_a_student_with_no_clean_data_and_resumes(badnet, tmp_path):
    clf, backdoors, (x, y) = badnet
    defense = DHBE(**TINY)
    result = defense.run(clf, None, eval_data=(x, y), backdoors=backdoors, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert result.details["clean_images_used"] == 0 and result.details["iterations"] == 60
    teacher, student = clf.model.get_weights(), result.model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(teacher, student, strict=True))  # the student moved, the teacher did not
    assert all(np.array_equal(a, b) for a, b in zip(teacher, load_model(clf.source["path"]).model.get_weights(), strict=True))
    assert result.metrics_after["clean_acc"] > 0.5
    # a finished run resumes from its last epoch: nothing is retrained, the same student comes back
    again = defense.run(clf, None, eval_data=(x, y), backdoors=backdoors, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert again.seconds < result.seconds / 2
    assert all(np.array_equal(a, b) for a, b in zip(student, again.model.get_weights(), strict=True))


def test_cli_defend_dhbe_needs_no_clean_data(badnet_files, tmp_path, capsys):
    sets = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 1, "epoch_itrs": 2}.items()]
    assert main(["defend", "dhbe", "--model", str(badnet_files / "badnet.h5"), "--test", str(badnet_files / "clean.npz"),
                 "--trigger", str(badnet_files / "trigger.json"), *sets, "--out", str(tmp_path / "dhbe")]) == 0
    out = capsys.readouterr().out
    assert "dhbe: DHBE: student distilled" in out and (tmp_path / "dhbe" / "model.keras").exists()


def test_registered_with_the_original_constants_and_the_papers_as_a_preset():
    assert DEFENSES["dhbe"] is DHBE and not DHBE.requires_clean
    d = DHBE()
    assert (d.epochs, d.epoch_itrs, d.batch_size, d.student_steps, d.student_lr, d.backdoor_weight, d.patch_size, d.nz) == \
        (300, 50, 256, 5, 0.1, 0.1, 5, 256)
    assert (DHBE.preset("paper").student_steps, DHBE.preset("paper").batch_size) == (3, 128)
    # the generated images get the original's dataset constants where the image shape names the dataset
    assert DHBE().pixel_stats((28, 28, 1)) == ([0.1307], [0.3081], "MNIST")
    assert DHBE().pixel_stats((32, 32, 3))[2] == "CIFAR-10"
    assert DHBE().pixel_stats((55, 47, 3))[:2] == ([0.5], [0.25])
    assert DHBE(pixel_mean=0.2, pixel_std=0.1).pixel_stats((28, 28, 1)) == (0.2, 0.1, "given")
    with pytest.raises(ConfigError, match="position"):
        DHBE(position="pixel")
    with pytest.raises(ConfigError, match="decay_at"):
        DHBE(decay_at=(0.6, 1.2))
