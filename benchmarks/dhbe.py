"""Benchmark: DHBE's training iterations per second on this machine, at 28×28 and 32×32, with and without XLA.

One DHBE iteration = ``student_steps`` student steps (each generates its own batch) + one sample-generator step +
one trigger-generator step. Timing a trainer with 5 and with 1 student step separates the two: one student step
= (T₅ − T₁) / 4, the generator steps = T₁ − one student step. Models: the zoo's MNIST BadNet
``dillonsd_pattern_all_to_one`` (28×28×1) and CIFAR-10 ``ruizegao_cifar10_backdoor_7_logits`` (32×32×3); the
generators at the original's width (ngf 64, batch 256) and at the ``short`` preset's (see ``DHBE.PRESETS``).
Every trainer is compiled (``tf.function``, Keras ``fit``); ``jit_compile=True`` adds XLA. The load average
before and after is recorded.

    python benchmarks/dhbe.py                 # writes benchmarks/results/dhbe.{json,md}
    python benchmarks/dhbe.py --iterations 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from kerasbd.defenses import DHBE  # noqa: E402
from kerasbd.io import write_json, write_text  # noqa: E402
from kerasbd.models import as_logits_model  # noqa: E402
from kerasbd.reporting import markdown_table  # noqa: E402
from kerasbd.zoo import load_zoo_model  # noqa: E402

MODELS = {"28×28×1": "dillonsd_pattern_all_to_one", "32×32×3": "ruizegao_cifar10_backdoor_7_logits"}


def seconds_per_iteration(teacher, dhbe: DHBE, student_steps: int, iterations: int, jit: bool) -> float:
    trainer = dhbe.with_params(student_steps=student_steps).build_trainer(teacher, 0)
    trainer.compile(generator_optimizer=trainer.generator_optimizer, discriminator_optimizer=trainer.discriminator_optimizer,
                    trigger_optimizer=trainer.trigger_optimizer, jit_compile=jit)
    trainer.fit(np.zeros((2, 1)), batch_size=1, epochs=1, verbose=0)  # trace and compile
    start = time.perf_counter()
    trainer.fit(np.zeros((iterations, 1)), batch_size=1, epochs=1, verbose=0)
    return (time.perf_counter() - start) / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per setting")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    load_before = os.getloadavg()[0]
    rows = []
    schedules = {"original (ngf 64, batch 256)": DHBE(), "short preset": DHBE.preset("short")}
    for shape, name in MODELS.items():
        teacher = as_logits_model(load_zoo_model(name))
        for label, dhbe in schedules.items():
            for jit in (False, True):
                t5 = seconds_per_iteration(teacher, dhbe, 5, args.iterations, jit)
                t1 = seconds_per_iteration(teacher, dhbe, 1, args.iterations, jit)
                student = max(t5 - t1, 0.0) / 4
                generators = max(t1 - student, 1e-9)
                rows.append({"images": shape, "model": name, "schedule": label, "batch": dhbe.batch_size, "ngf": dhbe.ngf, "xla": jit,
                             "s_per_iteration": round(t5, 3), "student_steps_per_s": round(1 / student, 2) if student else None,
                             "generator_steps_per_s": round(1 / generators, 2),
                             "iterations_per_s": round(1 / t5, 3)})
                print(rows[-1], flush=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "iterations": args.iterations,
            "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "dhbe.json"), {"rows": rows, **meta})
    text = ("# DHBE iteration speed\n\n" + __doc__.split("\n\n", 1)[1].split("\n\n    python")[0] + "\n\n"
            + f"Machine: {meta['machine']}; load average {meta['load_average_before']} before, {meta['load_average_after']} after.\n\n"
            + markdown_table(rows) + "\n\n`python benchmarks/dhbe.py --iterations " + str(args.iterations) + "`\n")
    write_text(os.path.join(args.out, "dhbe.md"), text)


if __name__ == "__main__":
    main()
