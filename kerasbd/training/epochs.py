"""Callbacks shared by the epoch-based generator loops: a progress bar over epochs and per-epoch checkpoints in a
run's :class:`~kerasbd.resume.ResumeStore`, so every ``fit``-driven method shows time left and resumes the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from kerasbd.resume import ResumeStore

__all__ = ["EpochCheckpoint", "EpochProgress", "resume_epoch"]


class EpochProgress(keras.callbacks.Callback):
    """Epochs as a :class:`~kerasbd.io.Progress` bar (time left from the recent epochs), with chosen log values.

    Args:
        epochs: the epochs of the whole run.
        desc: the bar's label.
        verbose: 0 silences it.
        initial: epochs already done (a resumed run).
        show: log key → ``(label, format)`` shown after the bar, e.g. ``{"cycle_loss": ("cycle", ".3f")}``.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> bar = EpochProgress(3, "demo", verbose=0, show={"loss": ("loss", ".2f")})
        >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=3, verbose=0, callbacks=[bar])
        >>> bar.progress.n
        3
    """

    def __init__(self, epochs: int, desc: str, verbose: int = 1, *, initial: int = 0,
                 show: Mapping[str, tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.epochs, self.desc, self.verbose, self.initial = epochs, desc, verbose, initial
        self.show = dict(show or {})

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from kerasbd.io import Progress

        self.progress = Progress(self.epochs, self.desc, self.verbose, initial=self.initial, unit="epoch")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.progress.update(1, **{label: format(float(logs[key]), fmt) for key, (label, fmt) in self.show.items() if key in logs})

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.progress.close()


class EpochCheckpoint(keras.callbacks.Callback):
    """The trained model's weights (players, optimizers, layer state such as an image pool's) after every epoch.

    The epoch's weights are written before the counter that names them and the previous epoch's are removed
    after, so a run killed at any point resumes from a consistent pair (see :func:`resume_epoch`).

    Args:
        store: the run's resume store; None makes the callback do nothing.
        key: the name of the items in the store (``{key}_e{epoch}`` weights, ``{key}_epoch`` counter).
    """

    def __init__(self, store: ResumeStore | None, key: str = "trainer") -> None:
        super().__init__()
        self.store, self.key = store, key

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.store is not None:
            self.store.save_weights(f"{self.key}_e{epoch + 1}", self.model)
            self.store.save_json(f"{self.key}_epoch", epoch + 1)
            self.store.remove(f"{self.key}_e{epoch}")


def resume_epoch(store: ResumeStore | None, model: keras.Model, key: str = "trainer") -> int:
    """Load the latest :class:`EpochCheckpoint` of ``key`` into ``model`` and return its epoch (0 when none)."""
    done = int(store.load_json(f"{key}_epoch") or 0) if store is not None else 0
    if store is not None and done:
        store.load_weights(f"{key}_e{done}", model)
    return done
