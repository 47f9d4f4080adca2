"""The two interfaces every defense implements.

:class:`Defense` repairs or wraps a suspicious model (scikit-learn style: the constructor takes only
configuration, :meth:`Defense.run` does the work and returns a :class:`~kerasbd.results.DefenseResult`).
:class:`InputDetector` flags triggered inputs at inference (``fit`` on clean data sets a threshold at a chosen
false-positive rate; ``score`` is higher for more suspicious inputs; ``detect`` compares with the threshold).
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.results import DefenseResult

__all__ = ["Defense", "InputDetector", "RunContext", "threshold_at_fpr"]


class _Configurable:
    """``get_config`` from the constructor's signature, like Keras layers and scikit-learn estimators."""

    def get_config(self) -> dict[str, Any]:
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and params[k].kind is not inspect.Parameter.VAR_KEYWORD}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = set(config) - known
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What one run of a defense receives besides the model and the clean data.

    ``eval_data`` and ``backdoors`` are for reporting only (stage rows, curves); a defense must never use them
    to make a decision, since a real defender has neither.
    """

    seed: int
    rng: np.random.Generator
    strategy: Any = None
    verbose: int = 1
    eval_data: tuple[np.ndarray, np.ndarray] | None = None
    backdoors: tuple[Any, ...] = ()


class Defense(_Configurable, abc.ABC):
    """Base class of model-repair and model-wrapping defenses.

    Subclasses set ``name`` and implement :meth:`_run`, which receives the logits model, validated clean data
    and a :class:`RunContext` (seed, seeded ``numpy.random.Generator``, strategy, verbosity, and the evaluation
    data for reporting stages) and returns a :class:`DefenseResult`. :meth:`run` handles validation, timing and
    before/after metrics.
    """

    name: ClassVar[str] = "defense"
    #: When True, :meth:`run` also passes ``eval_data`` and ``backdoors`` to :meth:`_run` (keyword arguments), for
    #: methods whose report measures intermediate stages (GYM's Table-2 columns, a pruning curve's ASR). They are
    #: used for reporting only, never for the method's own decisions.
    def run(
        self,
        model: Any,
        clean: tuple[np.ndarray, np.ndarray],
        *,
        eval_data: tuple[np.ndarray, np.ndarray] | None = None,
        backdoors: Sequence[Any] | None = None,
        seed: int = 0,
        strategy: Any = None,
        verbose: int = 1,
    ) -> DefenseResult:
        """Run the defense.

        Args:
            model: a :class:`kerasbd.models.Classifier` or a Keras model mapping canonical images to logits.
                It is not modified; the result holds a new model.
            clean: the defender's small clean set ``(x, y)``.
            eval_data: held-out ``(x, y)`` on which ``metrics_before``/``metrics_after`` are measured.
            backdoors: known trigger(s) (:class:`kerasbd.attacks.Backdoor`) used only for evaluation.
            seed: seeds every random choice of the run (reported in the result).
            strategy: ``tf.distribute`` strategy or name for the training loops.
            verbose: 0 silent, 1 progress lines.
        """
        from kerasbd.metrics import evaluate_backdoor
        from kerasbd.models import as_logits_model
        from kerasbd.validation import check_dataset

        net = as_logits_model(model)
        num_classes = int(net.output_shape[-1])
        shape = net.input_shape[1:]
        clean = check_dataset(*clean, num_classes=num_classes, image_shape=shape, name="clean")
        if eval_data is not None:
            eval_data = check_dataset(*eval_data, num_classes=num_classes, image_shape=shape, name="evaluation")
        start = time.perf_counter()
        ctx = RunContext(seed, np.random.default_rng(seed), strategy, verbose, eval_data, tuple(backdoors or ()))
        result = self._run(net, clean, ctx)
        result.seconds = time.perf_counter() - start
        result.seed, result.params = seed, self.get_config()
        if eval_data is not None:
            result.metrics_before = evaluate_backdoor(net, *eval_data, backdoors=backdoors or [])
            if result.model is not None:
                result.metrics_after = evaluate_backdoor(result.model, *eval_data, backdoors=backdoors or [])
        return result

    @abc.abstractmethod
    def _run(self, model: Any, clean: tuple[np.ndarray, np.ndarray], ctx: RunContext) -> DefenseResult:
        """Do the work; return a DefenseResult with ``model`` set (or None for detection-only methods)."""


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """Smallest threshold whose false-positive rate on ``clean_scores`` is at most ``fpr`` (flag: score > t).

    This is the empirical (1 − fpr) quantile, the rule of Feature Squeezing's original code
    (``sorted(scores)[ceil(N·(1−fpr)) − 1]``).

    Example:
        >>> threshold_at_fpr(np.arange(100.0), 0.05)
        94.0
    """
    if not 0.0 <= fpr < 1.0:
        raise ConfigError(f"fpr must be in [0, 1), got {fpr}.")
    s = np.sort(np.asarray(clean_scores, dtype=np.float64))
    if s.size == 0:
        raise ConfigError("cannot set a threshold from zero clean scores.")
    k = int(np.ceil(s.size * (1.0 - fpr))) - 1
    return float(s[min(max(k, 0), s.size - 1)])


class InputDetector(_Configurable, abc.ABC):
    """Base class of detectors that flag triggered inputs at inference time.

    Subclasses implement :meth:`_fit` (calibration on clean inputs, may be a no-op) and :meth:`score`
    (higher = more suspicious). ``fit`` sets ``threshold_`` at ``fpr`` on the clean scores unless the subclass
    overrides :meth:`_threshold` (STRIP fits a normal distribution, as its original does).
    """

    name: ClassVar[str] = "detector"

    def fit(self, model: Any, clean_x: np.ndarray, *, fpr: float = 0.01, seed: int = 0) -> InputDetector:
        from kerasbd.models import as_logits_model
        from kerasbd.validation import check_images

        self.model_ = as_logits_model(model)
        self.seed_ = seed
        clean_x = check_images(clean_x, name="clean inputs", image_shape=self.model_.input_shape[1:])
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
        """Serve the fitted detector as a Keras model ``x -> [logits, flag]`` (see ``defenses.detectors``)."""
        from kerasbd.defenses.detectors import detector_model

        return detector_model(self)
