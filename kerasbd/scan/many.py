"""Scanning many models on Ray: one task per model, resumable, a failed or timed-out model recorded and skipped.

:func:`scan_many` starts a local Ray with the cores asked for (``workers``) or joins an existing cluster
(``address``), and keeps at most one task per worker in flight, so a task's time limit runs from its start. Each
task loads its model, scans it with the given :class:`~kerasbd.scan.Scanner` and writes ``OUT/<name>/`` (the scan
folder); its TensorFlow process is not reused (``max_calls=1``): a worker's memory and TensorFlow state end with
its model. A model whose task raises, whose worker dies or that runs past ``timeout`` is recorded with its status
and reason; the others go on. A rerun skips every model whose ``OUT/<name>/scan.json`` exists (finished) and
retries the rest. After every model the summary (``summary.json``, ``summary.md``, ``summary.html``) is rewritten
atomically.

Ray is an optional dependency (``pip install "kerasbd[scan]"``); a single model needs no Ray
(:meth:`Scanner.scan`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kerasbd.errors import ConfigError
from kerasbd.scan.scanner import Scanner

__all__ = ["model_name", "scan_many", "scan_one", "start_ray"]

_STATUS_COLUMNS = ("name", "status", "probability", "backdoored", "targets", "repair", "seconds", "reason")


def model_name(ref: str) -> str:
    """A model's name in the scan: the zoo name, else the file's stem (its folder's name for ``model.keras``)."""
    if ref.startswith("zoo:"):
        return ref[4:]
    path = Path(ref)
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def scan_one(ref: str, out: str, *, clean: str | None, scanner: dict[str, Any], seed: int = 0, input_range: str | None = None,
             verbose: int = 0) -> dict[str, Any]:
    """Load ``ref`` (a file or ``zoo:NAME``), scan it with the scanner of config ``scanner`` and save to ``out``;
    return its summary row. This is what one Ray task runs; it is also usable alone."""
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(verbose)  # no TensorFlow start-up lines from the worker
    from kerasbd import zoo
    from kerasbd.data import load_data

    model = zoo.open_model(ref, input_range=input_range)
    data = load_data(clean) if clean else None
    # a model whose worker died resumes its finished inspector steps from here on the rerun
    checkpoints = Path(out).with_name(f".{Path(out).name}.checkpoints")
    result = Scanner.from_config(scanner).scan(model, data, seed=seed, verbose=verbose, name=model_name(ref), checkpoint_dir=checkpoints)
    result.save(out)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return _row(result.to_dict(), "ok")


def _row(scan: dict[str, Any], status: str, reason: str = "") -> dict[str, Any]:
    row = {k: scan.get(k) for k in ("name", "probability", "backdoored", "targets", "repair", "seconds")}
    return {**row, "status": status, "reason": reason, "features": scan.get("features", {})}


def _finished(folder: Path) -> dict[str, Any] | None:
    path = folder / "scan.json"
    if not path.exists():
        return None
    return _row(json.loads(path.read_text(encoding="utf-8")), "ok")


def _one_line(error: BaseException) -> str:
    """The error's own last line (Ray wraps a task's exception with its remote traceback)."""
    cause = getattr(error, "cause", None)
    text = str(cause if isinstance(cause, BaseException) else error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    from kerasbd.io import write_json, write_text
    from kerasbd.reporting.results import markdown_table
    from kerasbd.scan.html import summary_html

    table = [{c: (",".join(map(str, row[c])) if isinstance(row.get(c), list) else row.get(c)) for c in _STATUS_COLUMNS} for row in rows]
    write_json(out / "summary.json", {"models": rows})
    done = sum(row["status"] == "ok" for row in rows)
    write_text(out / "summary.md", f"# kerasbd scan: {done} of {len(rows)} models scanned\n\n{markdown_table(table)}\n")
    write_text(out / "summary.html", summary_html(f"kerasbd scan: {done} of {len(rows)} models scanned", table))


def start_ray(workers: int | None = None, address: str | None = None, verbose: int = 1) -> Any:
    """Ray, started unless it runs in this process already: a local Ray with ``workers`` CPUs (default: the cores),
    or the cluster at ``address``; its TensorFlow workers quiet and one thread each. Returns the ``ray`` module."""
    if address is None and "ray" not in sys.modules:
        # A local Ray turns token authentication on by default and warns so on every start unless the mode is set;
        # set it (on, as the default) before Ray reads its configuration at import, to keep the start quiet.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if not ray.is_initialized():
        threads = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}
        ray.init(address=address, num_cpus=None if address else (workers or os.cpu_count() or 1), include_dashboard=False,
                 log_to_driver=verbose >= 2, configure_logging=verbose >= 2, runtime_env={"env_vars": threads})
    return ray


def scan_many(models: Sequence[str], out: str | os.PathLike, *, clean: str | None = None, scanner: Scanner | None = None,
              workers: int | None = None, address: str | None = None, timeout: float | None = None, seed: int = 0,
              input_range: str | None = None, verbose: int = 1) -> list[dict[str, Any]]:
    """Scan every model of ``models`` (files or ``zoo:NAME``) into ``out/<name>/`` on Ray; return the summary rows.

    Args:
        clean: the defender's clean data file (every model gets the same); None: data-free inspectors only.
        scanner: the scan's configuration (default :class:`Scanner`).
        workers: models scanned at once, one CPU each (default: the machine's cores, or the cluster's CPUs).
        address: an existing Ray cluster (``"auto"`` or ``host:port``); default: a local Ray with ``workers`` CPUs.
        timeout: seconds a model may take before its task is cancelled and recorded as ``timeout``.
        seed, input_range: for every model.
    """
    from kerasbd.io import Progress

    names = [model_name(m) for m in models]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"two models would be scanned into the same folder {dupes}: give files with distinct names.")
    if workers is not None and workers < 1 or timeout is not None and timeout <= 0:
        raise ConfigError(f"workers and timeout must be positive, got {workers} and {timeout}.")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    config = (scanner or Scanner()).get_config()
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for ref, name in zip(models, names, strict=True):
        done = _finished(root / name)
        if done is not None:
            rows[name] = {**done, "status": "ok", "reason": "resumed: scanned by an earlier run"}
        else:
            todo.append((ref, name))
    ray = start_ray(workers, address, verbose)
    slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    remote: Any = ray.remote  # Ray's stubs type remote functions by arity only up to positional arguments
    task = remote(num_cpus=1, max_calls=1, max_retries=0)(scan_one)
    progress = Progress(len(models), "scan", verbose, initial=len(models) - len(todo), unit="model")
    pending: dict[Any, tuple[str, float]] = {}
    try:
        while todo or pending:
            while todo and len(pending) < slots:
                ref, name = todo.pop(0)
                handle = task.remote(ref, str(root / name), clean=clean, scanner=config, seed=seed, input_range=input_range)
                pending[handle] = (name, time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            changed = bool(ready)
            for handle in ready:
                name, started = pending.pop(handle)
                try:
                    rows[name] = ray.get(handle)
                except Exception as error:  # a model's failure is its own: recorded, the scan goes on
                    rows[name] = {"name": name, "status": "failed", "reason": _one_line(error), "seconds": round(time.monotonic() - started, 1)}
                progress.update(1, last=name)
            if timeout is not None:
                for handle, (name, started) in list(pending.items()):
                    if time.monotonic() - started > timeout:
                        ray.cancel(handle, force=True)
                        pending.pop(handle)
                        rows[name] = {"name": name, "status": "timeout", "reason": f"ran past --timeout {timeout:g} s; cancelled",
                                      "seconds": round(time.monotonic() - started, 1)}
                        progress.update(1, last=name)
                        changed = True
            if changed:
                _write_summary(root, [rows[n] for n in names if n in rows])
    finally:
        progress.close()
    ordered = [rows[n] for n in names]
    _write_summary(root, ordered)
    return ordered
