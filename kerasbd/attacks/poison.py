"""Poisoned-dataset builder and the BadNet training routine used by tests, recipes and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from kerasbd.attacks.combination import Combination
from kerasbd.attacks.spec import Backdoor
from kerasbd.attacks.targets import AllToOne
from kerasbd.errors import ConfigError
from kerasbd.validation import check_dataset

__all__ = ["PoisonedData", "poison_dataset", "train_badnet"]


class PoisonedData(NamedTuple):
    """A poisoned training set: images, labels, and masks of the attack examples and of partial (negative) ones."""

    x: np.ndarray
    y: np.ndarray
    poisoned: np.ndarray
    partial: np.ndarray


def _as_backdoors(backdoors: Backdoor | Sequence[Backdoor]) -> list[Backdoor]:
    items = [backdoors] if isinstance(backdoors, Backdoor) else list(backdoors)
    if not items or not all(isinstance(b, Backdoor) for b in items):
        raise ConfigError("pass one Backdoor or a non-empty list of Backdoor objects (see kerasbd.attacks.from_spec).")
    return items


def _partial_examples(trigger: Combination, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stamp each image with a random non-empty strict subset of the combination's parts."""
    k = len(trigger.parts)
    sizes = rng.integers(1, k, size=len(x))
    subsets = [tuple(sorted(rng.choice(k, size=s, replace=False).tolist())) for s in sizes]
    out = x.copy()
    for subset in set(subsets):
        rows = np.array([i for i, s in enumerate(subsets) if s == subset])
        out[rows] = trigger.apply_parts(x[rows], subset, rng)
    return out


def poison_dataset(
    x: np.ndarray,
    y: np.ndarray,
    backdoor: Backdoor | Sequence[Backdoor],
    rate: float = 0.1,
    *,
    mode: str = "dirty",
    seed: int = 0,
    append: bool = False,
    partial_rate: float = 1.0,
    num_classes: int | None = None,
) -> PoisonedData:
    """Build a poisoned copy of ``(x, y)``.

    - ``mode="dirty"`` (BadNets): for each backdoor, ``round(rate·N)`` images whose label differs from their
      attack label are stamped and relabelled.
    - ``mode="clean"`` (clean-label, Turner et al.): a fraction ``rate`` *of the target class's* images are
      stamped and keep their (correct) labels; needs all-to-one targets.
    - Several backdoors draw from disjoint images (multi-trigger, multi-target).
    - A :class:`~kerasbd.attacks.Combination` trigger also gets ``round(partial_rate · count)`` *partial* examples:
      other images stamped with a strict subset of the parts, labels unchanged, so one part alone does not fire.
    - ``append=True`` adds the stamped copies to the clean set (the Neural Cleanse / Dillonsd recipes) instead of
      replacing the originals (BadNets).

    Returns:
        :class:`PoisonedData` ``(x, y, poisoned, partial)``; the masks index the returned arrays.

    Example:
        >>> from kerasbd.attacks import Patch
        >>> x, y = np.zeros((100, 8, 8, 1), "float32"), np.arange(100) % 10
        >>> data = poison_dataset(x, y, Backdoor(Patch(2), 0), rate=0.1, seed=0)
        >>> int(data.poisoned.sum()), set(data.y[data.poisoned].tolist())
        (10, {0})
    """
    if mode not in ("dirty", "clean"):
        raise ConfigError(f"mode must be 'dirty' or 'clean', got {mode!r}.")
    if not 0.0 < float(rate) <= 1.0:
        raise ConfigError(f"poison rate must be in (0, 1], got {rate}.")
    x, y = check_dataset(x, y, num_classes=num_classes, name="training data")
    rng = np.random.default_rng(seed)
    free = np.ones(len(y), dtype=bool)
    new_x, new_y, new_idx, new_kind = [], [], [], []
    for bd in _as_backdoors(backdoor):
        bd.trigger.check_fits(x.shape[1:])
        if mode == "clean":
            if not isinstance(bd.target, AllToOne):
                raise ConfigError(f"clean-label poisoning needs an all-to-one target; {bd.name} has {bd.target!r}.")
            pool = free & (y == bd.target.label)
            count = int(round(rate * int((y == bd.target.label).sum())))
        else:
            pool = free & bd.target.eligible(y, num_classes or int(y.max()) + 1)
            count = int(round(rate * len(y)))
        if count < 1 or count > int(pool.sum()):
            raise ConfigError(f"{bd.name}: rate {rate} asks for {count} poisoned images but {int(pool.sum())} are available.")
        idx = rng.choice(np.flatnonzero(pool), size=count, replace=False)
        free[idx] = False
        new_x.append(bd.trigger.apply(x[idx], rng))
        new_y.append(y[idx] if mode == "clean" else bd.target.map(y[idx], num_classes or int(y.max()) + 1))
        new_idx.append(idx)
        new_kind.append(np.ones(count, bool))
        if isinstance(bd.trigger, Combination) and partial_rate > 0:
            n_partial = min(int(round(partial_rate * count)), int(free.sum()))
            pidx = rng.choice(np.flatnonzero(free), size=n_partial, replace=False)
            free[pidx] = False
            new_x.append(_partial_examples(bd.trigger, x[pidx], rng))
            new_y.append(y[pidx])
            new_idx.append(pidx)
            new_kind.append(np.zeros(n_partial, bool))
    xs, ys, idx, is_attack = (np.concatenate(a) for a in (new_x, new_y, new_idx, new_kind))
    if append:
        out_x, out_y = np.concatenate([x, xs]), np.concatenate([y, ys])
        rows = np.arange(len(y), len(y) + len(ys))
    else:
        out_x, out_y = x.copy(), y.copy()
        out_x[idx], out_y[idx] = xs, ys
        rows = idx
    poisoned = np.zeros(len(out_y), bool)
    partial = np.zeros(len(out_y), bool)
    poisoned[rows[is_attack]] = True
    partial[rows[~is_attack]] = True
    return PoisonedData(out_x, out_y, poisoned, partial)


def train_badnet(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    backdoors: Backdoor | Sequence[Backdoor],
    *,
    rate: float = 0.1,
    mode: str = "dirty",
    append: bool = False,
    epochs: int = 5,
    batch_size: int = 32,
    optimizer: Any = "adam",
    learning_rate: float | None = None,
    seed: int = 0,
    strategy: Any = None,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[Any] = (),
    verbose: int = 0,
) -> Any:
    """Poison ``(x, y)`` with :func:`poison_dataset` and train ``model`` on it with
    :func:`kerasbd.training.fit_classifier` (in place; the model must map canonical images to logits).

    Returns:
        The Keras ``History``.

    Example:
        >>> import keras
        >>> from kerasbd.attacks import Patch
        >>> from kerasbd.data import load_digits
        >>> x, y = load_digits(8)
        >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        >>> h = train_badnet(net, x, y, Backdoor(Patch(2), 0), epochs=1)
    """
    from kerasbd.models import as_logits_model
    from kerasbd.training import fit_classifier

    net = as_logits_model(model)
    data = poison_dataset(x, y, backdoors, rate, mode=mode, seed=seed, append=append, num_classes=int(net.output_shape[-1]))
    return fit_classifier(
        net,
        data.x,
        data.y,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        validation_data=validation_data,
        callbacks=callbacks,
        seed=seed,
        strategy=strategy,
        verbose=verbose,
    )
