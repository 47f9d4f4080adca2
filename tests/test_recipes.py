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
