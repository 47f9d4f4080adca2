"""Safe model loading, the zoo's architectures, and the :class:`Classifier` every kerasbd function accepts.

Example:
    >>> from kerasbd.models import load_model, as_logits_model           # doctest: +SKIP
    >>> clf = load_model("model.h5")                                      # refuses Lambda/custom code  # doctest: +SKIP
    >>> logits = clf.predict_logits(images)                               # canonical [0, 1] NHWC RGB  # doctest: +SKIP
"""

from kerasbd.models.architectures import ARCHITECTURES, build_architecture
from kerasbd.models.classifier import Classifier, PreActivation, as_logits_model, wrap
from kerasbd.models.loading import load_model
from kerasbd.models.spec import InputAdapter, InputSpec
from kerasbd.models.weights import load_weights

__all__ = [
    "ARCHITECTURES",
    "Classifier",
    "InputAdapter",
    "InputSpec",
    "PreActivation",
    "as_logits_model",
    "build_architecture",
    "load_model",
    "load_weights",
    "wrap",
]
