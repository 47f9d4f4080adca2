"""The :class:`Classifier` every loader returns, and the logits view every defense and metric works on.

Detectors need pre-softmax outputs, but most published model files end in a softmax. :func:`as_logits_model`
returns a view of a model without its final softmax that *shares* the original's variables (fine-tuning the
view updates the original) and can be saved like any Keras model. :class:`Classifier` puts an
:class:`~kerasbd.models.spec.InputAdapter` in front when the model expects raw, normalised or BGR pixels, so
its ``model`` always maps canonical images (float32 NHWC RGB in [0, 1]) to logits.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import keras
import numpy as np

from kerasbd.errors import ConfigError, DataError
from kerasbd.io import atomic_path
from kerasbd.models.spec import InputAdapter, InputSpec
from kerasbd.validation import check_images

__all__ = ["Classifier", "wrap", "as_logits_model", "logits_view", "PreActivation"]


class _WithoutActivation:
    """Attribute proxy of a layer whose ``activation`` reads as linear; every other attribute is the layer's own.

    Calling ``type(layer).call(proxy, x)`` runs the layer's exact computation minus the activation without
    mutating the layer, so the original model keeps its softmax even when both run concurrently (replica threads).
    """

    activation = staticmethod(keras.activations.linear)

    def __init__(self, layer: keras.layers.Layer) -> None:
        object.__setattr__(self, "_layer", layer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layer, name)


@keras.saving.register_keras_serializable(package="kerasbd")
class PreActivation(keras.layers.Layer):
    """The output of ``layer`` before its activation, using (and sharing) ``layer``'s variables.

    Example:
        >>> dense = keras.layers.Dense(3, activation="softmax")
        >>> x = np.ones((1, 4), "float32")
        >>> probs = np.asarray(dense(x))
        >>> logits = np.asarray(PreActivation(dense)(x))
        >>> bool(np.allclose(np.exp(logits) / np.exp(logits).sum(), probs, atol=1e-6))
        True
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs: Any) -> Any:
        return type(self.layer).call(_WithoutActivation(self.layer), inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PreActivation:
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


def _activation_name(layer: keras.layers.Layer) -> str | None:
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return getattr(act, "__name__", type(act).__name__)


def _is_softmax_layer(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation) and _activation_name(layer) == "softmax")


