"""Serving a model in the field: the BadNet/GoodNet ensemble that quarantines disagreements (:class:`Ensemble`),
the durable store of quarantined inputs (:class:`QuarantineStore`), the input streams a deployment reads
(:mod:`kerasbd.serving.streams`) — NNoculation's deployment stage — and the deployment folder that keeps every
version of the served pair (:class:`Deployment`).

The names are imported on first use: a serving process that only writes to the store (``kerasbd.serving.quarantine``)
starts without TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Deployment": "kerasbd.serving.deployment",
    "Disagreement": "kerasbd.serving.ensemble", "Ensemble": "kerasbd.serving.ensemble",
    "EnsemblePrediction": "kerasbd.serving.ensemble", "ServingReport": "kerasbd.serving.ensemble",
    "weights_version": "kerasbd.serving.ensemble",
    "QuarantineStore": "kerasbd.serving.quarantine", "QuarantinedSet": "kerasbd.serving.quarantine",
    "QuarantineError": "kerasbd.serving.quarantine", "QuarantineFullError": "kerasbd.serving.quarantine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kerasbd.serving' has no attribute {name!r}")
