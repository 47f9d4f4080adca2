"""Shared plumbing for recipes and benchmarks: the real zoo cases, the defender's split, result files.

Recipes reproduce each paper's comparison on the zoo's real MNIST BadNets; they all need the same cases, the
same split of the real MNIST test set into the defender's clean validation set and a held-out test set, and
the same result format (``results/<name>.json`` + a markdown table). Written once here.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ZooCase", "mnist_zoo_cases", "mnist_split", "digits_case", "write_results", "summarize", "RESULT_COLUMNS"]

RESULT_COLUMNS = ["model", "defense", "clean_acc_before", "asr_before", "clean_acc", "asr", "robust_acc", "der", "seconds", "seed"]


@dataclasses.dataclass
class ZooCase:
    """One model to defend: a name, the loaded classifier, its known backdoors ([] for clean models)."""

    name: str
    classifier: Any
    backdoors: list[Any]
    clean_model: bool
    entry: dict[str, Any]

    @property
    def target(self) -> int | None:
        """The all-to-one target label, or None (clean model, all-to-all)."""
        for b in self.backdoors:
            label = getattr(b.target, "label", None)
            if label is not None:
                return int(label)
        return None


def mnist_zoo_cases(include_clean: bool = True) -> list[ZooCase]:
    """Every real MNIST classifier in the zoo (full-model entries), with the triggers its manifest records."""
    from kerasbd.attacks import from_spec
    from kerasbd.zoo import list_entries, load_zoo_model

    cases = []
    for entry in list_entries():
        spec = entry.get("input") or {}
        if entry.get("format") != "full" or list(spec.get("shape", [])) != [28, 28, 1]:
            continue
        clean = entry.get("role") == "clean"
        if clean and not include_clean:
            continue
        backdoors = [] if clean or not entry.get("backdoors") else from_spec(entry["backdoors"])
        if not clean and not backdoors:
            continue
        cases.append(ZooCase(entry["name"], load_zoo_model(entry["name"]), backdoors, clean, entry))
    return cases


def mnist_split(n_val: int = 1000, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The zoo's full MNIST test set split (stratified, seeded) into the defender's validation set and the rest."""
    from kerasbd.data import mnist_test_set, split_defender

    return split_defender(*mnist_test_set(), n_val=n_val, seed=seed)


