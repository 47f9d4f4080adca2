"""Benchmark: the generator-based inspectors, all label hypotheses in one batched computation vs a per-label loop.

- GangSweep: the stacked per-label ResNet generators (``label_chunk=None``, every label in one grouped model)
  against ``label_chunk=1`` (one generator per label, trained one after the other: a per-label Python loop of the
  same algorithm), the same epochs on the same images;
- DeepInspect: one label-conditioned generator trained for every label at once against one conditional generator
  per label (``labels=[t]``, a loop over labels), the same steps per label;
- seconds per label on the 1,283-class DeepID model (CSAW YouTube-Face, 55×47×3) with random inputs of the right
  shape: one chunk of labels as the ``"auto"`` preset sizes it, extrapolated to every label.

The machine's load average before and after is recorded (other jobs on the same cores slow every column).

    python benchmarks/generators.py            # writes benchmarks/results/generators.{json,md}
    python benchmarks/generators.py --images 64 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasbd.data import mnist_test_set  # noqa: E402
from kerasbd.defenses import DeepInspectInspector, GangSweepInspector  # noqa: E402
from kerasbd.defenses.base import RunContext  # noqa: E402
from kerasbd.io import write_json, write_text  # noqa: E402
from kerasbd.models import as_logits_model  # noqa: E402
from kerasbd.reporting import markdown_table  # noqa: E402
from kerasbd.zoo import load_zoo_model  # noqa: E402


def _ctx(seed: int = 0) -> RunContext:
    return RunContext(seed, np.random.default_rng(seed), verbose=0)


def time_gangsweep(model, x, y, *, epochs: int, label_chunk: int | None, labels: list[int] | None = None) -> float:
    inspector = GangSweepInspector(epochs=epochs, label_chunk=label_chunk, labels=labels)
    start = time.perf_counter()
    inspector.sweep(model, (x, y), _ctx())
    return time.perf_counter() - start


def time_deepinspect(model, x, y, labels: list[int], *, epochs: int, batched: bool) -> float:
    inspector = DeepInspectInspector(epochs=epochs)
    start = time.perf_counter()
    if batched:
        inspector.train_generator(model, x, y, labels, _ctx())
    else:
        for t in labels:
            inspector.train_generator(model, x, y, [t], _ctx())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="dillonsd_pattern_all_to_one")
    parser.add_argument("--images", type=int, default=320, help="clean MNIST images the generators train on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--deepid-images", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output

    x, y = mnist_test_set()
    x, y = x[: args.images], y[: args.images]
    model = as_logits_model(load_zoo_model(args.model))
    labels = list(range(10))
    load_before = os.getloadavg()
    rows = []
    for method, batched, looped in (
        ("gangsweep", lambda: time_gangsweep(model, x, y, epochs=args.epochs, label_chunk=None),
         lambda: time_gangsweep(model, x, y, epochs=args.epochs, label_chunk=1)),
        ("deepinspect", lambda: time_deepinspect(model, x, y, labels, epochs=args.epochs, batched=True),
         lambda: time_deepinspect(model, x, y, labels, epochs=args.epochs, batched=False)),
    ):
        t_batched, t_loop = batched(), looped()
        rows.append({"method": method, "model": args.model, "labels": 10, "images": args.images, "epochs": args.epochs,
                     "batched_s": round(t_batched, 1), "per_label_loop_s": round(t_loop, 1), "speedup": round(t_loop / t_batched, 2)})
        print(rows[-1], flush=True)

    # DeepID, 1283 classes: one chunk of labels as the auto preset sizes it, on random inputs of the right shape
    from kerasbd.models import load_model
    from kerasbd.zoo import entry_path

    deepid = as_logits_model(load_model(entry_path("csaw2020_sunglasses_weights"), architecture="deepid"))
    xr = np.random.default_rng(0).random((args.deepid_images, 55, 47, 3)).astype(np.float32)
    yr = np.random.default_rng(1).integers(0, 1283, args.deepid_images)
    chunk = GangSweepInspector.preset("auto", xr).label_chunk
    seconds = time_gangsweep(deepid, xr, yr, epochs=1, label_chunk=chunk, labels=list(range(chunk)))
    rows.append({"method": "gangsweep", "model": "csaw2020_sunglasses_weights (DeepID, 1283 labels)", "labels": chunk,
                 "images": args.deepid_images, "epochs": 1, "batched_s": round(seconds, 1), "per_label_loop_s": None, "speedup": None,
                 "seconds_per_label": round(seconds / chunk, 2), "all_1283_labels_s": round(seconds / chunk * 1283, 0)})
    print(rows[-1], flush=True)
    meta = {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")], "load_before": load_before, "load_after": os.getloadavg()}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "generators.json"), {"rows": rows, "meta": meta})
    device = "GPU " + ", ".join(meta["gpus"]) if meta["gpus"] else f"CPU only, {meta['cpus']} cores"
    write_text(os.path.join(args.out, "generators.md"),
               f"# Generator-based inspectors: batched vs per-label loop\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\nDevice: {device} "
               f"({meta['platform']}, TensorFlow {meta['tensorflow']}); load average before {load_before[0]:.2f}, after "
               f"{meta['load_after'][0]:.2f}.\n\n{markdown_table(rows)}\n")


if __name__ == "__main__":
    main()
