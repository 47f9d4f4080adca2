"""Recipe: NNoculation post-deployment (Veldanda et al. §3.3, §4.2.2) on the zoo's real MNIST BadNets, online.

For every model and seed, the whole field cycle, through the same API as ``kerasbd nnoculation deploy|stream``:

1. pre-deployment: the GoodNet of ``NNoculationPre`` (``--preset auto``) from the defender's 1,000 clean images;
2. deployment: BadNet + GoodNet as an :class:`~kerasbd.serving.Ensemble` in a deployment folder with its SQLite
   quarantine store;
3. a simulated stream of 2,000 held-out test inputs, 20 % of them triggered (the paper's ratio): quarantine
   precision and recall against the stream's ground truth;
4. once 200 inputs are quarantined (the paper's N), one treatment round (``NNoculationTreatment`` ``auto``: the
   CycleGAN's short CPU schedule, 500 clean images, both networks fine-tuned) and the repaired pair redeployed;
   the rest of the stream is served by it (its quarantine rate shows what still disagrees);
5. clean accuracy and ASR (inputs whose true label is not the target) of the served GoodNet and of the BadNet
   after the round, on 3,000 other held-out test images, and the CycleGAN's translations beside the true triggered
   images (``results/nnoculation_post_<model>.png``).

``two-triggers`` is a LeNet-5 BadNet trained here with two triggers and two targets, like the paper's BadNet-MTMTA
(a 3×3 patch bottom-right → 0, a 6-pixel pattern top-left → 5); its stream carries only the first trigger for the
first 2,000 inputs and only the second for the next 2,000 (the paper's adaptive online attacker, Table 8): the
second round must catch and remove the second trigger. With both triggers towards 0, the first round's
fine-tuning on the first trigger's treatment also erased the BadNet's second trigger (98.5 → 10.9 % ASR), so the
repaired pair agreed on it and nothing was left to quarantine; with its own target it survives the first round
(97 → 85 ± 8 %, 3 seeds) and the second round has something to catch. It is trained on the 2,000 test images that
seed 0's split leaves out of its stream and evaluation sets, and every seed uses that split (only the methods'
randomness changes with the seed).

    python recipes/nnoculation_post.py                                   # every model, seed 0
    python recipes/nnoculation_post.py --models csaw_f_mnist_all_to_all --seeds 0 1 2

Paper anchor (Table 5, MNIST-AAA = the zoo's ``csaw_f_mnist_all_to_all``): after post-deployment CA 96.21 %, ASR 0 %
(from 97.76 / 95.91). Runs are cached under ``--work``; ``results/nnoculation_post.{json,md}`` are rewritten after
every run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ZOO = ["dillonsd_pattern_all_to_one", "ruizegao_mnist_backdoor_7", "csaw_f_mnist_all_to_all", "dillonsd_single_pixel_all_to_all"]
PIXELS = [[0, 0], [0, 2], [2, 0], [2, 2], [4, 0], [0, 4]]
TWO_TRIGGERS = [{"name": "patch-br", "trigger": {"type": "patch", "size": 3, "position": "bottom-right", "margin": 1}, "target": 0},
                {"name": "pixels-tl", "trigger": {"type": "pixels", "pixels": PIXELS, "position": "top-left", "margin": 1}, "target": 5}]
PAPER = "MNIST-AAA (Table 5): post-deployment CA 96.21 %, ASR 0 % (BadNet 97.76 / 95.91)"
STREAM, POISON, EVAL = 2000, 0.2, 3000
COLUMNS = ["model", "seed", "stage", "trigger", "badnet_clean_acc", "badnet_asr", "goodnet_clean_acc", "goodnet_asr", "serving_badnet_asr",
           "precision",
           "recall", "false_quarantine_rate", "quarantined", "clean_acc", "asr", "badnet_asr_after", "quarantine_rate_after",
           "cyclegan_s_per_epoch", "seconds"]


def _data(seed: int) -> tuple[Any, Any, Any]:
    """Defender's 1,000 clean images, the stream pool and the evaluation images (disjoint)."""
    from kerasbd.experiments import mnist_split

    val, (x, y) = mnist_split(n_val=1000, seed=seed)
    return val, (x[: 2 * STREAM], y[: 2 * STREAM]), (x[2 * STREAM : 2 * STREAM + EVAL], y[2 * STREAM : 2 * STREAM + EVAL])


