"""The model-repair recipes' shared loop: results written after every case, finished cases resumed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import _repair  # noqa: E402

from kerasbd.errors import ConfigError  # noqa: E402


class CountingDefense:
    """Stands in for a defense: records how often it runs; its "repair" lowers the ASR by ``drop``."""

    calls: list[tuple[str, int]] = []

    def __init__(self, drop: float = 0.5) -> None:
        self.drop = drop

    def get_config(self) -> dict:
        return {"drop": self.drop}

    def run(self, model, clean, *, eval_data, backdoors, seed, verbose):
        CountingDefense.calls.append((model, seed))
        return SimpleNamespace(metrics_before={"clean_acc": 0.9, "asr": 1.0},
                               metrics_after={"clean_acc": 0.9, "asr": 1.0 - self.drop}, details={"n": len(eval_data[0])})


def stage_rows(result) -> list[dict]:
    return [{"defense": "fake", "clean_acc": result.metrics_after["clean_acc"], "asr": result.metrics_after["asr"], "robust_acc": None}]


@pytest.fixture
def fake_cases(monkeypatch):
    import kerasbd.experiments as experiments

    data = (np.zeros((8, 4, 4, 1), np.float32), np.zeros(8, np.int64))
    monkeypatch.setattr(experiments, "mnist_split", lambda n_val, seed: (data, data))
    monkeypatch.setattr(_repair, "_cases", lambda which, seed: [(SimpleNamespace(name=n, classifier=n, backdoors=()), None, None)
                                                                for n in ("model_a", "model_b")])
    CountingDefense.calls = []


def _args(tmp_path: Path, **kw) -> argparse.Namespace:
    return argparse.Namespace(**{"seeds": [0, 1], "models": "all", "n_eval": None, "checkpoint_dir": str(tmp_path / "ck"), "restart": False, **kw})


def test_results_written_after_every_case_and_records_kept(fake_cases, tmp_path):
    seen = []
    rows, records = _repair.run_cases(_args(tmp_path), CountingDefense, stage_rows,
                                      record=lambda model, seed, result: {"n": result.details["n"]},
                                      write=lambda rows, records: seen.append(len(rows)))
    assert seen == [1, 2, 3, 4]
    assert [(r["model"], r["seed"], r["asr"], r["der"]) for r in rows][:2] == [("model_a", 0, 0.5, 0.75), ("model_b", 0, 0.5, 0.75)]
    assert records == [{"model": m, "seed": s, "n": 8} for s in (0, 1) for m in ("model_a", "model_b")]


def test_rerun_takes_finished_cases_from_the_checkpoint_dir(fake_cases, tmp_path):
    first, first_records = _repair.run_cases(_args(tmp_path, seeds=[0]), CountingDefense, stage_rows, record=lambda m, s, r: {"m": m})
    assert CountingDefense.calls == [("model_a", 0), ("model_b", 0)]
    # a stopped run: seed 0 finished, seed 1 not yet run
    again, records = _repair.run_cases(_args(tmp_path), CountingDefense, stage_rows, record=lambda m, s, r: {"m": m})
    assert CountingDefense.calls[2:] == [("model_a", 1), ("model_b", 1)]
    assert again[:2] == first and records[:2] == first_records


def test_checkpoint_from_other_settings_is_refused(fake_cases, tmp_path):
    _repair.run_cases(_args(tmp_path, seeds=[0]), CountingDefense, stage_rows)
    with pytest.raises(ConfigError, match=r"another run; it differs in: defense\.drop \(saved .*, now 0\.9\).*--restart"):
        _repair.run_cases(_args(tmp_path, seeds=[0]), lambda: CountingDefense(drop=0.9), stage_rows)
    args = _args(tmp_path, seeds=[0])
    args.restart = True  # an explicit restart discards the other run's cases
    rows, _ = _repair.run_cases(args, lambda: CountingDefense(drop=0.9), stage_rows)
    assert len(rows) == 2


def test_unreadable_checkpoint_names_the_file(fake_cases, tmp_path):
    _repair.run_cases(_args(tmp_path, seeds=[0]), CountingDefense, stage_rows)
    path = tmp_path / "ck" / "model_a_seed0.json"
    path.write_text(path.read_text()[:20])
    with pytest.raises(ConfigError, match="model_a_seed0.json cannot be read"):
        _repair.run_cases(_args(tmp_path, seeds=[0]), CountingDefense, stage_rows)
    assert json.loads((tmp_path / "ck" / "model_b_seed0.json").read_text())["rows"][0]["model"] == "model_b"


def test_without_checkpoint_dir_every_case_runs(fake_cases, tmp_path):
    for _ in range(2):
        _repair.run_cases(_args(tmp_path, seeds=[0], checkpoint_dir=""), CountingDefense, stage_rows)
    assert len(CountingDefense.calls) == 4 and not (tmp_path / "ck").exists()


# --- recipes/scan_population.py: the seeded population of clean and backdoored MNIST models ---------------------------


def test_scan_population_is_deterministic_balanced_and_every_spec_parses():
    from collections import Counter

    import scan_population as sp

    from kerasbd.attacks import from_spec

    pop = sp.population(64, 0)
    assert pop == sp.population(64, 0) and pop != sp.population(64, 1)
    assert sp.population(10, 0) == pop[:10]  # a member depends on (seed, index) only
    assert len({m["name"] for m in pop}) == 64 and 28 <= Counter(m["role"] for m in pop)["clean"] <= 36
    bad = [m for m in pop if m["role"] == "backdoored"]
    for half in ("calibration", "held-out"):
        assert {m["attack"] for m in bad if m["half"] == half} == set(sp.ATTACKS)
    assert Counter(m["half"] for m in pop if m["role"] == "clean") == {"calibration": 16, "held-out": 16}
    # clean members mirror the backdoored ones' architectures and epochs: the backdoor is the only difference
    assert Counter((m["arch"], m["epochs"]) for m in bad) == Counter((m["arch"], m["epochs"]) for m in pop if m["role"] == "clean")
    for m in bad:
        [bd] = from_spec(sp.backdoor_spec(m))
        bd.trigger.check_fits((28, 28, 1))
        assert (bd.target.map(np.arange(10), 10) != np.arange(10)).sum() >= 9 and 0.05 <= m["rate"] <= 0.2
        assert bd.target.to_spec()["type"] == ("all-to-all" if m["attack"] == "all-to-all" else "all-to-one")
    assert all(sp.backdoor_spec(m) is None and m["trigger"] is None for m in pop if m["role"] == "clean")


def test_scan_population_trains_a_member_writes_its_row_and_skips_it_on_rerun(zoo_dir, tmp_path, monkeypatch, capsys):
    import scan_population as sp

    from kerasbd.attacks import load_spec

    name = next(m["name"] for m in sp.population(64, 0) if m["arch"] == "mlp" and m["role"] == "backdoored")
    argv = ["train", "--work", str(tmp_path), "--only", name, "--epochs", "1", "--n-train", "600"]
    assert sp.main(argv) == 0
    [row] = json.loads((tmp_path / "manifest.json").read_text())["members"]
    assert row["name"] == name and row["epochs"] == 1 and row["n_train"] == 600 and row["role"] == "backdoored"
    assert 0 <= row["asr"] <= 1 and row["weak"] == (row["asr"] < 0.8) and row["clean_acc"] > 0.5
    assert (tmp_path / row["model"]).is_file() and not list((tmp_path / "models" / name).glob(".*"))  # no temp file left
    assert load_spec(tmp_path / row["trigger_file"]).backdoors[0].name == name
    with np.load(tmp_path / "test.npz") as test, np.load(tmp_path / "clean.npz") as clean:
        assert test["x"].shape == (3000, 28, 28, 1) and test["x"].dtype == np.uint8 and len(clean["y"]) == 1000

    def fail(*args, **kwargs):
        raise AssertionError("a finished member was retrained")

    monkeypatch.setattr(sp, "train_member", fail)
    assert sp.main(argv) == 0
    assert sp.main(["list", "--work", str(tmp_path)]) == 0
    assert f"| {name} | backdoored |" in capsys.readouterr().out


def test_scan_population_calibrates_on_one_half_and_reports_the_other():
    import scan_population as sp

    from kerasbd.scan import FEATURES

    pop = sp.population(64, 0)
    members = {m["name"]: m for m in pop}
    rng = np.random.default_rng(0)
    names = [f for n in FEATURES for f in FEATURES[n]]
    rows = []
    for m in pop:
        bad = m["role"] == "backdoored"
        # Neural Cleanse's index separates the roles except for blend triggers; the other statistics are noise
        shift = 3.0 if bad and m["attack"] != "blend" else 0.0
        feats = {f: float(rng.normal()) for f in names} | {"nc_index": shift + float(rng.normal(0, 0.5))}
        target = (m.get("target") or {}).get("label")
        rows.append({"name": m["name"], "features": feats, "seconds": 10.0, "targets": [target] if target is not None else [1]})
    cal = sp.calibrate(rows, members, list(FEATURES), "test population")
    half = [m for m in pop if m["half"] == "calibration"]
    assert cal.n_models == len(half) and cal.n_backdoored == sum(m["role"] == "backdoored" for m in half) and cal.features == names
    report = sp.held_out_report(rows, members, cal)
    assert report["n"] == 64 - len(half) and report["n_backdoored"] == 32 - cal.n_backdoored and report["seconds_per_model"] == 10.0
    assert 0.8 < report["roc_auc"] < 1.0 and report["per_attack"]["blend"]["roc_auc"] < report["per_attack"]["patch"]["roc_auc"] == 1.0
    assert report["target_accuracy"] == 1.0 and 0.0 < report["tpr_at_5_fpr"] <= 1.0 and report["cross_entropy"] > 0
    only_di = sp.held_out_report(rows, members, sp.calibrate(rows, members, ["deepinspect"], "test population"))
    assert only_di["roc_auc"] < report["roc_auc"]  # noise statistics alone separate nothing
