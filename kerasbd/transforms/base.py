"""The :class:`Transform` contract, :class:`Compose`, (de)serialisation and the uint8 round trip.

A transform maps a canonical batch (float32 NHWC in [0, 1]) to a canonical batch, drawing all its randomness
from one ``numpy.random.Generator`` so that the same seed gives the same output. Transforms whose original is an
albumentations 0.4.x augmentation (GYM / DeepSweep) work on uint8 pixels exactly like the original wrappers:
``(x * 255).astype(uint8)`` (truncation, not rounding), the OpenCV call, then ``/ 255``. ``u / 255 * 255`` is
exact for every uint8 ``u`` in float32, so :class:`Compose` keeps consecutive uint8 steps in uint8 without
changing a single value, which is both faithful and fast; a uint8 step followed by a float step hands over
floats (``_convert_apply``: steps that copy anyway, like the mosaic median, fuse the ``/ 255`` into that copy), and
the final ``/ 255`` writes straight into the output array.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from kerasbd import config
from kerasbd.config import Configurable
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

RngLike = None | int | np.random.Generator

#: Images processed together; larger batches are split (a fixed constant, so seeded outputs do not change).
#: 64 keeps a chunk's float intermediates near the L2 cache size (64 x 55x47x3 float32 = 2 MB); 256 made the
#: gym_lightweight pipeline about 1.5x slower at 55x47x3 (OpenCV 5.0, one thread).
CHUNK = 64

def _workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if int(workers) < 1:
        raise ConfigError(f"workers must be a positive number of threads or None (every CPU), got {workers}.")
    return int(workers)


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
    """albumentations 0.4.x wrapper quantisation: ``(x * 255).astype(uint8)``, i.e. truncation of [0, 1] floats.

    One pass: the float32 product is cast straight into the uint8 result, which keeps ``x``'s memory layout.
    """
    out = np.empty_like(x, dtype=np.uint8)
    return np.multiply(x, np.float32(255.0), out=out, dtype=np.float32, casting="unsafe")


def from_uint8(u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``u / 255`` as float32 (division, not multiplication by 1/255, so ``to_uint8`` inverts it exactly)."""
    return np.divide(u, np.float32(255.0), out=out, dtype=np.float32)


class Transform(Configurable):
    """Base class: a seeded, batched image transform on canonical images.

    Subclasses store every constructor argument under the same attribute name (scikit-learn style), which gives
    :meth:`get_config` / :meth:`from_config` for free (:class:`kerasbd.config.Configurable`), and implement either ``_apply`` (float32 in [0, 1]) or,
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

    def __call__(self, x: np.ndarray, rng: RngLike = None, *, workers: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Transform a batch; uint8 input is converted by /255, anything else must be float in [0, 1].

        Batches are processed in chunks of :data:`CHUNK` images (whole-batch passes over 10^4 images thrash the
        cache). A batch of up to ``CHUNK`` images draws from ``rng`` itself; a larger one gives every chunk its own
        stream (``Generator.spawn``, in order), so the output depends on the seed only — not on ``workers``, the
        number of threads the chunks are spread over (default: every CPU; OpenCV and NumPy release the GIL).
        ``out``, a float32 array of the output's shape, receives the result instead of a new array (a serving loop
        that reuses one buffer skips the page faults of fresh memory, a large share of the cost on some VMs).
        """
        xc = check_images(x, name=f"{type(self).__name__} input")
        out_shape = self.output_shape(xc.shape[1:])  # validates the image shape before any work
        gen = as_generator(rng)
        shape = (len(xc), *out_shape)
        if out is None:
            out = np.empty(shape, np.float32)
        elif not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ConfigError(f"out must be a float32 array of shape {shape}, got {got}.")
        starts = range(0, len(xc), CHUNK)
        if len(starts) == 1:
            self._run_into(xc, gen, out)
            return out
        jobs = list(zip(starts, gen.spawn(len(starts)), strict=False))
        n_workers = min(len(jobs), _workers(workers))

        def run(job: tuple[int, np.random.Generator]) -> None:
            s, g = job
            self._run_into(xc[s : s + CHUNK], g, out[s : s + CHUNK])

        if n_workers == 1:
            for job in jobs:
                run(job)
        else:
            with ThreadPoolExecutor(n_workers) as pool:
                list(pool.map(run, jobs))  # list() re-raises a chunk's exception here
        return out

    def _run_into(self, x: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        """Write ``_run(x)`` into ``out``; the final /255 of a uint8 step writes there directly."""
        if self.quantizes:
            from_uint8(self._convert_apply(x, rng, from_float=True, to_float=False), out=out)
        else:
            out[...] = self._run(x, rng)

    def _run(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.quantizes:
            return self._convert_apply(x, rng, from_float=True, to_float=True)
        return self._apply(x, rng)

    def _convert_apply(self, x: np.ndarray, rng: np.random.Generator, *, from_float: bool, to_float: bool) -> np.ndarray:
        """``_apply_uint8`` on ``to_uint8(x)`` (``from_float``) or on uint8 ``x``, returning ``/ 255`` floats
        (``to_float``) or uint8; steps that copy their input anyway override it to fuse the conversions."""
        u = self._apply_uint8(to_uint8(x) if from_float else x, rng)
        return from_uint8(u) if to_float else u

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _apply")

    def _apply_uint8(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _apply_uint8")

    def output_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """(H, W, C) of the output for an (H, W, C) input; raises DataError when the input cannot be handled."""
        h, w, c = (int(s) for s in image_shape)
        shape = (h, w, c)
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


def serialize(transform: Transform) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` for a transform (nested transforms included)."""
    return config.serialize(transform)


def deserialize(spec: dict[str, Any] | Transform) -> Transform:
    """Rebuild a transform from :func:`serialize` output (a Transform is returned unchanged).

    Example:
        >>> from kerasbd.transforms import BitDepth
        >>> deserialize(serialize(BitDepth(5))).bits
        5
    """
    return config.deserialize(spec, Transform)


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
        h, w, c = (int(s) for s in image_shape)
        shape = (h, w, c)
        for t in self.transforms:
            shape = t.output_shape(shape)
        return shape

    def _run(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cur, is_u8 = self._forward(x, rng)
        return from_uint8(cur) if is_u8 else cur

    def _run_into(self, x: np.ndarray, rng: np.random.Generator, out: np.ndarray) -> None:
        cur, is_u8 = self._forward(x, rng)
        if is_u8:
            from_uint8(cur, out=out)
        else:
            out[...] = cur

    def _forward(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """All steps; returns the result and whether it is still uint8 (its final /255 left to the caller)."""
        cur, is_u8 = x, False
        for i, t in enumerate(self.transforms):
            if t.quantizes:
                # a uint8 step followed by a float step hands over floats: the /255 fuses into its last copy
                to_float = i + 1 < len(self.transforms) and not self.transforms[i + 1].quantizes
                cur = t._convert_apply(cur, rng, from_float=not is_u8, to_float=to_float)
                is_u8 = not to_float
            else:
                cur = t._run(cur, rng)
        return cur, is_u8

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]
