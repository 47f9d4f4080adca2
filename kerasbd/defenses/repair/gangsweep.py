"""The ``gangsweep`` defense: GangSweep's inspection, then its patching of the flagged labels (§4.3, §5.2).

Patching fine-tunes the model for 3 epochs on clean validation images plus "adversarial" copies: clean images
stamped with the perturbation mask the flagged label's generator makes for them, with their correct labels.
The paper takes 10 % of the validation data and 10 % adversarial data on its 10,000-image test sets, and the
whole validation set with its adversarial copies where that set is small (1,000-2,622 images); a defender's
set of ~1,000 images is that case, so every clean image and one stamped copy of each are used by default
(``clean_fraction`` / ``stamped_fraction`` 0.1 give the large-set recipe). The optimiser is not given: Adam at
1e-3, batch 32, as :class:`~kerasbd.defenses.Unlearning` (kerasbd's choice).
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.config import Configurable
from kerasbd.defenses.base import InspectThenRepair, Preset, RunContext
from kerasbd.defenses.inspection.gangsweep import GangSweepInspector, SweptGenerators
from kerasbd.errors import ConfigError
from kerasbd.models.surgery import copy_model
from kerasbd.reporting import InspectionResult

__all__ = ["GangSweep", "Patching"]


class Patching(Configurable):
    """Fine-tune a copy of the model on clean images and copies stamped with generated masks, correctly labelled.

    Args:
        clean_fraction: share of the clean images kept as they are (1.0; the paper's large sets: 0.1).
        stamped_fraction: share of the clean images that get a stamped copy (1.0; large sets: 0.1), split in
            turn among the flagged labels.
        epochs, batch_size, optimizer, learning_rate: the fine-tuning (3 epochs as the paper; Adam 1e-3, 32).

    Example:
        >>> Patching(stamped_fraction=0.1).get_config()["epochs"]
        3
    """

    def __init__(self, clean_fraction: float = 1.0, stamped_fraction: float = 1.0, epochs: int = 3, batch_size: int = 32,
                 optimizer: str = "adam", learning_rate: float | None = 1e-3) -> None:
        for name, value in (("clean_fraction", clean_fraction), ("stamped_fraction", stamped_fraction)):
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}.")
        if epochs < 1 or batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}.")
        self.clean_fraction, self.stamped_fraction = float(clean_fraction), float(stamped_fraction)
        self.epochs, self.batch_size, self.optimizer, self.learning_rate = int(epochs), int(batch_size), optimizer, learning_rate

    def apply(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], swept: SweptGenerators, labels: list[int], *,
              rng: np.random.Generator, seed: int, strategy: Any = None) -> keras.Model:
        """The patched copy of ``model`` (``model`` itself is not modified)."""
        from kerasbd.training import fit_classifier

        if not labels:
            raise ConfigError("no flagged label to patch.")
        x, y = clean
        n = len(x)
        keep = rng.choice(n, size=max(1, round(self.clean_fraction * n)), replace=False)
        stamp = rng.choice(n, size=max(1, round(self.stamped_fraction * n)), replace=False)
        which = np.arange(len(stamp)) % len(labels)
        stamped = [swept.stamp(x[stamp[which == j]], label) for j, label in enumerate(labels)]
        x_patch = np.concatenate([x[keep], *stamped])
        y_patch = np.concatenate([y[keep], *[y[stamp[which == j]] for j in range(len(labels))]])
        patched = copy_model(model)
        fit_classifier(patched, x_patch, y_patch, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                       learning_rate=self.learning_rate, seed=seed, strategy=strategy)
        return patched


class GangSweep(InspectThenRepair):
    """The ``gangsweep`` defense: :class:`GangSweepInspector`, then :class:`Patching` if a label is flagged.

    Args:
        inspector: the detection (default: the paper's constants, see its docstring).
        patching: the repair (default :class:`Patching`).
        patch: False = report only, return the model unchanged.

    Example:
        >>> GangSweep().with_params(inspector__epochs=5, patching__epochs=1).inspector.epochs
        5
    """

    name: ClassVar[str] = "gangsweep"
    repair_switch: ClassVar[str] = "patch"

    def __init__(self, inspector: GangSweepInspector | None = None, patching: Patching | None = None, patch: bool = True) -> None:
        if inspector is not None and not isinstance(inspector, GangSweepInspector):
            raise ConfigError(f"inspector must be a GangSweepInspector, got {type(inspector).__name__}.")
        if patching is not None and not isinstance(patching, Patching):
            raise ConfigError(f"patching must be a Patching, got {type(patching).__name__}.")
        self.inspector = inspector if inspector is not None else GangSweepInspector()
        self.patching = patching if patching is not None else Patching()
        self.patch = bool(patch)

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        inner = GangSweepInspector.resolve_preset("auto", images)  # the inspection's own data-dependent settings
        return Preset(inner.name, {f"inspector__{k}": v for k, v in inner.params.items()}, inner.reason)

    def _inspection(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> tuple[InspectionResult, Any]:
        return self.inspector.inspect_swept(model, clean, ctx)

    def _repair(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], inspection: InspectionResult, state: Any,
                ctx: RunContext) -> tuple[keras.Model, str]:
        patched = self.patching.apply(model, clean, state, inspection.flagged, rng=ctx.rng, seed=ctx.seed, strategy=ctx.strategy)
        return patched, f"patched with the generated masks of label(s) {inspection.flagged}"
