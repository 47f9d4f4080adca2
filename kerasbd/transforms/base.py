"""The :class:`Transform` contract, :class:`Compose`, (de)serialisation and the uint8 round trip.

A transform maps a canonical batch (float32 NHWC in [0, 1]) to a canonical batch, drawing all its randomness
from one ``numpy.random.Generator`` so that the same seed gives the same output. Transforms whose original is an
albumentations 0.4.x augmentation (GYM / DeepSweep) work on uint8 pixels exactly like the original wrappers:
``(x * 255).astype(uint8)`` (truncation, not rounding), the OpenCV call, then ``/ 255``. ``u / 255 * 255`` is
exact for every uint8 ``u`` in float32, so :class:`Compose` keeps consecutive uint8 steps in uint8 without
changing a single value, which is both faithful and fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar, Union

import numpy as np

from kerasbd.errors import ConfigError, DataError
from kerasbd.validation import check_images

__all__ = [
    "RngLike",
    "Transform",
    "Compose",
    "as_generator",
    "serialize",
    "deserialize",
    "to_uint8",
    "from_uint8",
    "TRANSFORMS",
]

RngLike = Union[None, int, np.random.Generator]

#: Images processed together; larger batches are split (a fixed constant, so seeded outputs do not change).
CHUNK = 256

#: Every concrete transform class by name; filled by ``Transform.__init_subclass__``.
TRANSFORMS: dict[str, type[Transform]] = {}


def as_generator(rng: RngLike) -> np.random.Generator:
    """Turn ``None`` (fresh entropy), an int seed or a Generator into a Generator.

    Example:
        >>> bool(as_generator(0).integers(10) == as_generator(0).integers(10))
        True
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(None if rng is None else int(rng))
    raise ConfigError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}.")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """albumentations 0.4.x wrapper quantisation: ``(x * 255).astype(uint8)``, i.e. truncation of [0, 1] floats."""
    return np.multiply(x, np.float32(255.0), dtype=np.float32).astype(np.uint8)


def from_uint8(u: np.ndarray) -> np.ndarray:
    """``u / 255`` as float32 (division, not multiplication by 1/255, so ``to_uint8`` inverts it exactly)."""
    return np.divide(u, np.float32(255.0), dtype=np.float32)


class Transform:
    """Base class: a seeded, batched image transform on canonical images.

    Subclasses store every constructor argument under the same attribute name (scikit-learn style), which gives
    :meth:`get_config` / :meth:`from_config` for free, and implement either ``_apply`` (float32 in [0, 1]) or,
    with ``quantizes = True``, ``_apply_uint8`` (uint8 0-255, the albumentations 0.4.x wrapper semantics).
    ``_check_shape`` refuses image shapes the operation cannot handle (e.g. smaller than its kernel).

    Example:
        >>> import numpy as np
        >>> from kerasbd.transforms import Flip
        >>> Flip()(np.eye(3, dtype=np.float32)[None, :, :, None])[0, 0, :, 0].tolist()
        [0.0, 0.0, 1.0]
    """

    #: True when the original operated on uint8 pixels obtained by truncation (albumentations wrappers).
    quantizes: ClassVar[bool] = False
    #: True when the operation needs 3-channel colour images.
    requires_color: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and not cls.__name__.startswith("_"):
            TRANSFORMS[cls.__name__] = cls

    def __call__(self, x: np.ndarray, rng: RngLike = None) -> np.ndarray:
        """Transform a batch; uint8 input is converted by /255, anything else must be float in [0, 1]."""
        xc = check_images(x, name=f"{type(self).__name__} input")
        out_shape = self.output_shape(xc.shape[1:])  # validates the image shape before any work
        gen = as_generator(rng)
        if len(xc) <= CHUNK:
            return self._run(xc, gen)
        # whole-batch passes over 10^4 images thrash the cache; fixed-size chunks keep results seeded-deterministic
        out = np.empty((len(xc), *out_shape), np.float32)
        for s in range(0, len(xc), CHUNK):
            self._run_into(xc[s : s + CHUNK], gen, out[s : s + CHUNK])
        return out

    def _run_into(self, x: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        """Write ``_run(x)`` into ``out``; element-wise transforms override it to skip the temporary."""
        out[...] = self._run(x, rng)

    def _run(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.quantizes:
            return from_uint8(self._apply_quantized(x, rng))
        return self._apply(x, rng)

    def _apply_quantized(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``_apply_uint8(to_uint8(x))``; steps that copy their input anyway override it to fuse the conversion."""
        return self._apply_uint8(to_uint8(x), rng)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _apply")

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _apply_uint8")

    def output_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(H, W, C) of the output for an (H, W, C) input; raises DataError when the input cannot be handled."""
        shape = tuple(int(s) for s in image_shape)
        if self.requires_color and shape[-1] != 3:
            raise DataError(
                f"{type(self).__name__} needs RGB images (3 channels), got {shape[-1]} channel(s). "
                "Convert grayscale with np.repeat(x, 3, axis=-1) or choose a grayscale-capable transform."
            )
        self._check_shape(shape)
        return shape

    def _check_shape(self, shape: tuple[int, int, int]) -> None:
        """Override to refuse shapes the operation cannot handle."""

    def _require_size(self, shape: tuple[int, int, int], minimum: int, what: str) -> None:
        if min(shape[0], shape[1]) < minimum:
            raise DataError(
                f"{type(self).__name__}: images of {shape[0]}x{shape[1]} are smaller than {what} ({minimum} px); "
                "use a smaller kernel/scale or larger images."
            )

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-friendly dict."""
        params = inspect.signature(type(self).__init__).parameters
        return {name: _jsonable(getattr(self, name)) for name in params if name != "self"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Transform:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Transform):
        return serialize(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def serialize(transform: Transform) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for a transform (nested transforms included)."""
    return {"class_name": type(transform).__name__, "config": transform.get_config()}


def deserialize(spec: dict[str, Any] | Transform) -> Transform:
    """Rebuild a transform from :func:`serialize` output (a Transform is returned unchanged).

    Example:
        >>> from kerasbd.transforms import BitDepth
        >>> deserialize(serialize(BitDepth(5))).bits
        5
    """
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, dict) or "class_name" not in spec:
        raise ConfigError(f"a transform spec is a dict with 'class_name' and 'config', got {spec!r}.")
    cls = TRANSFORMS.get(spec["class_name"])
    if cls is None:
        raise ConfigError(f"unknown transform {spec['class_name']!r}; known: {sorted(TRANSFORMS)}.")
    try:
        return cls.from_config(dict(spec.get("config", {})))
    except TypeError as exc:
        raise ConfigError(f"invalid config for {spec['class_name']}: {exc}") from exc


class Compose(Transform):
    """Apply transforms in order with one shared Generator; consecutive uint8 steps stay in uint8.

    Example:
        >>> import numpy as np
        >>> from kerasbd.transforms import Compose, Flip, BitDepth
        >>> t = Compose([Flip(), BitDepth(1)])
        >>> float(t(np.full((1, 4, 4, 3), 0.7, np.float32)).max())
        1.0
    """

    def __init__(self, transforms: Sequence[Transform | dict]) -> None:
        self.transforms = [deserialize(t) for t in transforms]
        if not self.transforms:
            raise ConfigError("Compose needs at least one transform.")

    def output_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        shape = tuple(int(s) for s in image_shape)
        for t in self.transforms:
            shape = t.output_shape(shape)
        return shape

    def _run(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cur, is_u8 = x, False
        for t in self.transforms:
            if t.quantizes:
                cur = t._apply_uint8(cur, rng) if is_u8 else t._apply_quantized(cur, rng)
                is_u8 = True
            else:
                if is_u8:
                    cur, is_u8 = from_uint8(cur), False
                cur = t._run(cur, rng)
        return from_uint8(cur) if is_u8 else cur

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]
