"""NNoculation's deployed ensemble (§3.3): the BadNet and its GoodNet side by side, quarantining disagreements.

Both networks classify every input; where their labels agree that is the answer, where they differ the input is
flagged for quarantine and GoodNet's label is returned ("if the two disagree, we predict that the input is
backdoored and output θ_gd's prediction"). Pre-deployment patching lowers the GoodNet's ASR but keeps its clean
accuracy close to the BadNet's, so disagreements come mostly from triggered inputs.

:class:`Ensemble` serves the pair in batches (optionally writing the flagged inputs to a
:class:`~kerasbd.serving.QuarantineStore`), and :meth:`Ensemble.as_model` is the same rule as one Keras model
(``{"logits": GoodNet's logits, "quarantine": 0/1}``), saveable to ``.keras`` with the registered
:class:`Disagreement` layer. Every ensemble has a ``version``: by default a digest of both networks' weights, so
a quarantined entry names exactly the weights that flagged it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasbd.errors import ConfigError

__all__ = ["Disagreement", "Ensemble", "EnsemblePrediction", "ServingReport", "weights_version"]


def weights_version(*models: keras.Model) -> str:
    """A short digest of the models' weights (12 hex digits): the same weights give the same version.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="ones")])
        >>> weights_version(m) == weights_version(m), len(weights_version(m))
        (True, 12)
    """
    digest = hashlib.sha256()
    for model in models:
        for w in model.get_weights():
            a = np.ascontiguousarray(w)
            digest.update(str((a.shape, a.dtype.str)).encode())
            digest.update(a.tobytes())
    return digest.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class EnsemblePrediction:
    """One batch through the ensemble: the served ``labels`` (GoodNet's), the ``quarantined`` mask, both
    networks' labels, and the store ids of the quarantined inputs when a store was given."""

    labels: np.ndarray
    quarantined: np.ndarray
    badnet_labels: np.ndarray
    goodnet_labels: np.ndarray
    ids: list[int]

    @property
    def quarantine_rate(self) -> float:
        return float(self.quarantined.mean()) if len(self.quarantined) else 0.0


@dataclasses.dataclass
class ServingReport:
    """What serving a stream did: inputs served and quarantined, and, where the stream knows which inputs carry a
    trigger, quarantine precision (triggered among quarantined) and recall (quarantined among triggered), the
    false-quarantine rate on clean inputs, and the served label's accuracy on clean and on triggered inputs."""

    version: str
    served: int = 0
    quarantined: int = 0
    truth: dict[str, int] = dataclasses.field(default_factory=lambda: {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
    correct: dict[str, int] = dataclasses.field(default_factory=lambda: {"clean": 0, "clean_n": 0, "triggered": 0, "triggered_n": 0})
    seconds: float = 0.0

    def add(self, pred: EnsemblePrediction, labels: np.ndarray | None, triggered: np.ndarray | None) -> None:
        self.served += len(pred.labels)
        self.quarantined += int(pred.quarantined.sum())
        if triggered is not None:
            q = pred.quarantined
            for key, hit in (("tp", q & triggered), ("fp", q & ~triggered), ("fn", ~q & triggered), ("tn", ~q & ~triggered)):
                self.truth[key] += int(hit.sum())
            if labels is not None:
                for key, part in (("clean", ~triggered), ("triggered", triggered)):
                    self.correct[key] += int((pred.labels[part] == labels[part]).sum())
                    self.correct[f"{key}_n"] += int(part.sum())

    def to_dict(self) -> dict[str, Any]:
        t, c = self.truth, self.correct

        def ratio(a: float, b: float) -> float | None:
            return a / b if b else None

        known = sum(t.values()) > 0
        return {
            "version": self.version, "served": self.served, "quarantined": self.quarantined,
            "quarantine_rate": ratio(self.quarantined, self.served), "seconds": self.seconds,
            "inputs_per_second": ratio(self.served, self.seconds) if self.seconds else None,
            "precision": ratio(t["tp"], t["tp"] + t["fp"]) if known else None,
            "recall": ratio(t["tp"], t["tp"] + t["fn"]) if known else None,
            "false_quarantine_rate": ratio(t["fp"], t["fp"] + t["tn"]) if known else None,
            "served_clean_acc": ratio(c["clean"], c["clean_n"]), "served_triggered_acc": ratio(c["triggered"], c["triggered_n"]),
            "confusion": dict(t) if known else None,
        }


@keras.saving.register_keras_serializable(package="kerasbd")
class Disagreement(keras.layers.Layer):
    """``[badnet_logits, goodnet_logits]`` → 1.0 where their arg-max labels differ, else 0.0, shape (N, 1).

    Example:
        >>> import numpy as np
        >>> bad = np.array([[2.0, 0.0], [0.0, 1.0]], "float32"); good = np.array([[1.0, 0.0], [1.0, 0.0]], "float32")
        >>> np.asarray(Disagreement()([bad, good]))[:, 0].tolist()
        [0.0, 1.0]
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        bad, good = inputs
        return ops.expand_dims(ops.cast(ops.not_equal(ops.argmax(bad, axis=-1), ops.argmax(good, axis=-1)), self.compute_dtype), -1)

    def compute_output_shape(self, input_shape: Sequence[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        return (input_shape[0][0], 1)


class Ensemble:
    """The BadNet and the GoodNet served as one predictor that quarantines the inputs they disagree on.

    Args:
        badnet: the suspect model as deployed (a ``keras.Model``, a kerasbd ``Classifier``, softmax or logits).
        goodnet: its pre-deployment patched copy (e.g. :class:`~kerasbd.defenses.NNoculationPre`'s result).
        version: the name recorded with every quarantined input (default: :func:`weights_version` of both).
        batch_size: inference batch.

    Example:
        >>> import keras, numpy as np
        >>> bad = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> good = keras.models.clone_model(bad)
        >>> out = Ensemble(bad, good).predict(np.random.default_rng(0).random((5, 2, 2, 1), dtype=np.float32))
        >>> out.labels.shape, out.quarantined.dtype.name, bool((out.labels == out.goodnet_labels).all())
        ((5,), 'bool', True)
    """

    def __init__(self, badnet: Any, goodnet: Any, *, version: str | None = None, batch_size: int = 256) -> None:
        from kerasbd.models import as_logits_model

        self.badnet, self.goodnet = as_logits_model(badnet), as_logits_model(goodnet)
        if tuple(self.badnet.input_shape[1:]) != tuple(self.goodnet.input_shape[1:]):
            raise ConfigError(f"the BadNet takes {tuple(self.badnet.input_shape[1:])} inputs and the GoodNet "
                              f"{tuple(self.goodnet.input_shape[1:])}: an ensemble needs one input shape (is it the right GoodNet?).")
        if self.badnet.output_shape[-1] != self.goodnet.output_shape[-1]:
            raise ConfigError(f"the BadNet has {self.badnet.output_shape[-1]} classes and the GoodNet {self.goodnet.output_shape[-1]}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}.")
        self.version = version if version is not None else weights_version(self.badnet, self.goodnet)
        self.batch_size = int(batch_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.badnet.input_shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.goodnet.output_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {"version": self.version, "batch_size": self.batch_size}

    def predict(self, x: np.ndarray, *, store: Any = None, sources: Sequence[str] | None = None) -> EnsemblePrediction:
        """Classify ``x`` (canonical images, (N, H, W, C)); with ``store`` the quarantined inputs are added to it."""
        from kerasbd.validation import check_images

        x = check_images(x, name="inputs", image_shape=self.input_shape)
        if sources is not None and len(sources) != len(x):
            raise ConfigError(f"{len(sources)} sources for {len(x)} inputs.")
        bad = np.argmax(np.asarray(self.badnet.predict(x, batch_size=self.batch_size, verbose=0)), axis=1)
        good = np.argmax(np.asarray(self.goodnet.predict(x, batch_size=self.batch_size, verbose=0)), axis=1)
        flagged = bad != good
        ids: list[int] = []
        if store is not None and flagged.any():
            idx = np.flatnonzero(flagged)
            ids = store.add(x[idx], bad[idx], good[idx], model_version=self.version,
                            sources=None if sources is None else [sources[int(i)] for i in idx])
        return EnsemblePrediction(labels=good, quarantined=flagged, badnet_labels=bad, goodnet_labels=good, ids=ids)

    def serve(self, stream: Any, *, store: Any = None, verbose: int = 0) -> ServingReport:
        """Serve every batch of ``stream`` (a :mod:`kerasbd.serving.streams` stream), quarantining into ``store``."""
        from kerasbd.io import Progress

        report = ServingReport(self.version)
        start = time.perf_counter()
        with Progress(len(stream), f"serving {self.version}", verbose, unit="input") as progress:
            for batch in stream:
                pred = self.predict(batch.x, store=store, sources=batch.sources)
                report.add(pred, batch.labels, batch.triggered)
                progress.update(len(batch.x), quarantined=report.quarantined)
        report.seconds = time.perf_counter() - start
        return report

    def as_model(self, name: str = "nnoculation_ensemble") -> keras.Model:
        """One Keras model: canonical images → ``{"logits": GoodNet's logits, "quarantine": (N, 1) 0/1}``."""
        inputs = keras.Input(self.input_shape, name="image")
        # the same graphs under distinct names: a GoodNet made from the BadNet has the BadNet's model name
        bad_net, good_net = (keras.Model(m.inputs[0], m.outputs[0], name=role) for m, role in ((self.badnet, "badnet"), (self.goodnet, "goodnet")))
        bad, good = bad_net(inputs), good_net(inputs)
        return keras.Model(inputs, {"logits": good, "quarantine": Disagreement(name="quarantine")([bad, good])}, name=name)
