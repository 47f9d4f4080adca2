"""Input-time defenses on the zoo's real MNIST BadNets: STRIP, feature squeezing, ShrinkPad / FLIP / GYM-inference.

Two result tables:

- ``results/input_detectors.json`` — detection of triggered inputs (rows: ``model``, ``attack``, ``detector``,
  ``tpr_at_fpr1``, ``tpr_at_fpr5``, ``auc``, then the calibrated operating point: ``frr`` on held-out clean
  inputs, ``far`` on triggered ones and NNoculation's translation ``asr_strip = ASR × FAR``,
  ``clean_acc_strip = CA × (1 − FRR)``), plus ``results/input_detectors_roc.png``.
- ``results/input_purification.json`` — ShrinkPad-4, FLIP and GYM's lightweight inference function wrapped
  around each model, in the model-repair recipes' columns (``model``, ``defense``, ``clean_acc_before``,
  ``asr_before``, ``clean_acc``, ``asr``, ``robust_acc``, ``der``, ``seconds``, ``seed``).

Data: the zoo's MNIST test set split by :func:`kerasbd.experiments.mnist_split` into the defender's 1000
clean images (detector calibration; STRIP uses half as its overlay pool and half to set the threshold) and the
held-out rest, from which ``--n-eval`` clean images and ``--n-eval`` triggered non-target images are drawn.
Detector thresholds: STRIP at FRR 1 % (normal fit, the original rule), feature squeezing at FPR 5 % (the
original); TPR at 1 %/5 % FPR and AUC come from the full ROC curve on held-out data.

Run: ``python recipes/input_detectors.py`` (tens of minutes on two shared CPU cores; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

DETECTOR_FPR = {"strip": 0.01, "squeeze": 0.05}


def _attack(case: Any) -> str:
    if case.clean_model:
        return "clean model"
    return "all-to-one" if case.target is not None else "all-to-all"


def _eval_sets(case: Any, x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clean held-out images and up to ``n`` triggered ones whose true label is not the target."""
    rng = np.random.default_rng(seed)
    clean = x[rng.choice(len(x), size=min(n, len(x)), replace=False)]
    backdoor = case.backdoors[0]
    eligible = np.flatnonzero(backdoor.target.eligible(y, case.classifier.num_classes))
    pick = rng.choice(eligible, size=min(n, len(eligible)), replace=False)
    return clean, backdoor.trigger.apply(x[pick], rng=seed)


def detector_rows(cases: list[Any], val: tuple, test: tuple, *, n_eval: int, n_overlays: int, seed: int) -> tuple[list[dict], dict]:
    from kerasbd.defenses.detection.feature_squeezing import FeatureSqueezing
    from kerasbd.defenses.detection.strip import STRIP
    from kerasbd.metrics import evaluate_backdoor, roc_auc, roc_curve, tpr_at_fpr

    rows, curves = [], {}
    for case in cases:
        clean, triggered = _eval_sets(case, *test, n_eval, seed)
        base = evaluate_backdoor(case.classifier, *test, backdoors=case.backdoors)
        for detector in (STRIP(n_overlays=n_overlays), FeatureSqueezing("mnist")):
            start = time.perf_counter()
            detector.fit(case.classifier, val[0], fpr=DETECTOR_FPR[detector.name], seed=seed)
            s_clean, s_trig = detector.score(clean), detector.score(triggered)
            seconds = time.perf_counter() - start
            frr, far = float(np.mean(s_clean > detector.threshold_)), float(np.mean(s_trig <= detector.threshold_))
            rows.append({
                "model": case.name, "attack": _attack(case), "detector": detector.name,
                "tpr_at_fpr1": tpr_at_fpr(s_clean, s_trig, 0.01), "tpr_at_fpr5": tpr_at_fpr(s_clean, s_trig, 0.05),
                "auc": roc_auc(s_clean, s_trig), "threshold_fpr": DETECTOR_FPR[detector.name], "frr": frr, "far": far,
                "clean_acc": base["clean_acc"], "asr": base["asr"],
                "clean_acc_strip": base["clean_acc"] * (1 - frr), "asr_strip": None if base["asr"] is None else base["asr"] * far,
                "n_clean": len(clean), "n_triggered": len(triggered), "seconds": round(seconds, 2),
                "inputs_per_s": round((len(val[0]) + len(clean) + len(triggered)) / seconds, 1), "seed": seed,
            })
            curves[(case.name, detector.name)] = roc_curve(s_clean, s_trig)
            print(f"{case.name:40s} {detector.name:8s} auc={rows[-1]['auc']:.4f} tpr@1%={rows[-1]['tpr_at_fpr1']:.4f} "
                  f"tpr@5%={rows[-1]['tpr_at_fpr5']:.4f} ({seconds:.0f}s)", flush=True)
    return rows, curves


