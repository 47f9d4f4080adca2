"""What every :class:`~kerasbd.defenses.base.InputDetector` shares beyond its base class.

- :class:`SoftmaxPredictor`: one compiled, chunked softmax forward pass; STRIP and feature squeezing both score
  inputs through it, so N overlays or K squeezers cost one batched call per chunk rather than one per image.
- :class:`DetectorLayer` / :func:`detector_model`: serve any fitted detector as a two-output Keras model
  ``x -> (logits, flag)``.
- :func:`far_frr_report`: STRIP-style FAR/FRR plus the ASR/CA translation NNoculation uses.

The NNoculation ensemble and any future detector plug in by subclassing ``InputDetector``: nothing here looks
past ``fit``/``score``/``detect``/``threshold_``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasbd.errors import ConfigError

__all__ = ["SoftmaxPredictor", "DetectorLayer", "detector_model", "far_frr_report"]


class SoftmaxPredictor:
    """Softmax probabilities of a logits model, in fixed-size chunks through one traced function.

    The function is traced once for any batch size, and the chunk bounds peak memory when a caller hands over
    a large batch (STRIP: inputs × overlays).

    Example:
        >>> import keras, numpy as np
        >>> net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> SoftmaxPredictor(net, batch_size=4)(np.zeros((5, 2, 2, 1), np.float32)).shape
        (5, 3)
    """

    def __init__(self, model: keras.Model, batch_size: int = 1024) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}.")
        self.model, self.batch_size = model, int(batch_size)
        # A batch-agnostic signature: one trace serves every chunk size, including the last, shorter one.
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        self._fn = tf.function(lambda x: tf.nn.softmax(model(x, training=False), axis=-1), input_signature=[spec])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = [self._fn(tf.constant(x[i : i + self.batch_size])).numpy() for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, int(self.model.output_shape[-1])), np.float32)


def _inter_op_threads() -> int:
    """TensorFlow's inter-op pool size: the configured value, else (0 = automatic) the CPUs this process may use."""
    import os

    configured = tf.config.threading.get_inter_op_parallelism_threads()
    if configured:
        return configured
    env = os.environ.get("TF_NUM_INTEROP_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DetectorLayer(keras.layers.Layer):
    """Keras layer returning the fitted detector's boolean flag per input.

    The detector's scoring is NumPy/OpenCV code (seeded overlays, non-local means), so the layer calls it
    through ``tf.numpy_function``. A model containing it predicts normally but cannot be saved as ``.keras``:
    persist the base model and the detector's ``get_config()`` plus ``threshold_`` instead.

    The scoring runs the base model from inside that ``numpy_function``, a nested TensorFlow call that needs a
    second inter-op thread: with one (a single-CPU machine) it would wait forever, so the layer refuses then.
    """

    def __init__(self, detector: Any, **kwargs: Any) -> None:
        super().__init__(trainable=False, **kwargs)
        if not hasattr(detector, "threshold_"):
            raise ConfigError(f"{type(detector).__name__} is not fitted; call fit(model, clean_x) before wrapping it.")
        if _inter_op_threads() < 2:
            raise ConfigError(
                "serving a detector as a Keras model needs at least 2 TensorFlow inter-op threads, and this process has 1 "
                "(one usable CPU). Set TF_NUM_INTEROP_THREADS=2 before TensorFlow starts, or call the detector directly "
                "(detector.detect(x)) instead of detector.as_model()."
            )
        self.detector = detector

    def call(self, x: Any) -> Any:
        flag = tf.numpy_function(lambda a: self.detector.detect(a).astype(np.bool_), [x], tf.bool, stateful=False)
        return tf.ensure_shape(flag, [None])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0],)

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError(
            "DetectorLayer wraps NumPy code and is not serialisable; save the base model and the detector's "
            "get_config() and threshold_ instead."
        )


def detector_model(detector: Any) -> keras.Model:
    """Two-output Keras model ``x -> [logits, flag]`` from a fitted detector (predict, not save).

    Example:
        >>> # served = detector_model(STRIP().fit(model, x_clean))
        >>> # logits, flags = served.predict(x)
    """
    if not hasattr(detector, "model_"):
        raise ConfigError(f"{type(detector).__name__} is not fitted; call fit(model, clean_x) first.")
    net = detector.model_
    x = keras.Input(shape=net.input_shape[1:], name="images")
    return keras.Model(x, [net(x), DetectorLayer(detector, name=f"{detector.name}_flag")(x)], name=f"{detector.name}_guarded")


def far_frr_report(
    detector: Any,
    clean_x: np.ndarray,
    triggered_x: np.ndarray,
    *,
    clean_acc: float | None = None,
    asr: float | None = None,
) -> dict[str, Any]:
    """FAR/FRR of a fitted detector and, when the undefended figures are given, NNoculation's translation.

    FRR is the fraction of clean inputs rejected (flagged); FAR the fraction of triggered inputs accepted
    (not flagged). NNoculation compares STRIP with model-repair defenses through
    ``ASR_STRIP = ASR × FAR`` and ``CA_STRIP = CA × (1 − FRR)``.
    """
    from kerasbd.metrics import far_frr

    clean_scores, trig_scores = detector.score(clean_x), detector.score(triggered_x)
    out: dict[str, Any] = {**far_frr(clean_scores, trig_scores, threshold=detector.threshold_),
                           "n_clean": int(len(clean_scores)), "n_triggered": int(len(trig_scores))}
    if asr is not None:
        out["asr_strip"] = float(asr) * out["far"]
    if clean_acc is not None:
        out["clean_acc_strip"] = float(clean_acc) * (1.0 - out["frr"])
    return out
