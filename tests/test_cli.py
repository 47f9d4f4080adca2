"""The command line end to end: zoo, evaluate, defend and detect on a BadNet that is not in the zoo, errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasbd.cli import main
from kerasbd.io import sha256_file
from kerasbd.models import as_logits_model

SPEC = {
    "name": "corner",
    "trigger": {"type": "patch", "size": [3, 3], "position": "bottom-right", "value": 1.0},
    "target": {"type": "all-to-one", "label": 0},
}


@pytest.fixture(scope="module")
def badnet_files(tmp_path_factory):
    """A tiny digits BadNet saved as a legacy-style .h5 full model, its clean data as .npz, its trigger spec."""
    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.data import load_digits, split_defender

    out = tmp_path_factory.mktemp("cli")
    x, y = load_digits(size=12)
    (x_clean, y_clean), (x_train, y_train) = split_defender(x, y, val_fraction=0.3, seed=0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    logits = as_logits_model(model)  # shares weights: training it trains the softmax model that is saved
    train_badnet(logits, x_train, y_train, from_spec(SPEC), rate=0.1, epochs=8, batch_size=32, seed=0)
    model.save(out / "badnet.h5")
    np.savez(out / "clean.npz", x=x_clean, y=y_clean)
    (out / "trigger.json").write_text(json.dumps(SPEC))
    return out


def test_zoo_list_and_verify(zoo_dir, capsys):
    assert main(["zoo", "list"]) == 0
    assert "dillonsd_pattern_all_to_one" in capsys.readouterr().out
    assert main(["zoo", "verify", "dillonsd_pattern_all_to_one"]) == 0
    assert main(["zoo", "info", "ruizegao_mnist_backdoor_7"]) == 0
    assert '"label": 7' in capsys.readouterr().out


def test_evaluate_zoo_model_on_real_mnist(zoo_dir, tmp_path, capsys):
    spec = tmp_path / "t.json"
    from kerasbd import zoo

    spec.write_text(json.dumps(zoo.get_entry("dillonsd_pattern_all_to_one")["backdoors"][0]))
    data = zoo.entry_path("mnist_test")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", "zoo:dillonsd_pattern_all_to_one", "--data", str(data), "--trigger", str(spec), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert abs(metrics["clean_acc"] - 0.9934) < 0.001 and abs(metrics["asr"] - 0.9999) < 0.001


def test_evaluate_and_defend_non_zoo_badnet(badnet_files, tmp_path, capsys):
    f = badnet_files
    before = sha256_file(f / "badnet.h5")
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(f / "badnet.h5"), "--data", str(f / "clean.npz"), "--trigger", str(f / "trigger.json"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["asr"] > 0.8 and metrics["clean_acc"] > 0.7

    res = tmp_path / "fp"
    code = main(["--verbose", "0", "defend", "fine-pruning", "--model", str(f / "badnet.h5"), "--clean", str(f / "clean.npz"),
                 "--holdout", "0.5", "--trigger", str(f / "trigger.json"), "--out", str(res)])
    assert code == 0
    result = json.loads((res / "result.json").read_text())
    assert result["method"] == "fine-pruning" and result["metrics_before"]["asr"] > 0.5
    assert (res / "model.keras").exists()
    assert sha256_file(f / "badnet.h5") == before, "an input file was modified"


def test_detect_strip_reports_detection(badnet_files, tmp_path, capsys):
    f = badnet_files
    out = tmp_path / "det.json"
    code = main(["detect", "strip", "--model", str(f / "badnet.h5"), "--clean", str(f / "clean.npz"), "--inputs", str(f / "clean.npz"),
                 "--trigger", str(f / "trigger.json"), "--set", "n_overlays=20", "--fpr", "0.05", "--out", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())["summary"]
    assert 0.0 <= summary["fpr"] <= 0.2 and summary["auc"] > 0.5


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["evaluate", "--model", "/nonexistent/model.h5", "--data", "digits"], "no such file"),
        (["defend", "no-such-defense", "--model", "zoo:x", "--clean", "digits"], "unknown defense"),
        (["defend", "fine-pruning", "--model", "zoo:x", "--clean", "digits", "--set", "oops"], "key=value"),
    ],
)
def test_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err


def test_demo_quick_reports_badnet_and_defense(tmp_path, capsys):
    assert main(["--verbose", "0", "demo", "--quick", "--defenses", "fine-pruning", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["badnet"]["clean_acc"] > 0.8 and report["badnet"]["asr"] > 0.5
    assert [r["defense"] for r in report["defenses"]] == ["none (BadNet)", "fine-pruning"]
    assert (tmp_path / "fine-pruning" / "result.json").exists() and (tmp_path / "demo.md").exists()
