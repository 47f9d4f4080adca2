"""The three interfaces every method implements, and what a run hands to a method.

- :class:`ModelInspector` answers "is this model backdoored, and towards which label?" without a trigger:
  ``inspect(model, clean)`` returns an :class:`~kerasbd.reporting.InspectionResult`.
- :class:`Defense` repairs or wraps a suspicious model: ``run(model, clean)`` returns a
  :class:`~kerasbd.reporting.DefenseResult` with the new model.
- :class:`InputDetector` flags triggered inputs at inference (``fit`` on clean data sets a threshold at a chosen
  false-positive rate; ``score`` is higher for more suspicious inputs; ``detect`` compares with the threshold).

All three are :class:`~kerasbd.config.Configurable` (scikit-learn style: the constructor takes only
configuration, nested components configured by components). A method's ``_run`` / ``_inspect`` receives the
logits model, the defender's validated clean data and a :class:`RunContext`: the seed, a seeded generator, the
``tf.distribute`` strategy, the resume store and a :class:`Reporter`. The labelled evaluation data and the true
triggers never reach the method: it hands the reporter the models or curve points it wants measured, and the
framework measures them after the method has returned.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np

from kerasbd.config import Configurable
from kerasbd.errors import ConfigError
from kerasbd.metrics.detection import threshold_at_fpr
from kerasbd.reporting import DefenseResult, InspectionResult
from kerasbd.resume import ResumeStore, fingerprint, open_store

__all__ = ["Defense", "InputDetector", "InspectThenRepair", "Method", "ModelInspector", "Preset", "Reporter",
           "RunContext", "ScaleWarning", "candidate_labels"]

Dataset = tuple[np.ndarray, np.ndarray]


#: Input pixels (batch × labels × H × W × C) of one training step that an ``"auto"`` preset allows when it chooses
#: how many label hypotheses train together (GangSweep, DeepInspect): all 10 MNIST labels at once, GTSRB's 43 in two.
MAX_STACKED_PIXELS = 2**22


class ScaleWarning(UserWarning):
    """A setting meant for another scale of data (face-size filters on 28×28 digits, a batch larger than the
    clean set): the run goes on, the warning is printed and kept in the result."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """Named settings of a method: ``params`` (``a__b`` names, as for ``with_params``) and why they were chosen."""

    name: str
    params: dict[str, Any]
    reason: str

    def describe(self) -> str:
        """One line for the run's output: the preset, what it sets and why."""
        changes = ", ".join(f"{k}={v}" for k, v in self.params.items()) or "the original constants"
        return f"preset {self.name}: {changes} — {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "reason": self.reason}


class Method(Configurable):
    """What inspectors, defenses and detectors share: a name, presets, and checks of the settings' scale.

    The constructor's defaults are the original paper's constants (the ``"original"`` preset). :data:`PRESETS`
    holds further named settings; ``"auto"`` asks :meth:`_auto_preset` to choose by the defender's data (its image
    size, its number of images), which is what the CLI does unless ``--preset`` says otherwise. Whatever the
    settings, a run calls :meth:`scale_warnings` on the clean data and issues each as a :class:`ScaleWarning`.
    """

    name: ClassVar[str] = "method"
    #: The preset an instance was made with (set by :meth:`preset`; absent on instances built directly).
    preset_: Preset
    #: Named settings besides the class defaults; "original" = the defaults themselves.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"original": {}}
    #: False for data-free methods (DeepInspect, DHBE): ``clean=None`` is then accepted, and an empty set is passed on.
    requires_clean: ClassVar[bool] = True

    @classmethod
    def preset_names(cls) -> list[str]:
        """``"auto"`` and the named presets."""
        return ["auto", *cls.PRESETS]

    @classmethod
    def resolve_preset(cls, name: str = "auto", images: np.ndarray | None = None) -> Preset:
        """The :class:`Preset` called ``name``; ``"auto"`` needs the defender's clean ``images``."""
        if name == "auto":
            if images is None:
                raise ConfigError(f"the 'auto' preset of {cls.name} chooses by the data: pass the clean images.")
            return cls._auto_preset(np.asarray(images))
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown {cls.name} preset {name!r}; choose one of {', '.join(cls.preset_names())}.")
        return Preset(name, dict(cls.PRESETS[name]), "chosen by name")

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        """The settings for this data; by default the original constants (no rule depends on the data)."""
        return Preset("original", {}, f"{cls.name} has no setting that depends on the data")

    @classmethod
    def preset(cls, name: str = "auto", images: np.ndarray | None = None, **overrides: Any) -> Self:
        """An instance with the preset's settings and ``overrides`` (``a__b`` names) on top; ``preset_`` records it.

        Example:
            >>> from kerasbd.defenses import GYM
            >>> GYM.preset("small-images", rounds=2).intensive.median_ksize
            3
            >>> import numpy as np
            >>> GYM.preset("auto", np.zeros((10, 28, 28, 1), np.float32)).preset_.name
            'small-images'
        """
        chosen = cls.resolve_preset(name, images)
        method = cls().with_params(**{**chosen.params, **overrides})
        method.preset_ = chosen
        return method

    def scale_warnings(self, images: np.ndarray) -> list[str]:
        """Settings of this instance that are meant for another scale of data than ``images`` (default: none)."""
        return []

    def _settings(self, images: np.ndarray) -> dict[str, Any]:
        """The preset and the scale warnings of a run (warnings issued as :class:`ScaleWarning`)."""
        notes = self.scale_warnings(images)
        for note in notes:
            warnings.warn(note, ScaleWarning, stacklevel=3)
        preset = getattr(self, "preset_", None)
        return {"preset": preset.to_dict() if preset is not None else None, "warnings": notes}


