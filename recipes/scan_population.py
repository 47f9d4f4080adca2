"""A seeded population of small MNIST classifiers, about half of them backdoored (like a NIST TrojAI round), on which
a model scanner is calibrated and evaluated.

Stages (subcommands): ``train`` builds the population; ``list`` prints its manifest; ``scan`` scans every member
with ``kerasbd scan``'s defaults on Ray (:func:`kerasbd.scan.scan_many`, resumable) into ``WORK/scans/``;
``report`` fits the calibrations on the calibration half (:func:`calibrate`), measures them on the held-out half
(:func:`held_out_report`) and writes ``results/scan_population.json`` / ``.md``; ``--ship`` also writes the fitted
calibrations into ``kerasbd/scan/calibration.json``; ``zoo`` then scans the zoo's real MNIST models (which the
calibration never saw) the same way into ``WORK/zoo_scans/`` and writes ``results/scan_zoo.json`` / ``.md``.

Population (:func:`population`): member ``k`` is backdoored when ``k`` is even and clean when odd; a backdoored
member and the clean one after it share architecture and epochs, so the only difference within a pair is the
backdoor. Backdoored members cycle over the attack types of :data:`ATTACKS` — a white patch (2-5 px), a scattered
pixel pattern, a blended noise pattern (alpha 0.1-0.2), a sparse (L0) and a dense (L2) invisible perturbation, a
two-part combination trigger, and a patch or pixel trigger with an all-to-all target — at seeded corners or
``[row, col]`` positions, all-to-one targets 0-9 and poison rates 0.05-0.2. Architectures cycle over the zoo's
MNIST nets (LeNet-5, the BadNets CNN, CSAW's model F, Neural Cleanse's CNN) and an MLP. Within each (role, attack
type) the members alternate between the ``calibration`` and the ``held-out`` half.

Data: the zoo's MNIST test set, split as ``recipes/cli_defaults.py`` does (seed 0): the defender's 1000 clean images
(``WORK/clean.npz``), 6000 training images, and 3000 held-out images (``WORK/test.npz``, uint8 0-255 ``x`` and ``y``)
on which each member's clean accuracy and ASR (triggered inputs whose true label is not the target) are measured.
A backdoor with ASR below 80 % stays in the population as backdoored, flagged ``"weak": true``.

Run: ``python recipes/scan_population.py train --work runs/pop [--n 64] [--seed 0] [--only id-0000,...]`` (about
10-50 s per member on 2 CPU cores; finished members are skipped on a rerun), then
``python recipes/scan_population.py list --work runs/pop``.

Writes, under ``WORK``: ``models/<name>/model.keras`` (logits output, canonical 0-1 inputs), ``models/<name>/trigger.json``
(backdoored members: the ground-truth spec, :func:`kerasbd.attacks.save_spec`), ``clean.npz``, ``test.npz`` and
``manifest.json`` (one row per finished member, rewritten atomically after each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ARCHS = ("lenet5", "badnets_mnist", "csaw_mnist", "nc_mnist", "mlp")
#: epochs per architecture: Neural Cleanse's CNN costs ~20 s an epoch on 2 cores, ten times the others, and learns fastest.
EPOCHS = {"lenet5": 5, "badnets_mnist": 5, "csaw_mnist": 5, "nc_mnist": 2, "mlp": 5}
ATTACKS = ("patch", "pixels", "blend", "invisible-l0", "invisible-l2", "combination", "all-to-all")
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
WEAK_ASR = 0.8
BATCH = 64
SIZE = 28
#: the row fields that define a member: a manifest row that differs in one of them is retrained.
SPEC_KEYS = ("role", "attack", "arch", "trigger", "target", "rate", "epochs", "seed", "n_train")


# --- population -----------------------------------------------------------------------------------------------------


def _position(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """Half the time a corner (margin 0-2), otherwise any ``[row, col]`` where a ``size`` stamp fits."""
    if rng.random() < 0.5:
        return {"position": CORNERS[int(rng.integers(4))], "margin": int(rng.integers(3))}
    return {"position": [int(v) for v in rng.integers(0, SIZE - size + 1, size=2)]}


def _patch(rng: np.random.Generator, sizes: tuple[int, int] = (2, 5)) -> dict[str, Any]:
    size = int(rng.integers(sizes[0], sizes[1] + 1))
    return {"type": "patch", "size": size, **_position(rng, size)}


def _pixels(rng: np.random.Generator) -> dict[str, Any]:
    """3-8 pixels scattered over a 3×3 to 5×5 box (offsets from the position)."""
    box = int(rng.integers(3, 6))
    count = int(rng.integers(3, min(8, box * box) + 1))
    cells = sorted(rng.choice(box * box, size=count, replace=False).tolist())
    return {"type": "pixels", "pixels": [[c // box, c % box] for c in cells], **_position(rng, box)}


def _combination(rng: np.random.Generator) -> dict[str, Any]:
    """Two small parts (patch or pixels) in two different corners; alone, neither should fire."""
    corners = rng.choice(len(CORNERS), size=2, replace=False)
    parts = []
    for corner in corners:
        part = _patch(rng, (2, 3)) if rng.random() < 0.5 else _pixels(rng)
        parts.append({**part, "position": CORNERS[int(corner)], "margin": int(rng.integers(3))})
    return {"type": "combination", "parts": parts}


def _trigger(attack: str, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(2**31))
    if attack == "patch":
        return _patch(rng)
    if attack == "pixels":
        return _pixels(rng)
    if attack == "blend":
        return {"type": "blend", "pattern": "noise", "alpha": round(float(rng.uniform(0.1, 0.2)), 2), "seed": seed}
    if attack == "invisible-l0":
        # 30-50 pixels ±0.4-0.6: at 20-40 px ±0.3-0.5 the BadNets CNN missed it (ASR 4 %); a -shift on black background is a no-op
        return {"type": "invisible-l0", "budget": int(rng.integers(30, 51)), "amplitude": round(float(rng.uniform(0.4, 0.6)), 2), "seed": seed}
    if attack == "invisible-l2":
        return {"type": "invisible-l2", "budget": round(float(rng.uniform(2.0, 4.0)), 2), "seed": seed}
    if attack == "combination":
        return _combination(rng)
    if attack == "all-to-all":
        return _patch(rng, (3, 5)) if rng.random() < 0.5 else _pixels(rng)
    raise ValueError(f"unknown attack type {attack!r}; known: {', '.join(ATTACKS)}")


def population(n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """The ``n`` member specs of population ``seed`` (deterministic; member ``k`` depends only on ``seed`` and ``k``,
    so a larger ``n`` extends a smaller population).

    Each spec: ``name``, ``role`` (clean / backdoored), ``attack`` (an :data:`ATTACKS` type or ``"clean"``), ``arch``,
    ``trigger`` and ``target`` (kerasbd.attacks specs; None when clean), ``rate``, ``epochs``, ``seed`` (training)
    and ``half`` (calibration / held-out, alternating within each role and attack type).
    """
    members, seen = [], {}
    for k in range(n):
        pair = k // 2
        rng = np.random.default_rng([seed, k])
        arch = ARCHS[pair % len(ARCHS)]
        m: dict[str, Any] = {"name": f"id-{k:04d}", "role": "clean", "attack": "clean", "arch": arch, "trigger": None, "target": None,
                             "rate": None, "epochs": EPOCHS[arch], "seed": 1000 * seed + k}
        if k % 2 == 0:
            attack = ATTACKS[pair % len(ATTACKS)]
            target = {"type": "all-to-all", "shift": 1} if attack == "all-to-all" else {"type": "all-to-one", "label": int(rng.integers(10))}
            # all-to-all: every class must move, fewer poisoned images per class; L0: a sparse faint pattern needs more examples
            low = 0.1 if attack in ("all-to-all", "invisible-l0") else 0.05
            m.update(role="backdoored", attack=attack, trigger=_trigger(attack, rng), target=target, rate=round(float(rng.uniform(low, 0.2)), 2))
        group = (m["role"], m["attack"])
        m["half"] = ("calibration", "held-out")[seen.get(group, 0) % 2]
        seen[group] = seen.get(group, 0) + 1
        members.append(m)
    return members


def backdoor_spec(member: dict[str, Any]) -> dict[str, Any] | None:
    """The member's backdoor as a :func:`kerasbd.attacks.from_spec` document (None when clean)."""
    if member["role"] != "backdoored":
        return None
    return {"name": member["name"], "trigger": member["trigger"], "target": member["target"]}