def plot_roc(curves: dict, rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasbd.io import atomic_path

    attack = {r["model"]: r["attack"] for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, (name, title) in zip(axes, [("strip", "STRIP (N = 100 overlays)"), ("squeeze", "Feature squeezing (bit depth 1, median 2×2)")]):
        for (model, det), curve in curves.items():
            if det == name:
                fpr, tpr = curve[0], curve[1]
                ax.plot(fpr, tpr, label=f"{model} ({attack[model]})", linestyle="--" if attack[model] == "clean model" else "-")
        for x in (0.01, 0.05):
            ax.axvline(x, color="grey", linewidth=0.6, linestyle=":")
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.5)
        ax.set(xlim=(0, 1), title=title, xlabel="false-positive rate (clean held-out)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("true-positive rate (triggered inputs)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Input detectors on the zoo's real MNIST BadNets")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)


def purification_rows(cases: list[Any], val: tuple, test: tuple, *, seeds: list[int]) -> list[dict]:
    from kerasbd.defenses.purification.wrappers import FlipDefense, GYMInference, ShrinkPadDefense

    rows = []
    for case in cases:
        for defense in (ShrinkPadDefense(pad=4), FlipDefense(), GYMInference()):
            for seed in seeds:
                result = defense.run(case.classifier, val, eval_data=test, backdoors=case.backdoors, seed=seed, verbose=0)
                rows.append({"model": case.name, "attack": _attack(case), **result.summary_row()})
                print(f"{case.name:40s} {defense.name:14s} seed={seed} acc={rows[-1]['clean_acc']:.4f} asr={rows[-1]['asr']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-eval", type=int, default=1000, help="held-out clean and triggered inputs per model")
    parser.add_argument("--n-overlays", type=int, default=100, help="STRIP overlays per input (original 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="purification seeds")
    parser.add_argument("--part", choices=["all", "detectors", "purification"], default="all")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 inputs, 10 overlays, one seed")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    if args.quick:
        args.n_eval, args.n_overlays, args.seeds = 100, 10, [0]

    from kerasbd.experiments import mnist_split, mnist_zoo_cases, write_results

    cases = mnist_zoo_cases(include_clean=True)
    val, test = mnist_split(n_val=1000, seed=0)
    # A clean model has no backdoor of its own: screen it with its sibling BadNet's all-to-one trigger as a control.
    controls = {}
    for c in cases:
        if c.clean_model:
            sibling = [b for b in cases if b.target is not None and b.name.split("_")[0] == c.name.split("_")[0]]
            ref = (sibling or [b for b in cases if b.target is not None])[0]
            c.backdoors, controls[c.name] = list(ref.backdoors), ref.name
    note = "Clean-model rows are controls, screened with the trigger of a sibling BadNet: " + ", ".join(f"`{k}` ← `{v}`" for k, v in controls.items()) + "."
    if args.part in ("all", "detectors"):
        rows, curves = detector_rows(cases, val, test, n_eval=args.n_eval, n_overlays=args.n_overlays, seed=0)
        write_results("input_detectors", rows, directory=args.out, by=("model", "detector"),
                      columns=["model", "attack", "detector", "tpr_at_fpr1", "tpr_at_fpr5", "auc", "threshold_fpr", "frr", "far",
                               "clean_acc", "asr", "clean_acc_strip", "asr_strip", "n_clean", "n_triggered", "inputs_per_s", "seconds"],
                      meta={"n_eval": args.n_eval, "n_overlays": args.n_overlays, "detector_fpr": DETECTOR_FPR, "controls": controls},
                      notes=note)
        plot_roc(curves, rows, os.path.join(args.out, "input_detectors_roc.png"))
    if args.part in ("all", "purification"):
        rows = purification_rows(cases, val, test, seeds=args.seeds)
        write_results("input_purification", rows, directory=args.out,
                      columns=["model", "attack", "defense", "clean_acc_before", "asr_before", "clean_acc", "asr", "robust_acc", "der", "seconds", "seed"],
                      meta={"seeds": args.seeds, "controls": controls}, notes=note)


if __name__ == "__main__":
    main()
