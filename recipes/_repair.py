"""The loop shared by the model-repair recipes (GYM, NNoculation pre-deployment, fine-pruning).

For every seed: split the zoo's MNIST test set into the defender's 1000 clean images and the held-out rest
(:func:`kerasbd.experiments.mnist_split`), run the defense on every real MNIST model of the zoo (BadNets and
clean baselines) and on the demo's digits BadNet (its own split), measure on the held-out split, and collect
rows with ``model``, ``defense`` (one per reported stage), ``clean_acc_before``, ``asr_before``, ``clean_acc``,
``asr``, ``robust_acc``, ``der``, ``seconds``, ``seed``. Results go to ``results/<name>.json`` + ``.md``, rewritten
after every model × seed; with ``--checkpoint-dir`` a stopped run resumes at the first unfinished one.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

__all__ = ["parse_args", "run_cases", "print_paper"]


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default 0 1 2; 0 with --quick)")
    p.add_argument("--quick", action="store_true", help="small budgets (see the recipe) for a run of a few minutes")
    p.add_argument("--n-eval", type=int, default=None, help="held-out images used for evaluation (default: all)")
    p.add_argument("--models", default="all", help="comma-separated model names, 'zoo', 'digits' or 'all'")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--checkpoint-dir", default="", help="save every finished model × seed here; a rerun with the same "
                                                           "settings takes those from here instead of running them again")
    p.add_argument("--restart", action="store_true", help="discard what --checkpoint-dir holds instead of resuming")
    args = p.parse_args(argv)
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.quick and args.n_eval is None:
        args.n_eval = 2000
    return args


def _cases(which: str, seed: int) -> list[tuple[Any, tuple, tuple | None]]:
    """(case, its own (val, test) or None for the shared MNIST split) for the selected models."""
    from kerasbd.experiments import digits_case, mnist_zoo_cases

    out: list[tuple[Any, tuple, tuple | None]] = []
    names = {n.strip() for n in which.split(",")} if which not in ("all", "zoo", "digits") else set()
    if which in ("all", "zoo") or names:
        out += [(c, None, None) for c in mnist_zoo_cases(include_clean=True) if not names or c.name in names]
    if which in ("all", "digits") or "digits-lenet5-patch" in names:
        case, val, test = digits_case(seed)
        out.append((case, val, test))
    return out


def _subset(data: tuple[np.ndarray, np.ndarray], n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from kerasbd.data.splits import subsample

    return subsample(data, n, seed)


def run_cases(
    args: argparse.Namespace,
    make_defense: Callable[[], Any],
    stage_rows: Callable[[Any], list[dict[str, Any]]],
    *,
    record: Callable[[str, int, Any], dict[str, Any] | None] | None = None,
    write: Callable[[list[dict[str, Any]], list[dict[str, Any]]], Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the defense on every case and seed and return ``(rows, records)``.

    ``stage_rows(result)`` turns a result into the reported rows (each a dict with ``defense``, ``clean_acc``,
    ``asr``, ``robust_acc``). ``record(model, seed, result)`` may return a JSON-able dict kept beside the rows
    (``records`` holds it with ``model`` and ``seed``; a recipe builds its extra tables from them and may save
    figures there). ``write(rows, records)`` is called after every case, so a stopped run leaves the results
    so far. With ``args.checkpoint_dir`` every finished case is saved there and a rerun with the same settings
    takes it from there instead of running it again.
    """
    from kerasbd.experiments import mnist_split
    from kerasbd.resume import open_store

    config = {"defense": make_defense().get_config(), "n_eval": args.n_eval}
    store = open_store(args.checkpoint_dir, config, restart=args.restart)
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for seed in args.seeds:
        val, test = mnist_split(n_val=1000, seed=seed)
        for case, own_val, own_test in _cases(args.models, seed):
            key = f"{case.name}_seed{seed}"
            done = store.load_json(key) if store is not None else None
            if done is None:
                v, t = (own_val, own_test) if own_val is not None else (val, test)
                t = _subset(t, args.n_eval, seed)
                start = time.perf_counter()
                result = make_defense().run(case.classifier, v, eval_data=t, backdoors=case.backdoors, seed=seed, verbose=0)
                seconds = time.perf_counter() - start
                done = {"rows": _case_rows(case.name, seed, result, stage_rows(result), seconds),
                        "record": record(case.name, seed, result) if record is not None else None}
                if store is not None:
                    store.save_json(key, done)
            else:
                print(f"seed {seed} {case.name}: finished earlier, taken from {args.checkpoint_dir}", flush=True)
            rows += done["rows"]
            if done["record"] is not None:
                records.append({"model": case.name, "seed": seed, **done["record"]})
            if write is not None:
                write(rows, records)
    return rows, records


def _case_rows(model: str, seed: int, result: Any, stages: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    from kerasbd.metrics import der

    before = result.metrics_before
    rows = []
    for stage in stages:
        after = {"clean_acc": stage["clean_acc"], "asr": stage.get("asr")}
        r = {
            "model": model, "defense": stage["defense"],
            "clean_acc_before": before.get("clean_acc"), "asr_before": before.get("asr"),
            "clean_acc": stage["clean_acc"], "asr": stage.get("asr"), "robust_acc": stage.get("robust_acc"),
            "der": der(before, after), "seconds": round(seconds, 2), "seed": seed,
            **{k: v for k, v in stage.items() if k not in ("defense", "clean_acc", "asr", "robust_acc")},
        }
        rows.append(r)
        asr = "—" if r["asr"] is None else f"{r['asr']:.4f}"
        asr0 = "—" if r["asr_before"] is None else f"{r['asr_before']:.4f}"
        print(f"seed {seed} {model:38s} {r['defense']:34s} acc {r['clean_acc_before']:.4f}→{r['clean_acc']:.4f} "
              f"asr {asr0}→{asr} ({seconds:.0f}s)", flush=True)
    return rows


def print_paper(title: str, rows: list[dict[str, Any]]) -> None:
    """Print the paper's numbers (as reported there) before ours."""
    from kerasbd.reporting import markdown_table

    print(f"\nPaper: {title}\n{markdown_table(rows)}\n", flush=True)