def mnist_train_split(n_val: int = 1000, n_train: int = 6000, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The recipes' three MNIST sets: the defender's ``n_val`` images (:func:`mnist_split`), ``n_train`` training
    images for fresh BadNets, and the rest held out: ``(val, train, test)``."""
    from kerasbd.data import split_defender

    val, rest = mnist_split(n_val=n_val, seed=seed)
    train, test = split_defender(*rest, n_val=n_train, seed=seed)
    return val, train, test


def mnist_mlp() -> Any:
    """The recipes' MNIST MLP (784-256-128-10, logits), beside the zoo's convolutional architectures."""
    import keras

    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)], name="mlp")


def digits_case(seed: int = 0, epochs: int = 30, size: int = 16) -> tuple[ZooCase, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The demo's digits BadNet as a case, with its defender split and held-out test split.

    The committed recipe results use 16×16 digits (``size=16``); ``kerasbd demo`` trains the same BadNet on
    28×28 digits so that the MNIST-scaled GYM preset fits it.
    """
    from kerasbd.demo import digits_badnet
    from kerasbd.models import wrap

    bad = digits_badnet(seed, size=size, epochs=epochs)
    case = ZooCase("digits-lenet5-patch", wrap(bad.model), bad.backdoors, False, {"name": "digits-lenet5-patch", "role": "backdoored"})
    return case, bad.val, bad.test


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(
    rows: Iterable[dict[str, Any]],
    by: Sequence[str] = ("model", "defense"),
    metrics: Sequence[str] = ("clean_acc_before", "asr_before", "clean_acc", "asr", "robust_acc", "der", "seconds"),
) -> list[dict[str, Any]]:
    """Mean ± std over seeds: one row per group with ``<metric>`` (mean), ``<metric>_std`` and ``seeds``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        for m in metrics:
            vals = [float(r[m]) for r in members if isinstance(r.get(m), (int, float))]  # e.g. a target label or "all-to-all"
            if vals:
                row[m] = statistics.fmean(vals)
                row[f"{m}_std"] = _std(vals)
        row["seeds"] = len(members)
        out.append(row)
    return out


def _mean_std_table(summary: list[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    table = []
    for r in summary:
        row = {k: r[k] for k in by}
        for m in metrics:
            if m in r:
                row[m] = f"{r[m]:.4f} ± {r[m + '_std']:.4f}" if r["seeds"] > 1 else f"{r[m]:.4f}"
        row["seeds"] = r["seeds"]
        table.append(row)
    return table


def write_results(name: str, rows: list[dict[str, Any]], *, columns: Sequence[str] | None = None, directory: str | Path = "results",
                  meta: dict[str, Any] | None = None, by: Sequence[str] = ("model", "defense"), notes: str = "",
                  command: str | None = None) -> Path:
    """Write ``<directory>/<name>.json`` (rows, mean ± std summary, run metadata) and ``<name>.md`` atomically.

    ``command`` is the command line that produced the rows (default: this process's own command line when it
    runs a script, else ``python recipes/<name>.py``); it is recorded in both files so every committed figure
    names the command that reproduces it.
    """
    import keras
    import tensorflow as tf

    from kerasbd.io import write_json, write_text
    from kerasbd.reporting import markdown_table

    columns = list(columns or [c for c in RESULT_COLUMNS if any(c in r for r in rows)])
    metrics = [c for c in columns if c not in (*by, "seed") and any(isinstance(r.get(c), (int, float)) for r in rows)]
    summary = summarize(rows, by=by, metrics=metrics) if all(k in r for r in rows for k in by) else []
    if command is None:
        script = Path(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else None
        command = " ".join(["python", os.path.relpath(script), *sys.argv[1:]]) if script else f"python recipes/{name}.py"
    info = {
        "command": command,
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "machine": f"{platform.machine()} ({platform.processor() or 'cpu'})", **(meta or {}),
    }
    directory = Path(directory)
    path = write_json(directory / f"{name}.json", {"meta": info, "rows": rows, "summary": summary})
    md = [f"# {name}", "", f"Generated by `{command}` on {info['generated']} (TensorFlow {info['tensorflow']}).", ""]
    if notes:
        md += [notes, ""]
    if summary:
        md += ["## Mean ± std over seeds", "", markdown_table(_mean_std_table(summary, by, metrics)), ""]
    md += ["## All runs", "", markdown_table(rows, columns), ""]
    write_text(directory / f"{name}.md", "\n".join(md))
    return path


def run_grid(cache: str | Path, seeds: Sequence[int], cases: Sequence[Any], methods: Sequence[str],
             run: Any, write: Any) -> list[dict[str, Any]]:
    """Every (seed, case, method) of a recipe once: rows cached in the JSON file ``cache`` (a rerun skips the
    finished ones, keyed by ``model``/``method``/``seed``); ``run(method, case, seed)`` returns a row, or a list of
    rows for a run with several stages (``case[0]`` is the model name), ``write(rows)`` is called after each, so a
    stopped run leaves its results so far."""
    import json

    cache = Path(cache)
    rows: list[dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else []
    for seed in seeds:
        for case in cases:
            for method in methods:
                if any(r["model"] == case[0] and r["method"] == method and r["seed"] == seed for r in rows):
                    continue
                out = run(method, case, seed)
                rows.extend(out if isinstance(out, list) else [out])
                cache.write_text(json.dumps(rows, default=str))
                print(json.dumps(rows[-1], default=str), flush=True)
                write(rows)
    if rows:
        write(rows)
    return rows