def _cases(names: list[str], work: Path) -> list[tuple[str, Any, list[Any]]]:
    from kerasbd.experiments import mnist_zoo_cases

    zoo = {c.name: c for c in mnist_zoo_cases(include_clean=False)}
    out = []
    for name in names:
        if name in zoo:
            out.append((name, zoo[name].classifier, list(zoo[name].backdoors)))
        elif name == "two-triggers":
            out.append((name, *_two_triggers(work)))
        else:
            raise SystemExit(f"unknown model {name!r}; choose from {', '.join([*ZOO, 'two-triggers'])}")
    return out


def _two_triggers(work: Path) -> tuple[Any, list[Any]]:
    import keras

    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.experiments import mnist_split
    from kerasbd.models import build_architecture, load_model

    backdoors = from_spec(TWO_TRIGGERS)
    path = work / "two-triggers-mtmta.keras"
    if not path.exists():
        # the 2,000 test images of seed 0's split that neither its stream nor its evaluation uses (see _data)
        _, (x, y) = mnist_split(n_val=1000, seed=0)
        keras.utils.set_random_seed(0)
        net = build_architecture("lenet5", input_shape=(28, 28, 1), num_classes=10)
        train_badnet(net, x[2 * STREAM + EVAL :], y[2 * STREAM + EVAL :], backdoors, rate=0.1, epochs=15, batch_size=64, seed=0)
        work.mkdir(parents=True, exist_ok=True)
        net.save(path)
    return load_model(path), backdoors


def _measure(model: Any, backdoors: list[Any], data: Any) -> dict[str, Any]:
    from kerasbd.metrics import evaluate_backdoor

    m = evaluate_backdoor(model, *data, backdoors)
    return {"clean_acc": m["clean_acc"], "asr": m["asr"]}


def _picture(path: Path, clean: np.ndarray, translated: np.ndarray, triggered: np.ndarray, title: str) -> None:
    from kerasbd.io import atomic_path
    from kerasbd.reporting.figures import translation_grid

    with atomic_path(path) as tmp:
        translation_grid(clean, translated, triggered, title=title).savefig(tmp, dpi=90)


