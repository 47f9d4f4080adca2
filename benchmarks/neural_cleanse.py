"""Benchmark: Neural Cleanse trigger inversion, all labels batched vs a per-label Python loop.

Every run executes the same algorithm (same initialisation, same mini-batches per label, same schedule, a fixed
number of steps that no early stop can cut short at this length) on real MNIST BadNets from the zoo; the
per-label loop is ``label_batch_size=1``, i.e. the original's structure, ``--slots`` adds intermediate label
batches. Each repeat times every column back to back, rotating their order, and the table gives the median
wall-clock seconds over repeats (tracing included; every repeat is kept in the JSON), the speed-up of all
labels batched over the loop, and the largest difference between the batched and the looped reversed masks.
The machine's load average before and after is recorded: other jobs on the same cores slow every column.

    python benchmarks/neural_cleanse.py               # writes benchmarks/results/neural_cleanse.{json,md}
    python benchmarks/neural_cleanse.py --steps 2 --repeat 1 --models dillonsd_pattern_all_to_one
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from kerasbd.data import mnist_test_set
from kerasbd.io import write_json, write_text
from kerasbd.reporting import markdown_table
from kerasbd.defenses.inspection.neural_cleanse import CostSchedule, MaskPatternCandidates
from kerasbd.training.inversion import LabelBatchedInversion
from kerasbd.zoo import load_zoo_model

MODELS = ("dillonsd_pattern_all_to_one", "ruizegao_mnist_backdoor_7")


def time_inversion(model, x, labels, *, steps: int, mini_batches: int, label_batch_size: int | None, seed: int):
    inv = LabelBatchedInversion(steps=steps, mini_batches=mini_batches, label_batch_size=label_batch_size)
    start = time.perf_counter()
    out = inv.run(model, x, labels, MaskPatternCandidates(), CostSchedule(), seed=seed, verbose=0)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--mini-batches", type=int, default=31)
    parser.add_argument("--n-clean", type=int, default=1000)
    parser.add_argument("--slots", type=int, nargs="*", default=[5], help="intermediate label batch sizes to time as well")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions, order rotated, median kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output

    x, _ = mnist_test_set()
    x = x[: args.n_clean]
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        model = load_zoo_model(name).model
        labels = list(range(int(model.output_shape[-1])))
        columns = {"all": None, **{str(s): s for s in args.slots if 1 < s < len(labels)}, "1": 1}
        times: dict[str, list[float]] = {c: [] for c in columns}
        masks: dict[str, dict] = {}
        for r in range(args.repeat):
            order = list(columns)[r % len(columns):] + list(columns)[: r % len(columns)]
            for col in order:
                seconds, out = time_inversion(model, x, labels, steps=args.steps, mini_batches=args.mini_batches,
                                              label_batch_size=columns[col], seed=args.seed)
                times[col].append(round(seconds, 2))
                masks[col] = out
        median = {c: float(np.median(v)) for c, v in times.items()}
        rows.append({
            "model": name, "labels": len(labels), "steps": args.steps, "updates_per_label": args.steps * args.mini_batches,
            "batched_s": median["all"], **{f"slots_{c}_s": median[c] for c in columns if c not in ("all", "1")},
            "per_label_loop_s": median["1"], "speedup": round(median["1"] / median["all"], 2),
            "max_mask_diff": max(float(np.abs(masks["all"][l]["mask"] - masks["1"][l]["mask"]).max()) for l in labels),
            "repeats_s": times,
        })
        print(rows[-1], flush=True)

    load_after = os.getloadavg()
    meta = {
        "command": "python benchmarks/neural_cleanse.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "models")
        + " --models " + " ".join(args.models),
        "tensorflow": tf.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")), "batch_size": 32, "n_clean": len(x),
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    write_json(os.path.join(args.out, "neural_cleanse.json"), {"meta": meta, "rows": rows})
    notes = [
        "# Neural Cleanse inversion: batched over labels vs per-label loop",
        "",
        f"`{meta['command']}` — TensorFlow {meta['tensorflow']}, {meta['cpu_count']} CPU core(s), {meta['gpus']} GPU(s); "
        f"1-minute load average {load_before[0]:.2f} before, {load_after[0]:.2f} after the run. Same algorithm, same seeds, "
        f"{args.steps} steps × {args.mini_batches} mini-batches of 32 per label; median wall-clock seconds over {args.repeat} "
        "repeat(s) with the column order rotated, tracing included (`slots_K_s`: K labels per batch). `max_mask_diff` is the "
        "largest absolute difference between the batched and the looped reversed masks (float reduction order only).",
        "",
        markdown_table([{k: v for k, v in r.items() if k != "repeats_s"} for r in rows]),
        "",
    ]
    write_text(os.path.join(args.out, "neural_cleanse.md"), "\n".join(notes))


if __name__ == "__main__":
    main()
