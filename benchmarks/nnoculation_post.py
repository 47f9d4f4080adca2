"""Benchmark: NNoculation post-deployment costs on this machine — the ensemble's throughput against the single
model, and the CycleGAN's seconds per epoch at 28×28×1 and 55×47×3, with and without XLA.

- Ensemble: the zoo's MNIST BadNet ``dillonsd_pattern_all_to_one`` (its GoodNet: a copy, the same cost as a
  patched one) and the YouTube-Face pair — CSAW 2020's sunglasses BadNet ``csaw2020_sunglasses_weights`` with
  NNoculation's published AugNet ``nnoculation_augnet`` — served alone (``predict`` + arg-max) and as the
  ensemble, inputs per second over ``--inputs`` random images in batches of 256, through :meth:`Ensemble.predict`
  (both networks and the disagreement test) and through the single Keras model of :meth:`Ensemble.as_model`.
- CycleGAN: one epoch = ``max(500 clean, 200 quarantined)`` images (the paper's set-up), timed over ``--steps``
  training steps after compilation, at the paper's size (64 filters, 9 blocks, batch 1) and at the ``short`` CPU
  schedule (16 filters, 3 blocks, batch 4), each with ``jit_compile`` off and on. The paper's CycleGAN took about
  5 h on a GPU (200 epochs).

    python benchmarks/nnoculation_post.py        # writes benchmarks/results/nnoculation_post.{json,md}
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from kerasbd.generators import CycleGANTranslator  # noqa: E402
from kerasbd.io import write_json, write_text  # noqa: E402
from kerasbd.models import as_logits_model  # noqa: E402
from kerasbd.models.surgery import copy_model  # noqa: E402
from kerasbd.reporting import markdown_table  # noqa: E402
from kerasbd.serving import Ensemble  # noqa: E402
from kerasbd.zoo import load_zoo_model  # noqa: E402

# (BadNet, GoodNet): for the faces the real pair — CSAW 2020's sunglasses BadNet and NNoculation's own AugNet for it
MODELS = {"28×28×1": ("dillonsd_pattern_all_to_one", None), "55×47×3": ("csaw2020_sunglasses_weights", "nnoculation_augnet")}
SCHEDULES = {"paper (64 filters, 9 blocks, batch 1)": {"filters": 64, "blocks": 9, "batch_size": 1},
             "short (16 filters, 3 blocks, batch 4)": {"filters": 16, "blocks": 3, "batch_size": 4}}


def _rate(fn: Callable[[np.ndarray], object], x: np.ndarray, repeats: int = 3) -> float:
    fn(x[:256])  # warm-up: trace and compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def ensemble_rows(n_inputs: int) -> list[dict[str, object]]:
    rows = []
    for shape, (name, good_name) in MODELS.items():
        bad = as_logits_model(load_zoo_model(name))
        ens = Ensemble(bad, as_logits_model(load_zoo_model(good_name)) if good_name else copy_model(bad))
        joint = ens.as_model()
        x = np.random.default_rng(0).random((n_inputs, *ens.input_shape), dtype=np.float32)
        single = _rate(lambda v, m=bad: m.predict(v, batch_size=256, verbose=0).argmax(1), x)
        both = _rate(ens.predict, x)
        model = _rate(lambda v, m=joint: m.predict(v, batch_size=256, verbose=0), x)
        rows.append({"model": name, "shape": shape, "single_inputs_per_s": round(single), "ensemble_inputs_per_s": round(both),
                     "ensemble_model_inputs_per_s": round(model), "ensemble_cost": round(single / both, 2)})
    return rows


def cyclegan_rows(steps: int) -> list[dict[str, object]]:
    rows = []
    for shape in MODELS:
        h, w, c = (int(s) for s in shape.split("×"))
        rng = np.random.default_rng(0)
        a, b = rng.random((64, h, w, c), dtype=np.float32), rng.random((64, h, w, c), dtype=np.float32)
        for label, sizes in SCHEDULES.items():
            for jit in (False, True):
                t = CycleGANTranslator(epochs=1, jit_compile=jit, **sizes)
                gan = t.build((h, w, c), steps_per_epoch=steps)
                data = t._dataset(a, b, 0)
                gan.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # trace and compile
                start = time.perf_counter()
                gan.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
                per_step = (time.perf_counter() - start) / steps
                epoch_steps = t.steps_per_epoch(500, 200)
                rows.append({"shape": shape, "schedule": label, "xla": jit, "s_per_step": round(per_step, 4),
                             "s_per_epoch": round(per_step * epoch_steps, 1), "epoch_steps": epoch_steps,
                             "h_per_200_epochs": round(per_step * epoch_steps * 200 / 3600, 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=4096, help="inputs timed for the throughput")
    p.add_argument("--steps", type=int, default=10, help="CycleGAN steps timed per setting")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    serving, training = ensemble_rows(args.inputs), cyclegan_rows(args.steps)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "seconds": round(time.perf_counter() - start, 1),
            "command": "python benchmarks/nnoculation_post.py"}
    write_json(os.path.join(args.out, "nnoculation_post.json"), {"meta": meta, "ensemble": serving, "cyclegan": training})
    md = ["# NNoculation post-deployment benchmark", "", f"`{meta['command']}` on {meta['machine']} (load average "
          f"{meta['load_before']} before, {meta['load_after']} after; {meta['seconds']} s).", "",
          "## Ensemble throughput (inputs/s, batches of 256)", "", markdown_table(serving), "",
          "`ensemble_cost`: single-model throughput over the ensemble's (2 = both networks, nothing else).", "",
          "## CycleGAN training (one epoch = max(500 clean, 200 quarantined) images)", "", markdown_table(training), "",
          "The paper: about 5 h for its CycleGAN on a GPU (200 epochs)."]
    write_text(os.path.join(args.out, "nnoculation_post.md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
