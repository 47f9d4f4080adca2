"""The CLI with its defaults on BadNets nobody tuned for: ``kerasbd defend gym``, ``defend nnoculation-pre`` and
``inspect neural-cleanse`` on fresh MNIST BadNets trained here and on the zoo's real MNIST BadNets.

No setting is chosen here: every command is the README's, with ``--preset auto`` (the default) choosing by the
defender's data. The fresh BadNets differ in what the defaults were never chosen on: trigger (patches of 2-5 px,
single pixels, pixel patterns, a checkerboard), position (every corner, the centre, an inner square), target
(all-to-one towards several labels, all-to-all), input range (0-1 and raw 0-255 pixels) and architecture (the
BadNets CNN, LeNet-5, Neural Cleanse's and CSAW's MNIST CNNs, an MLP).

Data: the zoo's MNIST test set, split once (seed 0): the defender's 1000 clean images (``--clean``), 6000 images on
which each fresh BadNet is trained (10 % poisoned, 8 epochs, Adam), and 3000 held-out images (``--test``) on which
every model, fresh or zoo, is measured. A defense passes when ASR ≤ 5 % and clean accuracy drops ≤ 3 points.

Run: ``python recipes/cli_defaults.py`` (every model; finished commands are kept under ``--work`` and skipped on a
rerun) or ``--models NAME,...``; ``--methods`` picks among gym, nnoculation-pre, neural-cleanse. Writes
``results/cli_defaults.json`` / ``.md`` after every command.

Choosing a default: ``--suite validation`` runs a second set of fresh BadNets (:data:`VALIDATION`, trained with
another seed; no model of the main set) and ``--variant TAG:METHOD:KEY=VALUE`` adds a candidate setting
(``--set`` on top of the defaults) beside the defaults, so a change is chosen there and then checked, unchanged, on
the main set. Writes ``results/cli_defaults_validation.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PIXEL_PATTERN = [[0, 0], [0, 2], [2, 0], [2, 2], [4, 0], [0, 4]]  # six scattered pixels (offsets from the position)
CHECKER = [[r, c] for r in range(4) for c in range(4) if (r + c) % 2 == 0]

#: name → architecture, trigger, target, input range. Architectures are kerasbd.models names or "mlp". (The BadNets
#: CNN did not learn the corner pixel in 8 or 30 epochs, ASR 2 % / 10 %; LeNet-5 learns it, ASR 99.7 %.)
FRESH: dict[str, dict[str, Any]] = {
    "patch3-br-to0": {"arch": "badnets_mnist", "trigger": {"type": "patch", "size": 3, "position": "bottom-right", "margin": 1},
                      "target": {"type": "all-to-one", "label": 0}, "range": "0-1"},
    "patch4-tl-to7-raw": {"arch": "lenet5", "trigger": {"type": "patch", "size": 4, "position": "top-left", "margin": 1},
                          "target": {"type": "all-to-one", "label": 7}, "range": "0-255"},
    "patch5-centre-to3": {"arch": "nc_mnist", "trigger": {"type": "patch", "size": 5, "position": [12, 12]},
                          "target": {"type": "all-to-one", "label": 3}, "range": "0-1"},
    "pixels6-tr-all2all": {"arch": "csaw_mnist", "trigger": {"type": "pixels", "pixels": PIXEL_PATTERN, "position": [1, 22]},
                           "target": {"type": "all-to-all", "shift": 1}, "range": "0-1"},
    "pixel1-bl-to5": {"arch": "lenet5", "trigger": {"type": "pixels", "pixels": [[26, 1]]},
                      "target": {"type": "all-to-one", "label": 5}, "range": "0-1"},
    "patch2-tr-all2all-raw": {"arch": "nc_mnist", "trigger": {"type": "patch", "size": 2, "position": "top-right", "margin": 2},
                              "target": {"type": "all-to-all", "shift": 1}, "range": "0-255"},
    "checker4-bl-to9": {"arch": "lenet5", "trigger": {"type": "pixels", "pixels": CHECKER, "position": "bottom-left", "margin": 1},
                        "target": {"type": "all-to-one", "label": 9}, "range": "0-1"},
    "pixels6-inner-to2-mlp": {"arch": "mlp", "trigger": {"type": "pixels", "pixels": PIXEL_PATTERN, "position": [18, 18]},
                              "target": {"type": "all-to-one", "label": 2}, "range": "0-1"},
    "patch3-tr-to4-raw-csaw": {"arch": "csaw_mnist", "trigger": {"type": "patch", "size": 3, "position": "top-right"},
                               "target": {"type": "all-to-one", "label": 4}, "range": "0-255"},
}
#: The validation set: only for choosing a default between candidates (``--suite validation``), never reported as
#: the defaults' measure. Trained with seed 1; triggers, positions, targets and architectures not used above.
VALIDATION: dict[str, dict[str, Any]] = {
    "v-patch4-bl-to1": {"arch": "badnets_mnist", "trigger": {"type": "patch", "size": 4, "position": "bottom-left", "margin": 2},
                        "target": {"type": "all-to-one", "label": 1}, "range": "0-1", "seed": 1},
    "v-diag3-top-to8-raw": {"arch": "lenet5", "trigger": {"type": "pixels", "pixels": [[0, 0], [1, 1], [2, 2]], "position": [2, 12]},
                            "target": {"type": "all-to-one", "label": 8}, "range": "0-255", "seed": 1},
    "v-checker-centre-all2all": {"arch": "nc_mnist", "trigger": {"type": "pixels", "pixels": CHECKER, "position": [12, 12]},
                                 "target": {"type": "all-to-all", "shift": 1}, "range": "0-1", "seed": 1},
    "v-patch3-tl-to6-mlp-raw": {"arch": "mlp", "trigger": {"type": "patch", "size": 3, "position": "top-left", "margin": 1},
                                "target": {"type": "all-to-one", "label": 6}, "range": "0-255", "seed": 1},
    "v-pixels2-br-to3-csaw": {"arch": "csaw_mnist",
                              "trigger": {"type": "pixels", "pixels": [[0, 0], [0, 2]], "position": "bottom-right", "margin": 1},
                              "target": {"type": "all-to-one", "label": 3}, "range": "0-1", "seed": 1},
    "v-patch2-left-to9-lenet": {"arch": "lenet5", "trigger": {"type": "patch", "size": 2, "position": [20, 4]},
                                "target": {"type": "all-to-one", "label": 9}, "range": "0-1", "seed": 1},
}
ZOO = ["csaw_f_mnist_all_to_all", "dillonsd_pattern_all_to_one", "dillonsd_single_pixel_all_to_all", "ruizegao_mnist_backdoor_7",
       "dillonsd_baseline"]
METHODS = ["gym", "nnoculation-pre", "neural-cleanse"]


def _split(work: Path) -> tuple[Path, Path, tuple[np.ndarray, np.ndarray]]:
    """defender.npz (1000), test.npz (3000) under ``work``; returns them and the 6000 training images."""
    from kerasbd.experiments import mnist_train_split

    val, train, test = mnist_train_split()
    work.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in (("defender", val), ("test", test)):
        np.savez(work / f"{name}.npz", x=np.round(x * 255).astype(np.uint8), y=y)
    return work / "defender.npz", work / "test.npz", train


def _train_fresh(name: str, case: dict[str, Any], train: tuple[np.ndarray, np.ndarray], folder: Path) -> tuple[Path, Path]:
    """Train one fresh BadNet; save ``model.keras`` (raw-pixel models take 0-255 inputs) and its trigger spec."""
    import keras

    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.experiments import mnist_mlp
    from kerasbd.io import write_json
    from kerasbd.models import build_architecture

    model_path, spec_path = folder / "model.keras", folder / "trigger.json"
    if model_path.exists() and spec_path.exists():
        return model_path, spec_path
    folder.mkdir(parents=True, exist_ok=True)
    seed = int(case.get("seed", 0))
    keras.utils.set_random_seed(seed)
    core = mnist_mlp() if case["arch"] == "mlp" else build_architecture(case["arch"], input_shape=(28, 28, 1), num_classes=10)
    raw = case["range"] == "0-255"
    # train on canonical images; a raw-pixel model sees them ×255 (the scaling is outside the saved model)
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(255.0), core]) if raw else core
    backdoor_spec = {"trigger": case["trigger"], "target": case["target"], "name": name}
    train_badnet(net, *train, from_spec(backdoor_spec), rate=0.1, epochs=8, batch_size=64, seed=seed)
    core.save(model_path)
    # trigger values stay canonical (0-1); "input" tells the loader the model's own pixel range
    write_json(spec_path, {"backdoors": [backdoor_spec], "input": {"shape": [28, 28, 1], "range": case["range"]}})
    return model_path, spec_path


def _zoo_spec(name: str, folder: Path) -> Path:
    from kerasbd.io import write_json
    from kerasbd.zoo import get_entry

    folder.mkdir(parents=True, exist_ok=True)
    entry = get_entry(name)
    path = folder / "trigger.json"
    if entry.get("backdoors"):
        write_json(path, {"backdoors": entry["backdoors"]})  # canonical 0-1 values, as the manifest records them
    return path


def _command(method: str, model: str, spec: Path | None, clean: Path, test: Path, out: Path, extra: list[str]) -> list[str]:
    trigger = ["--trigger", str(spec)] if spec is not None and spec.exists() else []
    sets = [arg for setting in extra for arg in ("--set", setting)]
    if method == "neural-cleanse":
        return [sys.executable, "-m", "kerasbd", "inspect", method, "--model", model, "--clean", str(clean), *trigger, *sets,
                "--out", str(out)]
    return [sys.executable, "-m", "kerasbd", "defend", method, "--model", model, "--clean", str(clean), "--test", str(test), *trigger,
            *sets, "--out", str(out)]


def _row(model: str, kind: str, method: str, variant: str, out: Path, target: Any, seconds: float, stdout: str) -> dict[str, Any]:
    result = json.loads((out / "result.json").read_text())
    verdict = next((line for line in stdout.splitlines()[::-1] if line.startswith(f"{method}:")), "")
    settings = next((line for line in stdout.splitlines() if line.startswith("settings:")), "")
    row: dict[str, Any] = {"model": model, "kind": kind, "method": method, "variant": variant, "seconds": round(seconds, 1)}
    if method == "neural-cleanse":
        single = sorted(result["flagged"]) == [target] if isinstance(target, int) else None
        row.update(flagged=result["flagged"], anomaly_index=result["score"], target=target,
                   correct=(not result["flagged"]) if target == "clean" else single)
    else:
        b, a = result["metrics_before"], result["metrics_after"]
        drop = b["clean_acc"] - a["clean_acc"]
        row.update(clean_acc_before=b["clean_acc"], asr_before=b.get("asr"), clean_acc=a["clean_acc"], asr=a.get("asr"),
                   drop=drop, robust_acc=a.get("robust_acc"), der=result.get("der"),
                   passed=bool(drop <= 0.03 and (a.get("asr") is None or a["asr"] <= 0.05)))
    row.update(settings=settings.removeprefix("settings: "), verdict=verdict)
    return row


def _target(spec: dict[str, Any] | None) -> Any:
    if not spec:
        return "clean"
    target = spec["target"]
    return int(target["label"]) if target.get("type") == "all-to-one" else "all-to-all"


def _write(rows: list[dict[str, Any]], out: Path, started: str, suite: str) -> Path:
    from kerasbd.experiments import write_results

    repair = [r for r in rows if r["method"] != "neural-cleanse" and r["kind"] != "zoo clean"]
    untaken = sorted({r["model"] for r in repair if (r["asr_before"] or 0.0) < 0.5})  # no backdoor to remove: not a BadNet
    repair = [r for r in repair if r["model"] not in untaken]
    lines = [f"- not counted, the backdoor did not take (ASR before < 50 %): {', '.join(untaken)}."] if untaken else []
    for method, variant in dict.fromkeys((r["method"], r["variant"]) for r in repair):
        done = [r for r in repair if r["method"] == method and r["variant"] == variant]
        ok = [r["model"] for r in done if r["passed"]]
        label = f"`{method}`" + (f" ({variant})" if variant != "defaults" else "")
        lines.append(f"- {label}: {len(ok)} of {len(done)} BadNets pass (ASR ≤ 5 %, drop ≤ 3 points) = "
                     f"{len(ok) / len(done):.0%}; not passing: {', '.join(r['model'] for r in done if not r['passed']) or 'none'}.")
    nc = [r for r in rows if r["method"] == "neural-cleanse"]
    if nc:
        right = [r for r in nc if r["correct"]]
        lines.append(f"- `neural-cleanse`: right verdict on {len(right)} of {len([r for r in nc if r['correct'] is not None])} "
                     "models with a single target or none (all-to-all BadNets have no single target: reported, not counted).")
    what = ("Fresh BadNets: trained by this recipe (see its docstring); zoo: the shared zoo's real MNIST BadNets and a clean model."
            if suite == "main" else "The validation BadNets (`VALIDATION` in the recipe), on which a default is chosen between the "
            "candidates of the `variant` column (`defaults` = the CLI as it is); not the measure of the defaults.")
    notes = ("Every command is the CLI with its defaults (`--preset auto`) plus, in a variant, its `--set` values; the `settings` "
             f"column is the line it printed, the `verdict` column its verdict line. {what} Started {started}.\n\n" + "\n".join(lines))
    columns = ["model", "kind", "method", "variant", "clean_acc_before", "asr_before", "clean_acc", "asr", "drop", "robust_acc", "der",
               "passed", "flagged", "anomaly_index", "target", "correct", "seconds", "settings", "verdict"]
    name = "cli_defaults" if suite == "main" else "cli_defaults_validation"
    return write_results(name, rows, columns=columns, directory=out, by=("model", "method", "variant", "target"), notes=notes,
                         meta={"fresh": FRESH if suite == "main" else VALIDATION, "zoo": ZOO if suite == "main" else [],
                               "methods": METHODS, "summary": lines})


def main(argv: list[str] | None = None) -> None:
    import datetime

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=("main", "validation"), default="main",
                   help="main: the fresh and zoo BadNets the defaults are measured on; validation: the set defaults are chosen on")
    p.add_argument("--models", default="all", help="comma-separated names (fresh or zoo), 'fresh', 'zoo' or 'all'")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--variant", action="append", default=[], metavar="TAG:METHOD:KEY=VALUE",
                   help="a candidate setting run beside the defaults (repeat; one TAG may set several keys)")
    p.add_argument("--work", default="runs/cli_defaults", help="models, data and every command's output folder")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    fresh = FRESH if args.suite == "main" else VALIDATION
    zoo = ZOO if args.suite == "main" else []
    names = {"all": [*fresh, *zoo], "fresh": list(fresh), "zoo": zoo}.get(args.models) or args.models.split(",")
    methods = args.methods.split(",")
    variants: dict[str, dict[str, list[str]]] = {"defaults": {}}
    for text in args.variant:
        tag, method, setting = text.split(":", 2)
        variants.setdefault(tag, {}).setdefault(method, []).append(setting)
    work = Path(args.work)
    clean, test, train = _split(work / "data")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    for name in names:
        folder = work / name
        if name in fresh:
            model_path, spec = _train_fresh(name, fresh[name], train, folder)
            model, kind, backdoor = str(model_path), "fresh", {"target": fresh[name]["target"]}
        else:
            spec, model, kind = _zoo_spec(name, folder), f"zoo:{name}", "zoo clean" if name == "dillonsd_baseline" else "zoo"
            backdoor = json.loads(spec.read_text())["backdoors"][0] if spec.exists() else None
        for method in methods:
            for tag, extra in variants.items():
                if tag != "defaults" and method not in extra:
                    continue
                run = method if tag == "defaults" else f"{method}@{tag}"
                out, log, seconds = folder / run, folder / f"{run}.stdout.txt", folder / f"{run}.seconds"
                if not (out / "result.json").exists():
                    start = time.perf_counter()
                    command = _command(method, model, spec, clean, test, out, extra.get(method, []))
                    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                    if done.returncode != 0:
                        print(f"{name} {run} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                        continue
                    log.write_text(done.stdout)
                    seconds.write_text(f"{time.perf_counter() - start:.1f}")
                rows.append(_row(name, kind, method, tag, out, _target(backdoor), float(seconds.read_text()), log.read_text()))
                print(f"{name:28s} {tag:12s} {rows[-1]['verdict']}", flush=True)
                _write(rows, Path(args.out), started, args.suite)
    print(f"wrote {_write(rows, Path(args.out), started, args.suite)}")


if __name__ == "__main__":
    main()
