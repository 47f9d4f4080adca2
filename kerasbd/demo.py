"""``kerasbd demo``: the main job on the embedded default data, in a few minutes on two CPU cores.

scikit-learn's bundled digits (1,797 images, upscaled to MNIST's 28×28) are split into an attacker's training set,
a defender's small clean validation set and a held-out test set. Two LeNet-5 models are trained on the same
split: a clean one and a BadNet whose 3×3 white patch in the bottom-right corner sends every digit to 0. The demo
asks of each what a user asks of a downloaded model — can I trust it? — with :class:`kerasbd.scan.Scanner`
(Neural Cleanse, GangSweep and DeepInspect on the defender's clean images, one calibrated verdict), prints both
verdicts, repairs every model the scan flags with the repair it suggests, and reports clean accuracy and attack
success rate before and after on the held-out split. ``--defenses`` adds the tour of every registered defense and
input detector on the BadNet; ``--quick`` (a smoke run) trains 10 epochs instead of 30 and scans with DeepInspect
alone. Everything goes to ``demo.json``, ``demo.md`` and one folder per scan and defense
under ``--out``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasbd.errors import ConfigError

__all__ = ["DigitsBadNet", "digits_badnet", "demo_defense", "run_demo", "DEMO_TRIGGER_SPEC"]

DEMO_TRIGGER_SPEC: dict[str, Any] = {
    "name": "digits-patch",
    "trigger": {"type": "patch", "size": [3, 3], "position": "bottom-right", "margin": 0, "value": 1.0},
    "target": {"type": "all-to-one", "label": 0},
}

# Smaller budgets for the tour's defenses under --quick (a smoke run). Otherwise every defense runs with the CLI's
# default, the "auto" preset: on the demo's ~360 clean 28×28 images GYM takes its "small-images" settings and
# NNoculation batches of 32 (the original's ~18 steps per epoch).
_QUICK: dict[str, dict[str, Any]] = {
    "gym": {"rounds": 10},
    "nnoculation-pre": {"learning_rates": [1.0, 3.0], "noise_fractions": [0.2, 0.4], "epochs": 3},
    "neural-cleanse": {"inspector__inversion__steps": 20, "inspector__inversion__mini_batches": 8},
    "gangsweep": {"inspector__epochs": 2, "inspector__sample_size": 5},
    "dhbe": {"epochs": 2, "epoch_itrs": 5, "batch_size": 32},
    "deepinspect": {"inspector__epochs": 3, "inspector__inversion__per_class": 20, "inspector__inversion__steps": 50,
                    "inspector__eval_noise": 2},
}


def demo_defense(name: str, images: np.ndarray, quick: bool = False) -> Any:
    """The demo's instance of defense ``name``: the ``"auto"`` preset for the defender's clean ``images``."""
    from kerasbd.defenses import DEFENSES

    return DEFENSES[name].preset("auto", images, **(_QUICK.get(name, {}) if quick else {}))


@dataclasses.dataclass
class DigitsBadNet:
    """The demo's attacked model with its data splits (canonical images, integer labels)."""

    model: keras.Model
    backdoors: list[Any]
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    seed: int
    seconds: float


