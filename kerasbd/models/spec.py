"""Input specification of a model: what pixels it expects, and the layer that adapts canonical images to it.

kerasbd works on canonical images (float32, NHWC, RGB, [0, 1]). A model trained on raw 0-255 pixels, on
mean/std-normalised pixels or on BGR images keeps its own expectations; :class:`InputSpec` records them and
:class:`InputAdapter` (a serialisable Keras layer) converts canonical images into that domain inside the
model, so every kerasbd model has the same interface and still computes exactly what the original did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasbd.errors import ConfigError

__all__ = ["InputSpec", "InputAdapter"]

_RANGES = {"0-1": 1.0, "0-255": 255.0}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model's first layer expects.

    The model input is ``(x · scale − mean) / std`` with ``x`` canonical in [0, 1], channels reordered to
    ``channel_order``. ``range`` is ``"0-1"`` (scale 1) or ``"0-255"`` (scale 255); ``mean``/``std`` are given
    in the scaled units (e.g. CIFAR ``mean=(125.307, 122.95, 113.865)`` with ``range="0-255"``).

    Example:
        >>> spec = InputSpec(shape=(28, 28, 1), range="0-255")
        >>> float(spec.to_model(np.ones((1, 28, 28, 1), "float32")).max())
        255.0
    """

    shape: tuple[int, int, int]
    range: str = "0-1"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 3 or self.shape[-1] not in (1, 3):
            raise ConfigError(f"input shape must be (H, W, C) with C in (1, 3), got {self.shape}.")
        if self.range not in _RANGES:
            raise ConfigError(f"input range {self.range!r} is unknown; use one of {sorted(_RANGES)}.")
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}.")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(t) for t in (v if isinstance(v, Sequence) else [v]))
                if len(v) not in (1, self.shape[-1]):
                    raise ConfigError(f"{name} has {len(v)} values for {self.shape[-1]} channels.")
                if name == "std" and min(v) <= 0:
                    raise ConfigError("std values must be positive.")
                object.__setattr__(self, name, v)

    @property
    def scale(self) -> float:
        return _RANGES[self.range]

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(multiplier, offset) per channel such that model_input = x · multiplier + offset (after reordering)."""
        c = self.shape[-1]
        mean = np.broadcast_to(np.asarray(self.mean or (0.0,), np.float32), (c,))
        std = np.broadcast_to(np.asarray(self.std or (1.0,), np.float32), (c,))
        return (self.scale / std).astype(np.float32), (-mean / std).astype(np.float32)

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Map canonical images to the model's input domain (NumPy)."""
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        mul, off = self.affine()
        return (x * mul + off).astype(np.float32)

    def from_model(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_model`: model-domain images back to canonical [0, 1] (not clipped)."""
        mul, off = self.affine()
        x = (np.asarray(x, np.float32) - off) / mul
        return x[..., ::-1] if self.channel_order == "BGR" else x

    def is_identity(self) -> bool:
        mul, off = self.affine()
        return self.channel_order == "RGB" and bool(np.all(mul == 1) and np.all(off == 0))

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "range": self.range, "mean": self.mean, "std": self.std, "channel_order": self.channel_order}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"input spec has unknown key(s) {sorted(unknown)}; known: shape, range, mean, std, channel_order.")
        if "shape" not in d:
            raise ConfigError("input spec needs 'shape' (H, W, C).")
        values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**values)


@keras.saving.register_keras_serializable(package="kerasbd")
class InputAdapter(keras.layers.Layer):
    """Maps canonical images (float, [0, 1], RGB) to a model's own input domain, described by an InputSpec.

    Example:
        >>> layer = InputAdapter(InputSpec((2, 2, 3), range="0-255", channel_order="BGR").to_dict())
        >>> x = np.zeros((1, 2, 2, 3), "float32"); x[..., 0] = 1.0
        >>> np.asarray(layer(x))[0, 0, 0].tolist()
        [0.0, 0.0, 255.0]
    """

    def __init__(self, spec: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = InputSpec.from_dict(spec)
        mul, off = self.spec.affine()
        self._mul, self._off = mul.tolist(), off.tolist()

    def call(self, x: Any) -> Any:
        if self.spec.channel_order == "BGR":
            x = ops.flip(x, axis=-1)
        return x * ops.convert_to_tensor(self._mul, dtype=x.dtype) + ops.convert_to_tensor(self._off, dtype=x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "spec": self.spec.to_dict()}
