"""The ``deepinspect`` defense: DeepInspect's data-free inspection, then patching with its generated triggers.

DeepInspect repairs a flagged model by fine-tuning it on triggered samples the conditional generator makes,
with their correct labels, together with the images they were made from (:class:`~kerasbd.defenses.repair.patching.Patching`):
the substitute set of the inspection (model inversion, no clean data), or the clean images with
``inspector__substitute=clean``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.defenses.base import InspectThenRepair, RunContext
from kerasbd.defenses.inspection.deepinspect import DeepInspectInspector
from kerasbd.defenses.repair.patching import Patching
from kerasbd.errors import ConfigError
from kerasbd.reporting import InspectionResult

__all__ = ["DeepInspect"]


class DeepInspect(InspectThenRepair):
    """The ``deepinspect`` defense: :class:`DeepInspectInspector`, then :class:`Patching` if a label is flagged.

    Args:
        inspector: the detection (default: see its docstring); data-free unless ``substitute="clean"``.
        patching: the repair (default :class:`Patching`), on the inspection's substitute images.
        patch: False = report only, return the model unchanged.

    Example:
        >>> DeepInspect().with_params(inspector__epochs=5, patching__epochs=1).patching.epochs
        1
    """

    name: ClassVar[str] = "deepinspect"
    repair_switch: ClassVar[str] = "patch"
    inspector_class = DeepInspectInspector
    requires_clean: ClassVar[bool] = False

    def __init__(self, inspector: DeepInspectInspector | None = None, patching: Patching | None = None, patch: bool = True) -> None:
        if inspector is not None and not isinstance(inspector, DeepInspectInspector):
            raise ConfigError(f"inspector must be a DeepInspectInspector, got {type(inspector).__name__}.")
        if patching is not None and not isinstance(patching, Patching):
            raise ConfigError(f"patching must be a Patching, got {type(patching).__name__}.")
        self.inspector = inspector if inspector is not None else DeepInspectInspector()
        self.patching = patching if patching is not None else Patching()
        self.patch = bool(patch)

    def _inspection(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> tuple[InspectionResult, Any]:
        return self.inspector.inspect_generated(model, clean, ctx)

    def _repair(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], inspection: InspectionResult, state: Any,
                ctx: RunContext) -> tuple[keras.Model, str]:
        triggers, substitute = state
        patched = self.patching.apply(model, substitute, triggers, inspection.flagged, rng=ctx.rng, seed=ctx.seed, strategy=ctx.strategy)
        where = "the model-inverted substitute images" if self.inspector.substitute == "inversion" else "the clean images"
        return patched, f"patched with generated triggers of label(s) {inspection.flagged} on {where}"
