"""From the inspectors' statistics to one calibrated probability that a model is backdoored.

Each inspector gives a few model-level statistics (:func:`features_of`): how far its most suspicious label stands
out from the others. :class:`Calibration` is a logistic regression on those statistics (standardized), fitted on a
population of models whose ground truth is known (``recipes/scan_population.py``) and shipped with the package as
JSON (``kerasbd/scan/calibration.json``), with the population it came from. A calibration fits one set of
inspectors run with one budget: a scan with other inspectors or settings would feed it statistics of another
distribution, so :func:`shipped_calibration` returns None for it and the scan says it is uncalibrated.

Example:
    >>> cal = Calibration.fit([{"a": 0.0}, {"a": 0.2}, {"a": 3.0}, {"a": 4.0}], [0, 0, 1, 1], ["a"], population="demo")
    >>> cal.probability({"a": 0.1}) < 0.5 < cal.probability({"a": 3.5})
    True
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError

__all__ = ["FEATURES", "Calibration", "features_of", "shipped_calibration", "suspect_label"]

#: Each inspector's statistics, in the order the calibration uses them.
FEATURES: dict[str, tuple[str, ...]] = {
    "neural-cleanse": ("nc_index", "nc_log_ratio"),
    "gangsweep": ("gs_persistence", "gs_index"),
    "deepinspect": ("di_deviation", "di_log_ratio"),
}
# anomaly indices are unbounded (a zero MAD gives inf); beyond this they carry no more information
_CAP = 20.0


def _capped(value: float, low: float = -_CAP) -> float:
    return float(np.clip(np.nan_to_num(float(value), nan=0.0, posinf=_CAP, neginf=low), low, _CAP))


def _log_ratio(values: np.ndarray) -> float:
    """log(median / min) of positive sizes: how much smaller the smallest label's trigger is than the typical one."""
    v = np.maximum(np.asarray(values, np.float64), 1e-12)
    return _capped(math.log(float(np.median(v)) / float(v.min())), low=0.0)


def features_of(result: Any) -> dict[str, float]:
    """The model-level statistics of one :class:`~kerasbd.reporting.InspectionResult` (see :data:`FEATURES`)."""
    a = result.arrays
    if result.method == "neural-cleanse":
        return {"nc_index": _capped(result.score, 0.0), "nc_log_ratio": _log_ratio(a["l1_norms"])}
    if result.method == "gangsweep":
        return {"gs_persistence": float(np.max(a["persistence"])), "gs_index": _capped(result.score)}
    if result.method == "deepinspect":
        return {"di_deviation": _capped(result.score, 0.0), "di_log_ratio": _log_ratio(a["magnitude"])}
    raise ConfigError(f"no scan statistics are defined for inspector {result.method!r}; known: {', '.join(FEATURES)}.")


def suspect_label(result: Any) -> int:
    """The inspector's most suspicious label: its first flagged one, else the one its statistic ranks first."""
    if result.flagged:
        return int(result.flagged[0])
    a = result.arrays
    labels = [int(lab) for lab in a["labels"]]
    if result.method == "neural-cleanse":
        return labels[int(np.argmin(a["l1_norms"]))]
    if result.method == "gangsweep":  # persistence decides first (Algorithm 1), then the anomaly index
        return labels[int(np.lexsort((-a["anomaly_index"], -a["persistence"]))[0])]
    if result.method == "deepinspect":
        return labels[int(np.argmin(a["magnitude"]))]
    raise ConfigError(f"no scan statistics are defined for inspector {result.method!r}; known: {', '.join(FEATURES)}.")


@dataclasses.dataclass
class Calibration:
    """A logistic regression from scan statistics to P(backdoored), with where it was fitted.

    Attributes:
        features: the statistics it reads, in order (see :data:`FEATURES`).
        mean, scale: their standardization; ``coef``, ``intercept``: the regression on standardized statistics.
        population: where it was fitted (the recipe, its models, the split); ``budget``: the scan settings.
        n_models, n_backdoored: the calibration population's size.
        fitted: the date it was fitted.
    """

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    population: str = ""
    budget: str = ""
    n_models: int = 0
    n_backdoored: int = 0
    fitted: str = ""

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, float]], labels: Sequence[int], features: Sequence[str], *, population: str,
            budget: str = "", c: float = 1.0) -> Calibration:
        """Fit on statistics ``rows`` (one dict per model) and ground truth ``labels`` (1 = backdoored).

        ``c`` is the inverse L2 strength: a mild penalty keeps the fit finite when the population separates.
        """
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels, int)
        if len(rows) != len(y) or len(set(y.tolist())) != 2:
            raise ConfigError(f"a calibration needs statistics and a 0/1 label per model with both classes present; got {len(rows)} "
                              f"rows and labels {sorted(set(y.tolist()))}.")
        x = cls._matrix(rows, features)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        lr = LogisticRegression(C=c).fit((x - mean) / scale, y)
        return cls(list(features), mean.tolist(), scale.tolist(), lr.coef_[0].tolist(), float(lr.intercept_[0]), population, budget,
                   len(y), int(y.sum()), datetime.date.today().isoformat())

    @staticmethod
    def _matrix(rows: Sequence[Mapping[str, float]], features: Sequence[str]) -> np.ndarray:
        missing = sorted({f for row in rows for f in features if f not in row})
        if missing:
            raise ConfigError(f"the statistics lack {', '.join(missing)}: the calibration reads {', '.join(features)}.")
        return np.array([[float(row[f]) for f in features] for row in rows], np.float64).reshape(len(rows), len(features))

    def probabilities(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """P(backdoored) of each row of statistics."""
        z = (self._matrix(rows, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = z @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-logit))

    def probability(self, features: Mapping[str, float]) -> float:
        return float(self.probabilities([features])[0])

    def describe(self) -> str:
        return (f"logistic regression on {', '.join(self.features)}, fitted {self.fitted or '?'} on {self.n_models} models "
                f"({self.n_backdoored} backdoored) of {self.population or 'an unnamed population'}; scan budget {self.budget or '?'}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - names):
            raise ConfigError(f"unknown calibration keys {unknown}; expected {sorted(names)}.")
        return cls(**{k: d[k] for k in names if k in d})


def shipped_calibration(features: Sequence[str], budget: str) -> Calibration | None:
    """The shipped calibration for exactly these statistics and this scan budget, or None."""
    text = resources.files("kerasbd.scan").joinpath("calibration.json").read_text(encoding="utf-8")
    for entry in json.loads(text)["calibrations"]:
        if entry["features"] == list(features) and entry["budget"] == budget:
            return Calibration.from_dict(entry)
    return None
