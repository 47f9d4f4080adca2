"""``kerasbd scan``: the model inspectors that fit the data, combined into one calibrated verdict per model.

:class:`Scanner` runs Neural Cleanse, GangSweep and DeepInspect when the defender has clean images, DeepInspect
alone when not; each inspector's model-level statistics (:func:`~kerasbd.scan.features_of`) go through the
shipped :class:`~kerasbd.scan.Calibration` fitted for exactly those inspectors and that budget, giving
P(backdoored). The result names the suspected target label(s) with their reversed triggers, each inspector's own
verdict and statistic, the run time, and a suggested repair.

Budgets: ``"fast"`` (the default; what the shipped calibration was fitted with) caps each inspector's optimisation
and gives the inspectors a fixed random subset of at most 300 clean images (:data:`CLEAN_LIMIT`), so that a small
classifier scans in well under a minute per inspector on a CPU core; ``"full"`` runs each inspector with its CLI
default (the ``auto`` preset, the papers' constants) on every clean image given. A full-budget scan is reported uncalibrated
unless a calibration for it is given.

Example:
    >>> Scanner().get_config()["budget"]
    'fast'
    >>> Scanner().inspectors_for(clean=False)
    ['deepinspect']
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.config import Configurable
from kerasbd.errors import ConfigError
from kerasbd.scan.calibration import FEATURES, Calibration, features_of, shipped_calibration, suspect_label

__all__ = ["BUDGETS", "CLEAN_LIMIT", "ScanResult", "Scanner"]

#: Settings each budget puts on top of the inspector's ``auto`` preset (``--set`` names).
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "fast": {
        "neural-cleanse": {"inversion__steps": 60, "inversion__mini_batches": 10},
        # the paper's Eq. 4 and raw logits, with which the shipped calibration was fitted (the auto preset has moved on);
        # no search for further triggers, which only the patching uses
        "gangsweep": {"epochs": 5, "sample_size": 10, "alpha_rule": "multiplicative", "alpha_every": "step", "success_target": 0.9, "logits": "raw",
                      "variance": "per-logit", "further_triggers": 0},
        "deepinspect": {"epochs": 5, "inversion__per_class": 30, "inversion__steps": 100, "eval_noise": 5},
    },
    "full": {"neural-cleanse": {}, "gangsweep": {}, "deepinspect": {}},
}
#: Clean images the inspectors see per budget (a seeded random subset; None: all). The fast budget's 300 keep about 30 per
#: class of a 10-label set while making GangSweep's cost, which grows with the images, independent of the user's set.
CLEAN_LIMIT: dict[str, int | None] = {"fast": 300, "full": None}
#: A model is called backdoored when P(backdoored) exceeds this.
THRESHOLD = 0.5


class Scanner(Configurable):
    """Run the inspectors that fit the data and combine them into one verdict.

    Args:
        inspectors: which inspectors to run (default: Neural Cleanse, GangSweep and DeepInspect with clean data,
            DeepInspect alone without).
        budget: ``"fast"`` or ``"full"`` (see the module).
        params: per-inspector settings on top of the budget, e.g. ``{"gangsweep": {"epochs": 3}}`` (the scan is
            then reported uncalibrated unless ``calibration`` is given).
        calibration: a calibration file (JSON of :meth:`Calibration.to_dict`); default: the shipped one for the
            inspectors and budget run.

    ``Scanner().scan(model, (x_val, y_val))`` returns a :class:`ScanResult`.
    """

    def __init__(self, inspectors: Sequence[str] | None = None, budget: str = "fast", params: Mapping[str, Mapping[str, Any]] | None = None,
                 calibration: str | None = None) -> None:
        if budget not in BUDGETS:
            raise ConfigError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}.")
        if inspectors is not None:
            unknown = sorted(set(inspectors) - set(FEATURES))
            if unknown or not inspectors:
                raise ConfigError(f"inspectors must be among {', '.join(FEATURES)}; got {list(inspectors)}.")
        if params is not None and (unknown := sorted(set(params) - set(FEATURES))):
            raise ConfigError(f"params name unknown inspectors {unknown}; known: {', '.join(FEATURES)}.")
        self.inspectors = None if inspectors is None else [str(name) for name in inspectors]
        self.budget = budget
        self.params = {k: dict(v) for k, v in (params or {}).items()}
        self.calibration = calibration

    def inspectors_for(self, clean: bool) -> list[str]:
        """The inspectors run: those asked for, else those that fit the data (in :data:`FEATURES` order)."""
        from kerasbd.defenses import INSPECTORS

        names = self.inspectors if self.inspectors is not None else list(FEATURES)
        usable = [n for n in FEATURES if n in names and (clean or not INSPECTORS[n].requires_clean)]
        if not usable:
            raise ConfigError(f"none of the inspectors {names} runs without clean data: give clean images (--clean).")
        return usable

    def build(self, name: str, images: np.ndarray) -> Any:
        """Inspector ``name`` for these clean images: its ``auto`` preset, the budget, then ``params``."""
        from kerasbd.defenses import INSPECTORS

        return INSPECTORS[name].preset("auto", images, **{**BUDGETS[self.budget][name], **self.params.get(name, {})})

    def calibration_for(self, names: Sequence[str]) -> Calibration | None:
        features = [f for n in names for f in FEATURES[n]]
        if self.calibration is not None:
            import json

            cal = Calibration.from_dict(json.loads(Path(self.calibration).read_text(encoding="utf-8")))
            if cal.features != features:
                raise ConfigError(f"calibration {self.calibration} reads {cal.features}, but the scan gives {features}.")
            return cal
        # other settings change the statistics' distribution: the shipped calibration would not hold
        return None if any(self.params.values()) else shipped_calibration(features, self.budget)

    def scan(self, model: Any, clean: tuple[np.ndarray, np.ndarray | None] | np.ndarray | None = None, *, seed: int = 0, verbose: int = 1,
             checkpoint_dir: str | os.PathLike | None = None, backdoors: Sequence[Any] | None = None, name: str = "model") -> ScanResult:
        """Inspect ``model`` with every inspector that fits the data and return the combined verdict.

        Args:
            model: a :class:`kerasbd.models.Classifier` or a logits Keras model.
            clean: the defender's clean data ``(x, y)`` or images; None: data-free inspectors only.
            seed, verbose: as for every method; ``checkpoint_dir``: each inspector resumes from its own subfolder.
            backdoors: the true trigger(s), for reporting how close the reversed ones came (never for the verdict).
            name: the model's name in the report.
        """
        from kerasbd.models import as_logits_model

        has_clean = clean is not None and len(clean[0] if isinstance(clean, tuple) else clean) > 0
        if has_clean:
            clean = _limited(clean, CLEAN_LIMIT[self.budget], seed)
        names = self.inspectors_for(has_clean)
        calibration = self.calibration_for(names)
        shape = as_logits_model(model).input_shape[1:]
        images = (clean[0] if isinstance(clean, tuple) else clean) if has_clean else np.zeros((0, *shape), np.float32)
        start = time.perf_counter()
        inspections = {}
        for n in names:
            inspector = self.build(n, np.asarray(images))
            folder = None if checkpoint_dir is None else Path(checkpoint_dir) / n
            inspections[n] = inspector.inspect(model, clean if has_clean else None, seed=seed, verbose=verbose, checkpoint_dir=folder,
                                               backdoors=backdoors)
        return ScanResult.combine(name, inspections, calibration, seed=seed, seconds=time.perf_counter() - start, budget=self.budget)


@dataclasses.dataclass
class ScanResult:
    """One model's scan.

    Attributes:
        name: the model's name; ``inspections``: each inspector's :class:`~kerasbd.reporting.InspectionResult`.
        features: the statistics the calibration read; ``probability``: P(backdoored), None when uncalibrated.
        backdoored: ``probability > 0.5``; uncalibrated: any inspector's own rule flags a label.
        targets: the suspected target label(s), most supported first (empty when not backdoored).
        calibration: what the probability came from (:meth:`Calibration.describe`), or why there is none.
        repair: the suggested repair (a ``kerasbd defend`` method), or None.
    """

    name: str
    inspections: dict[str, Any]
    features: dict[str, float]
    probability: float | None
    backdoored: bool
    targets: list[int]
    calibration: str
    repair: str | None
    seed: int = 0
    seconds: float = 0.0
    budget: str = "fast"

    @classmethod
    def combine(cls, name: str, inspections: dict[str, Any], calibration: Calibration | None, *, seed: int = 0, seconds: float = 0.0,
                budget: str = "fast") -> ScanResult:
        """The verdict of these inspections: the calibrated probability and the targets the inspectors agree on."""
        features = {k: v for r in inspections.values() for k, v in features_of(r).items()}
        probability = calibration.probability(features) if calibration is not None else None
        flagged_by_any = any(r.flagged for r in inspections.values())
        backdoored = probability > THRESHOLD if probability is not None else flagged_by_any
        targets = _targets(inspections) if backdoored else []
        # each inspector has an inspect-then-repair defense of its own name: the first that flagged the target repairs it
        repair = next((n for n, r in inspections.items() if targets and targets[0] in r.flagged), None)
        if backdoored and repair is None:  # no inspector flagged the label: a repair that needs no reversed trigger
            repair = "nnoculation-pre"
        how = calibration.describe() if calibration is not None else (
            "uncalibrated (no shipped calibration for these inspectors and settings): backdoored when any inspector's own rule flags a label")
        return cls(name, inspections, features, probability, bool(backdoored), targets, how, repair, seed, seconds, budget)

    def verdict(self) -> str:
        """One line: the probability, the suspected target(s) and the repair."""
        p = f"P(backdoored) {self.probability:.2f}" if self.probability is not None else "uncalibrated"
        if not self.backdoored:
            return f"scan {self.name}: no backdoor found ({p}; {self._flags()})"
        return (f"scan {self.name}: backdoored ({p}) — suspected target label(s) {', '.join(map(str, self.targets))}; {self._flags()}; "
                f"suggested repair: kerasbd defend {self.repair}")

    def _flags(self) -> str:
        return ", ".join(f"{n} {'flags ' + ','.join(map(str, r.flagged)) if r.flagged else 'flags none'} (score {r.score:.3g})"
                         for n, r in self.inspections.items())

    def inspector_rows(self) -> list[dict[str, Any]]:
        return [{"inspector": n, "flagged": ",".join(map(str, r.flagged)) or "—", "suspect": suspect_label(r), "score": r.score,
                 "threshold": r.threshold, "own verdict": "backdoored" if r.backdoored else "clean", "seconds": r.seconds,
                 **{f: self.features[f] for f in FEATURES[n]}} for n, r in self.inspections.items()]

    def to_dict(self) -> dict[str, Any]:
        from kerasbd.attacks.spec import to_spec
        from kerasbd.io import to_jsonable

        triggers = {n: to_spec([r.triggers[t] for t in self.targets if t in r.triggers]) for n, r in self.inspections.items()} if self.targets else {}
        return to_jsonable({
            "name": self.name, "verdict": self.verdict(), "backdoored": self.backdoored, "probability": self.probability,
            "threshold": THRESHOLD, "targets": self.targets, "calibration": self.calibration, "features": self.features, "repair": self.repair,
            "budget": self.budget, "seed": self.seed, "seconds": round(float(self.seconds), 3), "inspectors": self.inspector_rows(),
            "reversed_triggers": triggers,
        })

    def to_markdown(self) -> str:
        from kerasbd.reporting.results import markdown_table

        parts = [f"## Scan of {self.name} (seed {self.seed}, budget {self.budget}, {self.seconds:.1f} s)", "", f"**Verdict:** {self.verdict()}", "",
                 f"Calibration: {self.calibration}.", "", markdown_table(self.inspector_rows()), ""]
        return "\n".join(parts + [r.to_markdown() for r in self.inspections.values()])

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``scan.json``, ``scan.md``, ``scan.html`` (self-contained, pictures inline) and each inspection's
        own folder (``<inspector>/``) as one folder, atomically."""
        from kerasbd.io import write_json, write_text
        from kerasbd.reporting.results import save_folder
        from kerasbd.scan.html import scan_html

        def write(out: Path) -> None:
            for n, r in self.inspections.items():
                r.save(out / n)
            write_json(out / "scan.json", self.to_dict())
            write_text(out / "scan.md", self.to_markdown())
            write_text(out / "scan.html", scan_html(self))

        return save_folder(directory, write)


def _limited(clean: Any, size: int | None, seed: int) -> Any:
    """A seeded random subset of at most ``size`` of the clean data, in the form given (images, or images and labels)."""
    from kerasbd.data.splits import subsample

    x, y = clean if isinstance(clean, tuple) else (clean, None)
    idx = subsample((np.asarray(x), np.arange(len(x))), size, seed)[1]
    if len(idx) == len(x):
        return clean
    return (x[idx], None if y is None else np.asarray(y)[idx]) if isinstance(clean, tuple) else x[idx]


def _targets(inspections: dict[str, Any]) -> list[int]:
    """Labels flagged by the most inspectors first (ties: the inspectors' order); none flagged: the most common suspect."""
    votes: dict[int, int] = {}
    for r in inspections.values():
        for t in r.flagged:
            votes[int(t)] = votes.get(int(t), 0) + 1
    if not votes:
        for r in inspections.values():
            t = suspect_label(r)
            votes[t] = votes.get(t, 0) + 1
        return [max(votes, key=lambda t: votes[t])]
    return sorted(votes, key=lambda t: -votes[t])
