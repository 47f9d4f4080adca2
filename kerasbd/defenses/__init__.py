"""Defenses by role, one module per method.

- ``inspection/``: model inspectors answer "is this model backdoored, and towards which label?" without a
  trigger (:class:`~kerasbd.defenses.base.ModelInspector`); registry ``INSPECTORS``.
- ``repair/``: defenses that return a repaired model (:class:`~kerasbd.defenses.base.Defense`); registry
  ``DEFENSES``, together with the purification wrappers.
- ``purification/``: defenses that wrap the model with an inference-time input transform.
- ``detection/``: input detectors that flag triggered inputs at inference
  (:class:`~kerasbd.defenses.base.InputDetector`); registry ``DETECTORS``.

The registries are plain dicts keyed by each class's ``name``; the CLI takes its method names from them.

Example:
    >>> from kerasbd.defenses import DEFENSES, INSPECTORS
    >>> DEFENSES["gym"]().rounds, sorted(INSPECTORS)
    (5, ['deepinspect', 'gangsweep', 'neural-cleanse'])
"""

from kerasbd.defenses.base import Defense, InputDetector, ModelInspector
from kerasbd.defenses.detection.feature_squeezing import FeatureSqueezing
from kerasbd.defenses.detection.strip import STRIP
from kerasbd.defenses.inspection.deepinspect import DeepInspectInspector
from kerasbd.defenses.inspection.gangsweep import GangSweepInspector
from kerasbd.defenses.inspection.neural_cleanse import NeuralCleanseInspector
from kerasbd.defenses.purification.wrappers import FlipDefense, GYMInference, ShrinkPadDefense
from kerasbd.defenses.repair.deepinspect import DeepInspect
from kerasbd.defenses.repair.dhbe import DHBE
from kerasbd.defenses.repair.fine_pruning import FinePruning
from kerasbd.defenses.repair.gangsweep import GangSweep
from kerasbd.defenses.repair.gym import GYM
from kerasbd.defenses.repair.nnoculation import NNoculationPre
from kerasbd.defenses.repair.nnoculation_post import NNoculationTreatment, TreatmentResult
from kerasbd.defenses.repair.patching import Patching
from kerasbd.defenses.repair.unlearning import NeuralCleanse, Unlearning

DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (GYM, NNoculationPre, FinePruning, NeuralCleanse, GangSweep, DeepInspect, DHBE, ShrinkPadDefense, FlipDefense,
                              GYMInference)
}
DETECTORS: dict[str, type[InputDetector]] = {cls.name: cls for cls in (STRIP, FeatureSqueezing)}
INSPECTORS: dict[str, type[ModelInspector]] = {cls.name: cls for cls in (NeuralCleanseInspector, GangSweepInspector, DeepInspectInspector)}

__all__ = ["DEFENSES", "DETECTORS", "INSPECTORS", "Defense", "InputDetector", "ModelInspector", "GYM", "NNoculationPre",
           "NNoculationTreatment", "TreatmentResult",
           "FinePruning", "NeuralCleanse", "NeuralCleanseInspector",
           "GangSweep", "GangSweepInspector", "DeepInspect", "DeepInspectInspector", "DHBE", "Patching", "Unlearning", "STRIP", "FeatureSqueezing",
           "ShrinkPadDefense", "FlipDefense", "GYMInference"]
