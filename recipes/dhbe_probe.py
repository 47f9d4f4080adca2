"""Probes for why DHBE's short runs keep the zoo's MNIST backdoors (issue #16 notes, README "Known limits").

``noise``: the share of images drawn from the sample generator's space (N(mean, std) per pixel in canonical
units, the MNIST constants DHBE maps its normalised space with) each zoo MNIST model sends to each label — a
backdoor that noise already fires is distilled into the student by the generated images themselves; ``--clip``
clips the noise to [0, 1] first, as ``--set clip=true`` does to DHBE's generated images.

``train``: a DHBE trainer (``--preset short`` plus ``--set`` overrides) on one zoo model, with the clean accuracy
and ASR on 1,000 held-out images after every ``--eval-every`` epochs; ``--oracle TOP LEFT`` pins the trigger
generator's patch to that position (the true trigger's corner) to separate finding the trigger from erasing it.
``--epochs`` (of 50 iterations) is the run's whole schedule: the learning rates drop ×0.1 at 60 % and 80 % of it,
so the figures after a given iteration depend on it (the README's are with ``--epochs 6``). ``--model digits-dense``,
``digits-bn`` or ``digits-gap`` trains a small 12×12 digits BadNet here instead (a 3×3 white patch bottom-right → 0,
10 % poisoned; dense head, the same with batch normalisation, or three BN convolutions with global average pooling —
the paper's kind of network) and evaluates on the defender's 30 % of the digits.

    python recipes/dhbe_probe.py noise
    python recipes/dhbe_probe.py noise --clip
    python recipes/dhbe_probe.py train --set backdoor_weight=0 from_scratch=true student_lr=0.001 --epochs 6
    python recipes/dhbe_probe.py train --oracle 23 23 --set backdoor_weight=1 student_lr=0.001 --epochs 6
    python recipes/dhbe_probe.py train --model digits-gap --set batch_size=32 patch_size=3 nz=16 nz2=16 ngf=16 --epochs 20
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def noise(seed: int, clip: bool) -> None:
    from kerasbd.defenses.repair.dhbe import DHBE
    from kerasbd.experiments import mnist_zoo_cases
    from kerasbd.models import as_logits_model

    mean, std, _ = DHBE().pixel_stats((28, 28, 1))  # the MNIST constants DHBE maps its normalised space with
    x = (np.asarray(mean) + np.asarray(std) * np.random.default_rng(seed).normal(size=(2000, 28, 28, 1))).astype("float32")
    if clip:
        x = np.clip(x, 0.0, 1.0)
    print("| model | target | share of noise images per label 0–9 |\n|---|---|---|")
    for case in mnist_zoo_cases():
        labels = as_logits_model(case.classifier).predict(x, verbose=0).argmax(1)
        print(f"| {case.name} | {case.target} | {' '.join(f'{v:.3f}' for v in np.bincount(labels, minlength=10) / len(labels))} |")


DIGITS = {"name": "corner", "trigger": {"type": "patch", "size": 3, "position": "bottom-right"}, "target": 0}


def _digits_badnet(kind: str) -> tuple[Any, list[Any], np.ndarray, np.ndarray]:
    """A 12×12 digits BadNet of ``kind`` (dense, bn, gap), its backdoors and the defender's held-out digits."""
    import keras

    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.data import load_digits, split_defender

    (x_eval, y_eval), train = split_defender(*load_digits(size=12), val_fraction=0.3, seed=0)
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((12, 12, 1))
    if kind == "gap":
        h = inp
        for width in (32, 64, 64):
            h = L.ReLU()(L.BatchNormalization()(L.Conv2D(width, 3, padding="same")(h)))
            h = L.MaxPooling2D()(h) if width == 32 else h
        h = L.GlobalAveragePooling2D()(h)
    else:
        norm = L.BatchNormalization if kind == "bn" else L.Identity
        h = L.Flatten()(L.ReLU()(norm()(L.Conv2D(8, 3)(inp))))
        h = L.ReLU()(norm()(L.Dense(32)(h)))
    net = keras.Model(inp, L.Dense(10)(h))
    backdoors = from_spec(DIGITS)
    train_badnet(net, *train, backdoors, rate=0.1, epochs=30 if kind == "gap" else 8, batch_size=32, seed=0)
    return net, backdoors, x_eval, y_eval


def train(args: argparse.Namespace) -> None:
    import tensorflow as tf

    from kerasbd.cli_common import _parse_sets
    from kerasbd.defenses import DEFENSES
    from kerasbd.experiments import mnist_split, mnist_zoo_cases
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.models import as_logits_model

    overrides = _parse_sets(args.set)
    if args.model.startswith("digits-"):
        net, backdoors, x, y = _digits_badnet(args.model[len("digits-"):])
    else:
        case = {c.name: c for c in mnist_zoo_cases()}[args.model]
        _, rest = mnist_split(1000, 0)
        x, y, net, backdoors = rest[0][:1000], rest[1][:1000], as_logits_model(case.classifier), case.backdoors
    m = evaluate_backdoor(net, x, y, backdoors)
    print(f"before: CA {m['clean_acc']:.4f}, ASR {m['asr']:.4f}")
    defense = DEFENSES["dhbe"].preset("short", **{**overrides, "epochs": args.epochs})
    trainer = defense.build_trainer(net, args.seed)
    if args.oracle:
        top, left = args.oracle

        def pinned(n: Any) -> tuple[Any, Any]:
            shape = () if trainer.position == "batch" else (n,)
            return tf.fill(shape, top), tf.fill(shape, left)

        trainer._position = pinned  # a probe, not an option: the defender does not know where the trigger is
    print(f"settings: {overrides or 'short preset'}; oracle position: {args.oracle}; seed {args.seed}")
    steps, start = np.zeros((defense.epoch_itrs, 1), np.float32), time.perf_counter()
    for epoch in range(0, args.epochs, args.eval_every):
        trainer.fit(steps, batch_size=1, epochs=epoch + args.eval_every, initial_epoch=epoch, shuffle=False, verbose=0)
        m = evaluate_backdoor(trainer.discriminator, x, y, backdoors)
        print(f"iterations {(epoch + args.eval_every) * defense.epoch_itrs}: CA {m['clean_acc']:.4f}, ASR {m['asr']:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=["noise", "train"])
    p.add_argument("--model", default="dillonsd_pattern_all_to_one")
    p.add_argument("--oracle", type=int, nargs=2, default=None, metavar=("TOP", "LEFT"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", action="store_true", help="noise: clip the images to [0, 1]")
    args = p.parse_args()
    from kerasbd._quiet import import_tensorflow_quietly

    import_tensorflow_quietly(1)  # no TensorFlow start-up lines in the output
    if args.probe == "noise":
        noise(args.seed, args.clip)
    else:
        train(args)


if __name__ == "__main__":
    main()
