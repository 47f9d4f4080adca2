"""The command line end to end: zoo, evaluate, defend and detect on a BadNet that is not in the zoo, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasbd.cli import main
from kerasbd.io import sha256_file


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
    assert main(["evaluate", "--model", str(f / "badnet.h5"), "--data", str(f / "clean.npz"), "--trigger", str(f / "trigger.json"),
                 "--out", str(out)]) == 0
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
        (["defend", "no-such-defense", "--model", "zoo:x", "--clean", "digits"], "invalid choice: 'no-such-defense'"),
        (["defend", "fine-pruning", "--model", "zoo:x", "--clean", "digits", "--set", "oops"], "key=value"),
    ],
)
def test_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err


def test_demo_quick_scans_both_models_repairs_the_flagged_and_tours_a_defense(tmp_path, capsys):
    assert main(["--verbose", "0", "demo", "--quick", "--defenses", "fine-pruning", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["badnet"]["clean_acc"] > 0.8 and report["badnet"]["asr"] > 0.5
    scans = {row["model"]: row for row in report["scans"]}
    assert list(scans) == ["clean", "backdoored"]
    for label, row in scans.items():
        saved = json.loads((tmp_path / f"scan-{label}" / "scan.json").read_text())
        assert row["P(backdoored)"] == saved["probability"] and 0 <= row["P(backdoored)"] <= 1  # calibrated: the shipped one
        assert row["verdict"] == ("backdoored" if saved["backdoored"] else "clean")
        # a flagged model is repaired with the repair its scan suggests, and the repair is measured
        assert (row["repair"] == saved["repair"] and row["asr_after"] is not None) if saved["backdoored"] else row["repair"] == "—"
        assert (tmp_path / f"repair-{label}").exists() == saved["backdoored"]
    assert scans["backdoored"]["P(backdoored)"] > scans["clean"]["P(backdoored)"]
    assert [r["defense"] for r in report["defenses"]] == ["none (BadNet)", "fine-pruning"]
    assert (tmp_path / "fine-pruning" / "result.json").exists() and (tmp_path / "demo.md").exists()


def test_inspect_without_trigger_writes_verdict_and_pictures(badnet_files, tmp_path, capsys):
    out = tmp_path / "inspect"
    args = ["--verbose", "0", "inspect", "neural-cleanse", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz"),
            "--set", "inversion__steps=60", "--set", "inversion__mini_batches=4", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["verdict"] in printed and result["backdoored"] and result["flagged"][0] == 0
    assert result["params"]["inversion"]["config"]["steps"] == 60
    assert {"reversed_triggers.png", "anomaly_index.png", "reversed_triggers.json"} <= {p.name for p in out.iterdir()}
    # the reversed trigger is a trigger spec: evaluate takes it
    assert main(["evaluate", "--model", str(badnet_files / "badnet.h5"), "--data", str(badnet_files / "clean.npz"),
                 "--trigger", str(out / "reversed_triggers.json")]) == 0


def test_cli_methods_come_from_the_registries_and_nested_set_errors_are_one_line(badnet_files, tmp_path, capsys):
    from kerasbd.cli import build_parser
    from kerasbd.defenses import DEFENSES, DETECTORS, INSPECTORS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command, registry in (("defend", DEFENSES), ("detect", DETECTORS), ("inspect", INSPECTORS)):
        method = next(a for a in sub[command]._actions if a.dest == "method")
        assert sorted(method.choices) == sorted(registry)
    base = ["defend", "neural-cleanse", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz")]
    assert main([*base, "--set", "inspector__steps=3"]) == 2
    assert "no parameter 'inspector__steps'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*base, "--out", str(tmp_path / "file" / "sub")]) == 2  # refused before any work
    assert "lies below" in capsys.readouterr().err


def _careless(badnet_files, tmp_path):
    """Inputs a careless user gives: each must end in one ``error:`` line naming the problem, before any work."""
    files = {"model": str(badnet_files / "badnet.h5"), "clean": str(badnet_files / "clean.npz")}
    x, y = np.load(badnet_files / "clean.npz")["x"], np.load(badnet_files / "clean.npz")["y"]
    np.savez(tmp_path / "soft.npz", x=x, y=np.full((len(y), 10), 0.1))  # 2-D labels that are not one-hot
    (tmp_path / "file").write_text("x")
    for name, trigger in {"frac": {"type": "patch", "size": 2.5}, "nan": {"type": "patch", "size": 3, "value": float("nan")},
                          "notimage": {"type": "image", "path": str(tmp_path / "file")},
                          "imagestr": {"type": "image", "image": str(tmp_path / "file")}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"trigger": trigger, "target": 0}).replace("NaN", "NaN"))
    return files


@pytest.mark.parametrize("extra, needle", [
    (["evaluate", "--data", "{clean}", "--batch-size", "-3"], "--batch-size: must be a positive whole number, got -3"),
    (["evaluate", "--data", "{clean}", "--batch-size", "0"], "--batch-size: must be a positive whole number, got 0"),
    (["evaluate", "--data", "{tmp}/soft.npz"], "2-D labels must be one-hot rows"),
    (["evaluate", "--data", "{clean}", "--trigger", "{tmp}/frac.json"], "patch size must be a whole number of pixels, got 2.5"),
    (["evaluate", "--data", "{clean}", "--trigger", "{tmp}/nan.json"], "contain NaN"),
    (["evaluate", "--data", "{clean}", "--trigger", "{tmp}/notimage.json"], "is not an image OpenCV can read"),
    (["evaluate", "--data", "{clean}", "--trigger", "{tmp}/imagestr.json"], "give the file"),
    (["evaluate", "--data", "{clean}", "--out", "{tmp}/file/eval.json"], "lies below"),
    (["defend", "fine-pruning", "--clean", "{clean}", "--set", "max_drop=lots"], "FinePruning: invalid configuration"),
    (["defend", "fine-pruning", "--clean", "{clean}", "--holdout", "1.5"], "--holdout: must be a fraction in [0, 1), got 1.5"),
    (["defend", "fine-pruning", "--clean", "{clean}", "--out", "{tmp}/file"], "is an existing file"),
    (["inspect", "neural-cleanse", "--clean", "{clean}", "--set", "inversion__steps=-1"], "steps must be a positive integer"),
])
def test_careless_inputs_get_one_line_errors_and_no_files(badnet_files, tmp_path, capsys, extra, needle):
    files = _careless(badnet_files, tmp_path)
    before = sha256_file(files["model"])
    argv = [a.format(clean=files["clean"], tmp=tmp_path) for a in extra]
    argv = [*argv[:1 + (argv[0] != "evaluate")], "--model", files["model"], *argv[1 + (argv[0] != "evaluate"):]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err and err.count("\n") == 1, err
    assert sha256_file(files["model"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "frac.json", "imagestr.json", "nan.json", "notimage.json", "soft.npz"]


def test_rerun_into_the_same_out_leaves_no_stale_files(badnet_files, tmp_path):
    out = tmp_path / "fp"
    base = ["--verbose", "0", "defend", "fine-pruning", "--model", str(badnet_files / "badnet.h5"), "--clean", str(badnet_files / "clean.npz")]
    assert main([*base, "--test", str(badnet_files / "clean.npz"), "--trigger", str(badnet_files / "trigger.json"), "--out", str(out)]) == 0
    (out / "stale.png").write_text("from an earlier run")
    assert main([*base, "--out", str(out)]) == 0
    assert not (out / "stale.png").exists() and (out / "result.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
