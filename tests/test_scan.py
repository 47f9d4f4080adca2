"""kerasbd scan: the calibration arithmetic, the statistics read from each inspector, the combined verdict and its
report, the resume rule, and a 3-model scan on a local Ray with 2 CPUs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasbd.errors import ConfigError
from kerasbd.reporting import InspectionResult
from kerasbd.scan import FEATURES, Calibration, Scanner, ScanResult, features_of, suspect_label

TINY = {"neural-cleanse": {"inversion__steps": 3, "inversion__mini_batches": 2},
        "gangsweep": {"epochs": 1, "sample_size": 3, "blocks": 1},
        "deepinspect": {"epochs": 1, "inversion__per_class": 4, "inversion__steps": 3, "eval_noise": 2, "filters": 8, "embed_dim": 8}}


def _inspection(method: str, labels=(0, 1, 2, 3), flagged=(), score=0.0, **arrays) -> InspectionResult:
    from kerasbd.attacks import AdditivePerturbation, AllToOne, Backdoor

    masks = np.zeros((len(labels), 8, 8, 1), np.float32)
    triggers = {lab: Backdoor(AdditivePerturbation(masks[i] + 0.1), AllToOne(lab)) for i, lab in enumerate(labels)}
    return InspectionResult(method, labels=list(labels), flagged=list(flagged), score=score, threshold=2.0, triggers=triggers,
                            arrays={"labels": np.asarray(labels), "masks": masks, **{k: np.asarray(v, np.float64) for k, v in arrays.items()}})


def test_calibration_is_the_logistic_regression_it_was_fitted_as():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(2, 1, (30, 2))])
    y = np.repeat([0, 1], 30)
    rows = [{"a": a, "b": b} for a, b in x]
    cal = Calibration.fit(rows, y, ["a", "b"], population="test", budget="fast")
    z = (x - x.mean(0)) / x.std(0)
    expected = LogisticRegression(C=1.0).fit(z, y).predict_proba(z)[:, 1]
    assert np.allclose(cal.probabilities(rows), expected, atol=1e-9)
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal and cal.n_models == 60 and cal.n_backdoored == 30
    assert "60 models (30 backdoored) of test" in cal.describe()
    with pytest.raises(ConfigError, match="lack b"):
        cal.probability({"a": 1.0})
    with pytest.raises(ConfigError, match="both classes"):
        Calibration.fit(rows[:5], [0] * 5, ["a", "b"], population="test")
    with pytest.raises(ConfigError, match="unknown calibration keys"):
        Calibration.from_dict({**cal.to_dict(), "extra": 1})


def test_statistics_and_suspects_of_each_inspector():
    nc = _inspection("neural-cleanse", score=float("inf"), l1_norms=[10.0, 2.5, 10.0, 12.0])
    assert features_of(nc) == {"nc_index": 20.0, "nc_log_ratio": pytest.approx(np.log(10.0 / 2.5))} and suspect_label(nc) == 1
    gs = _inspection("gangsweep", flagged=[3], score=5.0, persistence=[0.1, 0.95, 0.2, 0.99], anomaly_index=[0, 1, 0, 5])
    assert features_of(gs) == {"gs_persistence": 0.99, "gs_index": 5.0} and suspect_label(gs) == 3
    unflagged = _inspection("gangsweep", persistence=[0.1, 0.95, 0.2, 0.95], anomaly_index=[0, 1, 0, 1.5])
    assert suspect_label(unflagged) == 3  # equal persistence: the larger anomaly index
    di = _inspection("deepinspect", score=-1.0, magnitude=[5.0, 5.0, 1.0, 5.0])
    assert features_of(di)["di_deviation"] == 0.0 and suspect_label(di) == 2
    assert set(FEATURES) == {"neural-cleanse", "gangsweep", "deepinspect"}


def test_combined_verdict_targets_repair_and_report(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nc = _inspection("neural-cleanse", flagged=[1], score=4.0, l1_norms=[10.0, 2.0, 10.0, 11.0])
    gs = _inspection("gangsweep", flagged=[1], score=3.0, persistence=[0.1, 0.97, 0.2, 0.3], anomaly_index=[0, 3, 0, 0])
    di = _inspection("deepinspect", score=0.5, magnitude=[5.0, 4.0, 1.0, 5.0])
    fig = plt.figure()
    plt.plot([0, 1])
    nc.figures = {"anomaly_index": fig}
    inspections = {"neural-cleanse": nc, "gangsweep": gs, "deepinspect": di}
    features = {k: v for r in inspections.values() for k, v in features_of(r).items()}
    names = [f for n in FEATURES for f in FEATURES[n]]
    low = {f: 0.0 for f in names}
    cal = Calibration.fit([low, {**low, "nc_index": 1.0}, features, {**features, "nc_index": 3.0}], [0, 0, 1, 1], names, population="unit test")
    result = ScanResult.combine("m", inspections, cal, seed=3, seconds=1.5)
    assert result.probability == pytest.approx(cal.probability(features)) and result.probability > 0.5 and result.backdoored
    assert result.targets == [1] and result.repair == "neural-cleanse"  # two inspectors flag 1; DeepInspect's suspect 2 flags nothing
    assert "suspected target label(s) 1" in result.verdict() and "kerasbd defend neural-cleanse" in result.verdict()
    d = result.to_dict()
    assert d["probability"] == result.probability and d["targets"] == [1] and len(d["inspectors"]) == 3
    assert d["reversed_triggers"]["neural-cleanse"]["backdoors"][0]["target"]["label"] == 1
    out = result.save(tmp_path / "scan")
    assert {"scan.json", "scan.md", "scan.html", "neural-cleanse", "gangsweep", "deepinspect"} <= {p.name for p in out.iterdir()}
    page = (out / "scan.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("<!DOCTYPE html>", "")  # offline: nothing fetched
    assert result.verdict() in (out / "scan.md").read_text()

    uncalibrated = ScanResult.combine("m", {"deepinspect": di}, None)
    assert uncalibrated.probability is None and not uncalibrated.backdoored and "uncalibrated" in uncalibrated.verdict()
    only_di = ScanResult.combine("m", {"deepinspect": _inspection("deepinspect", score=1.0, magnitude=[5.0, 5.0, 1.0, 5.0])},
                                 Calibration([*FEATURES["deepinspect"]], [0, 0], [1, 1], [5.0, 0.0], 0.0))
    assert only_di.backdoored and only_di.targets == [2] and only_di.repair == "nnoculation-pre"  # suspected, not flagged


def test_scanner_configuration_and_the_calibration_it_takes(tmp_path):
    assert Scanner().inspectors_for(clean=True) == list(FEATURES) and Scanner().inspectors_for(clean=False) == ["deepinspect"]
    with pytest.raises(ConfigError, match="runs without clean data"):
        Scanner(inspectors=["neural-cleanse"]).inspectors_for(clean=False)
    with pytest.raises(ConfigError, match="budget"):
        Scanner(budget="huge")
    with pytest.raises(ConfigError, match="inspectors must be among"):
        Scanner(inspectors=["strip"])
    assert Scanner(params={"gangsweep": {"epochs": 2}}).calibration_for(["gangsweep"]) is None  # other settings: uncalibrated
    assert Scanner.from_config(Scanner(budget="full").get_config()).budget == "full"
    cal = Calibration(["di_deviation", "di_log_ratio"], [0, 0], [1, 1], [1, 1], 0.0, population="file")
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_dict()))
    assert Scanner(calibration=str(path)).calibration_for(["deepinspect"]) == cal
    with pytest.raises(ConfigError, match="reads"):
        Scanner(calibration=str(path)).calibration_for(["neural-cleanse"])
    fast = Scanner().build("gangsweep", np.zeros((10, 28, 28, 1), np.float32))
    assert fast.epochs == 5 and Scanner(budget="full").build("gangsweep", np.zeros((10, 28, 28, 1), np.float32)).epochs == 10
    # the fast scan keeps the Eq. 4 settings its shipped calibration was fitted with, whatever the auto preset says
    assert (fast.alpha_rule, fast.alpha_every, fast.logits, fast.variance, fast.further_triggers) == ("multiplicative", "step", "raw", "per-logit", 0)
    # the default scans (with and without clean data) are calibrated by the shipped file, which names its population
    for clean in (True, False):
        shipped = Scanner().calibration_for(Scanner().inspectors_for(clean))
        assert shipped is not None and shipped.budget == "fast" and shipped.n_models >= 30 and "scan_population" in shipped.population
    assert Scanner(budget="full").calibration_for(list(FEATURES)) is None  # not fitted for the full budget: uncalibrated


def test_the_fast_budget_gives_the_inspectors_a_seeded_subset_of_the_clean_data():
    from kerasbd.scan.scanner import _limited

    x, y = np.arange(1000, dtype=np.float32).reshape(1000, 1, 1, 1), np.arange(1000) % 10
    xs, ys = _limited((x, y), 300, seed=0)
    assert len(xs) == 300 and np.array_equal(ys, xs[:, 0, 0, 0].astype(int) % 10)  # images keep their labels
    assert np.array_equal(_limited((x, y), 300, seed=0)[0], xs) and not np.array_equal(_limited((x, y), 300, seed=1)[0], xs)
    assert _limited(x, 300, seed=0).shape == (300, 1, 1, 1) and _limited((x, y), None, seed=0)[0] is x


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny 8×8 digit classifiers (one with a 2×2 patch backdoor) and the defender's clean set."""
    import keras

    from kerasbd.attacks import Backdoor, Patch, train_badnet
    from kerasbd.data import load_digits
    from kerasbd.training import fit_classifier

    folder = tmp_path_factory.mktemp("tiny")
    x, y = load_digits(8)
    paths = []
    for name, backdoored in (("clean", False), ("badnet", True)):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
        if backdoored:
            train_badnet(net, x[:1200], y[:1200], Backdoor(Patch(2), 0), epochs=3, batch_size=64)
        else:
            fit_classifier(net, x[:1200], y[:1200], epochs=3, batch_size=64)
        (folder / name).mkdir()
        net.save(folder / name / "model.keras")
        paths.append(str(folder / name / "model.keras"))
    np.savez(folder / "clean.npz", x=np.round(x[1200:1500] * 255).astype(np.uint8), y=y[1200:1500])
    return paths, str(folder / "clean.npz"), folder


