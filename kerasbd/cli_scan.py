"""``kerasbd scan``: one calibrated verdict per model; many models on Ray.

One model is scanned in this process; several (or ``--workers`` / ``--address``) run as Ray tasks, one per model,
resumable (see :mod:`kerasbd.scan.many`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kerasbd.cli_common import _check_input_range, _check_out, _load_data, _load_model, _parse_sets, _positive_int, _verbosity_args
from kerasbd.errors import ConfigError

__all__ = ["add_parser", "cmd_scan"]

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _model_refs(given: list[str]) -> list[str]:
    """Each MODEL as given: ``zoo:NAME``, a model file, or a folder of them (``*.keras``/``*.h5`` and ``*/model.keras``)."""
    refs: list[str] = []
    for ref in given:
        path = Path(ref)
        if ref.startswith("zoo:"):
            refs.append(ref)
        elif path.is_dir():
            found = sorted({*(p for s in _MODEL_SUFFIXES for p in path.glob(f"*{s}")), *path.glob("*/model.keras")})
            if not found:
                raise ConfigError(f"MODEL {ref} is a folder with no model file (*.keras, *.h5, */model.keras) in it.")
            refs += [str(p) for p in found]
        elif path.is_file():
            refs.append(ref)
        else:
            raise ConfigError(f"MODEL {ref} does not exist (give a model file, a folder of them, or zoo:NAME).")
    return refs


def _scanner(args: argparse.Namespace) -> Any:
    from kerasbd.scan import Scanner

    params: dict[str, dict[str, Any]] = {}
    for pair in args.set or []:
        inspector, dot, setting = pair.partition(".")
        if not dot or not setting:
            raise ConfigError(f"--set {pair}: name the inspector and its setting, e.g. --set gangsweep.epochs=3.")
        params.setdefault(inspector, {}).update(_parse_sets([setting]))
    if args.calibration and not Path(args.calibration).is_file():
        raise ConfigError(f"--calibration {args.calibration} does not exist.")
    return Scanner(inspectors=args.inspectors, budget=args.budget, params=params, calibration=args.calibration)


def cmd_scan(args: argparse.Namespace) -> int:
    refs = _model_refs(args.models)
    _check_out(args.out)
    scanner = _scanner(args)
    if args.clean is None:
        scanner.inspectors_for(clean=False)  # refuses an inspector list that needs clean data, before any work
    if len(refs) == 1 and args.workers is None and args.address is None:
        args.model = refs[0]
        clf = _load_model(args)
        clean = _load_data(args.clean) if args.clean else None
        if clean is not None:
            _check_input_range(args, clf, *clean, "--clean")
        from kerasbd.scan import model_name

        result = scanner.scan(clf, clean, seed=args.seed, verbose=args.verbose, name=model_name(refs[0]), checkpoint_dir=args.checkpoint_dir)
        print(result.to_markdown())
        print(result.verdict())
        print(f"wrote {result.save(args.out)}/")
        return 0
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # found, not imported: scan_many sets Ray's mode before its import
        raise ConfigError('scanning several models runs on Ray, which is not installed: pip install "kerasbd[scan]".')
    if args.clean:
        _load_data(args.clean)  # a bad --clean is one error now, not one per model
    from kerasbd.reporting.results import markdown_table
    from kerasbd.scan import scan_many

    rows = scan_many(refs, args.out, clean=args.clean, scanner=scanner, workers=args.workers, address=args.address, timeout=args.timeout,
                     seed=args.seed, input_range=args.input_range, verbose=args.verbose)
    print(markdown_table([{k: row.get(k) for k in ("name", "status", "probability", "backdoored", "targets", "seconds")} for row in rows]))
    flagged = [row["name"] for row in rows if row.get("backdoored")]
    failed = [row["name"] for row in rows if row["status"] != "ok"]
    print(f"scan: {len(rows) - len(failed)} of {len(rows)} models scanned; backdoored: {', '.join(flagged) or 'none'}"
          + (f"; not scanned: {', '.join(failed)} (rerun to retry them)" if failed else ""))
    print(f"wrote {Path(args.out) / 'summary.md'}")
    return 1 if failed else 0


def add_parser(sub: Any) -> None:
    from kerasbd.scan import BUDGETS, FEATURES

    p = sub.add_parser("scan", help="can I trust this model? one calibrated verdict per model (many models on Ray)")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model file (.keras, .h5), a folder of them, or zoo:NAME")
    p.add_argument("--clean", help="the defender's clean data; without it only the data-free inspector (deepinspect) runs")
    p.add_argument("--out", required=True, help="output folder (one model: scan.json, scan.md, scan.html; many: <name>/ each and summary.*)")
    p.add_argument("--inspectors", nargs="+", choices=list(FEATURES), help="default: all that fit the data")
    p.add_argument("--budget", choices=list(BUDGETS), default="fast", help="fast: the calibrated default; full: each inspector's own defaults")
    p.add_argument("--set", action="append", metavar="INSPECTOR.KEY=VALUE", help="an inspector setting on top of the budget (uncalibrated)")
    p.add_argument("--calibration", help="a calibration JSON to use instead of the shipped one")
    p.add_argument("--input-range", choices=["0-1", "0-255"], help="the models' own pixel range (default: from the zoo, else 0-1)")
    p.add_argument("--workers", type=_positive_int, help="Ray: models scanned at once, one CPU each (default: the cores)")
    p.add_argument("--address", help="Ray: an existing cluster ('auto' or host:port); default: a local Ray")
    p.add_argument("--timeout", type=float, help="Ray: seconds a model may take before it is recorded as timed out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", help="one model: resume the inspectors from here")
    p.set_defaults(architecture=None, trust=False, trigger=None, func=cmd_scan)
    _verbosity_args(p)
