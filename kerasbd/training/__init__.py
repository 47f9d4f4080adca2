"""Training loops and the tf.distribute strategy helper shared by every method."""

from kerasbd.training.fit import TransformedBatches, fit_classifier, make_optimizer
from kerasbd.training.model_inversion import InvertedImages, ModelInversion
from kerasbd.training.strategy import get_strategy, strategy_name

__all__ = ["InvertedImages", "ModelInversion", "TransformedBatches", "fit_classifier", "get_strategy", "make_optimizer", "strategy_name"]
