"""The command line as a new user meets it: presets chosen by the data and reachable by name, nested ``--set``,
the verdict on stdout and in ``result.md``, detector reports with named ground truth, a wrong input range
refused, and no TensorFlow start-up or epoch lines at the default verbosity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasbd.cli import main
from kerasbd.defenses.base import ScaleWarning

ROOT = Path(__file__).resolve().parents[1]


def _train_digits_model(x: np.ndarray, y: np.ndarray, scale: float) -> keras.Model:
    """A small clean softmax CNN on 12×12 digits fed ``x * scale`` (scale 255: a raw-pixel model, whose first
    layer divides by 255 inside the saved file)."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Rescaling(1.0 / scale), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x * scale, y, epochs=15, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def clean_files(badnet_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean model and a raw-pixel (0-255) clean model trained on the digits the BadNet was trained on."""
    from kerasbd.data import load_digits, split_defender

    out = tmp_path_factory.mktemp("clean_models")
    x, y = load_digits(size=12)
    _, (x_train, y_train) = split_defender(x, y, val_fraction=0.3, seed=0)
    _train_digits_model(x_train, y_train, 1.0).save(out / "clean.keras")
    _train_digits_model(x_train, y_train, 255.0).save(out / "raw.keras")
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_presets_are_chosen_by_the_data_reachable_by_name_and_printed(badnet_files, tmp_path, capsys):
    base = ["defend", "gym", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz"), "--set", "rounds=1"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    out = capsys.readouterr()
    assert "settings: gym preset small-images" in out.out and "warning:" not in out.err
    auto = _json(tmp_path / "auto" / "result.json")
    assert auto["details"]["preset"]["name"] == "small-images" and auto["params"]["optimizer"] == "adam"
    assert auto["params"]["rounds"] == 1  # --set on top of the preset

    with pytest.warns(ScaleWarning, match=r"gym: 5×5 medians .* --preset small-images uses 3×3"):  # names the setting and the fix
        assert main([*base, "--preset", "original", "--out", str(tmp_path / "original")]) == 0
    assert "settings: gym preset original: the original constants — chosen by name" in capsys.readouterr().out
    original = _json(tmp_path / "original" / "result.json")
    assert original["details"]["preset"]["name"] == "original"
    assert (original["params"]["optimizer"], original["params"]["batch_size"]) == ("adadelta", 10)
    assert "**Warning:** gym: 5×5 medians" in (tmp_path / "original" / "result.md").read_text()

    assert main([*base, "--preset", "mnist"]) == 2
    assert "--preset 'mnist' is not a preset of gym; choose one of" in capsys.readouterr().err


def test_nested_and_structured_set_values_reach_the_pipelines(badnet_files, tmp_path, capsys):
    lightweight = json.dumps({"class_name": "GYMLightweight", "config": {"median_ksize": 5, "sat_shift": 0.02}})
    argv = ["defend", "gym", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz"), "--set", "rounds=1",
            "--set", "intensive__median_ksize=5", "--set", f"lightweight={lightweight}", "--out", str(tmp_path / "gym")]
    with pytest.warns(ScaleWarning, match="5×5 medians"):  # asked for, so warned about, and applied
        assert main(argv) == 0
    assert "intensive__median_ksize=5" in capsys.readouterr().out
    params = _json(tmp_path / "gym" / "result.json")["params"]
    assert params["intensive"]["config"]["median_ksize"] == 5
    assert params["intensive"]["config"]["variant"] == "paper"  # the rest of the small-images preset is kept
    assert params["lightweight"]["class_name"] == "GYMLightweight"
    assert (params["lightweight"]["config"]["median_ksize"], params["lightweight"]["config"]["sat_shift"]) == (5, 0.02)


NC_FAST = ["--set", "inversion__steps=60", "--set", "inversion__mini_batches=4"]


def test_inspection_verdict_with_its_facts_on_stdout_and_in_markdown(badnet_files, tmp_path, capsys):
    out = tmp_path / "nc"
    assert main(["inspect", "neural-cleanse", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz"),
                 *NC_FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    verdict = _json(out / "result.json")["verdict"]
    assert verdict.startswith("neural-cleanse: backdoored — label(s) 0 flagged")
    assert "max_low_index" in verdict and "null_flag_rate" in verdict
    assert verdict in printed.splitlines() and verdict in (out / "result.md").read_text()


def test_defense_says_it_returned_a_clean_model_unchanged(badnet_files, clean_files, tmp_path, capsys):
    out = tmp_path / "nc"
    assert main(["defend", "neural-cleanse", "--model", str(clean_files / "clean.keras"), "--clean", str(badnet_files / "clean.npz"),
                 *[s.replace("inversion", "inspector__inversion") for s in NC_FAST], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    verdict = _json(out / "result.json")["verdict"]
    assert "no backdoor found" in verdict and verdict.endswith("no label flagged: the model is returned unchanged")
    assert verdict in printed.splitlines() and f"**Verdict:** {verdict}" in (out / "result.md").read_text()


def _mixed_inputs(badnet_files: Path, path: Path, *, mark: bool) -> tuple[int, int]:
    """120 clean digits and triggered copies of 80 others (label ≠ target) in one file; (n_clean, n_triggered)."""
    from kerasbd.attacks import load_spec

    data = np.load(badnet_files / "clean.npz")
    x, y = data["x"], data["y"]
    backdoor = load_spec(badnet_files / "trigger.json").backdoors[0]
    others = np.flatnonzero(backdoor.target.eligible(y))[120:200]
    mixed_x = np.concatenate([x[:120], backdoor.trigger.apply(x[others], rng=0)])
    mixed_y = np.concatenate([y[:120], y[others]])
    flags = np.r_[np.zeros(120, bool), np.ones(len(others), bool)]
    np.savez(path, x=mixed_x, y=mixed_y, **({"triggered": flags} if mark else {}))
    return 120, len(others)


def test_detect_on_a_mix_reports_rates_on_the_marked_triggered_inputs(badnet_files, tmp_path, capsys):
    n_clean, n_triggered = _mixed_inputs(badnet_files, tmp_path / "mixed.npz", mark=True)
    base = ["detect", "strip", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz"),
            "--set", "n_overlays=20", "--fpr", "0.05"]
    assert main([*base, "--inputs", str(tmp_path / "mixed.npz"), "--trigger", str(badnet_files / "trigger.json"),
                 "--out", str(tmp_path / "det.json")]) == 0
    printed = capsys.readouterr().out
    result = _json(tmp_path / "det.json")
    summary = result["summary"]
    assert (summary["n_clean"], summary["n_triggered"]) == (n_clean, n_triggered)
    assert result["ground_truth"] == "the 'triggered' array of --inputs" and "ground truth: the 'triggered' array" in printed
    assert summary["tpr"] > 0.5 and summary["fpr"] < 0.2 and summary["tpr_eligible"] == summary["tpr"]  # all copies are eligible
    assert result["verdict"] in printed and f"on the {n_triggered} triggered" in result["verdict"]

    # the same mix without its flags, taken as clean: the run warns that the "clean" inputs are flagged far above the FPR
    _mixed_inputs(badnet_files, tmp_path / "unmarked.npz", mark=False)
    assert main([*base, "--inputs", str(tmp_path / "unmarked.npz"), "--trigger", str(badnet_files / "trigger.json")]) == 0
    captured = capsys.readouterr()
    assert "--inputs taken as clean" in captured.out and "may already hold triggered images" in captured.err

    # no ground truth at all: flagged counts only, and the report says so
    assert main([*base, "--inputs", str(tmp_path / "unmarked.npz")]) == 0
    assert "ground truth: unknown" in capsys.readouterr().out


def test_a_wrong_input_range_is_refused_with_the_option_to_fix_it(badnet_files, clean_files, tmp_path, capsys):
    base = ["evaluate", "--model", str(clean_files / "raw.keras"), "--data", str(badnet_files / "clean.npz")]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "pass --input-range 0-255" in err and err.count("\n") == 1
    assert main([*base, "--input-range", "0-255", "--out", str(tmp_path / "eval.json")]) == 0
    assert _json(tmp_path / "eval.json")["metrics"]["clean_acc"] > 0.8
    # the same check guards the defenses, before any work
    assert main(["defend", "gym", "--model", str(clean_files / "raw.keras"), "--clean", str(badnet_files / "clean.npz"),
                 "--out", str(tmp_path / "gym")]) == 2
    assert "--input-range 0-255" in capsys.readouterr().err and not (tmp_path / "gym").exists()


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # what a user's shell has
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "kerasbd", *args], env=env, capture_output=True, text=True, timeout=600)


def test_default_output_has_no_tensorflow_start_up_and_no_epoch_lines(badnet_files, tmp_path):
    argv = ["defend", "gym", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz"), "--set", "rounds=2"]
    quiet = _cli([*argv, "--out", str(tmp_path / "quiet")])
    assert quiet.returncode == 0, quiet.stderr
    for noise in ("oneDNN", "absl", "cuda", "I0000", "W0000", "tensorflow/"):
        assert noise not in quiet.stderr, f"TensorFlow start-up line on stderr: {quiet.stderr}"
    assert "Epoch" not in quiet.stdout + quiet.stderr and "step" not in quiet.stdout
    assert quiet.stdout.splitlines()[0].startswith("settings: gym preset small-images")
    assert "Epoch" not in (tmp_path / "quiet" / "result.md").read_text()
    # the defended model (its preprocessing a kerasbd layer, its fine-tuned core compiled) loads safely in a fresh process
    reloaded = _cli(["evaluate", "--model", str(tmp_path / "quiet" / "model.keras"), "--data", str(badnet_files / "clean.npz")])
    assert reloaded.returncode == 0 and "clean_acc" in reloaded.stdout, reloaded.stderr
    # asked for after the subcommand, the epoch lines come (so the check above can fail); warnings are one line each
    loud = _cli([*argv, "--preset", "original", "-v", "2"])
    assert loud.returncode == 0 and "Epoch 1/2" in loud.stdout
    assert "warning: gym: 5×5 medians (sized for 224×224 faces) on 12×12 images erase detail; --preset small-images uses 3×3\n" in loud.stderr