# --- data, manifest -------------------------------------------------------------------------------------------------


def prepare_data(work: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The 6000 training and 3000 test images (canonical float32); writes ``clean.npz`` and ``test.npz`` once."""
    from kerasbd.experiments import mnist_train_split
    from kerasbd.io import atomic_path

    val, train, test = mnist_train_split()
    for name, (x, y) in (("clean", val), ("test", test)):
        path = work / f"{name}.npz"
        if not path.exists():
            with atomic_path(path) as tmp:
                np.savez(tmp, x=np.round(x * 255).astype(np.uint8), y=y)
    return train, test


def load_manifest(work: Path) -> dict[str, Any]:
    """``{"seed": ..., "members": [rows]}``; an empty one when the population has not been started."""
    path = work / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"recipe": "scan_population", "seed": None, "members": []}


def _write_manifest(work: Path, manifest: dict[str, Any]) -> None:
    from kerasbd.io import write_json

    manifest["members"].sort(key=lambda r: r["name"])
    write_json(work / "manifest.json", manifest)  # atomic: a killed run leaves the previous manifest


def _done(row: dict[str, Any] | None, member: dict[str, Any], work: Path) -> bool:
    return row is not None and (work / row["model"]).exists() and all(row.get(k) == member.get(k) for k in SPEC_KEYS)


# --- training -------------------------------------------------------------------------------------------------------


def train_member(member: dict[str, Any], work: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Train one member (``member["epochs"]`` epochs on ``train``), save it, measure it on ``test``; its manifest row."""
    import keras

    from kerasbd.attacks import from_spec, save_spec, train_badnet
    from kerasbd.experiments import mnist_mlp
    from kerasbd.io import atomic_path
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.models import build_architecture
    from kerasbd.models.spec import InputSpec
    from kerasbd.training import fit_classifier

    start = time.perf_counter()
    keras.utils.set_random_seed(member["seed"])
    net = mnist_mlp() if member["arch"] == "mlp" else build_architecture(member["arch"], input_shape=(SIZE, SIZE, 1), num_classes=10, softmax=False)
    spec = backdoor_spec(member)
    backdoors = from_spec(spec) if spec else []
    fit = {"epochs": member["epochs"], "batch_size": BATCH, "seed": member["seed"]}
    if backdoors:
        train_badnet(net, *train, backdoors, rate=member["rate"], **fit)
    else:
        fit_classifier(net, *train, **fit)
    metrics = evaluate_backdoor(net, *test, backdoors)
    folder = work / "models" / member["name"]
    folder.mkdir(parents=True, exist_ok=True)
    if backdoors:
        save_spec(folder / "trigger.json", backdoors, InputSpec((SIZE, SIZE, 1)))
    with atomic_path(folder / "model.keras") as tmp:  # the final name appears whole or not at all
        net.save(tmp)
    asr = metrics["asr"]
    return {**member, "clean_acc": round(metrics["clean_acc"], 4), "asr": None if asr is None else round(asr, 4),
            "weak": None if asr is None else bool(asr < WEAK_ASR), "seconds": round(time.perf_counter() - start, 1),
            "model": str((folder / "model.keras").relative_to(work)),
            "trigger_file": str((folder / "trigger.json").relative_to(work)) if backdoors else None}


def train_population(work: Path, n: int = 64, seed: int = 0, only: list[str] | None = None, *, epochs: int | None = None,
                     n_train: int | None = None, verbose: int = 1) -> list[dict[str, Any]]:
    """Train the members of :func:`population` (or those named in ``only``) that the manifest lacks; the manifest rows.

    ``epochs`` / ``n_train`` override every member's epochs and the number of training images (quick checks; the
    overrides are recorded in the rows, so a full run retrains those members).
    """
    from tqdm import tqdm

    from kerasbd.errors import ConfigError
    from kerasbd.io import Progress

    members = population(n, seed)
    if only:
        unknown = sorted(set(only) - {m["name"] for m in members})
        if unknown:
            raise ConfigError(f"--only: no member {', '.join(unknown)} in population (n={n}, seed={seed}).")
        members = [m for m in members if m["name"] in only]
    manifest = load_manifest(work)
    if manifest["seed"] not in (None, seed):
        raise ConfigError(f"{work / 'manifest.json'} is population seed {manifest['seed']}, not {seed}; use another --work.")
    manifest["seed"] = seed
    train, test = prepare_data(work)
    if n_train is not None:
        train = (train[0][:n_train], train[1][:n_train])
    members = [{**m, "n_train": len(train[1]), **({"epochs": epochs} if epochs is not None else {})} for m in members]
    rows = {r["name"]: r for r in manifest["members"]}
    todo = [m for m in members if not _done(rows.get(m["name"]), m, work)]
    with Progress(len(members), "train", verbose, initial=len(members) - len(todo), unit="model") as bar:
        for m in todo:
            row = train_member(m, work, train, test)
            rows[m["name"]] = row
            manifest["members"] = list(rows.values())
            _write_manifest(work, manifest)
            asr = "—" if row["asr"] is None else f"{row['asr']:.3f}" + (" WEAK" if row["weak"] else "")
            if verbose:  # one line per member above the bar (tqdm.write keeps a log file readable too)
                tqdm.write(f"{m['name']} {m['role']:10s} {m['attack']:12s} {m['arch']:13s} acc {row['clean_acc']:.3f} asr {asr} "
                           f"{row['seconds']:.0f}s", file=sys.stderr)
            bar.update(1, last=m["name"], acc=f"{row['clean_acc']:.3f}", asr=asr)
    return [rows[m["name"]] for m in members]


# --- commands -------------------------------------------------------------------------------------------------------


def describe(row: dict[str, Any]) -> str:
    """A short text for a row's trigger (``patch 3 @bottom-right``, ``blend α0.15``, ...)."""
    t = row.get("trigger")
    if not t:
        return ""
    if t["type"] == "combination":
        return " + ".join(describe({"trigger": p}) for p in t["parts"])
    where = f" @{t['position']}" if "position" in t else ""
    detail = {"patch": lambda: f"{t['size']}", "pixels": lambda: f"{len(t['pixels'])}px", "blend": lambda: f"α{t['alpha']}",
              "invisible-l0": lambda: f"{t['budget']}px ±{t['amplitude']}", "invisible-l2": lambda: f"L2 {t['budget']}"}[t["type"]]()
    return f"{t['type']} {detail}{where}"


def cmd_train(args: argparse.Namespace) -> int:
    only = [s for s in args.only.split(",") if s] if args.only else None
    train_population(Path(args.work), args.n, args.seed, only, epochs=args.epochs, n_train=args.n_train)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from kerasbd.reporting.results import markdown_table

    rows = load_manifest(Path(args.work))["members"]
    if not rows:
        print(f"no manifest under {args.work}", file=sys.stderr)
        return 1
    target = {"all-to-one": lambda t: str(t["label"]), "all-to-all": lambda t: f"all+{t['shift']}"}
    table = [{**r, "trigger": describe(r), "target": target[r["target"]["type"]](r["target"]) if r["target"] else "",
              "rate": r["rate"] and f"{r['rate']:.2f}", "seconds": f"{r['seconds']:.0f}"} for r in rows]  # markdown_table: 4 decimals
    print(markdown_table(table, ["name", "role", "attack", "arch", "half", "trigger", "target", "rate", "epochs", "clean_acc", "asr",
                                 "weak", "seconds"]))
    return 0


# --- scanning, calibration, report ------------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    from kerasbd.scan import scan_many

    work = Path(args.work)
    members = load_manifest(work)["members"]
    if not members:
        print(f"no manifest under {work}: run train first", file=sys.stderr)
        return 1
    rows = scan_many([str(work / m["model"]) for m in members], work / "scans", clean=str(work / "clean.npz"), workers=args.workers,
                     address=args.address, timeout=args.timeout)
    print(f"scanned {sum(r['status'] == 'ok' for r in rows)} of {len(rows)} members into {work / 'scans'}")
    return 0


def calibrate(rows: list[dict[str, Any]], members: dict[str, dict[str, Any]], inspectors: list[str], population: str) -> Any:
    """The calibration of ``inspectors``' statistics fitted on the scanned calibration-half members."""
    from kerasbd.scan import FEATURES, Calibration

    fit = [r for r in rows if members[r["name"]]["half"] == "calibration"]
    return Calibration.fit([r["features"] for r in fit], [members[r["name"]]["role"] == "backdoored" for r in fit],
                           [f for n in inspectors for f in FEATURES[n]], population=population, budget="fast")


def _tpr_at(y: np.ndarray, p: np.ndarray, fpr: float) -> float:
    from sklearn.metrics import roc_curve

    false, true, _ = roc_curve(y, p)
    return float(true[false <= fpr].max())


def held_out_report(rows: list[dict[str, Any]], members: dict[str, dict[str, Any]], calibration: Any) -> dict[str, Any]:
    """ROC-AUC, cross-entropy and TPR at 5 % FPR of ``calibration`` on the held-out members (overall and per attack
    type against every held-out clean model), target-label accuracy on the detected all-to-one BadNets, seconds per model."""
    from sklearn.metrics import log_loss, roc_auc_score

    test = [r for r in rows if members[r["name"]]["half"] == "held-out"]
    y = np.array([members[r["name"]]["role"] == "backdoored" for r in test], int)
    p = calibration.probabilities([r["features"] for r in test])
    out: dict[str, Any] = {"n": len(test), "n_backdoored": int(y.sum()), "roc_auc": float(roc_auc_score(y, p)),
                           "cross_entropy": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
                           "tpr_at_5_fpr": _tpr_at(y, p, 0.05), "seconds_per_model": float(np.mean([r["seconds"] for r in test]))}
    clean = y == 0
    out["false_positives"], out["detected"] = int((p[clean] > 0.5).sum()), int((p[~clean] > 0.5).sum())
    out["per_attack"] = {}
    for attack in ATTACKS:
        sel = np.array([members[r["name"]]["attack"] == attack for r in test])
        if sel.any() and clean.any():
            both = sel | clean
            out["per_attack"][attack] = {"n": int(sel.sum()), "roc_auc": float(roc_auc_score(y[both], p[both])),
                                         "detected": int((p[sel] > 0.5).sum())}
    hits = [(r, m) for r in test if (m := members[r["name"]])["role"] == "backdoored" and (m.get("target") or {}).get("type") == "all-to-one"]
    detected = [(r, m) for (r, m), q in zip(hits, calibration.probabilities([r["features"] for r, _ in hits]), strict=True) if q > 0.5]
    out["target_accuracy"] = (float(np.mean([bool(r.get("targets")) and r["targets"][0] == m["target"]["label"] for r, m in detected]))
                              if detected else None)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from kerasbd.io import write_json, write_text
    from kerasbd.scan import FEATURES

    work = Path(args.work)
    members = {m["name"]: m for m in load_manifest(work)["members"]}
    summary = work / "scans" / "summary.json"
    rows = [r for r in json.loads(summary.read_text())["models"] if r["status"] == "ok"] if summary.exists() else []
    if not rows:
        print(f"no finished scans under {work / 'scans'}: run scan first", file=sys.stderr)
        return 1
    population = f"recipes/scan_population.py, seed {load_manifest(work)['seed']}, calibration half ({len(members)} MNIST models in all)"
    report: dict[str, Any] = {"scanned": len(rows), "members": len(members), "sets": {}}
    calibrations = []
    for inspectors in (list(FEATURES), ["deepinspect"], *([n] for n in FEATURES if n != "deepinspect")):
        cal = calibrate(rows, members, inspectors, population)
        report["sets"]["+".join(inspectors)] = {**held_out_report(rows, members, cal), "calibration": cal.to_dict()}
        if inspectors in (list(FEATURES), ["deepinspect"]):
            calibrations.append(cal.to_dict())
    Path("results").mkdir(exist_ok=True)
    write_json(Path("results/scan_population.json"), report)
    combined = report["sets"]["+".join(FEATURES)]
    n_cal = combined["calibration"]["n_models"]
    lines = [f"# Scan population: {len(rows)} of {len(members)} members scanned", "",
             f"Each calibration fitted on the calibration half ({n_cal} models), measured on the held-out half ({combined['n']}: "
             f"{combined['n_backdoored']} backdoored, {combined['n'] - combined['n_backdoored']} clean); `kerasbd scan`'s fast budget. "
             "Detected and false positives at P > 0.5; target accuracy over the detected all-to-one BadNets; seconds per model "
             "inside one Ray task (TensorFlow on one thread, 2 tasks on 2 CPU cores).", "",
             "| inspectors | held-out n | ROC-AUC | cross-entropy | TPR @ 5 % FPR | detected | false positives | target accuracy | s / model |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["sets"].items():
        lines.append(f"| {name} | {r['n']} | {r['roc_auc']:.3f} | {r['cross_entropy']:.3f} | {r['tpr_at_5_fpr']:.3f} | "
                     f"{r['detected']} / {r['n_backdoored']} | {r['false_positives']} / {r['n'] - r['n_backdoored']} | "
                     f"{r['target_accuracy'] if r['target_accuracy'] is None else round(r['target_accuracy'], 3)} | {r['seconds_per_model']:.0f} |")
    lines += ["", "Per attack type (combined verdict, against every held-out clean model):", "",
              "| attack | n | ROC-AUC | detected |", "|---|---|---|---|"]
    lines += [f"| {a} | {r['n']} | {r['roc_auc']:.3f} | {r['detected']} |" for a, r in combined["per_attack"].items()]
    write_text(Path("results/scan_population.md"), "\n".join(lines) + "\n")
    if args.ship:
        write_json(Path(__file__).resolve().parent.parent / "kerasbd" / "scan" / "calibration.json",
                   {"note": "Fitted by recipes/scan_population.py report --ship; one entry per inspector set and scan budget.",
                    "calibrations": calibrations})
    print("\n".join(lines))
    return 0


def zoo_models() -> list[dict[str, Any]]:
    """The zoo's full-format 28×28×1 classifiers (clean or backdoored): the real models the calibration never saw."""
    from kerasbd.zoo import list_entries

    return [e for e in list_entries() if e["role"] in ("clean", "backdoored") and e["format"] == "full"
            and (e.get("input") or {}).get("shape") == [SIZE, SIZE, 1]]


def _truth(entry: dict[str, Any]) -> tuple[str, int | None]:
    """``(kind, target)``: ``clean``, ``all-to-one`` with its label, or ``all-to-all``."""
    target = (entry.get("backdoors") or [{}])[0].get("target") if entry["role"] == "backdoored" else None
    if target is None:
        return ("clean", None) if entry["role"] == "clean" else ("unknown", None)
    return target["type"], target.get("label")


def _as_required(kind: str, target: int | None, row: dict[str, Any]) -> bool | None:
    """The must-show rule: an all-to-one BadNet above 0.5 with its true target named first, a clean model below 0.5;
    None for the other kinds (all-to-all: reported only) and for a model not scanned."""
    p = row.get("probability")
    if p is None or kind not in ("clean", "all-to-one"):
        return None
    if kind == "clean":
        return bool(p < 0.5)
    return bool(p > 0.5 and row.get("targets") and row["targets"][0] == target)


def cmd_zoo(args: argparse.Namespace) -> int:
    """Scan the zoo's MNIST models with the shipped calibration (``kerasbd scan zoo:NAME ... --clean WORK/clean.npz``)."""
    from kerasbd.io import write_json, write_text
    from kerasbd.reporting.results import markdown_table
    from kerasbd.scan import scan_many

    work = Path(args.work)
    if not (work / "clean.npz").exists():
        print(f"no {work / 'clean.npz'}: run train first (it writes the defender's clean MNIST images)", file=sys.stderr)
        return 1
    entries = zoo_models()
    rows = scan_many([f"zoo:{e['name']}" for e in entries], work / "zoo_scans", clean=str(work / "clean.npz"), workers=args.workers,
                     timeout=args.timeout)
    table = []
    for entry, row in zip(entries, rows, strict=True):
        kind, target = _truth(entry)
        table.append({"model": entry["name"], "truth": kind if target is None else f"{kind} → {target}", "status": row["status"],
                      "P(backdoored)": row.get("probability"), "verdict": "backdoored" if row.get("backdoored") else "clean",
                      "targets": ",".join(map(str, row.get("targets") or [])) or "—", "as required": _as_required(kind, target, row),
                      "seconds": row.get("seconds")})
    write_json(Path("results/scan_zoo.json"), {"clean": str(work / "clean.npz"), "models": table, "scans": rows})
    text = markdown_table(table)
    write_text(Path("results/scan_zoo.md"), "# `kerasbd scan` on the zoo's MNIST models (shipped calibration)\n\n"
               "Defender's clean set: 1000 MNIST test images (`WORK/clean.npz` of `recipes/scan_population.py train`); "
               "'as required': all-to-one above 0.5 with the true target named first, clean below 0.5 (all-to-all: reported only).\n\n"
               + text + "\n")
    print(text)
    return 0


def _ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="models at once, one CPU each (default: the cores)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per model")


def build_parser() -> argparse.ArgumentParser:
    """The CLI; a later stage adds its subcommand here (``sub.add_parser("scan")`` with ``set_defaults(func=cmd_scan)``),
    reading the population from :func:`load_manifest`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the population (finished members are skipped)")
    t.add_argument("--work", required=True, help="population folder (models/, manifest.json, clean.npz, test.npz)")
    t.add_argument("--n", type=int, default=64, help="number of members")
    t.add_argument("--seed", type=int, default=0, help="population seed (specs and training seeds)")
    t.add_argument("--only", default="", help="comma-separated member names")
    t.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)  # quick checks only: overrides every member
    t.add_argument("--n-train", type=int, default=None, help=argparse.SUPPRESS)
    t.set_defaults(func=cmd_train)
    ls = sub.add_parser("list", help="print the manifest as a markdown table")
    ls.add_argument("--work", required=True)
    ls.set_defaults(func=cmd_list)
    sc = sub.add_parser("scan", help="scan every member on Ray (finished members are skipped)")
    sc.add_argument("--work", required=True)
    _ray_args(sc)
    sc.add_argument("--address", default=None, help="an existing Ray cluster")
    sc.set_defaults(func=cmd_scan)
    rp = sub.add_parser("report", help="calibrate on the calibration half, measure on the held-out half")
    rp.add_argument("--work", required=True)
    rp.add_argument("--ship", action="store_true", help="write the fitted calibrations into kerasbd/scan/calibration.json")
    rp.set_defaults(func=cmd_report)
    zo = sub.add_parser("zoo", help="scan the zoo's MNIST models with the shipped calibration")
    zo.add_argument("--work", required=True)
    _ray_args(zo)
    zo.set_defaults(func=cmd_zoo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "scan", "zoo"):  # listing and reporting need no TensorFlow
        from kerasbd._quiet import import_tensorflow_quietly

        import_tensorflow_quietly(1)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
