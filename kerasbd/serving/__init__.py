"""Serving a model in the field: the BadNet/GoodNet ensemble that quarantines disagreements (:class:`Ensemble`),
the durable store of quarantined inputs (:class:`QuarantineStore`), the input streams a deployment reads
(:mod:`kerasbd.serving.streams`) — NNoculation's deployment stage — and the deployment folder that keeps every
version of the served pair (:class:`Deployment`)."""

from kerasbd.serving.deployment import Deployment
from kerasbd.serving.ensemble import Disagreement, Ensemble, EnsemblePrediction, ServingReport, weights_version
from kerasbd.serving.quarantine import QuarantinedSet, QuarantineFullError, QuarantineStore

__all__ = ["Deployment", "Disagreement", "Ensemble", "EnsemblePrediction", "QuarantineFullError", "QuarantineStore", "QuarantinedSet",
           "ServingReport", "weights_version"]