def run(case: tuple[str, Any, list[Any]], seed: int, work: Path, out: Path) -> list[dict[str, Any]]:
    import shutil

    from kerasbd.defenses import NNoculationPre, NNoculationTreatment
    from kerasbd.serving.deployment import Deployment
    from kerasbd.serving.streams import simulated_stream

    name, clf, backdoors = case
    val, pool, test = _data(0 if name == "two-triggers" else seed)  # the trained model's training images lie outside seed 0's sets
    start = time.perf_counter()
    pre = NNoculationPre.preset("auto", val[0]).run(clf, val, seed=seed, checkpoint_dir=work / "checkpoints" / f"{name}_pre_seed{seed}")
    pre_seconds = time.perf_counter() - start
    folder = work / "deployments" / f"{name}_seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)  # the stream is replayed from the start: a half-served deployment is not reused
    dep = Deployment.create(folder, clf, pre.model, note=f"nnoculation-pre seed {seed}")
    treatment = NNoculationTreatment.preset("auto", val[0])
    stages = [[backdoors[0]], [backdoors[1]]] if name == "two-triggers" else [backdoors]
    before_bad, before_good = _measure(clf, backdoors, test), _measure(pre.model, backdoors, test)
    rows = []
    for k, stage_backdoors in enumerate(stages):
        part = (pool[0][k * STREAM : (k + 1) * STREAM], pool[1][k * STREAM : (k + 1) * STREAM])
        stream = simulated_stream(*part, stage_backdoors, poison_fraction=POISON, seed=seed + k)
        t0 = time.perf_counter()
        report = dep.run(stream, treatment=treatment, clean=val, seed=seed + 10 * k, max_rounds=1, verbose=1)
        first = report["stages"][0]
        row: dict[str, Any] = {"model": name, "method": "nnoculation-post", "seed": seed, "stage": k + 1, "trigger": stage_backdoors[0].name,
                               "badnet_clean_acc": before_bad["clean_acc"], "badnet_asr": _measure(clf, stage_backdoors, test)["asr"],
                               "goodnet_clean_acc": before_good["clean_acc"],
                               "goodnet_asr": _measure(dep.ensemble(first["version"]).goodnet, stage_backdoors, test)["asr"],
                               "serving_badnet_asr": _measure(dep.ensemble(first["version"]).badnet, stage_backdoors, test)["asr"],
                               "precision": first["precision"], "recall": first["recall"],
                               "false_quarantine_rate": first["false_quarantine_rate"], "quarantined": first["quarantined"]}
        if report["rounds"]:
            result = report["rounds"][0]["result"]
            after = _measure(result.goodnet, stage_backdoors, test)
            row.update(clean_acc=after["clean_acc"], asr=after["asr"], badnet_asr_after=_measure(result.badnet, stage_backdoors, test)["asr"],
                       cyclegan_s_per_epoch=result.details["cyclegan"]["seconds_per_epoch"])
            if len(report["stages"]) > 1:
                row["quarantine_rate_after"] = report["stages"][1]["quarantine_rate"]
            if seed == 0:
                shown = stage_backdoors[0].trigger.apply(result.clean_images[:8])
                suffix = f"_stage{k + 1}" if len(stages) > 1 else ""
                _picture(out / f"nnoculation_post_{name}{suffix}.png", result.clean_images,
                         result.treatment_images, shown, f"{name}: clean / CycleGAN (clean → quarantined) / true trigger")
        row["seconds"] = round(time.perf_counter() - t0 + (pre_seconds if k == 0 else 0.0), 1)
        rows.append(row)
    if name == "two-triggers" and len(rows) == 2:
        final = dep.ensemble()
        for bd, key in zip(backdoors, ("final_asr_trigger1", "final_asr_trigger2"), strict=True):
            rows[-1][key] = _measure(final.goodnet, [bd], test)["asr"]
    dep.close()
    return rows


def write(rows: list[dict[str, Any]], out: Path) -> None:
    from kerasbd.experiments import write_results

    notes = (f"Fractions, not percents. Stream: {STREAM} held-out MNIST test inputs per stage, {POISON:.0%} triggered; treatment after "
             f"200 quarantined (paper N = 200) with 500 clean images; CA/ASR on {EVAL} other test images (ASR over inputs whose true "
             f"label is not the target). `goodnet_asr` / `serving_badnet_asr`: the ASR of the stage's trigger on the GoodNet and "
             f"the BadNet of the version serving the stage (stage 2: after the first round); "
             f"`clean_acc`/`asr`: the served GoodNet after the round; `badnet_asr_after`: the BadNet after "
             f"its own fine-tuning; `quarantine_rate_after`: the rest of the stream served by the repaired pair. Paper: {PAPER}. "
             "The paper's other rows are YouTube-Face, GTSRB and CIFAR-10 BadNets: no MNIST counterpart except MNIST-AAA.")
    columns = [*COLUMNS, "final_asr_trigger1", "final_asr_trigger2"]
    write_results("nnoculation_post", rows, columns=[c for c in columns if any(c in r for r in rows)], directory=out,
                  by=("model", "stage"), notes=notes, meta={"paper": PAPER},
                  command="python recipes/nnoculation_post.py " + " ".join(sys.argv[1:]))


def main(argv: list[str] | None = None) -> None:
    from kerasbd.experiments import run_grid

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=[*ZOO, "two-triggers"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--work", default="runs/nnoculation_post")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    run_grid(work / "rows.json", args.seeds, _cases(args.models, work), ["nnoculation-post"],
             lambda method, case, seed: run(case, seed, work, out), lambda rows: write(rows, out))


if __name__ == "__main__":
    main()
