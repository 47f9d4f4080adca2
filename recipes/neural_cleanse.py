"""Recipe: Neural Cleanse (Wang et al., S&P 2019) on every real MNIST model in the zoo and the demo's digits BadNet.

For each model: reverse-engineer a trigger per label on the defender's clean validation split (1,000 images of
the real MNIST test set), run the MAD outlier test, and unlearn the flagged label(s); clean accuracy and ASR
before/after are measured on the held-out split (the other 9,000). Writes ``results/neural_cleanse.json`` and
``results/neural_cleanse.md``.

The original optimises up to 1000 steps × 31 mini-batches of 32 per label. On a CPU that is hours per model, so
the recipe's default keeps the original's step length (31 mini-batches) but caps the steps at 60 (up to 1,860 Adam
updates per label; in the committed 60-step runs every label reached the cap); every other constant is the
original's. With the cap raised to 300, the original's early stop ends every label of every zoo model with the
default cross-entropy (the longest label of a run stops after 99–212 steps), so the 300-step files are the
original's converged verdicts; with the swapped loss at least one label of ``ruizegao_mnist_backdoor_7`` (seed 0) ran
into the cap. Shorter steps (e.g.
``--mini-batches 4``) make the 25-step early stop end labels after ~100 updates and produced a false positive on
the clean baseline (anomaly index 2.43 on ``dillonsd_baseline`` with ``--steps 150 --mini-batches 4``, seed 0).
Per-model figures (reversed triggers, anomaly indices) are written beside the table.

    python recipes/neural_cleanse.py                 # one seed, original step length, 60 steps
    python recipes/neural_cleanse.py --seeds 0 1 2 --steps 300 --models dillonsd_baseline dillonsd_pattern_all_to_one \
        dillonsd_single_pixel_all_to_all csaw_f_mnist_all_to_all digits-lenet5-patch --checkpoint-dir runs/nc2 \
        --name neural_cleanse_converged
    python recipes/neural_cleanse.py --seeds 0 1 2 --steps 300 --models ruizegao_mnist_backdoor_7 ruizegao_mnist_clean \
        --checkpoint-dir runs/nc --name neural_cleanse_ruizegao        # ~20 min per run on one core
    python recipes/neural_cleanse.py --seeds 0 1 2 3 4 5 6 7 8 9 --steps 300 --models dillonsd_baseline \
        --checkpoint-dir runs/nc2 --name neural_cleanse_baseline_seeds  # the clean baseline's verdict over 10 seeds
    python recipes/neural_cleanse.py --seeds 0 1 2 --steps 300 --loss original-swapped-ce --models dillonsd_baseline \
        dillonsd_pattern_all_to_one ruizegao_mnist_backdoor_7 --checkpoint-dir runs/ncswap \
        --name neural_cleanse_swapped_ce_converged                      # the original code's loss quirk, to its early stop
    python recipes/neural_cleanse.py --seeds 0 1 2 --steps 300 --models dillonsd_baseline dillonsd_pattern_all_to_one \
        ruizegao_mnist_backdoor_7 --checkpoint-dir runs/ncpng --name neural_cleanse_png   # reruns for the PNG-round-trip columns

With ``--checkpoint-dir`` a run that is stopped resumes where its last checkpoint left it; ``seconds`` then counts
only the session that finished while ``inversion_seconds`` sums the inversion time of every session, and a finished
inversion is read back instead of recomputed. The result files are rewritten after every run, so a stopped recipe
keeps the rows it finished.

The JSON rows carry every label's L1 norm, so other outlier statistics can be recomputed from the committed file.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbd.defenses import NeuralCleanse
from kerasbd.defenses.inspection.neural_cleanse import mask_l1_norms
from kerasbd.io import atomic_path
from kerasbd.metrics import mad_anomaly_index, mad_null_flag_rate
from kerasbd.experiments import RESULT_COLUMNS, digits_case, mnist_split, mnist_zoo_cases, write_results

# What the Neural Cleanse authors report, where our reference material states it (README of bolunwang/backdoor,
# GTSRB model, target 33). The paper's per-model MNIST figures are not in our reference notes, so none are
# printed rather than quoted from memory.
PAPER = {"gtsrb_bottom_right_white_4_target_33": {"anomaly_index": 3.65, "flagged": [33], "median_l1": 64.47, "mad": 13.24, "target_l1": 16.1}}

DIGITS = "digits-lenet5-patch"  # the demo's BadNet, named by kerasbd.experiments.digits_case
COLUMNS = [*RESULT_COLUMNS, "anomaly_index", "max_low_index", "flagged", "smallest", "true_target", "target_flagged", "target_l1",
           "median_l1", "anomaly_index_png", "flagged_png", "unreached", "nc_steps", "inversion_seconds"]


def run_case(case, val, test, args, seed: int) -> dict:
    ckpt = os.path.join(args.checkpoint_dir, f"{case.name}_seed{seed}") if args.checkpoint_dir else None
    nc = NeuralCleanse().with_params(inspector__inversion__steps=args.steps, inspector__inversion__mini_batches=args.mini_batches,
                                     inspector__inversion__loss=args.loss)
    result = nc.run(case.classifier, clean=val, eval_data=test, backdoors=case.backdoors, seed=seed, verbose=args.verbose,
                    checkpoint_dir=ckpt, restart=args.restart)
    d = result.details
    target = case.target
    row = {"model": case.name, **result.summary_row(), "seed": seed}
    row.update(
        anomaly_index=round(d["anomaly_index"], 3),
        max_low_index=round(d["max_low_index"], 3),
        flagged=",".join(str(l) for l in d["flagged"]) or "none",
        smallest=str(min(d["l1_norms"], key=d["l1_norms"].get)),  # a label, not a quantity to average
        true_target="clean" if case.clean_model else ("all-to-all" if target is None else str(target)),
        target_flagged=None if target is None else target in d["flagged"],
        target_l1=None if target is None else d["l1_norms"][target],
        median_l1=round(d["median"], 2),
        unreached=",".join(str(l) for l, ok in d["reached_threshold"].items() if not ok) or "none",
        nc_steps=max(d["steps_run"].values()),
        **_png_verdict(result.arrays["masks"], d["labels"]),
        inversion_seconds=None if d["inversion_seconds"] is None else round(d["inversion_seconds"], 1),
        l1_norms=d["l1_norms"],  # JSON only: lets any MAD variant be recomputed from the committed file
    )
    if args.save_dir:
        result.save(os.path.join(args.save_dir, f"{case.name}_seed{seed}"), save_model=False)
    if seed == args.seeds[0]:  # the pictures people look at: reversed triggers and anomaly indices, per model
        for fig_name, fig in result.figures.items():
            with atomic_path(os.path.join(args.out, f"{args.name}_{case.name}_{fig_name}.png")) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return row


def _png_verdict(masks, labels: list[int]) -> dict:
    """The MAD test as the original computes it: L1 norms of the masks after their uint8 PNG round trip."""
    test = mad_anomaly_index(mask_l1_norms(masks, quantize=True), labels=labels)
    return {"anomaly_index_png": round(test["anomaly_index"], 3), "flagged_png": ",".join(str(l) for l in test["flagged"]) or "none"}


def write(args: argparse.Namespace, rows: list[dict], total: int) -> None:
    """Write the results so far (after every run, so a stopped recipe keeps what it finished)."""
    notes = (
        f"Neural Cleanse with the original's constants except the length: {args.steps} steps × {args.mini_batches} mini-batches "
        f"of 32 per label (original: 1000 × 31), loss `{args.loss}`; unlearning: 1 epoch, Adam 1e-3, 20 % of the 1,000 "
        "validation images stamped with the reversed trigger(s) of the flagged label(s), correct labels. ACC/ASR on the "
        "held-out 9,000 MNIST test images (digits: the demo's held-out split). Seeds: "
        f"{', '.join(map(str, args.seeds))}. `flagged` = labels with anomaly index > 2 below the median; `smallest` = the "
        "label with the smallest mask; `max_low_index` = median / MAD, the largest anomaly index any label could reach (a "
        "norm cannot go below 0); `anomaly_index_png` / `flagged_png` = the same test on the L1 norms of the masks after the "
        "original's uint8 PNG round trip (`mask·255` truncated; `--set inspector__quantize_masks=true`); `unreached` = "
        "labels whose inversion never reached the attack-success threshold (their last mask enters the test, as in the "
        "original); `nc_steps` = the "
        "longest label's steps; `inversion_seconds` = the inversion's time summed over every session of a run resumed "
        "from checkpoints (— where a checkpoint predates that record), `seconds` = this session's whole defense run. Paper reference (NC README, GTSRB, target 33): anomaly index 3.65, flagged label 33 — "
        "the zoo has no GTSRB data, so the NC GTSRB model is not run here."
        + (f" Partial: {len(rows)} of {total} runs so far." if len(rows) < total else "")
    )
    one = [r for r in rows if r["target_flagged"] is not None]
    clean = [r for r in rows if r["true_target"] == "clean"]
    outcome = []
    if one:
        runs = "; ".join(f"{r['model']} seed {r['seed']}: AI {r['anomaly_index']}, flagged {r['flagged']}" for r in one)
        outcome.append(f"true target flagged in {sum(bool(r['target_flagged']) for r in one)} of {len(one)} all-to-one runs ({runs})")
    if clean:
        runs = "; ".join(f"{r['model']} seed {r['seed']}: AI {r['anomaly_index']}" for r in clean)
        outcome.append(f"anomaly index < 2 in {sum(r['anomaly_index'] < 2 for r in clean)} of {len(clean)} clean-model runs ({runs})")
    if outcome:
        notes += "\n\nOutcome: " + "; ".join(outcome) + "."
    notes += (
        f"\n\nFor scale: the rule flags a label on {mad_null_flag_rate(10):.0%} of 10-label models whose L1 norms merely scatter "
        "normally (`kerasbd.metrics.mad_null_flag_rate(10)`, 20,000 seeded draws) — the false-alarm rate a clean MNIST "
        "model faces even with a perfect inversion, since the smallest of 10 norms is tested with no correction for testing 10."
    )
    write_results(args.name, rows, columns=COLUMNS, directory=args.out, notes=notes,
                  meta={"steps": args.steps, "mini_batches": args.mini_batches, "loss": args.loss, "seeds": args.seeds, "paper": PAPER})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--mini-batches", type=int, default=31)
    parser.add_argument("--loss", default="cross-entropy", choices=["cross-entropy", "original-swapped-ce"])
    parser.add_argument("--models", nargs="*", help="only these zoo models (default: all MNIST models + digits)")
    parser.add_argument("--save-dir", default="", help="also save each run's figures and arrays here")
    parser.add_argument("--checkpoint-dir", default="", help="resumable inversion checkpoints here (one folder per model and seed)")
    parser.add_argument("--restart", action="store_true", help="discard what --checkpoint-dir holds instead of resuming")
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default="neural_cleanse", help="result file name (e.g. neural_cleanse_long for a longer schedule)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output

    val, test = mnist_split(n_val=1000, seed=0)
    cases = [(c, val, test) for c in mnist_zoo_cases(include_clean=True) if not args.models or c.name in args.models]
    if not args.models or DIGITS in args.models:
        cases.append(digits_case(seed=0))

    rows = []
    for seed in args.seeds:
        for case, v, t in cases:
            rows.append(run_case(case, v, t, args, seed))
            r = rows[-1]
            print(f"{r['model']:34s} seed {seed}: anomaly index {r['anomaly_index']:.2f}, flagged {r['flagged']} "
                  f"(true target {r['true_target']}); ACC {r['clean_acc_before']:.4f}→{r['clean_acc']:.4f} "
                  f"ASR {r['asr_before'] if r['asr_before'] is not None else float('nan'):.4f}→"
                  f"{r['asr'] if r['asr'] is not None else float('nan'):.4f} ({r['seconds']:.0f} s)", flush=True)
            write(args, rows, len(args.seeds) * len(cases))

    paper = PAPER["gtsrb_bottom_right_white_4_target_33"]
    print(f"Paper (NC README, GTSRB target 33): anomaly index {paper['anomaly_index']}, flagged {paper['flagged']}, "
          f"median L1 {paper['median_l1']}, MAD {paper['mad']}, target L1 {paper['target_l1']} — no GTSRB data in the zoo, so no row of ours.")


if __name__ == "__main__":
    main()
