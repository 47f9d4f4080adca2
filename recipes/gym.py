"""GYM (Zeng et al.) on the zoo's real MNIST BadNets and the demo's digits BadNet: the columns of GYM Table 2.

For every model: baseline, inference with the intensive function only (I), fine-tuning with the intensive
function + inference (I), and the complete defense, fine-tuning + inference with the lightweight function (L);
ACC / ASR / TCP on the held-out split; the defender fine-tunes on its 1000 clean MNIST test images.

``--preset small-images`` (default, ``GYM.preset("small-images")``, the CLI's ``auto`` choice for images under 40 px) scales the original to 28×28 digits; ``--preset original``
runs the original constants (5×5 medians, code variant, SAT ±16 %, Adadelta 0.03, 5 rounds × 1 epoch, batch 10)
and writes ``results/gym_original.*``. The MNIST settings come from this search (seed 0, 1000 held-out images;
FT+L = the defended model's clean ACC / ASR; csaw all-to-all BadNet, base 0.981 / 0.943):

==========================================================================  ============
setting (each row adds to the one above unless noted)                         FT+L ACC/ASR
==========================================================================  ============
original schedule (Adadelta 0.03, 5 × 1 epoch, batch 10), 3×3 medians        0.605 / 0.307
Adam 1e-3, batch 32, 10 epochs                                               0.795 / 0.070
paper variant (0.75-scale second median, not the 0.25 nearest down/up-scale)  0.831 / 0.085
SAT shift 0.08 in I and L                                                    0.918 / 0.146
30 epochs, each transformed batch mixed with its clean copy                  0.914 / 0.074
third / lightweight median at full resolution (resize factor 1)              0.938 / 0.068
50 epochs                                                                    0.947 / 0.048
  variant: 20 epochs                                                         0.944 / 0.103
  variant: 30 epochs, SAT shift 0.05 in I and L                              0.949 / 0.104
  variant: 30 epochs, Adam 3e-4                                              0.930 / 0.216
==========================================================================  ============

The lightweight SAT shift was then set on one fine-tuned model per BadNet (50 epochs, I shift 0.08, seed 0, 3000
held-out images; ``no L`` = the fine-tuned model without inference preprocessing), clean ACC / ASR:

==================================  ===============  ===============  ===============  ===============
model (base ACC / ASR)              L shift 0.08     L shift 0.05     L shift 0.03     no L
==================================  ===============  ===============  ===============  ===============
csaw F all-to-all (0.975 / 0.940)   0.951 / 0.048    0.959 / 0.043    0.962 / 0.046    0.978 / 0.041
dillonsd pattern (0.991 / 1.000)    0.959 / 0.003    0.972 / 0.003    0.972 / 0.001    0.985 / 1.000
dillonsd single pixel (0.990/0.988) 0.967 / 0.005    0.973 / 0.003    0.977 / 0.003    0.988 / 0.523
dillonsd baseline (0.990 / —)       0.956            0.967            0.967            0.978
ruizegao backdoor 7 (0.955 / 1.000) 0.938 / 0.013    0.953 / 0.013    0.959 / 0.016    0.975 / 0.116
==================================  ===============  ===============  ===============  ===============

Shift 0.05 in L (= the "small-images" preset) costs half the accuracy of 0.08 at the same or lower ASR; the ``no L``
column shows why L is needed at all (three BadNets keep much of their backdoor after fine-tuning alone).

On ruizegao_mnist_backdoor_7 (base 0.968 / 1.000), 30 epochs: 0.923 / 0.018 with these pipelines (0.925 / 0.009
with the 0.8-scale third median). Without fine-tuning, the lightweight function alone costs the csaw model
0.98 → 0.54 (SAT ±16 %) or 0.81 (±8 %): the shift, not the medians, is what the model must be adapted to.

Run: ``python recipes/gym.py`` (3 seeds, all held-out images) or ``--quick`` (1 seed, 2000 held-out images).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repair import parse_args, print_paper, run_cases  # noqa: E402

# GYM paper, Table 2 (ACC / ASR / TCP as printed).
PAPER_TABLE2 = [
    {"model": "ResNet-18 (Cifar10) Trojan (WM)", "baseline ACC": 0.830, "ASR": 1.000, "TCP": 0.075, "I ACC": 0.520, "I ASR": 0.810, "FT+I ACC": 0.805, "FT+I ASR": 0.130, "FT+L ACC": 0.785, "FT+L ASR": 0.045},
    {"model": "ResNet-18 (Cifar10) Trojan (SQ)", "baseline ACC": 0.880, "ASR": 1.000, "TCP": 0.100, "I ACC": 0.600, "I ASR": 0.635, "FT+I ACC": 0.760, "FT+I ASR": 0.065, "FT+L ACC": 0.780, "FT+L ASR": 0.040},
    {"model": "ResNet-18 (Cifar10) BadNets all-to-all", "baseline ACC": 0.875, "ASR": 0.670, "TCP": 0.125, "I ACC": 0.435, "I ASR": 0.150, "FT+I ACC": 0.765, "FT+I ASR": 0.020, "FT+L ACC": 0.670, "FT+L ASR": 0.030},
    {"model": "ResNet-18 (Cifar10) L2 invisible", "baseline ACC": 0.900, "ASR": 0.985, "TCP": 0.110, "I ACC": 0.610, "I ASR": 0.420, "FT+I ACC": 0.790, "FT+I ASR": 0.205, "FT+L ACC": 0.810, "FT+L ASR": 0.180},
    {"model": "ResNet-18 (Cifar10) L0 invisible", "baseline ACC": 0.895, "ASR": 0.990, "TCP": 0.070, "I ACC": 0.645, "I ASR": 0.135, "FT+I ACC": 0.805, "FT+I ASR": 0.080, "FT+L ACC": 0.825, "FT+L ASR": 0.080},
    {"model": "LeNet-8 (GTSRB) BadNets", "baseline ACC": 0.960, "ASR": 0.985, "TCP": 0.020, "I ACC": 0.660, "I ASR": 0.170, "FT+I ACC": 0.875, "FT+I ASR": 0.045, "FT+L ACC": 0.905, "FT+L ASR": 0.035},
    {"model": "VGG-16 (PubFig) Trojan (WM)", "baseline ACC": 0.960, "ASR": 1.000, "TCP": 0.025, "I ACC": 0.400, "I ASR": 0.360, "FT+I ACC": 0.840, "FT+I ASR": 0.010, "FT+L ACC": 0.910, "FT+L ASR": 0.010},
    {"model": "VGG-16 (PubFig) Trojan (SQ)", "baseline ACC": 0.955, "ASR": 1.000, "TCP": 0.015, "I ACC": 0.400, "I ASR": 0.055, "FT+I ACC": 0.815, "FT+I ASR": 0.015, "FT+L ACC": 0.870, "FT+L ASR": 0.015},
]

STAGE_NAMES = {
    "baseline": "no defense",
    "inference (I)": "inference (I)",
    "fine-tuning + inference (I)": "gym: fine-tuning + inference (I)",
    "fine-tuning + inference (L)": "gym",
}


def stage_rows(result: Any) -> list[dict[str, Any]]:
    return [{**{k: v for k, v in r.items() if k != "stage"}, "defense": STAGE_NAMES[r["stage"]]} for r in result.rows]


def main(argv: list[str] | None = None) -> None:
    import argparse

    from kerasbd.defenses import GYM
    from kerasbd.defenses.repair.gym import PRESETS
    from kerasbd.experiments import write_results

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--preset", choices=sorted(PRESETS), default="small-images")
    known, rest = extra.parse_known_args(argv if argv is not None else sys.argv[1:])
    args = parse_args(__doc__.splitlines()[0] + " (extra: --preset small-images|original)", rest)
    preset = known.preset

    def make() -> GYM:
        return GYM.preset(preset)

    print_paper("GYM, Table 2 (ACC/ASR/TCP; I = intensive, L = lightweight preprocessing)", PAPER_TABLE2)
    meta = {"recipe": "gym", "preset": preset, "seeds": args.seeds, "quick": args.quick, "n_eval": args.n_eval or "all held-out",
            "defense": make().get_config(), "paper": "GYM Table 2", "paper_rows": PAPER_TABLE2}
    deviations = ("" if preset == "original" else
                  " Preset `small-images` departs from the original constants: 3×3 medians, the paper variant's 0.75-scale second median "
                  "(not the 0.25 down/up-scale), third and lightweight medians at full resolution, SAT shift ±8 % (intensive) / ±5 % "
                  "(lightweight), Adam 1e-3, "
                  "batch 32, 50 epochs, transformed batches mixed with their clean copies; why: recipes/gym.py docstring.")

    def write(rows: list[dict[str, Any]], _records: list[dict[str, Any]]) -> Path:
        return write_results("gym" if preset == "small-images" else f"gym_{preset}", rows, directory=args.out, meta=meta,
                             columns=["model", "defense", "clean_acc_before", "asr_before", "clean_acc", "asr", "robust_acc", "tcp", "der", "seconds", "seed"],
                             notes="Rows per model: no defense, inference (I), GYM fine-tuning + inference (I), and `gym` = the complete "
                                   f"defense (fine-tuning + inference (L)); preset `{preset}`; held-out MNIST split (digits: its own split)."
                                   f"{deviations} Target (issue 4): ASR ≤ 5 % with a clean-accuracy drop ≤ 3 points. Paper: GYM Table 2.")

    rows, _ = run_cases(args, make, stage_rows, write=write)
    path = write(rows, [])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
