"""Drop-in Keras callbacks for backdoor-aware training, and the per-batch transform dataset.

- :class:`BackdoorMetrics` logs clean accuracy, attack success rate (overall and per trigger) and robust accuracy
  at the end of every epoch into ``logs``, so they land in the ``History`` and later callbacks (EarlyStopping,
  CSVLogger, :class:`AccuracyDropGuard`) see them.
- :class:`AccuracyDropGuard` stops training when clean accuracy falls more than ``max_drop`` below a reference
  and restores the best weights: a safety net for any repair-by-fine-tuning.
- :class:`TransformedBatches` (from :mod:`kerasbd.training`) feeds ``model.fit`` batches passed through a kerasbd
  transform, so a user's own fine-tuning loop becomes GYM (intensive function) or NNoculation (noise, with
  ``mix_clean=True``).

Example — a user's own GYM-style fine-tuning with both callbacks:
    >>> import keras
    >>> from kerasbd.callbacks import AccuracyDropGuard, BackdoorMetrics, TransformedBatches
    >>> from kerasbd.transforms import gym_intensive
    >>> model.compile("adadelta", keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # doctest: +SKIP
    >>> data = TransformedBatches(x_val, y_val, batch_size=10, transform=gym_intensive((28, 28, 1)))  # doctest: +SKIP
    >>> history = model.fit(data, epochs=5, callbacks=[
    ...     BackdoorMetrics(x_test, y_test, [backdoor]),
    ...     AccuracyDropGuard(x_val, y_val, max_drop=0.03)])  # doctest: +SKIP
    >>> history.history["asr"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.training import TransformedBatches
from kerasbd.validation import check_dataset

__all__ = ["BackdoorMetrics", "AccuracyDropGuard", "TransformedBatches"]


def _metrics(model: keras.Model, x: np.ndarray, y: np.ndarray, backdoors: Sequence[Any], batch_size: int) -> dict[str, Any]:
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.models import as_logits_model

    return evaluate_backdoor(as_logits_model(model), x, y, backdoors=list(backdoors), batch_size=batch_size)


class BackdoorMetrics(keras.callbacks.Callback):
    """Log clean accuracy and ASR (per trigger) of the model being trained at the end of every epoch.

    Keys added to ``logs`` (and so to ``History.history``), with ``prefix`` in front: ``clean_acc``, and when
    backdoors are given ``asr`` (mean over triggers), ``robust_acc`` and ``asr_<trigger name>`` per trigger.
    The model may output logits or softmax probabilities.

    Args:
        x, y: evaluation images (canonical) and true labels.
        backdoors: :class:`kerasbd.attacks.Backdoor` objects to measure; empty = clean accuracy only.
        prefix: prepended to every key (e.g. ``"test_"``).
        batch_size: evaluation batch size.
        on_train_begin: also log the metrics before the first epoch (``initial_metrics`` attribute).

    Example:
        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x, y = np.random.rand(8, 4, 4, 1).astype("float32"), np.arange(8) % 2
        >>> h = m.fit(x, y, epochs=2, verbose=0, callbacks=[BackdoorMetrics(x, y)])
        >>> len(h.history["clean_acc"])
        2
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        backdoors: Sequence[Any] = (),
        *,
        prefix: str = "",
        batch_size: int = 256,
        on_train_begin: bool = False,
    ) -> None:
        super().__init__()
        self.x, self.y = check_dataset(x, y, name="BackdoorMetrics")
        self.backdoors = list(backdoors)
        names = [getattr(b, "name", f"trigger{i}") for i, b in enumerate(self.backdoors)]
        if len(set(names)) != len(names):
            raise ConfigError(f"backdoor names must be unique to be logged separately, got {names}.")
        self.prefix, self.batch_size, self.log_initial = prefix, int(batch_size), on_train_begin
        self.initial_metrics: dict[str, float] | None = None

    def compute(self) -> dict[str, float]:
        """The metrics of the current model, as the flat dict that goes into ``logs``."""
        m = _metrics(self.model, self.x, self.y, self.backdoors, self.batch_size)
        out = {f"{self.prefix}clean_acc": float(m["clean_acc"])}
        if self.backdoors:
            out[f"{self.prefix}asr"] = float(m["asr"])
            out[f"{self.prefix}robust_acc"] = float(m["robust_acc"])
            for name, per in (m.get("per_trigger") or {}).items():
                out[f"{self.prefix}asr_{name}"] = float(per["asr"])
        return out

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.log_initial:
            self.initial_metrics = self.compute()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs.update(self.compute())

    def get_config(self) -> dict[str, Any]:
        return {
            "n_examples": int(len(self.x)),
            "backdoors": [getattr(b, "name", repr(b)) for b in self.backdoors],
            "prefix": self.prefix,
            "batch_size": self.batch_size,
            "on_train_begin": self.log_initial,
        }


