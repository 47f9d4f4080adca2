"""The ``kerasbd`` command line: ``demo``, ``zoo``, ``evaluate``, ``defend``, ``detect``.

Every command prints a readable table and writes JSON (atomically) when ``--out`` is given. User mistakes
(bad file, bad data, bad spec) end with ``error: <what is wrong and what to do>`` and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from kerasbd.errors import ConfigError, KerasBDError  # noqa: E402

__all__ = ["main", "build_parser"]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are JSON when they parse (numbers, lists, true/false), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}.")
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def _load_model(args: argparse.Namespace, input_spec: Any = None) -> Any:
    from kerasbd.models import load_model
    from kerasbd.models.spec import InputSpec
    from kerasbd.zoo import load_zoo_model

    if args.model.startswith("zoo:"):
        return load_zoo_model(args.model[4:])
    clf = load_model(args.model, architecture=args.architecture, input_spec=input_spec, trust=args.trust)
    if getattr(args, "input_range", None) and clf.input_spec is not None and clf.input_spec.range != args.input_range:
        spec = InputSpec.from_dict({**clf.input_spec.to_dict(), "range": args.input_range})
        clf = load_model(args.model, architecture=args.architecture, input_spec=spec, trust=args.trust)
    return clf


def _load_trigger(path: str | None) -> tuple[list[Any], Any]:
    if not path:
        return [], None
    from kerasbd.attacks import load_spec

    spec = load_spec(path)
    return list(spec.backdoors), spec.input_spec


def _load_data(path: str) -> tuple[Any, Any]:
    from kerasbd.data import load_data

    return load_data(path)


def _emit(args: argparse.Namespace, payload: dict[str, Any], table: str) -> None:
    print(table)
    if getattr(args, "out", None):
        from kerasbd.io import write_json

        target = Path(args.out)
        if target.suffix != ".json":
            target = target / "result.json"
        write_json(target, payload)
        print(f"wrote {target}")


# --------------------------------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from kerasbd.demo import run_demo

    run_demo(seed=args.seed, defenses=args.defenses, out=args.out, quick=args.quick, verbose=args.verbose)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from kerasbd import zoo
    from kerasbd.results import markdown_table

    if args.action == "list":
        rows = [
            {"name": e["name"], "role": e.get("role"), "format": e.get("format"), "architecture": e.get("architecture"), "path": e.get("path")}
            for e in zoo.list_entries(role=args.role)
        ]
        print(markdown_table(rows))
    elif args.action == "info":
        if not args.name:
            raise ConfigError("zoo info needs an entry name; see `kerasbd zoo list`.")
        print(json.dumps(zoo.get_entry(args.name), indent=2))
    else:
        rows = [{"name": n, "ok": ok, "message": msg} for n, ok, msg in zoo.verify(args.name)]
        print(markdown_table(rows))
        if not all(r["ok"] for r in rows):
            return 1
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.results import markdown_table

    backdoors, spec = _load_trigger(args.trigger)
    clf = _load_model(args, spec)
    x, y = _load_data(args.data)
    metrics = evaluate_backdoor(clf, x, y, backdoors, asr_mode=args.asr_mode, batch_size=args.batch_size)
    row = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    table = markdown_table([row])
    if metrics.get("per_trigger"):
        table += "\n\n" + markdown_table([{"trigger": k, **v} for k, v in metrics["per_trigger"].items()])
    _emit(args, {"model": args.model, "data": args.data, "trigger": args.trigger, "metrics": metrics}, table)
    return 0


def cmd_defend(args: argparse.Namespace) -> int:
    from kerasbd.defenses import DEFENSES

    if args.method not in DEFENSES:
        raise ConfigError(f"unknown defense {args.method!r}; choose one of {', '.join(sorted(DEFENSES))}.")
    defense = DEFENSES[args.method].from_config(_parse_sets(args.set))
    backdoors, spec = _load_trigger(args.trigger)
    clf = _load_model(args, spec)
    clean = _load_data(args.clean)
    eval_data = _load_data(args.test) if args.test else None
    if eval_data is None and args.holdout:
        from kerasbd.data import split_defender

        clean, eval_data = split_defender(*clean, val_fraction=1.0 - args.holdout, seed=args.seed)
    result = defense.run(clf, clean, eval_data=eval_data, backdoors=backdoors, seed=args.seed, strategy=args.strategy, verbose=args.verbose)
    print(result.to_markdown())
    if args.out:
        out = result.save(args.out)
        print(f"wrote {out}/")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from kerasbd.defenses import DETECTORS
    from kerasbd.metrics import roc_auc, tpr_at_fpr
    from kerasbd.results import markdown_table

    backdoors, spec = _load_trigger(args.trigger)
    clf = _load_model(args, spec)
    clean_x, _ = _load_data(args.clean)
    inputs_x, _ = _load_data(args.inputs)
    detector = DETECTORS[args.method].from_config(_parse_sets(args.set)).fit(clf, clean_x, fpr=args.fpr, seed=args.seed)
    scores = detector.score(inputs_x)
    flags = scores > detector.threshold_
    summary: dict[str, Any] = {
        "detector": args.method,
        "threshold": detector.threshold_,
        "fpr_target": args.fpr,
        "n_inputs": int(len(scores)),
        "flagged": int(flags.sum()),
        "flagged_fraction": float(flags.mean()),
    }
    if backdoors:
        triggered = backdoors[0].trigger.apply(inputs_x, rng=args.seed)
        t_scores = detector.score(triggered)
        summary.update(
            tpr=float(np.mean(t_scores > detector.threshold_)),
            fpr=float(np.mean(scores > detector.threshold_)),
            auc=roc_auc(scores, t_scores),
            tpr_at_fpr5=tpr_at_fpr(scores, t_scores, 0.05),
        )
    _emit(args, {"summary": summary, "scores": scores, "flags": flags}, markdown_table([summary]))
    return 0


# ------------------------------------------------------------------------------------------------------ parser
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file (.h5 full or weights-only, .keras) or zoo:NAME")
    p.add_argument("--architecture", help="architecture for a weights-only file (see kerasbd.models.ARCHITECTURES)")
    p.add_argument("--input-range", choices=["0-1", "0-255"], help="the model's own pixel range (default: from trigger spec, zoo, else 0-1)")
    p.add_argument("--trust", action="store_true", help="allow Lambda layers / custom classes (executes code from the file!)")
    p.add_argument("--trigger", help="trigger/target spec JSON (schema in README)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasbd", description="Find and remove backdoors in Keras image classifiers.")
    parser.add_argument("--verbose", type=int, default=1)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a BadNet on the embedded digits data, attack it, defend it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--defenses", default="all", help="comma-separated defense names, 'all' or 'none'")
    p.add_argument("--out", default="runs/demo", help="output folder (JSON, markdown, plots)")
    p.add_argument("--quick", action="store_true", help="smaller budgets for a fast smoke run")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("zoo", help="the manifest of real published BadNets")
    p.add_argument("action", choices=["list", "info", "verify"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", help="filter list by role (backdoored, clean, defended, auxiliary, data)")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("evaluate", help="clean accuracy, ASR, robust accuracy of a model under a trigger")
    _model_args(p)
    p.add_argument("--data", required=True, help="labelled data: .h5 (CSAW/NC), .npz, per-class .npy folder, image folder, 'digits'")
    p.add_argument("--asr-mode", choices=["all", "correct"], default="all", help="'correct': DHBE's ASR over correctly classified inputs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", help="JSON file or folder")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("defend", help="repair or wrap a model with a defense")
    p.add_argument("method", help="defense name (gym, nnoculation-pre, fine-pruning, neural-cleanse, shrinkpad, flip, gym-inference)")
    _model_args(p)
    p.add_argument("--clean", required=True, help="the defender's clean data")
    p.add_argument("--test", help="held-out labelled data for before/after metrics")
    p.add_argument("--holdout", type=float, default=0.0, help="without --test: fraction of --clean held out for evaluation")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="defense parameter (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default=None, help="tf.distribute strategy: auto, default, mirrored, multi-worker")
    p.add_argument("--out", help="output folder (result.json, result.md, plots, model.keras)")
    p.set_defaults(func=cmd_defend)

    p = sub.add_parser("detect", help="flag triggered inputs at inference time")
    p.add_argument("method", choices=["strip", "squeeze"])
    _model_args(p)
    p.add_argument("--clean", required=True, help="clean inputs for calibration (labels ignored)")
    p.add_argument("--inputs", required=True, help="inputs to screen")
    p.add_argument("--fpr", type=float, default=0.01, help="false-positive rate on clean data that sets the threshold")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file or folder")
    p.set_defaults(func=cmd_detect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices from repeated predict calls are noise for CLI users
    try:
        return int(args.func(args) or 0)
    except KerasBDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