def candidate_labels(labels: Sequence[int] | None, num_classes: int) -> list[int]:
    """An inspector's hypothetical target labels (None: every class), checked: at least 3 distinct classes of the
    model, since the outlier test is over them.

    Example:
        >>> candidate_labels(None, 4), candidate_labels([0, 2, 3], 4)
        ([0, 1, 2, 3], [0, 2, 3])
    """
    chosen = list(range(num_classes)) if labels is None else [int(lab) for lab in labels]
    if any(not 0 <= lab < num_classes for lab in chosen) or len(set(chosen)) < 3:
        raise ConfigError(f"labels must be ≥ 3 distinct classes in 0..{num_classes - 1} for a MAD test; got {chosen}.")
    return chosen


class Reporter:
    """Collects what a method asks to have measured; the framework measures it on data the method never sees.

    - :meth:`stage` names a model whose clean accuracy, ASR, robust accuracy and TCP become one row of the
      method's comparison table (GYM's Table-2 columns, the fine-pruning rows);
    - :meth:`point` adds a point to a named series (a pruning curve, a grid) with the method's own values;
      the framework adds the chosen backdoor metrics of the point's model, measured on a fixed random subset.

    Both return nothing. :attr:`active` tells whether anything will be measured, so a method can skip building
    models that exist only for the report.
    """

    def __init__(self, eval_data: Dataset | None = None, backdoors: Sequence[Any] = (), seed: int = 0) -> None:
        self._eval, self._backdoors, self._seed = eval_data, list(backdoors), seed
        self._subsets: dict[int | None, Dataset] = {}
        self._measured: dict[tuple[int, int | None], tuple[Any, dict[str, Any]]] = {}  # the model kept: its id stays unique
        self.rows: list[dict[str, Any]] = []
        self.series: dict[str, list[dict[str, Any]]] = {}

    @property
    def active(self) -> bool:
        """True when evaluation data are given (stage rows are measured)."""
        return self._eval is not None

    @property
    def backdoors(self) -> list[Any]:
        """The known triggers given for evaluation (empty when none): for reporting, never for the method's decisions."""
        return list(self._backdoors)

    def measure(self, model: Any, size: int | None = None) -> dict[str, Any]:
        """Backdoor metrics of ``model`` on ``size`` evaluation images (None = all). Measured once per model and
        size: a model behind stochastic preprocessing (GYM) then shows one figure in its stage row and summary."""
        from kerasbd.data.splits import subsample
        from kerasbd.metrics import evaluate_backdoor

        assert self._eval is not None
        key = (id(model), size)
        if key not in self._measured:
            if size not in self._subsets:
                self._subsets[size] = subsample(self._eval, size, self._seed)
            self._measured[key] = (model, evaluate_backdoor(model, *self._subsets[size], backdoors=self._backdoors))
        return self._measured[key][1]

    def stage(self, name: str, model: Any) -> None:
        """Measure ``model`` on the whole evaluation set as the table row ``name`` (no-op without evaluation data)."""
        if self._eval is not None:
            m = self.measure(model)
            self.rows.append({"stage": name, **{k: m.get(k) for k in ("clean_acc", "asr", "robust_acc", "tcp")}})

    def point(self, series: str, model: Any, *, subset: int | None = None, metrics: Sequence[str] = ("asr",), **values: Any) -> None:
        """Append ``values`` to ``series``; with evaluation data and a trigger, also ``metrics`` of ``model``
        measured on ``subset`` evaluation images (a fixed random subset of the run's seed; None = all)."""
        point = dict(values)
        if self._eval is not None and self._backdoors:
            m = self.measure(model, subset)
            point.update({k: m.get(k) for k in metrics})
        self.series.setdefault(series, []).append(point)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What one run of a method receives besides the model and the clean data."""

    seed: int
    rng: np.random.Generator
    strategy: Any = None
    verbose: int = 1
    store: ResumeStore | None = None
    report: Reporter = dataclasses.field(default_factory=Reporter)


def _prepare(model: Any, clean: Any, method: Method, name: str = "clean") -> tuple[Any, Dataset]:
    """The logits model and the validated clean data (labels optional: None → the model's own predictions; no data
    at all, for a data-free method: an empty set of the model's image shape)."""
    from kerasbd.models import as_logits_model
    from kerasbd.validation import check_dataset, check_images

    net = as_logits_model(model)
    shape, classes = net.input_shape[1:], int(net.output_shape[-1])
    if clean is None:
        if method.requires_clean:
            raise ConfigError(f"{method.name} needs the defender's clean data: pass clean=(x, y).")
        return net, (np.zeros((0, *shape), np.float32), np.zeros(0, np.int64))
    if isinstance(clean, tuple) and len(clean) == 2 and clean[1] is not None:
        return net, check_dataset(*clean, num_classes=classes, image_shape=shape, name=name)
    x = check_images(clean[0] if isinstance(clean, tuple) else clean, name=f"{name} images", image_shape=shape)
    return net, (x, np.argmax(net.predict(x, batch_size=256, verbose=0), axis=1).astype(np.int64))


def _context(method: Configurable, net: Any, clean: Dataset, *, seed: int, strategy: Any, verbose: int,
             checkpoint_dir: str | os.PathLike | None, restart: bool, report: Reporter) -> RunContext:
    settings = {
        "method": type(method).__name__,
        "config": method.get_config(),
        "seed": int(seed),
        "model": fingerprint(*[np.asarray(w) for w in net.get_weights()]),
        "data": fingerprint(*clean),
    }
    store = open_store(checkpoint_dir, settings, restart=restart)
    return RunContext(seed, np.random.default_rng(seed), strategy, verbose, store, report)


class Defense(Method, abc.ABC):
    """Base class of model-repair and model-wrapping defenses.

    Subclasses set ``name`` and implement :meth:`_run`, which receives the logits model, validated clean data
    and a :class:`RunContext` and returns a :class:`DefenseResult`. :meth:`run` handles validation, timing,
    checkpoints, the reporter's measurements, before/after metrics and the figures.
    """

    name: ClassVar[str] = "defense"

    def run(
        self,
        model: Any,
        clean: tuple[np.ndarray, np.ndarray] | None,
        *,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None,
        backdoors: Sequence[Any] | None = None,
        seed: int = 0,
        strategy: Any = None,
        checkpoint_dir: str | os.PathLike | None = None,
        restart: bool = False,
        verbose: int = 1,
    ) -> DefenseResult:
        """Run the defense.

        Args:
            model: a :class:`kerasbd.models.Classifier` or a Keras model mapping canonical images to logits.
                It is not modified; the result holds a new model.
            clean: the defender's small clean set ``(x, y)``; None for a data-free defense (``requires_clean`` False).
            eval_data: held-out ``(x, y)`` on which ``metrics_before``/``metrics_after`` and the reported stages
                are measured; never passed to the method.
            backdoors: known trigger(s) (:class:`kerasbd.attacks.Backdoor`) used only for evaluation.
            seed: seeds every random choice of the run (reported in the result).
            strategy: ``tf.distribute`` strategy or name for the training loops.
            checkpoint_dir: folder where long loops keep finished work; a rerun with the same settings resumes
                there, other settings are refused (:class:`kerasbd.resume.ResumeStore`).
            restart: discard what ``checkpoint_dir`` holds instead of resuming.
            verbose: 0 silent, 1 progress lines.
        """
        from kerasbd.reporting.figures import figures_for
        from kerasbd.validation import check_dataset

        if clean is not None and not (isinstance(clean, tuple) and len(clean) == 2 and clean[1] is not None):
            raise ConfigError("a defense needs labelled clean data: pass clean=(x, y).")
        net, clean = _prepare(model, clean, self)
        if eval_data is not None:
            eval_data = check_dataset(*eval_data, num_classes=int(net.output_shape[-1]), image_shape=net.input_shape[1:], name="evaluation")
        backdoors = list(backdoors or [])
        report = Reporter(eval_data, backdoors, seed)
        start = time.perf_counter()
        settings = self._settings(clean[0])
        ctx = _context(self, net, clean, seed=seed, strategy=strategy, verbose=verbose, checkpoint_dir=checkpoint_dir,
                       restart=restart, report=report)
        result = self._run(net, clean, ctx)
        result.details.update(settings)
        result.seconds = time.perf_counter() - start
        result.seed, result.params = seed, self.get_config()
        result.rows = [*result.rows, *report.rows]
        result.details.update(report.series)
        if eval_data is not None:
            result.metrics_before = report.measure(net)
            if result.model is not None:
                result.metrics_after = report.measure(result.model)
        result.figures = figures_for(result)
        return result

    @abc.abstractmethod
    def _run(self, model: Any, clean: Dataset, ctx: RunContext) -> DefenseResult:
        """Do the work; return a DefenseResult with ``model`` set."""


class ModelInspector(Method, abc.ABC):
    """Base class of methods that decide whether a model is backdoored and towards which label(s).

    Subclasses set ``name`` and implement :meth:`_inspect`, returning an :class:`InspectionResult` with
    per-label statistics, the flagged labels, one model-level score (higher = more likely backdoored) with its
    decision rule and threshold, and the reversed triggers. :meth:`inspect` validates, times, checkpoints and,
    when the true trigger is known, reports how close the reversed trigger of its target came to it.
    """

    name: ClassVar[str] = "inspector"

    def inspect(
        self,
        model: Any,
        clean: tuple[np.ndarray, np.ndarray | None] | np.ndarray | None,
        *,
        seed: int = 0,
        strategy: Any = None,
        checkpoint_dir: str | os.PathLike | None = None,
        restart: bool = False,
        verbose: int = 1,
        backdoors: Sequence[Any] | None = None,
    ) -> InspectionResult:
        """Inspect ``model`` with the defender's clean images.

        Args:
            model: a :class:`kerasbd.models.Classifier` or a Keras model mapping canonical images to logits.
            clean: ``(x, y)``, or images ``x`` alone (their labels are then the model's own predictions); None for
                a data-free inspector (``requires_clean`` False).
            seed, strategy, checkpoint_dir, restart, verbose: as for :meth:`Defense.run`.
            backdoors: the true trigger(s) when known, for reporting only: the result then says how much of
                each reversed trigger lies on the true one (``result.trigger_match``).
        """
        from kerasbd.reporting.figures import figures_for
        from kerasbd.reporting.triggers import trigger_match

        net, clean = _prepare(model, clean, self)
        start = time.perf_counter()
        settings = self._settings(clean[0])
        ctx = _context(self, net, clean, seed=seed, strategy=strategy, verbose=verbose, checkpoint_dir=checkpoint_dir,
                       restart=restart, report=Reporter())
        result = self._inspect(net, clean, ctx)
        result.details.update(settings)
        result.seconds = time.perf_counter() - start
        result.seed, result.params = seed, self.get_config()
        if backdoors:
            result.trigger_match = trigger_match(result, list(backdoors), clean[0], net)
        result.figures = figures_for(result)
        return result

    def inspect_in(self, model: Any, clean: Dataset, ctx: RunContext) -> InspectionResult:
        """The inspection alone inside a run that already has its context (a defense that inspects, then repairs):
        ``model`` is the logits model, ``clean`` validated, ``ctx`` the defense's (seed, store, strategy)."""
        return self._inspect(model, clean, ctx)

    @abc.abstractmethod
    def _inspect(self, model: Any, clean: Dataset, ctx: RunContext) -> InspectionResult:
        """Do the work; return an InspectionResult."""


class InspectThenRepair(Defense, abc.ABC):
    """A defense that runs an inspector and repairs the model only when labels are flagged (Neural Cleanse's
    unlearning, GangSweep's patching). ``result.details`` holds the inspection's findings, its ``verdict``, ``score``,
    ``repaired`` and, with known triggers, ``trigger_match`` (see :attr:`InspectionResult.trigger_match`); the verdict
    line states the inspection, then what was done.

    Subclasses implement :meth:`_inspection` (the result and whatever the repair needs from it) and
    :meth:`_repair`, and set :attr:`repair_switch` (the constructor switch that disables the repair).
    """

    repair_switch: ClassVar[str] = "repair"
    #: When set, the defense's ``"auto"`` preset is this inspector's own (its data-dependent settings, ``inspector__``-prefixed).
    inspector_class: ClassVar[type[ModelInspector] | None] = None

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        if cls.inspector_class is None:
            return super()._auto_preset(images)
        inner = cls.inspector_class.resolve_preset("auto", images)
        return Preset(inner.name, {f"inspector__{k}": v for k, v in inner.params.items()}, inner.reason)

    @abc.abstractmethod
    def _inspection(self, model: Any, clean: Dataset, ctx: RunContext) -> tuple[InspectionResult, Any]:
        """The inspection and the state the repair uses (e.g. trained generators)."""

    @abc.abstractmethod
    def _repair(self, model: Any, clean: Dataset, inspection: InspectionResult, state: Any, ctx: RunContext) -> tuple[Any, str]:
        """The repaired copy of ``model`` and what was done, in words."""

    def _unflagged_note(self, inspection: InspectionResult) -> str:
        """Appended to "no label flagged: ..." (e.g. why no label could be flagged)."""
        return ""

    def _run(self, model: Any, clean: Dataset, ctx: RunContext) -> DefenseResult:
        inspection, state = self._inspection(model, clean, ctx)
        repaired, action = model, "no label flagged: the model is returned unchanged"
        if inspection.flagged and getattr(self, self.repair_switch):
            repaired, action = self._repair(model, clean, inspection, state, ctx)
        elif inspection.flagged:
            action = f"label(s) flagged; repair disabled ({self.repair_switch}=False): the model is returned unchanged"
        else:
            action += self._unflagged_note(inspection)
        note = f"{inspection.verdict().partition(': ')[2]}; {action}"
        details = {**inspection.details, "verdict": inspection.verdict(), "score": inspection.score, "repaired": repaired is not model,
                   "note": note}
        if ctx.report.backdoors:  # known triggers (reporting only): how close the reversed ones came
            from kerasbd.reporting.triggers import trigger_match

            details["trigger_match"] = trigger_match(inspection, ctx.report.backdoors, clean[0], model)
        return DefenseResult(self.name, model=repaired, details=details, rows=inspection.statistics, arrays=inspection.arrays)


class InputDetector(Method, abc.ABC):
    """Base class of detectors that flag triggered inputs at inference time.

    Subclasses implement :meth:`_fit` (calibration on clean inputs, may be a no-op) and :meth:`score`
    (higher = more suspicious). ``fit`` sets ``threshold_`` at ``fpr`` on the clean scores unless the subclass
    overrides :meth:`_threshold` (STRIP fits a normal distribution, as its original does).
    """

    name: ClassVar[str] = "detector"

    def fit(self, model: Any, clean_x: np.ndarray, *, fpr: float = 0.01, seed: int = 0) -> Self:
        from kerasbd.models import as_logits_model
        from kerasbd.validation import check_images

        self.model_ = as_logits_model(model)
        self.seed_ = seed
        clean_x = check_images(clean_x, name="clean inputs", image_shape=self.model_.input_shape[1:])
        self.settings_ = self._settings(clean_x)
        self._fit(clean_x, np.random.default_rng(seed))
        self.clean_scores_ = self.score(clean_x)
        self.fpr_ = fpr
        self.threshold_ = self._threshold(self.clean_scores_, fpr)
        return self

    def _fit(self, clean_x: np.ndarray, rng: np.random.Generator) -> None:
        """Calibrate on clean inputs before scoring (default: nothing)."""

    def _threshold(self, clean_scores: np.ndarray, fpr: float) -> float:
        return threshold_at_fpr(clean_scores, fpr)

    @abc.abstractmethod
    def score(self, x: np.ndarray) -> np.ndarray:
        """Suspicion score per input, higher = more likely triggered."""

    def detect(self, x: np.ndarray) -> np.ndarray:
        """Boolean flag per input: score above the fitted threshold."""
        if not hasattr(self, "threshold_"):
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(model, clean_x) first.")
        return self.score(x) > self.threshold_

    def as_model(self) -> Any:
        """Serve the fitted detector as a Keras model ``x -> [logits, flag]`` (see ``defenses.detection.common``)."""
        from kerasbd.defenses.detection.common import detector_model

        return detector_model(self)
