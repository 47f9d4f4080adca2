"""Learning-rate schedules of the generator papers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasbd.errors import ConfigError

__all__ = ["LinearDecay"]


@keras.saving.register_keras_serializable(package="kerasbd")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant ``initial_learning_rate`` for ``hold_steps`` steps, then linear decay to ``final_learning_rate``.

    ``lr(step) = initial`` up to ``hold_steps``, falls linearly to ``final`` at ``total_steps`` and stays there.
    CycleGAN trains 100 epochs at the initial rate and decays to zero over 100 more: with ``S`` steps per epoch
    that is ``LinearDecay(2e-4, hold_steps=100 * S, total_steps=200 * S)``. It decays every step where PyTorch's
    ``LambdaLR`` rule decays once per epoch (and stops at ``lr / 101`` rather than 0), a difference below one
    epoch's share of the decay.

    Args:
        initial_learning_rate: the rate of the first ``hold_steps`` steps.
        hold_steps: steps at the initial rate (optimizer iterations, counted from 0).
        total_steps: the step at which the rate reaches ``final_learning_rate``; above ``hold_steps``.
        final_learning_rate: the rate from ``total_steps`` on.

    Example:
        >>> lr = LinearDecay(2e-4, hold_steps=100, total_steps=200)
        >>> [round(float(lr(s)), 6) for s in (0, 100, 150, 200, 300)]
        [0.0002, 0.0002, 0.0001, 0.0, 0.0]
    """

    def __init__(
        self, initial_learning_rate: float, hold_steps: int, total_steps: int, final_learning_rate: float = 0.0, name: str = "LinearDecay"
    ) -> None:
        super().__init__()
        if hold_steps < 0:
            raise ConfigError(f"hold_steps must be non-negative, got {hold_steps}.")
        if total_steps <= hold_steps:
            raise ConfigError(f"total_steps ({total_steps}) must exceed hold_steps ({hold_steps}): the decay runs from hold_steps to total_steps.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.hold_steps, self.total_steps = int(hold_steps), int(total_steps)
        self.final_learning_rate = float(final_learning_rate)
        self.name = name

    def __call__(self, step: Any) -> Any:
        with keras.name_scope(self.name):
            progress = (ops.cast(step, "float32") - self.hold_steps) / (self.total_steps - self.hold_steps)
            return self.initial_learning_rate + (self.final_learning_rate - self.initial_learning_rate) * ops.clip(progress, 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "hold_steps": self.hold_steps,
            "total_steps": self.total_steps,
            "final_learning_rate": self.final_learning_rate,
            "name": self.name,
        }
