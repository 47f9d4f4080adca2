"""``kerasbd nnoculation deploy|stream|treat|status|export``: NNoculation in the field, on a deployment folder.

- ``deploy`` makes the GoodNet (``NNoculationPre`` on ``--clean``, or ``--goodnet`` given) and a deployment folder
  (:class:`~kerasbd.serving.Deployment`) serving BadNet + GoodNet as version v0 with its quarantine store;
- ``stream`` serves a folder of images, an ``.npz``, or a simulated attack (``--simulate``: ``--test`` inputs with
  ``--poison-fraction`` of them stamped with ``--trigger``), quarantining disagreements; with ``--treat`` (and
  ``--clean``) a treatment round runs as soon as the current version has quarantined ``--quarantine-size`` inputs,
  and serving goes on with the repaired version;
- ``treat`` runs one round on what the current version quarantined, deploys the next version and writes the
  CycleGAN's translations as a picture;
- ``status`` lists the versions and the store; ``export`` writes the quarantined inputs as an ``.npz`` dataset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.cli_common import (
    _check_input_range,
    _check_out,
    _configured,
    _load_data,
    _load_model,
    _load_trigger,
    _method_args,
    _method_class,
    _model_args,
    _run_args,
    _verbosity_args,
)
from kerasbd.errors import ConfigError

__all__ = ["add_parser", "cmd_nnoculation"]


def _treatment(args: argparse.Namespace, clean: tuple[np.ndarray, np.ndarray]) -> Any:
    from kerasbd.defenses import NNoculationTreatment

    registry = {NNoculationTreatment.name: NNoculationTreatment}
    cls, params = _method_class(registry, "treatment", NNoculationTreatment.name, args.set, args.preset)
    if getattr(args, "quarantine_size", None):
        params["quarantine_size"] = args.quarantine_size
    return _configured(cls, args.preset, params, clean[0], args.verbose)


def _measure(model: Any, backdoors: list[Any], test: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    from kerasbd.metrics import evaluate_backdoor

    if test is None:
        return {}
    m = evaluate_backdoor(model, *test, backdoors)
    return {"clean_acc": m["clean_acc"], **({"asr": m["asr"], "robust_acc": m["robust_acc"]} if backdoors else {})}


def _write(out: Path, payload: dict[str, Any], markdown: str, figures: dict[str, Any]) -> None:
    from kerasbd.io import write_json, write_text
    from kerasbd.reporting.results import save_folder

    def write(folder: Path) -> None:
        write_json(folder / "result.json", payload)
        write_text(folder / "result.md", markdown)
        for name, fig in figures.items():
            fig.savefig(folder / f"{name}.png", dpi=100)

    save_folder(out, write)
    print(f"wrote {out}/")


def _rate(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def cmd_deploy(args: argparse.Namespace) -> int:
    from kerasbd.defenses import NNoculationPre
    from kerasbd.serving import Deployment

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new deployment folder.")
    _check_out(str(out))
    backdoors, spec = _load_trigger(args.trigger)
    badnet = _load_model(args, spec)
    test = _load_data(args.test) if args.test else None
    if args.goodnet:
        goodnet, how = _load_model(argparse.Namespace(**{**vars(args), "model": args.goodnet}), spec), f"--goodnet {args.goodnet}"
        details: dict[str, Any] = {"goodnet": args.goodnet}
    else:
        if not args.clean:
            raise ConfigError("deploy needs the defender's clean data (--clean) to make the GoodNet, or a ready one (--goodnet).")
        clean = _load_data(args.clean)
        _check_input_range(args, badnet, *clean, "--clean")
        cls, params = _method_class({NNoculationPre.name: NNoculationPre}, "defense", NNoculationPre.name, args.set, args.preset)
        pre = _configured(cls, args.preset, params, clean[0], args.verbose)
        result = pre.run(badnet, clean, seed=args.seed, strategy=args.strategy, checkpoint_dir=args.checkpoint_dir, restart=args.restart,
                         verbose=args.verbose)
        goodnet, how = result.model, f"NNoculation pre-deployment ({result.details['note']})"
        details = {"pre_deployment": {k: v for k, v in result.details.items() if k != "grid"}, "seed": args.seed}
    dep = Deployment.create(out, badnet, goodnet, note=how, details=details, max_entries=args.max_entries)
    ens = dep.ensemble()
    rows = {"badnet": _measure(ens.badnet, backdoors, test), "goodnet": _measure(ens.goodnet, backdoors, test)}
    verdict = f"deployed {dep.current} in {out}: BadNet + GoodNet ({how}); inputs they disagree on will be quarantined"
    if test is not None:
        verdict += "; " + ", ".join(f"{role} CA {m['clean_acc']:.1%}" + (f" ASR {m['asr']:.1%}" if "asr" in m else "") for role, m in rows.items())
    print(verdict)
    return 0


def _stream(args: argparse.Namespace, shape: tuple[int, ...]) -> Any:
    from kerasbd.serving.streams import open_stream, simulated_stream

    if args.simulate:
        if not args.test or not args.trigger:
            raise ConfigError("--simulate builds the stream from --test inputs stamped with --trigger: give both.")
        backdoors, _ = _load_trigger(args.trigger)
        x, y = _load_data(args.test)
        return simulated_stream(x, y, backdoors, poison_fraction=args.poison_fraction, seed=args.seed, batch_size=args.batch_size)
    if not args.input:
        raise ConfigError("stream needs --input (a folder of images or an .npz) or --simulate.")
    return open_stream(args.input, shape, batch_size=args.batch_size)


def cmd_stream(args: argparse.Namespace) -> int:
    from kerasbd.reporting import markdown_table
    from kerasbd.serving import Deployment

    if args.out:
        _check_out(args.out)
    dep = Deployment(args.deployment)
    if args.treat and not args.clean:
        raise ConfigError("--treat needs the defender's clean validation data (--clean).")
    stream = _stream(args, dep.ensemble().input_shape)
    clean = _load_data(args.clean) if args.treat else None
    treatment = _treatment(args, clean) if clean is not None else None
    start = time.perf_counter()
    report = dep.run(stream, treatment=treatment, clean=clean, seed=args.seed, strategy=args.strategy, verbose=args.verbose,
                     max_rounds=args.max_rounds, restart=args.restart)
    stages = report["stages"]
    table = markdown_table([{k: v for k, v in s.items() if k != "confusion"} for s in stages])
    verdict = f"served {sum(s['served'] for s in stages)} inputs, quarantined {sum(s['quarantined'] for s in stages)}"
    known = [s for s in stages if s["precision"] is not None or s["recall"] is not None]
    if known:
        verdict += "; " + "; ".join(f"{s['version']}: quarantine precision {_rate(s['precision'])}, recall {_rate(s['recall'])}" for s in known)
    for r in report["rounds"]:
        verdict += f"; treated {r['parent']} → deployed {r['version']}"
    verdict += f"; now serving {dep.current} ({time.perf_counter() - start:.0f} s)"
    print(table)
    print(verdict)
    if args.out:
        rounds = [{"version": r["version"], "parent": r["parent"], **{k: v for k, v in r["result"].details.items() if k != "cyclegan"}}
                  for r in report["rounds"]]
        from kerasbd.reporting.figures import translation_grid

        figures = {f"cyclegan_{r['version']}": translation_grid(r["result"].clean_images, r["result"].treatment_images)
                   for r in report["rounds"]}
        _write(Path(args.out), {"stages": stages, "rounds": rounds, "verdict": verdict, "seed": args.seed},
               f"# kerasbd nnoculation stream\n\n{table}\n\n{verdict}\n", figures)
    dep.close()
    return 0


def cmd_treat(args: argparse.Namespace) -> int:
    from kerasbd.reporting import markdown_table
    from kerasbd.reporting.figures import translation_grid
    from kerasbd.serving import Deployment

    if args.out:
        _check_out(args.out)
    dep = Deployment(args.deployment)
    backdoors, _ = _load_trigger(args.trigger)
    clean = _load_data(args.clean)
    test = _load_data(args.test) if args.test else None
    treatment = _treatment(args, clean)
    before = dep.ensemble()
    waiting = dep.store.count(model_version=dep.current)
    if waiting < treatment.quarantine_size:
        raise ConfigError(f"version {dep.current} has quarantined {waiting} inputs, the treatment waits for {treatment.quarantine_size}; "
                          "keep streaming, or lower --quarantine-size.")
    record = dep.treat(treatment, clean, seed=args.seed, strategy=args.strategy, verbose=args.verbose, restart=args.restart)
    res = record["result"]
    rows = [{"version": v, **{f"{role}_{k}": val for role, net in (("goodnet", e.goodnet), ("badnet", e.badnet))
                                for k, val in _measure(net, backdoors, test).items()}}
            for v, e in ((record["parent"], before), (record["version"], res.ensemble))] if test is not None else []
    verdict = (f"treated {record['parent']}: CycleGAN on {res.details['quarantined_used']} quarantined and {res.details['clean_used']} "
               f"clean inputs, {' and '.join(res.details['retrained'])} fine-tuned; deployed {record['version']} "
               f"({res.details['seconds']:.0f} s)")
    if rows:
        verdict += f"; served ASR {_rate(rows[0].get('goodnet_asr'))} → {_rate(rows[1].get('goodnet_asr'))}, " \
                   f"CA {_rate(rows[0]['goodnet_clean_acc'])} → {_rate(rows[1]['goodnet_clean_acc'])}"
    table = markdown_table(rows) if rows else ""
    print(table)
    print(verdict)
    if args.out:
        reference = backdoors[0].trigger.apply(res.clean_images[:8]) if backdoors else None
        details = {k: v for k, v in res.details.items() if k != "cyclegan"}
        _write(Path(args.out), {"version": record["version"], "parent": record["parent"], "metrics": rows, "details": details,
                                "cyclegan": res.details["cyclegan"], "verdict": verdict},
               f"# kerasbd nnoculation treat\n\n{table}\n\n{verdict}\n",
               {"cyclegan": translation_grid(res.clean_images, res.treatment_images, reference)})
    dep.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from kerasbd.reporting import markdown_table
    from kerasbd.serving import Deployment

    dep = Deployment(args.deployment)
    store = dep.store
    rows = [{"version": v["name"], "current": v["name"] == dep.current, "parent": v["parent"], "weights": v["weights"],
             "quarantined": store.count(model_version=v["name"]), "note": v["note"]} for v in dep.versions]
    print(markdown_table(rows))
    stats = store.stats()
    print(f"serving {dep.current}; the store holds {stats['entries']} quarantined inputs (bound {stats['max_entries']}, "
          f"policy {stats['policy']}, {stats['dropped']} dropped)")
    dep.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kerasbd.serving import Deployment

    if not args.out.endswith(".npz"):
        raise ConfigError(f"--out {args.out}: export writes an .npz file; give a name ending in .npz.")
    _check_out(str(Path(args.out).parent), given=args.out)
    dep = Deployment(args.deployment)
    path = dep.store.export_npz(args.out, model_version=args.version)
    print(f"exported {dep.store.count(model_version=args.version)} quarantined inputs"
          f"{' of ' + args.version if args.version else ''} to {path}")
    dep.close()
    return 0


def cmd_nnoculation(args: argparse.Namespace) -> int:
    commands = {"deploy": cmd_deploy, "stream": cmd_stream, "treat": cmd_treat, "status": cmd_status, "export": cmd_export}
    return commands[args.action](args)


def add_parser(sub: Any) -> None:
    """The ``nnoculation`` command and its actions, on the main parser's subparsers."""
    from kerasbd.cli_common import _fraction, _positive_int
    from kerasbd.defenses import NNoculationPre, NNoculationTreatment

    registry = {NNoculationTreatment.name: NNoculationTreatment}
    p = sub.add_parser("nnoculation", help="NNoculation in the field: deploy an ensemble, stream, quarantine, treat")
    actions = p.add_subparsers(dest="action", required=True)

    a = actions.add_parser("deploy", help="make the GoodNet and a deployment folder serving BadNet + GoodNet")
    _model_args(a)
    a.add_argument("--clean", help="the defender's clean data for the pre-deployment GoodNet")
    a.add_argument("--goodnet", help="a GoodNet already made (e.g. by `kerasbd defend nnoculation-pre --out`), instead of --clean")
    a.add_argument("--test", help="labelled data to report both networks' CA (and ASR with --trigger)")
    a.add_argument("--out", required=True, help="the new deployment folder")
    a.add_argument("--max-entries", type=_positive_int, default=10_000,
                   help="the quarantine store's bound; beyond it the oldest entries are dropped (default 10000)")
    _method_args(a, {NNoculationPre.name: NNoculationPre})
    _run_args(a)
    _verbosity_args(a)

    def treatment_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--quarantine-size", type=_positive_int, help="quarantined inputs a treatment waits for (default 200, the paper's N)")
        _method_args(q, registry)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--strategy", default=None, help="tf.distribute strategy: auto, default, mirrored, multi-worker")
        q.add_argument("--restart", action="store_true", help="discard a stopped treatment's checkpoints (kept in the deployment "
                                                              "folder) instead of resuming it")

    a = actions.add_parser("stream", help="serve a stream through the current version, quarantining disagreements")
    a.add_argument("--deployment", required=True, help="deployment folder (from `deploy`)")
    a.add_argument("--input", help="a folder of images or an .npz of inputs (with 'y'/'triggered' arrays when known)")
    a.add_argument("--simulate", action="store_true", help="simulate an attack: --test inputs, --poison-fraction of them with --trigger")
    a.add_argument("--test", help="with --simulate: the held-out labelled inputs")
    a.add_argument("--trigger", help="with --simulate: the attacker's trigger spec")
    a.add_argument("--poison-fraction", type=_fraction, default=0.2, help="with --simulate: share of triggered inputs (paper: 0.2)")
    a.add_argument("--batch-size", type=_positive_int, default=64)
    a.add_argument("--treat", action="store_true", help="treat and redeploy whenever --quarantine-size inputs are quarantined")
    a.add_argument("--clean", help="with --treat: the defender's clean validation data")
    a.add_argument("--max-rounds", type=_positive_int, help="with --treat: at most this many treatment rounds")
    a.add_argument("--out", help="report folder (result.json, result.md, CycleGAN pictures)")
    treatment_args(a)
    _verbosity_args(a)

    a = actions.add_parser("treat", help="one treatment round on what the current version quarantined; deploys the next version")
    a.add_argument("--deployment", required=True)
    a.add_argument("--clean", required=True, help="the defender's clean validation data (paper: 500 images are used)")
    a.add_argument("--test", help="labelled data for CA/ASR before and after")
    a.add_argument("--trigger", help="the true trigger, only to report the ASR and show it beside the CycleGAN's")
    a.add_argument("--out", help="report folder (result.json, result.md, cyclegan.png)")
    treatment_args(a)
    _verbosity_args(a)

    a = actions.add_parser("status", help="the versions of a deployment and its quarantine store")
    a.add_argument("--deployment", required=True)
    _verbosity_args(a)

    a = actions.add_parser("export", help="write the quarantined inputs as an .npz dataset")
    a.add_argument("--deployment", required=True)
    a.add_argument("--version", help="only those this version quarantined")
    a.add_argument("--out", required=True, help=".npz file")
    _verbosity_args(a)
    p.set_defaults(func=cmd_nnoculation)
