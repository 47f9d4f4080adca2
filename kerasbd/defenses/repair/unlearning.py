"""Unlearning a reversed trigger, and the ``neural-cleanse`` defense: inspect, then unlearn.

Neural Cleanse (Wang et al., S&P 2019) repairs a model flagged by its inspection by *unlearning*: fine-tuning on
clean data of which a share carries the reversed trigger of a flagged label, with the images' correct labels.
The procedure is described only in the paper (no code was published): one epoch, ~20 % of the images stamped.
The optimiser is not known; kerasbd uses Adam at Keras' default learning rate 1e-3, batch 32 (our choice: with a
defender's set of ~1000 images one epoch is ~30 updates, and 1e-4 left the backdoor in place on the test BadNet).

:class:`Unlearning` consumes any :class:`~kerasbd.reporting.InspectionResult` (its reversed triggers of the
flagged labels), so every inspector's finding can be repaired the same way; :class:`NeuralCleanse` composes
:class:`~kerasbd.defenses.inspection.neural_cleanse.NeuralCleanseInspector` with it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.config import Configurable
from kerasbd.defenses.base import InspectThenRepair, RunContext
from kerasbd.defenses.inspection.neural_cleanse import NeuralCleanseInspector, ceiling_note
from kerasbd.errors import ConfigError
from kerasbd.models.surgery import copy_model
from kerasbd.reporting import InspectionResult

__all__ = ["Unlearning", "NeuralCleanse"]


class Unlearning(Configurable):
    """Fine-tune a copy of the model on clean data where a share of the images carry reversed triggers.

    Args:
        fraction: share of the clean images stamped (0.2, the paper's ratio); the stamped images are split
            evenly, in turn, among the flagged labels' triggers (most anomalous first).
        epochs, batch_size, optimizer, learning_rate: the fine-tuning (1 epoch as the paper; Adam 1e-3 and
            batch 32 are kerasbd's choice — the original's are unknown).

    Example:
        >>> Unlearning(fraction=0.2).get_config()["optimizer"]
        'adam'
    """

    def __init__(self, fraction: float = 0.2, epochs: int = 1, batch_size: int = 32, optimizer: str = "adam",
                 learning_rate: float | None = 1e-3) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}.")
        if epochs < 1 or batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}.")
        self.fraction, self.epochs, self.batch_size = float(fraction), int(epochs), int(batch_size)
        self.optimizer, self.learning_rate = optimizer, learning_rate

    def apply(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], inspection: InspectionResult, *,
              rng: np.random.Generator, seed: int, strategy: Any = None) -> keras.Model:
        """The unlearned copy of ``model`` (``model`` itself is not modified); ``inspection`` must flag a label."""
        from kerasbd.training import fit_classifier

        if not inspection.flagged:
            raise ConfigError("the inspection flags no label, so there is no reversed trigger to unlearn.")
        x, y = clean
        n = len(x)
        chosen = rng.choice(n, size=max(1, int(round(self.fraction * n))), replace=False)
        backdoors = inspection.backdoors()
        which = np.arange(len(chosen)) % len(backdoors)
        x_unlearn = x.copy()
        for j in np.unique(which):
            rows = chosen[which == j]
            x_unlearn[rows] = backdoors[j].trigger.apply(x[rows])
        repaired = copy_model(model)
        fit_classifier(repaired, x_unlearn, y, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                       learning_rate=self.learning_rate, seed=seed, strategy=strategy)
        return repaired


class NeuralCleanse(InspectThenRepair):
    """The ``neural-cleanse`` defense: :class:`NeuralCleanseInspector`, then :class:`Unlearning` if a label is flagged.

    Args:
        inspector: the inspection (default: the original's constants; see the inspector's docstring).
        unlearning: the repair of a flagged model (default :class:`Unlearning`).
        unlearn: False = report only, return the model unchanged.

    Nested settings are reached with ``a__b`` names (``--set inspector__inversion__steps=300`` on the CLI).
    ``result.details`` holds the inspection's findings (anomaly indices, flagged labels, ...) and ``repaired``;
    ``result.rows`` the per-label table; ``result.arrays`` the reversed masks and patterns.

    Example:
        >>> nc = NeuralCleanse().with_params(inspector__inversion__steps=300, unlearning__fraction=0.1)
        >>> nc.inspector.inversion.steps, nc.unlearning.fraction
        (300, 0.1)
    """

    name: ClassVar[str] = "neural-cleanse"
    repair_switch: ClassVar[str] = "unlearn"

    def __init__(self, inspector: NeuralCleanseInspector | None = None, unlearning: Unlearning | None = None, unlearn: bool = True) -> None:
        if inspector is not None and not isinstance(inspector, NeuralCleanseInspector):
            raise ConfigError(f"inspector must be a NeuralCleanseInspector, got {type(inspector).__name__}.")
        if unlearning is not None and not isinstance(unlearning, Unlearning):
            raise ConfigError(f"unlearning must be an Unlearning, got {type(unlearning).__name__}.")
        self.inspector = inspector if inspector is not None else NeuralCleanseInspector()
        self.unlearning = unlearning if unlearning is not None else Unlearning()
        self.unlearn = bool(unlearn)

    def _inspection(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> tuple[InspectionResult, Any]:
        return self.inspector.inspect_in(model, clean, ctx), None

    def _repair(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], inspection: InspectionResult, state: Any,
                ctx: RunContext) -> tuple[keras.Model, str]:
        repaired = self.unlearning.apply(model, clean, inspection, rng=ctx.rng, seed=ctx.seed, strategy=ctx.strategy)
        return repaired, f"unlearned the reversed trigger(s) of label(s) {inspection.flagged}"

    def _unflagged_note(self, inspection: InspectionResult) -> str:
        return ceiling_note(inspection.details)