def digits_badnet(seed: int = 0, *, size: int = 28, poison_rate: float = 0.1, epochs: int = 30, verbose: int = 0) -> DigitsBadNet:
    """Train the demo BadNet: LeNet-5 on 28×28 digits, 3×3 white bottom-right patch → label 0.

    60 % of the digits train the attacker's model, 20 % form the defender's clean validation set, 20 % the
    held-out test set (stratified, seeded). ``poison_rate=0`` trains the clean control on the same split (its
    ``backdoors`` are still the demo trigger, to measure that it has no effect).

    Example:
        >>> case = digits_badnet(seed=0, epochs=1)  # doctest: +SKIP
        >>> case.val[0].shape  # doctest: +SKIP
        (359, 28, 28, 1)
    """
    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.data import load_digits, split_defender
    from kerasbd.models import build_architecture

    start = time.perf_counter()
    x, y = load_digits(size=size)
    held, train = split_defender(x, y, val_fraction=0.4, seed=seed)
    val, test = split_defender(*held, val_fraction=0.5, seed=seed)
    backdoors = from_spec(DEMO_TRIGGER_SPEC)
    keras.utils.set_random_seed(seed)
    model = build_architecture("lenet5", input_shape=(size, size, 1), num_classes=10)
    if poison_rate > 0:
        train_badnet(model, *train, backdoors, rate=poison_rate, epochs=epochs, batch_size=32, seed=seed, verbose=verbose)
    else:
        from kerasbd.training import fit_classifier

        fit_classifier(model, *train, epochs=epochs, batch_size=32, seed=seed, verbose=verbose)
    return DigitsBadNet(model, backdoors, train, val, test, seed, time.perf_counter() - start)


#: Left out of ``--defenses all`` (named explicitly, they run): why, in the line the demo prints.
_NOT_IN_ALL = {"dhbe": "DHBE's data-free distillation runs for hours at the original length on a CPU; --defenses dhbe runs it"}


def _selected(names: str, registry: dict[str, Any]) -> list[str]:
    if names in ("all", ""):
        return [n for n in registry if n not in _NOT_IN_ALL]
    if names == "none":
        return []
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise ConfigError(f"unknown defense(s) {unknown}; available: {', '.join(registry)}.")
    return chosen


def _scan_and_repair(label: str, case: DigitsBadNet, scanner: Any, seed: int, out: Path | None, say: Any, verbose: int) -> dict[str, Any]:
    """Scan one demo model; repair it with the suggested repair when flagged; before/after on the held-out split."""
    from kerasbd.defenses import DEFENSES
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.scan import BUDGETS

    say(f"scanning the {label} model ...")
    scan = scanner.scan(case.model, case.val, seed=seed, verbose=verbose, name=label)
    say(scan.verdict())
    before = evaluate_backdoor(case.model, *case.test, case.backdoors)
    row: dict[str, Any] = {"model": label, "P(backdoored)": scan.probability, "verdict": "backdoored" if scan.backdoored else "clean",
                           "targets": ",".join(map(str, scan.targets)) or "—", "scan_seconds": round(scan.seconds, 1),
                           "clean_acc": before["clean_acc"], "asr": before["asr"], "repair": "—", "clean_acc_after": None, "asr_after": None}
    if out is not None:
        scan.save(out / f"scan-{label}")
    if scan.backdoored and scan.repair is not None:
        say(f"repairing the {label} model: kerasbd defend {scan.repair} ...")
        # the repair's own inspection runs with the scan's budget, so it finds what the scan found in comparable time
        budget = {f"inspector__{k}": v for k, v in BUDGETS[scan.budget].get(scan.repair, {}).items()}
        result = DEFENSES[scan.repair].preset("auto", case.val[0], **budget).run(case.model, case.val, eval_data=case.test,
                                                                             backdoors=case.backdoors, seed=seed, verbose=verbose)
        say(result.verdict())
        row.update({"repair": scan.repair, "clean_acc_after": result.metrics_after.get("clean_acc"), "asr_after": result.metrics_after.get("asr")})
        if out is not None:
            result.save(out / f"repair-{label}")
    return row