def test_one_model_through_the_cli(tiny_models, tmp_path, capsys):
    from kerasbd.cli import main

    (clean_model, _), clean, _ = tiny_models
    sets = [f"--set={n}.{k}={v}" for n, kv in TINY.items() for k, v in kv.items()]
    assert main(["scan", clean_model, "--clean", clean, "--out", str(tmp_path / "one"), *sets]) == 0
    out = capsys.readouterr().out
    assert "scan clean: " in out and "uncalibrated" in out  # --set changes the statistics: no shipped calibration applies
    saved = json.loads((tmp_path / "one" / "scan.json").read_text())
    assert [row["inspector"] for row in saved["inspectors"]] == list(FEATURES)
    assert set(saved["features"]) == {f for n in FEATURES for f in FEATURES[n]}
    assert main(["scan", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_three_models_on_a_local_ray_with_two_cpus_record_failures_and_resume(tiny_models, tmp_path):
    ray = pytest.importorskip("ray")
    from kerasbd.scan import scan_many, start_ray

    (clean_model, badnet), clean, folder = tiny_models
    broken = folder / "broken.keras"
    broken.write_bytes(b"not a model")
    scanner = Scanner(params=TINY)
    try:
        start_ray(2, verbose=0)
        rows = scan_many([clean_model, badnet, str(broken)], tmp_path / "scan", clean=clean, scanner=scanner, workers=2, verbose=0)
        assert [r["name"] for r in rows] == ["clean", "badnet", "broken"]
        assert [r["status"] for r in rows] == ["ok", "ok", "failed"] and rows[2]["reason"]
        assert all(set(r["features"]) == {f for n in FEATURES for f in FEATURES[n]} for r in rows[:2])
        first = (tmp_path / "scan" / "badnet" / "scan.json").stat().st_mtime_ns
        summary = json.loads((tmp_path / "scan" / "summary.json").read_text())
        assert [m["status"] for m in summary["models"]] == ["ok", "ok", "failed"]
        assert "2 of 3 models scanned" in (tmp_path / "scan" / "summary.md").read_text()

        again = scan_many([clean_model, badnet, str(broken)], tmp_path / "scan", clean=clean, scanner=scanner, workers=2, verbose=0)
        assert [r["reason"].startswith("resumed") for r in again] == [True, True, False] and again[2]["status"] == "failed"
        assert (tmp_path / "scan" / "badnet" / "scan.json").stat().st_mtime_ns == first  # finished models are not rescanned
    finally:
        ray.shutdown()
    with pytest.raises(ConfigError, match="same folder"):
        scan_many([clean_model, clean_model], tmp_path / "dupe")
