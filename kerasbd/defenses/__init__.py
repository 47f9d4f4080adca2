"""Defenses: one module per method. ``DEFENSES`` maps CLI names to model-repair defenses, ``DETECTORS`` to
input detectors; both are plain dicts so each method registers itself with one line here.

Example:
    >>> from kerasbd.defenses import DEFENSES
    >>> DEFENSES["gym"]().rounds
    5
"""

from kerasbd.defenses.base import Defense, InputDetector, threshold_at_fpr
from kerasbd.defenses.fine_pruning import FinePruning
from kerasbd.defenses.gym import GYM
from kerasbd.defenses.neural_cleanse import NeuralCleanse
from kerasbd.defenses.nnoculation import NNoculationPre
from kerasbd.defenses.feature_squeezing import FeatureSqueezing
from kerasbd.defenses.purification import FlipDefense, GYMInference, ShrinkPadDefense
from kerasbd.defenses.strip import STRIP

DEFENSES = {
    GYM.name: GYM,
    NNoculationPre.name: NNoculationPre,
    FinePruning.name: FinePruning,
    NeuralCleanse.name: NeuralCleanse,
    ShrinkPadDefense.name: ShrinkPadDefense,
    FlipDefense.name: FlipDefense,
    GYMInference.name: GYMInference,
}

DETECTORS: dict[str, type[InputDetector]] = {
    STRIP.name: STRIP,
    FeatureSqueezing.name: FeatureSqueezing,
}

__all__ = ["DEFENSES", "DETECTORS", "Defense", "InputDetector", "threshold_at_fpr", "GYM", "NNoculationPre", "FinePruning", "NeuralCleanse",
           "STRIP", "FeatureSqueezing", "ShrinkPadDefense", "FlipDefense", "GYMInference"]
