"""The ``kerasbd`` command line: ``demo``, ``zoo``, ``evaluate``, ``inspect``, ``defend``, ``detect``, and
``nnoculation`` (deployment, streams, treatment: :mod:`kerasbd.cli_nnoculation`).

Every command prints its verdict and a readable table, and writes JSON (atomically) when ``--out`` is given.
Method names come from the registries (``INSPECTORS``, ``DEFENSES``, ``DETECTORS``); ``--set a__b=value``
reaches nested settings (:meth:`kerasbd.config.Configurable.with_params`). User mistakes (bad file, bad data,
bad spec, bad option) end with ``error: <what is wrong and what to do>`` and exit status 2, never a traceback;
options and the output location are checked before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasbd.cli_common import (
    _check_input_range,
    _check_out,
    _configured,
    _emit,
    _fraction,
    _json_target,
    _load_data,
    _load_model,
    _load_trigger,
    _method_args,
    _method_class,
    _model_args,
    _Parser,
    _positive_int,
    _run_args,
    _verbosity_args,
)
from kerasbd.errors import ConfigError, KerasBDError

__all__ = ["main", "build_parser"]


# --------------------------------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from kerasbd.demo import run_demo

    run_demo(seed=args.seed, defenses=args.defenses, out=args.out, quick=args.quick, verbose=args.verbose)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from kerasbd import zoo
    from kerasbd.reporting import markdown_table

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
    from kerasbd.reporting import markdown_table

    target = _json_target(args.out)
    backdoors, spec = _load_trigger(args.trigger)
    clf = _load_model(args, spec)
    x, y = _load_data(args.data)
    _check_input_range(args, clf, x, y, "--data")
    metrics = evaluate_backdoor(clf, x, y, backdoors, asr_mode=args.asr_mode, amplify=args.amplify or (), batch_size=args.batch_size,
                                seed=args.seed)
    row = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    table = markdown_table([row])
    if metrics.get("per_trigger"):
        table += "\n\n" + markdown_table([{"trigger": k, **v} for k, v in metrics["per_trigger"].items()])
    for copies, amp in metrics.get("amplified", {}).items():
        table += f"\n\ntriggers stamped {copies}:\n\n" + markdown_table([{"trigger": k, **v} for k, v in amp["per_trigger"].items()])
    _emit(target, {"model": args.model, "data": args.data, "trigger": args.trigger, "seed": args.seed, "metrics": metrics}, table)
    return 0


def _setup(args: argparse.Namespace, registry: dict[str, Any], kind: str) -> tuple[Any, list[Any], Any, tuple[np.ndarray, np.ndarray] | None]:
    """The configured method, the trigger's backdoors, the model and the clean data — options and ``--out`` checked
    first, the input range checked on the clean data, the settings printed."""
    cls, params = _method_class(registry, kind, args.method, args.set, args.preset)
    if args.clean is None and cls.requires_clean:
        raise ConfigError(f"{kind} {args.method} needs the defender's clean data: pass --clean FILE (only data-free methods run without).")
    _check_out(args.out)
    backdoors, spec = _load_trigger(args.trigger)
    clf = _load_model(args, spec)
    if args.clean is None:  # a data-free method: its settings follow the model's input shape
        from kerasbd.models import as_logits_model

        if getattr(args, "holdout", 0.0):
            raise ConfigError("--holdout splits --clean, and there is none: give --test for the before/after metrics.")
        shape = as_logits_model(clf).input_shape[1:]
        return _configured(cls, args.preset, params, np.zeros((0, *shape), np.float32), args.verbose), backdoors, clf, None
    clean = _load_data(args.clean)
    _check_input_range(args, clf, *clean, "--clean")
    return _configured(cls, args.preset, params, clean[0], args.verbose), backdoors, clf, clean


def _report(result: Any, out: str | None) -> None:
    print(result.to_markdown())
    print(result.verdict())
    if out:
        print(f"wrote {result.save(out)}/")


def cmd_inspect(args: argparse.Namespace) -> int:
    from kerasbd.defenses import INSPECTORS

    inspector, backdoors, clf, clean = _setup(args, INSPECTORS, "inspector")
    result = inspector.inspect(clf, clean, seed=args.seed, strategy=args.strategy, checkpoint_dir=args.checkpoint_dir,
                               restart=args.restart, verbose=args.verbose, backdoors=backdoors)
    _report(result, args.out)
    return 0


def cmd_defend(args: argparse.Namespace) -> int:
    from kerasbd.defenses import DEFENSES

    defense, backdoors, clf, clean = _setup(args, DEFENSES, "defense")
    eval_data = _load_data(args.test) if args.test else None
    if eval_data is None and args.holdout and clean is not None:  # without --clean, _setup has refused --holdout
        from kerasbd.data import split_defender

        if args.holdout * len(clean[0]) < 1 or (1.0 - args.holdout) * len(clean[0]) < 1:
            raise ConfigError(f"--holdout {args.holdout} of {len(clean[0])} clean images leaves no images on one side; "
                              "choose a fraction that keeps images for both the defense and the evaluation, or give --test.")
        clean, eval_data = split_defender(*clean, val_fraction=1.0 - args.holdout, seed=args.seed)
    result = defense.run(clf, clean, eval_data=eval_data, backdoors=backdoors, seed=args.seed, strategy=args.strategy,
                         checkpoint_dir=args.checkpoint_dir, restart=args.restart, verbose=args.verbose)
    _report(result, args.out)
    return 0


def _ground_truth(args: argparse.Namespace, inputs: tuple[np.ndarray, np.ndarray], backdoors: list[Any]) -> tuple[Any, ...]:
    """Which screened inputs are triggered, and how that is known: (x, y, triggered flags or None, how, stamped),
    ``stamped`` when the triggered ones are copies of ``--inputs`` made here (all eligible by construction)."""
    from kerasbd.data import load_npz_array

    x, y = inputs
    flags = load_npz_array(args.inputs, "triggered")
    if flags is not None:
        if flags.shape != (len(x),) or flags.dtype.kind not in "bui":
            raise ConfigError(f"--inputs {args.inputs}: its 'triggered' array must hold one true/false flag per image "
                              f"({len(x)}), got shape {flags.shape} of {flags.dtype}.")
        if args.triggered:
            raise ConfigError("--inputs already marks its triggered images (a 'triggered' array); drop --triggered.")
        return x, y, flags.astype(bool), "the 'triggered' array of --inputs", False
    if args.triggered:
        tx, ty = _load_data(args.triggered)
        return (np.concatenate([x, tx]), np.concatenate([y, ty]), np.r_[np.zeros(len(x), bool), np.ones(len(tx), bool)],
                "--inputs clean, --triggered triggered", False)
    if backdoors:
        eligible = backdoors[0].target.eligible(y)
        stamped = backdoors[0].trigger.apply(x[eligible], rng=args.seed)
        return (np.concatenate([x, stamped]), np.concatenate([y, y[eligible]]),
                np.r_[np.zeros(len(x), bool), np.ones(len(stamped), bool)],
                f"--inputs taken as clean; --trigger stamped on copies of the {int(eligible.sum())} whose label is not the target", True)
    return x, y, None, "unknown (give a 'triggered' array in --inputs, --triggered, or --trigger)", False


def cmd_detect(args: argparse.Namespace) -> int:
    from kerasbd.defenses import DETECTORS
    from kerasbd.metrics import roc_auc, tpr_at_fpr
    from kerasbd.reporting import markdown_table

    cls, params = _method_class(DETECTORS, "detector", args.method, args.set, args.preset)
    target = _json_target(args.out)
    backdoors, spec = _load_trigger(args.trigger)
    clf = _load_model(args, spec)
    clean_x, _ = _load_data(args.clean)
    detector = _configured(cls, args.preset, params, clean_x, args.verbose)
    x, y, truth, how, stamped = _ground_truth(args, _load_data(args.inputs), backdoors)
    detector.fit(clf, clean_x, fpr=args.fpr, seed=args.seed)
    scores = detector.score(x)
    flags = scores > detector.threshold_
    summary: dict[str, Any] = {"detector": args.method, "threshold": detector.threshold_, "fpr_target": args.fpr,
                               "n_screened": int(len(scores)), "flagged": int(flags.sum()), "flagged_fraction": float(flags.mean())}
    if truth is not None and truth.any() and not truth.all():
        summary.update(n_clean=int((~truth).sum()), n_triggered=int(truth.sum()), fpr=float(flags[~truth].mean()), tpr=float(flags[truth].mean()))
        if backdoors and not stamped:  # TPR also over the inputs ASR counts (label ≠ target)
            eligible = truth & backdoors[0].target.eligible(y)
            summary["tpr_eligible"] = float(flags[eligible].mean()) if eligible.any() else None
        summary.update(auc=roc_auc(scores[~truth], scores[truth]), tpr_at_fpr5=tpr_at_fpr(scores[~truth], scores[truth], 0.05))
        if stamped and summary["fpr"] > max(3 * args.fpr, args.fpr + 0.05):
            print(f"warning: {summary['fpr']:.1%} of --inputs, taken as clean, are flagged at a {args.fpr:.0%} false-positive "
                  "threshold: they may already hold triggered images; mark them with a 'triggered' array in the .npz", file=sys.stderr)
    elif truth is not None:
        how += f" (all {'triggered' if truth.all() else 'clean'}: no rates)"
    table = markdown_table([summary]) + f"\n\nground truth: {how}"
    verdict = f"{args.method}: flagged {summary['flagged']} of {summary['n_screened']} inputs"
    if "tpr" in summary:
        verdict += (f" (TPR {summary['tpr']:.3f} on the {summary['n_triggered']} triggered, "
                    f"FPR {summary['fpr']:.3f} on the {summary['n_clean']} clean)")
    payload = {"summary": summary, "ground_truth": how, "verdict": verdict, "settings": detector.settings_, "scores": scores,
               "flags": flags, "triggered": truth}
    _emit(target, payload, table + "\n" + verdict)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kerasbd.defenses import DEFENSES, DETECTORS, INSPECTORS

    parser = _Parser(prog="kerasbd", description="Find and remove backdoors in Keras image classifiers.")
    parser.add_argument("-v", "--verbose", type=int, default=1, metavar="N", help="0 quiet, 1 progress bars (default), 2 more")
    parser.add_argument("-q", "--quiet", dest="verbose", action="store_const", const=0, help="same as --verbose 0")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a clean and a backdoored model on the embedded digits data, scan both, repair the flagged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--defenses", default="none", help="also run these defenses and every input detector on the BadNet: names, 'all' or 'none'")
    p.add_argument("--out", default="runs/demo", help="output folder (JSON, markdown, plots)")
    p.add_argument("--quick", action="store_true", help="smaller budgets for a fast smoke run")
    _verbosity_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("zoo", help="the manifest of real published BadNets")
    p.add_argument("action", choices=["list", "info", "verify"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", help="filter list by role (backdoored, clean, defended, auxiliary, data)")
    _verbosity_args(p)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("evaluate", help="clean accuracy, ASR, robust accuracy of a model under a trigger")
    _model_args(p)
    p.add_argument("--data", required=True, help="labelled data: .h5 (CSAW/NC), .npz, per-class .npy folder, image folder, 'digits'")
    p.add_argument("--asr-mode", choices=["all", "correct"], default="all", help="'correct': DHBE's ASR over correctly classified inputs")
    p.add_argument("--amplify", type=int, nargs="+", choices=[4, 9], help="also the ASR with each patch/pixel trigger stamped 4 "
                                                                         "(corners) or 9 (+ centre, edges) times (DHBE §5.3)")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seeds random triggers (e.g. blended noise, random positions)")
    p.add_argument("--out", help="JSON file or folder")
    _verbosity_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inspect", help="is the model backdoored, and towards which label? (no trigger needed)")
    p.add_argument("method", choices=sorted(INSPECTORS), help="inspector")
    _model_args(p)
    p.add_argument("--clean", help="the defender's clean data (labels used when present); data-free methods need none")
    _method_args(p, INSPECTORS)
    _run_args(p)
    p.add_argument("--out", help="output folder (result.json, result.md, plots, reversed_triggers.json)")
    _verbosity_args(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("defend", help="repair or wrap a model with a defense")
    p.add_argument("method", choices=sorted(DEFENSES), help="defense")
    _model_args(p)
    p.add_argument("--clean", help="the defender's clean data; data-free methods need none")
    p.add_argument("--test", help="held-out labelled data for before/after metrics")
    p.add_argument("--holdout", type=_fraction, default=0.0, help="without --test: fraction of --clean held out for evaluation")
    _method_args(p, DEFENSES)
    _run_args(p)
    p.add_argument("--out", help="output folder (result.json, result.md, plots, model.keras)")
    _verbosity_args(p)
    p.set_defaults(func=cmd_defend)

    p = sub.add_parser("detect", help="flag triggered inputs at inference time")
    p.add_argument("method", choices=sorted(DETECTORS), help="input detector")
    _model_args(p)
    p.add_argument("--clean", required=True, help="clean inputs for calibration (labels ignored)")
    p.add_argument("--inputs", required=True, help="labelled inputs to screen; an .npz may mark its triggered images with a "
                                                   "boolean 'triggered' array (then TPR and FPR are measured on them)")
    p.add_argument("--triggered", help="a second labelled set of known triggered inputs; --inputs are then the clean ones")
    p.add_argument("--fpr", type=_fraction, default=0.01, help="false-positive rate on clean data that sets the threshold")
    _method_args(p, DETECTORS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file or folder")
    _verbosity_args(p)
    p.set_defaults(func=cmd_detect)

    from kerasbd.cli_nnoculation import add_parser as add_nnoculation
    from kerasbd.cli_scan import add_parser as add_scan

    add_nnoculation(sub)
    add_scan(sub)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """Warnings as ``warning: <message>`` lines (no source line), like the errors."""
    return f"warning: {message}\n"


def _early_verbosity(argv: Sequence[str]) -> int:
    """The verbosity asked for, read before the parser exists: building it imports TensorFlow (the registries)."""
    level = 1
    for i, arg in enumerate(argv):
        if arg in ("-q", "--quiet"):
            level = 0
        elif arg in ("-v", "--verbose") and i + 1 < len(argv) and argv[i + 1].lstrip("-").isdigit():
            level = int(argv[i + 1])
        elif arg.startswith("--verbose="):
            level = int(arg.partition("=")[2]) if arg.partition("=")[2].lstrip("-").isdigit() else level
    return level


def main(argv: Sequence[str] | None = None) -> int:
    from kerasbd._quiet import import_tensorflow_quietly

    argv = list(sys.argv[1:] if argv is None else argv)
    import_tensorflow_quietly(_early_verbosity(argv))
    warnings.formatwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KerasBDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk or a folder without write permission while writing results
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check the paths given and free space.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
