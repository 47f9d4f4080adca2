"""Benchmark: ``kerasbd scan`` over many models on Ray — 1 against 2 workers, and a Ray task against the CLI.

In one run, on one local Ray with 2 CPUs: the same models (the first ``--models`` members of a
``recipes/scan_population.py`` population) scanned with 1 worker and then with 2 (fresh output folders, so nothing
resumes), the wall-clock ratio of the two; then ``kerasbd scan MODEL --clean ...`` as a single process (a fresh
Python, TensorFlow start-up and model load included) on the first ``--cli-models`` of them, against the same
models' wall time per model under 1 Ray worker. A Ray worker runs TensorFlow on one thread (one model per core);
the single-process CLI uses every core for its one model. The load average before and after is recorded (other jobs
on the same cores slow every column).

    python recipes/scan_population.py train --work runs/pop     # the population (once)
    python benchmarks/scan_ray.py --work runs/pop                # writes benchmarks/results/scan_ray.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbd.io import write_json, write_text  # noqa: E402
from kerasbd.reporting import markdown_table  # noqa: E402
from kerasbd.scan import scan_many, start_ray  # noqa: E402


def _members(work: Path, n: int) -> list[str]:
    rows = json.loads((work / "manifest.json").read_text())["members"]
    if len(rows) < n:
        raise SystemExit(f"{work} has {len(rows)} members, fewer than --models {n}: run recipes/scan_population.py train first")
    return [str(work / r["model"]) for r in rows[:n]]


def _ray_run(models: list[str], clean: str, out: Path, workers: int) -> dict[str, Any]:
    start = time.perf_counter()
    rows = scan_many(models, out, clean=clean, workers=workers, verbose=0)
    wall = time.perf_counter() - start
    ok = [r for r in rows if r["status"] == "ok"]
    return {"workers": workers, "models": len(models), "ok": len(ok), "wall_s": round(wall, 1), "wall_s_per_model": round(wall / len(models), 1),
            "scan_s_per_model": round(sum(r["seconds"] for r in ok) / max(1, len(ok)), 1)}


def _cli_run(model: str, clean: str, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kerasbd", "-q", "scan", model, "--clean", clean, "--out", str(out)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"kerasbd scan {model} failed: {done.stderr.strip().splitlines()[-1:]}")
    scan = json.loads((out / "scan.json").read_text())
    return {"model": Path(model).parent.name, "wall_s": round(wall, 1), "scan_s": round(scan["seconds"], 1),
            "start_up_and_load_s": round(wall - scan["seconds"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a recipes/scan_population.py population folder")
    parser.add_argument("--models", type=int, default=4, help="models scanned by each Ray run")
    parser.add_argument("--cli-models", type=int, default=2, help="of those, scanned again by the single-process CLI")
    parser.add_argument("--out", default="benchmarks/results/scan_ray")
    args = parser.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    work = Path(args.work)
    models, clean = _members(work, args.models), str(work / "clean.npz")
    load_before = os.getloadavg()
    start_ray(2, verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_ray_run(models, clean, Path(tmp) / f"ray-{w}", w) for w in (1, 2)]
        cli = [_cli_run(m, clean, Path(tmp) / "cli" / Path(m).parent.name) for m in models[: args.cli_models]]
    load_after = os.getloadavg()
    ratio = runs[0]["wall_s"] / runs[1]["wall_s"]
    per_task = runs[0]["wall_s_per_model"]
    per_cli = sum(c["wall_s"] for c in cli) / max(1, len(cli))
    report = {"device": f"{os.cpu_count()}-core CPU VM, no GPU ({platform.processor() or platform.machine()})", "python": platform.python_version(),
              "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
              "models": [Path(m).parent.name for m in models], "ray": runs, "speedup_2_over_1_workers": round(ratio, 2), "cli": cli,
              "ray_1_worker_wall_s_per_model": per_task, "cli_wall_s_per_model": round(per_cli, 1)}
    write_json(f"{args.out}.json", report)
    lines = [f"# `kerasbd scan` on Ray: {len(models)} population models ({report['device']})", "",
             f"Load average before {report['load_before']}, after {report['load_after']}.", "",
             markdown_table(runs), "",
             f"2 workers against 1: **{ratio:.2f}×** faster (wall clock, same models, one run).", "",
             "Single-process CLI (`kerasbd -q scan MODEL --clean ...`, a fresh process per model):", "", markdown_table(cli), "",
             f"Per model: {per_cli:.1f} s by the CLI against {per_task:.1f} s by one Ray worker (wall clock over the run, "
             "worker start-up included; a Ray worker runs TensorFlow on one thread, the CLI on every core).", ""]
    write_text(f"{args.out}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