class AccuracyDropGuard(keras.callbacks.Callback):
    """Stop training when clean accuracy falls more than ``max_drop`` below a reference; restore the best weights.

    The reference is the model's accuracy on (x, y) before training (default) or a given number. After every
    epoch the guard measures clean accuracy (logged as ``guard_clean_acc``), remembers the weights of the most
    accurate epoch so far, and when accuracy < reference − ``max_drop`` it stops training and, with
    ``restore_best_weights``, puts those weights back (the most accurate epoch, which may be the one that
    tripped the guard if it is the only one).

    Args:
        x, y: clean images and labels (e.g. a held-out part of the defender's clean data).
        reference: accuracy to compare with; None = measured on (x, y) when training starts.
        max_drop: tolerated drop (0.03 = 3 points).
        restore_best_weights: restore the most accurate epoch's weights when stopping.
        batch_size: evaluation batch size.

    Attributes after training: ``reference_``, ``stopped_epoch`` (−1 if not stopped), ``best_epoch``,
    ``best_accuracy``.

    Example:
        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> m.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x, y = np.zeros((4, 4, 4, 1), "float32"), np.array([0, 1, 0, 1])  # at most 50 % can be right
        >>> guard = AccuracyDropGuard(x, y, reference=0.9, max_drop=0.1)
        >>> _ = m.fit(x, y, epochs=5, verbose=0, callbacks=[guard])
        >>> guard.stopped_epoch
        0
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        reference: float | None = None,
        max_drop: float = 0.03,
        restore_best_weights: bool = True,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        if not 0.0 <= max_drop <= 1.0:
            raise ConfigError(f"max_drop must be in [0, 1], got {max_drop}.")
        if reference is not None and not 0.0 <= reference <= 1.0:
            raise ConfigError(f"reference must be an accuracy in [0, 1], got {reference}.")
        self.x, self.y = check_dataset(x, y, name="AccuracyDropGuard")
        self.reference, self.max_drop = reference, float(max_drop)
        self.restore_best_weights, self.batch_size = restore_best_weights, int(batch_size)

    def _accuracy(self) -> float:
        return float(_metrics(self.model, self.x, self.y, (), self.batch_size)["clean_acc"])

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.reference_ = float(self.reference) if self.reference is not None else self._accuracy()
        self.stopped_epoch, self.best_epoch, self.best_accuracy = -1, -1, -np.inf
        self._best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        acc = self._accuracy()
        if logs is not None:
            logs["guard_clean_acc"] = acc
        if acc > self.best_accuracy:
            self.best_accuracy, self.best_epoch = acc, epoch
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
        if acc < self.reference_ - self.max_drop:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch >= 0 and self.restore_best_weights and self._best_weights is not None:
            self.model.set_weights(self._best_weights)

    def get_config(self) -> dict[str, Any]:
        return {
            "n_examples": int(len(self.x)),
            "reference": self.reference,
            "max_drop": self.max_drop,
            "restore_best_weights": self.restore_best_weights,
            "batch_size": self.batch_size,
        }
