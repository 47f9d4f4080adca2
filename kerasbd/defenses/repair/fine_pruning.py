"""Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018): prune dormant channels of the last conv layer, then fine-tune.

Backdoor behaviour often lives in channels that clean inputs barely activate. The defense ranks the channels
of the last convolutional layer by their mean activation on clean data, prunes them in increasing order until
the clean validation accuracy has dropped by ``max_drop`` (4 %, the paper's rule), then fine-tunes on the clean
data with the pruned channels held at zero.

Mirrors the original (kangliucn/Fine-pruning-defense, Caffe):

- activation per channel = mean over images and positions of the layer's output (the original measured the
  pooling layer after ``conv3``; pass its name as ``activation_layer`` to do the same);
- pruning = zeroing the channel's kernel and bias (the original's ``conv_output_prune.py``), so the returned model
  is an ordinary Keras model of the same architecture;
- ``prune_count`` / ``prune_fraction`` prune a fixed number of channels instead (the original code pruned a
  fixed 48 of 60, i.e. 80 %, with no stopping rule).

Deliberate choices where the original is silent (reference notes §8): the stopping rule keeps the first pruning
step at which accuracy has dropped by at least ``max_drop`` ("the defense terminates when the validation
accuracy drops by 4 %"); fine-tuning uses the original's training solver (Adam, learning rate 1e-3) for one
epoch, as in GYM's comparison (§ "Comparison with existing defense methods"), with batch 32 because the
original's batch of 1283 would leave a 1000-image validation set a single step.

Evaluation during pruning reuses one model: the conv layer's weights are reassigned from the originals times
a channel mask for every step (no rebuild, one compiled predict function).
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.defenses.base import Defense, RunContext
from kerasbd.errors import ConfigError
from kerasbd.io import Progress
from kerasbd.models.surgery import conv_layers, copy_model, find_layer, layer_output_model
from kerasbd.reporting import DefenseResult

__all__ = ["FinePruning", "ChannelMask"]


def _apply_mask(layer: keras.layers.Layer, kernel: np.ndarray, bias: np.ndarray | None, mask: np.ndarray) -> None:
    layer.kernel.assign(kernel * mask)
    if bias is not None:
        layer.bias.assign(bias * mask)


class ChannelMask(keras.callbacks.Callback):
    """Keeps pruned output channels of a conv layer at zero while a model trains (re-applied after every batch).

    The layer is looked up by name in the model being trained, so the callback also works when
    :func:`kerasbd.training.fit_classifier` trains a copy of the model under a distribution strategy.

    Example:
        >>> import keras, numpy as np
        >>> m = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, name="c"),
        ...                       keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> m.compile("sgd", "sparse_categorical_crossentropy")
        >>> mask = np.array([1.0, 0.0, 1.0], "float32")
        >>> _ = m.fit(np.random.rand(4, 6, 6, 1), np.array([0, 1, 0, 1]), verbose=0,
        ...           callbacks=[ChannelMask("c", mask)])
        >>> float(np.abs(m.get_layer("c").kernel.numpy()[..., 1]).max())
        0.0
    """

    def __init__(self, layer_name: str, mask: np.ndarray) -> None:
        super().__init__()
        self.layer_name = layer_name
        self.mask = np.asarray(mask, dtype=np.float32)

    def _enforce(self) -> None:
        layer = find_layer(self.model, self.layer_name)
        layer.kernel.assign(layer.kernel * self.mask)
        if layer.bias is not None:
            layer.bias.assign(layer.bias * self.mask)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._enforce()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._enforce()

    def get_config(self) -> dict[str, Any]:
        return {"layer_name": self.layer_name, "mask": self.mask.tolist()}


class FinePruning(Defense):
    """Prune the least-active channels of the last conv layer until clean accuracy drops, then fine-tune.

    Args:
        layer: name of the conv layer to prune; None = the last ``Conv2D`` of the model.
        activation_layer: layer whose output ranks the channels (same channel count); None = ``layer`` itself.
        max_drop: stop pruning at the first step where clean validation accuracy is ``max_drop`` below the
            unpruned model's (0.04 = 4 points, the paper's rule).
        prune_count / prune_fraction: prune exactly this many channels (or this fraction) instead of using the
            accuracy rule — the original code's fixed 48-of-60 (``prune_fraction=0.8``).
        fine_tune_epochs, batch_size, optimizer, learning_rate: the clean fine-tuning after pruning.
        curve_eval_size: with evaluation data and a trigger, the pruning curve's ASR is measured on this many
            evaluation images (a fixed random subset) per step; None = all.

    ``result.rows`` holds the "fine-pruning" (pruned only) and "fine-pruning (fine-tuned)" rows of GYM
    Tables 3-5 when evaluation data are given; ``result.figures["pruning_curve"]`` plots accuracy (and ASR)
    against the number of pruned channels; ``result.details`` has the ranking and the pruned channels.

    Example:
        >>> result = FinePruning().run(badnet, (x_val, y_val), eval_data=(x_test, y_test),
        ...                            backdoors=[backdoor])  # doctest: +SKIP
        >>> result.details["n_pruned"], result.metrics_after["asr"]  # doctest: +SKIP
    """

    name: ClassVar[str] = "fine-pruning"

    def __init__(
        self,
        layer: str | None = None,
        activation_layer: str | None = None,
        max_drop: float = 0.04,
        prune_count: int | None = None,
        prune_fraction: float | None = None,
        fine_tune_epochs: int = 1,
        batch_size: int = 32,
        optimizer: str = "adam",
        learning_rate: float | None = 1e-3,
        curve_eval_size: int | None = 1000,
    ) -> None:
        if not 0.0 < max_drop < 1.0:
            raise ConfigError(f"max_drop must be in (0, 1), got {max_drop}.")
        if prune_count is not None and prune_fraction is not None:
            raise ConfigError("give prune_count or prune_fraction, not both.")
        if prune_count is not None and prune_count < 0:
            raise ConfigError(f"prune_count must be non-negative, got {prune_count}.")
        if prune_fraction is not None and not 0.0 <= prune_fraction < 1.0:
            raise ConfigError(f"prune_fraction must be in [0, 1), got {prune_fraction}.")
        if fine_tune_epochs < 0:
            raise ConfigError(f"fine_tune_epochs must be non-negative, got {fine_tune_epochs}.")
        self.layer, self.activation_layer = layer, activation_layer
        self.max_drop, self.prune_count, self.prune_fraction = max_drop, prune_count, prune_fraction
        self.fine_tune_epochs, self.batch_size = fine_tune_epochs, batch_size
        self.optimizer, self.learning_rate = optimizer, learning_rate
        self.curve_eval_size = curve_eval_size

    def _target_layer(self, model: keras.Model) -> keras.layers.Layer:
        if self.layer is not None:
            layer = find_layer(model, self.layer)
            if not isinstance(layer, keras.layers.Conv2D):
                raise ConfigError(f"layer {self.layer!r} is a {type(layer).__name__}, not a Conv2D; name a convolutional layer.")
            return layer
        convs = conv_layers(model)
        if not convs:
            raise ConfigError("the model has no Conv2D layer to prune; fine-pruning needs a convolutional network.")
        return convs[-1]

    def channel_activations(self, model: keras.Model, x: np.ndarray) -> np.ndarray:
        """Mean activation per channel of the ranking layer on ``x`` (over images and positions)."""
        conv = self._target_layer(model)
        ranked = find_layer(model, self.activation_layer) if self.activation_layer else conv
        acts = layer_output_model(model, ranked).predict(x, batch_size=256, verbose=0)
        if acts.ndim != 4 or acts.shape[-1] != conv.filters:
            raise ConfigError(
                f"activation layer {ranked.name!r} gives shape {acts.shape[1:]}; it must keep the {conv.filters} "
                f"channels of {conv.name!r} (e.g. the pooling layer right after it)."
            )
        return acts.mean(axis=(0, 1, 2))

    def _fixed_count(self, channels: int) -> int | None:
        if self.prune_count is not None:
            return min(int(self.prune_count), channels - 1)
        if self.prune_fraction is not None:
            return min(int(round(self.prune_fraction * channels)), channels - 1)
        return None

    def _run(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> DefenseResult:
        x, y = clean
        pruned = copy_model(model)
        conv = self._target_layer(pruned)
        channels = int(conv.filters)
        activations = self.channel_activations(pruned, x)
        order = np.argsort(activations, kind="stable")  # least active first
        kernel = conv.kernel.numpy()
        bias = conv.bias.numpy() if conv.bias is not None else None

        def accuracy() -> float:
            return float(np.mean(pruned.predict(x, batch_size=256, verbose=0).argmax(axis=1) == y))

        base_acc = accuracy()
        fixed = self._fixed_count(channels)
        last = fixed if fixed is not None else channels - 1
        accs: list[float] = []
        mask = np.ones(channels, np.float32)
        progress = Progress(last, "fine-pruning", ctx.verbose)
        n_pruned = 0
        for k in range(0, last + 1):
            if k > 0:
                mask[order[k - 1]] = 0.0
                _apply_mask(conv, kernel, bias, mask)
                progress.update()
            accs.append(base_acc if k == 0 else accuracy())
            ctx.report.point("curve", pruned, subset=self.curve_eval_size, pruned=k, clean_acc=accs[-1])
            n_pruned = k
            if fixed is None and base_acc - accs[-1] >= self.max_drop:
                break
        progress.close()

        tuned = copy_model(pruned)
        if self.fine_tune_epochs > 0:
            from kerasbd.training import fit_classifier

            fit_classifier(
                tuned, x, y, epochs=self.fine_tune_epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                learning_rate=self.learning_rate, callbacks=[ChannelMask(conv.name, mask)], seed=ctx.seed,
                strategy=ctx.strategy, verbose=ctx.verbose,
            )
        pruned_set = [int(c) for c in order[:n_pruned]]
        details = {
            "note": f"pruned {n_pruned} of {channels} channels of {conv.name} ({'fixed count' if fixed is not None else 'accuracy rule'}), "
                    f"then fine-tuned {self.fine_tune_epochs} epoch(s)",
            "layer": conv.name,
            "channels": channels,
            "n_pruned": n_pruned,
            "pruned_channels": pruned_set,
            "rule": "fixed count" if fixed is not None else f"first step with accuracy drop >= {self.max_drop}",
            "validation_acc_before": base_acc,
            "validation_acc_pruned": accs[-1],
            "validation_acc_fine_tuned": float(np.mean(tuned.predict(x, batch_size=256, verbose=0).argmax(axis=1) == y)),
        }
        ctx.report.stage("no defense", model)
        ctx.report.stage("fine-pruning", pruned)
        ctx.report.stage("fine-pruning (fine-tuned)", tuned)
        return DefenseResult(self.name, model=tuned, details=details, arrays={"mean_activation": activations, "mask": mask})