def logits_view(model: keras.Model) -> tuple[keras.Model, str]:
    """``(logits_model, output_activation)``: ``model`` without a final softmax, sharing its variables.

    A final ``Softmax``/``Activation("softmax")`` layer is cut off; a final layer with ``activation="softmax"``
    (Dense, Conv) is re-applied through :class:`PreActivation`. Models without a final softmax, and models
    without a functional graph (subclassed), are returned unchanged with their final activation's name.
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs or len(outputs) != 1:
        last = model.layers[-1] if model.layers else None
        return model, (_activation_name(last) if last is not None else None) or "linear"
    layer, node_index, _ = outputs[0]._keras_history
    node = layer._inbound_nodes[node_index]
    if _is_softmax_layer(layer):
        (logits,) = node.input_tensors
    elif _activation_name(layer) == "softmax":
        (inputs,) = node.input_tensors
        logits = PreActivation(layer, name=f"{layer.name}_logits")(inputs)
    else:
        name = "linear" if isinstance(layer, keras.layers.InputLayer) else (_activation_name(layer) or "linear")
        return model, name
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # keep the caller's input structure
    return keras.Model(inputs, logits, name=f"{model.name}_logits"), "softmax"


def as_logits_model(obj: Any) -> keras.Model:
    """The canonical-images → logits Keras model of a :class:`Classifier` or a Keras model.

    Every defense, detector and metric calls this on its model argument, so users may pass either.

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> as_logits_model(m).layers[-1].__class__.__name__
        'PreActivation'
    """
    if isinstance(obj, Classifier):
        return obj.model
    if isinstance(obj, keras.Model):
        return logits_view(obj)[0]
    raise ConfigError(f"expected a kerasbd Classifier or a keras.Model, got {type(obj).__name__}.")


def _embedded_spec(model: keras.Model) -> InputSpec | None:
    """The spec of an InputAdapter directly after the input (a model saved by :meth:`Classifier.save`)."""
    for layer in model.layers[:3]:
        if isinstance(layer, InputAdapter):
            return layer.spec
    return None


@dataclasses.dataclass
class Classifier:
    """A model mapping canonical images to logits, with its input specification and provenance.

    Attributes:
        model: ``keras.Model``, canonical images (float32 NHWC RGB [0, 1]) → logits.
        input_spec: what the stored model expects (None for non-image models such as TrojanNet's MLP).
        output_activation: final activation of the stored file (``"softmax"``, ``"linear"``...; None when the
            file held weights only).
        source: provenance: path, sha256, format, keras_version, where the input spec came from.

    Example:
        >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
        >>> clf = wrap(net)
        >>> clf.num_classes, clf.input_shape, clf.output_activation
        (3, (8, 8, 1), 'softmax')
        >>> clf.predict(np.zeros((2, 8, 8, 1), "float32")).shape
        (2,)
    """

    model: keras.Model
    input_spec: InputSpec | None = None
    output_activation: str | None = "linear"
    source: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_keras(
        cls,
        model: keras.Model,
        *,
        input_spec: InputSpec | dict[str, Any] | None = None,
        output_activation: str | None = None,
        source: dict[str, Any] | None = None,
    ) -> Classifier:
        """Build a classifier from a stored-domain model: strip the softmax, add the input adapter."""
        if isinstance(input_spec, dict):
            input_spec = InputSpec.from_dict(input_spec)
        embedded = _embedded_spec(model)
        if embedded is not None:  # already canonical → logits (saved by Classifier.save); never adapt twice
            if input_spec is not None and input_spec != embedded:
                raise ConfigError(f"the model already carries input spec {embedded.to_dict()}; do not pass another one.")
            input_spec = embedded
        logits, activation = logits_view(model)
        shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
        if shape is None:
            raise ConfigError(f"model {model.name!r} has several inputs; kerasbd classifiers take one image batch.")
        if input_spec is None and len(shape) == 3 and None not in shape and shape[-1] in (1, 3):
            input_spec = InputSpec(shape)
        if input_spec is not None and embedded is None:
            if len(shape) != 3 or any(s is not None and s != t for s, t in zip(shape, input_spec.shape, strict=True)):
                raise ConfigError(f"input spec shape {input_spec.shape} does not fit the model's input shape {shape}.")
            if not input_spec.is_identity() or None in shape:
                inp = keras.Input(input_spec.shape, name="canonical_images")
                adapted = InputAdapter(input_spec.to_dict(), name="input_adapter")(inp)
                logits = keras.Model(inp, logits(adapted), name=f"{model.name}_canonical")
        return cls(logits, input_spec, output_activation if output_activation is not None else activation, dict(source or {}))

    @property
    def num_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input_spec.shape) if self.input_spec is not None else tuple(self.model.input_shape[1:])

    def _check(self, x: Any) -> np.ndarray:
        if self.input_spec is not None:
            return check_images(x, image_shape=self.input_spec.shape)
        x = np.asarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"inputs: shape {tuple(x.shape)} does not match the model's input (N, {', '.join(map(str, self.input_shape))}).")
        if not np.isfinite(x).all():
            raise DataError("inputs: contain NaN or infinite values.")
        return x

    def predict_logits(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Logits for a canonical batch (uint8 0-255 is accepted and divided by 255)."""
        x = self._check(x)
        return np.asarray(self.model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)

    def predict_proba(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Softmax probabilities."""
        z = self.predict_logits(x, batch_size)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Predicted class labels (int64)."""
        return self.predict_logits(x, batch_size).argmax(axis=1).astype(np.int64)

    def save(self, path: str | os.PathLike) -> None:
        """Save the canonical → logits model as a ``.keras`` archive, atomically; reload with ``load_model``."""
        if not str(path).endswith(".keras"):
            raise ConfigError(f"Classifier.save writes .keras archives; got {path!r}.")
        with atomic_path(path) as tmp:
            self.model.save(tmp)


def wrap(keras_model: keras.Model, input_spec: InputSpec | dict[str, Any] | None = None) -> Classifier:
    """Wrap an in-memory Keras model (softmax stripped, input adapter added when ``input_spec`` needs one).

    Example:
        >>> net = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> wrap(net, InputSpec((4, 4, 3), range="0-255")).model.layers[1].__class__.__name__
        'InputAdapter'
    """
    if not isinstance(keras_model, keras.Model):
        raise ConfigError(f"wrap expects a keras.Model, got {type(keras_model).__name__}.")
    return Classifier.from_keras(keras_model, input_spec=input_spec, source={"format": "memory", "name": keras_model.name})