def run_demo(seed: int = 0, defenses: str = "none", out: str | Path | None = "runs/demo", quick: bool = False, verbose: int = 1) -> dict[str, Any]:
    """Train a clean and a backdoored digits model, scan both, repair what the scan flags, and (``defenses``) run
    the defense tour on the BadNet; returns the JSON-able report."""
    from kerasbd.io import write_json, write_text
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.reporting import markdown_table
    from kerasbd.scan import Scanner

    say = print if verbose else (lambda *a, **k: None)
    out = None if out is None else Path(out)
    epochs = 10 if quick else 30
    say(f"kerasbd demo (seed {seed}): training two LeNet-5 models on scikit-learn digits (28×28) — a clean one and a BadNet "
        f"whose 3×3 patch sends every digit to 0 ...")
    clean_case = digits_badnet(seed, poison_rate=0.0, epochs=epochs)
    case = digits_badnet(seed, epochs=epochs)
    before = evaluate_backdoor(case.model, *case.test, case.backdoors)
    say(f"trained in {clean_case.seconds + case.seconds:.1f}s; BadNet: clean accuracy {before['clean_acc']:.4f}, attack success rate "
        f"{before['asr']:.4f} (held-out test set, {len(case.test[1])} images)\n")
    # --quick scans with DeepInspect alone (its own shipped calibration), a third of the three inspectors' time
    scanner = Scanner(inspectors=["deepinspect"]) if quick else Scanner()
    scans = [_scan_and_repair(label, c, scanner, seed, out, say, verbose) for label, c in (("clean", clean_case), ("backdoored", case))]
    scan_table = markdown_table(scans)
    say("\nScans (held-out test set before and after the suggested repair):\n" + scan_table)

    rows, detector_rows, details = _tour(case, before, defenses, quick, seed, out, say, verbose)
    tour = ""
    for title, table in (("Defenses on the BadNet (held-out test set)", rows[1:] and rows),
                         ("Input detectors (held-out clean vs triggered inputs)", detector_rows)):
        if table:
            section = f"{title}:\n\n{markdown_table(table)}"
            tour += "\n\n" + section
            say("\n" + section)
    report = {"seed": seed, "quick": quick, "badnet": before, "scans": scans, "defenses": rows, "detectors": detector_rows, "details": details}
    if out is not None:
        write_json(out / "demo.json", report)
        write_text(out / "demo.md", f"# kerasbd demo (seed {seed})\n\n{scan_table}{tour}\n")
        say(f"\nwrote {out}/demo.json, {out}/demo.md and one folder per scan, repair and defense")
    return report


def _tour(case: DigitsBadNet, before: dict[str, Any], defenses: str, quick: bool, seed: int, out: Path | None, say: Any,
          verbose: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every selected defense and every input detector on the BadNet: its rows, the detectors' rows, the details."""
    from kerasbd.defenses import DEFENSES, DETECTORS
    from kerasbd.metrics import roc_auc, tpr_at_fpr

    rows = [{"defense": "none (BadNet)", "clean_acc": before["clean_acc"], "asr": before["asr"], "robust_acc": before["robust_acc"],
             "der": None, "seconds": round(case.seconds, 2)}]
    results = {}
    if defenses in ("all", ""):
        for name, why in _NOT_IN_ALL.items():
            say(f"not run: {name} ({why})")
    for name in _selected(defenses, DEFENSES):
        say(f"running defense {name} ...")
        result = demo_defense(name, case.val[0], quick).run(case.model, case.val, eval_data=case.test, backdoors=case.backdoors,
                                                            seed=seed, verbose=verbose)
        results[name] = result
        row = result.summary_row()
        rows.append({k: row[k] for k in ("defense", "clean_acc", "asr", "robust_acc", "der", "seconds")})
        if out is not None:
            result.save(out / name)
    detector_rows = []
    if defenses != "none":
        triggered = case.backdoors[0].trigger.apply(case.test[0])
        for name, cls in DETECTORS.items():
            start = time.perf_counter()
            det = cls().fit(case.model, case.val[0], fpr=0.05, seed=seed)
            clean_s, trig_s = det.score(case.test[0]), det.score(triggered)
            detector_rows.append({"detector": name, "tpr_at_fpr1": tpr_at_fpr(clean_s, trig_s, 0.01),
                                  "tpr_at_fpr5": tpr_at_fpr(clean_s, trig_s, 0.05), "auc": roc_auc(clean_s, trig_s),
                                  "seconds": round(time.perf_counter() - start, 2)})
    return rows, detector_rows, {k: v.to_dict() for k, v in results.items()}
