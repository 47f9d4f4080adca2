"""Triggers with a footprint placed somewhere on the image: patches, pixel patterns, alpha images, amplified copies.

All of them reduce to one mechanism: a *stamp* — values ``v`` (h, w, C) and opacity ``a`` (h, w, 1) — pasted at a
top-left corner ``(row, col)`` as ``x' = (1 − a)·x + a·v`` (exactly ``v`` where ``a = 1``, exactly ``x`` where
``a = 0``). Positions are ``[row, col]`` (negative values count from the bottom/right edge, Python-style: ``-4``
puts a 4-pixel stamp flush with the edge), a named anchor (``"top-left"``, ``"top"``, ``"top-right"``,
``"left"``, ``"center"``, ``"right"``, ``"bottom-left"``, ``"bottom"``, ``"bottom-right"``) kept ``margin`` pixels
from the edges, or ``"random"`` (a new position per image, drawn from the ``rng`` given to ``apply``).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from kerasbd.attacks.base import Trigger, image_hwc, trigger_from_spec
from kerasbd.errors import TriggerError

__all__ = ["LocalTrigger", "Patch", "PixelPattern", "ImageTrigger", "Amplified", "ANCHORS", "resolve_asset", "paste"]

#: named anchor → (vertical, horizontal) fraction of the free space above/left of the stamp.
ANCHORS: dict[str, tuple[float, float]] = {
    "top-left": (0.0, 0.0),
    "top": (0.0, 0.5),
    "top-right": (0.0, 1.0),
    "left": (0.5, 0.0),
    "center": (0.5, 0.5),
    "right": (0.5, 1.0),
    "bottom-left": (1.0, 0.0),
    "bottom": (1.0, 0.5),
    "bottom-right": (1.0, 1.0),
}
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
EDGES_AND_CENTER = ("top", "left", "center", "right", "bottom")

Position = str | Sequence[int] | None


def resolve_asset(path: str | os.PathLike) -> Path:
    """Resolve a trigger asset path; ``"zoo:<relpath>"`` is relative to :func:`kerasbd.zoo.zoo_dir`."""
    text = os.fspath(path)
    if text.startswith("zoo:"):
        from kerasbd.zoo import zoo_dir

        p = Path(zoo_dir()) / text[4:]
    else:
        p = Path(text).expanduser()
    if not p.is_file():
        raise TriggerError(f"trigger image {text!r} not found (looked at {p}).")
    return p


def whole(value: Any, what: str) -> int:
    """``value`` as an int when it is a whole number (``3``, ``3.0``); a fraction, NaN, bool or text is refused.

    Example:
        >>> whole(3.0, "size")
        3
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value) \
            or float(value) != int(value):
        raise TriggerError(f"{what} must be a whole number of pixels, got {value!r}.")
    return int(value)


def _normalise_position(position: Position) -> str | tuple[int, int]:
    if isinstance(position, str):
        if position != "random" and position not in ANCHORS:
            raise TriggerError(f"position {position!r} is unknown; use [row, col], 'random' or one of {', '.join(ANCHORS)}.")
        return position
    try:
        r, c = (whole(v, "position") for v in position)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise TriggerError(f"position must be [row, col] or a name, got {position!r}.") from exc
    return (r, c)


def resolve_position(position: str | tuple[int, int], margin: int, size: tuple[int, int], image: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a ``size`` stamp on an ``image`` (H, W); raises TriggerError when it falls outside."""
    (h, w), (hh, ww) = size, image
    if isinstance(position, str):
        fy, fx = ANCHORS[position]
        r = margin + int((hh - h - 2 * margin) * fy)
        c = margin + int((ww - w - 2 * margin) * fx)
    else:
        r, c = position
        r, c = (hh + r if r < 0 else r), (ww + c if c < 0 else c)
    if r < 0 or c < 0 or r + h > hh or c + w > ww:
        raise TriggerError(
            f"a {h}×{w} trigger at {position!r} (margin {margin}) lands at rows {r}..{r + h - 1}, cols {c}..{c + w - 1}, "
            f"outside the {hh}×{ww} image; move or shrink it."
        )
    return r, c


def paste(x: np.ndarray, values: np.ndarray, alpha: np.ndarray, rows: np.ndarray | int, cols: np.ndarray | int) -> None:
    """Alpha-paste a stamp into batch ``x`` in place at one corner for all images, or one corner per image."""
    h, w = alpha.shape[:2]
    if np.ndim(rows) == 0:
        region = x[:, rows : rows + h, cols : cols + w]
        region *= 1.0 - alpha
        region += alpha * values
        return
    n = np.arange(x.shape[0])[:, None, None]
    ri = (np.asarray(rows)[:, None] + np.arange(h))[:, :, None]
    ci = (np.asarray(cols)[:, None] + np.arange(w))[:, None, :]
    x[n, ri, ci] = x[n, ri, ci] * (1.0 - alpha) + alpha * values


class LocalTrigger(Trigger):
    """A stamp pasted at a position (see the module docstring). Subclasses implement :meth:`stamp`."""

    def __init__(self, position: Position = "bottom-right", margin: int = 0, seed: int = 0) -> None:
        self.position = _normalise_position(position) if position is not None else None
        self.margin = whole(margin, "margin")
        self.seed = int(seed)
        if self.margin < 0:
            raise TriggerError(f"margin must be non-negative, got {margin}.")

    @abc.abstractmethod
    def stamp(self, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(values (h, w, C), alpha (h, w, 1))`` for images of ``image_shape``; raises on channel mismatch."""

    def origin(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """Top-left corner of the stamp for a fixed position."""
        if self.position == "random":
            raise TriggerError("a trigger at a random position has no fixed location.")
        h, w, _ = image_hwc(image_shape)
        size = self.stamp(image_shape)[1].shape[:2]
        return resolve_position(self.position, self.margin, size, (h, w))  # type: ignore[arg-type]

    def check_fits(self, image_shape: Sequence[int]) -> None:
        h, w, _ = image_hwc(image_shape)
        sh, sw = self.stamp(image_shape)[1].shape[:2]
        if sh + 2 * self.margin > h or sw + 2 * self.margin > w:
            raise TriggerError(
                f"the {type(self).__name__} trigger is {sh}×{sw} pixels (margin {self.margin}) but the images are only "
                f"{h}×{w}; use a smaller trigger or larger images."
            )
        if self.position != "random":
            self.origin(image_shape)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        values, alpha = self.stamp(x.shape[1:])
        if self.position == "random":
            h, w = alpha.shape[:2]
            m = self.margin
            rows = rng.integers(m, x.shape[1] - h - m + 1, size=len(x))
            cols = rng.integers(m, x.shape[2] - w - m + 1, size=len(x))
            paste(x, values, alpha, rows, cols)
        else:
            paste(x, values, alpha, *self.origin(x.shape[1:]))
        return x

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        self.check_fits(image_shape)
        return self._mask_at(image_shape, self.origin(image_shape))

    def _mask_at(self, image_shape: Sequence[int], origin: tuple[int, int]) -> np.ndarray:
        h, w, _ = image_hwc(image_shape)
        alpha = self.stamp(image_shape)[1]
        out = np.zeros((1, h, w, 1), np.float32)
        paste(out, np.ones_like(alpha), alpha, *origin)
        return out[0, :, :, 0]

    def _position_config(self) -> dict[str, Any]:
        pos = self.position if isinstance(self.position, str) or self.position is None else list(self.position)
        return {"position": pos, "margin": self.margin, **({"seed": self.seed} if self.position == "random" else {})}


def _channel_values(value: float | Sequence[float], channels: int, what: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float32).reshape(-1)
    if not np.isfinite(v).all():
        raise TriggerError(f"{what} values {v.tolist()} contain NaN or infinity; give values in [0, 1].")
    if v.size not in (1, channels):
        raise TriggerError(f"{what} has {v.size} channel values but the images have {channels} channel(s).")
    if v.min() < 0 or v.max() > 1:
        raise TriggerError(f"{what} values {v.tolist()} are outside [0, 1]; give canonical values or set value_range '0-255'.")
    return v


def _config_value(value: float | Sequence[float]) -> float | list[float]:
    """A stamp value as kept in the config: a scalar as given, a per-channel value as a list."""
    if np.ndim(value) == 0:
        return cast(float, value)
    return list(cast(Sequence[float], value))


def _scaled(value: Any, scale: float) -> Any:
    return (np.asarray(value, dtype=np.float64) * scale).tolist()


class Patch(LocalTrigger):
    """A solid rectangle (the BadNets / Neural Cleanse white square).

    Args:
        size: ``h`` or ``(h, w)`` in pixels.
        position: ``[row, col]``, a named anchor or ``"random"``.
        margin: distance from the edges for named anchors and random positions.
        value: fill value in [0, 1], scalar or one per channel.
        seed: seeds random positions when ``apply`` gets no ``rng``.

    Example:
        >>> nc = Patch(4, "bottom-right", margin=1)      # Neural Cleanse's MNIST trigger: rows/cols 23..26
        >>> x = nc.apply(np.zeros((1, 28, 28, 1), "float32"))
        >>> np.argwhere(x[0, :, :, 0] == 1).min(0).tolist(), np.argwhere(x[0, :, :, 0] == 1).max(0).tolist()
        ([23, 23], [26, 26])
    """

    type = "patch"

    def __init__(
        self, size: int | Sequence[int] = 3, position: Position = "bottom-right", margin: int = 0, value: float | Sequence[float] = 1.0, seed: int = 0
    ) -> None:
        super().__init__(position, margin, seed)
        sz = [whole(size, "patch size")] * 2 if np.ndim(size) == 0 else [whole(s, "patch size") for s in size]  # type: ignore[union-attr]
        if len(sz) != 2 or min(sz) < 1:
            raise TriggerError(f"patch size must be a positive int or [h, w], got {size!r}.")
        self.size = tuple(sz)
        self.value = _config_value(value)
        _channel_values(self.value, np.size(self.value), "patch value")

    def stamp(self, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        c = image_hwc(image_shape)[2]
        v = _channel_values(self.value, c, "patch value")
        h, w = self.size
        return np.broadcast_to(v, (h, w, c)).astype(np.float32), np.ones((h, w, 1), np.float32)

    def get_config(self) -> dict[str, Any]:
        return {"size": list(self.size), **self._position_config(), "value": self.value}

    @classmethod
    def _scale_values(cls, config: dict[str, Any], scale: float) -> dict[str, Any]:
        return {**config, "value": _scaled(config.get("value", 255.0), scale)}


class PixelPattern(LocalTrigger):
    """A set of pixels set to given values (Gu et al.'s single pixel and pixel pattern).

    Args:
        pixels: ``[row, col]`` or ``[row, col, value]`` entries (value scalar or per channel). Without
            ``position`` the coordinates are absolute (negative ones count from the bottom/right edge); with a
            position they are offsets from it.
        value: value of entries that give none.
        position, margin, seed: as for :class:`Patch`; ``None`` (default) keeps the absolute coordinates.

    Example:
        >>> t = PixelPattern([[27, 27], [25, 27], [27, 25], [25, 25], [23, 27], [27, 23]])  # Dillonsd pattern
        >>> int(t.apply(np.zeros((1, 28, 28, 1), "float32")).sum())
        6
    """

    type = "pixels"

    def __init__(
        self, pixels: Sequence[Sequence[Any]], value: float | Sequence[float] = 1.0, position: Position = None, margin: int = 0, seed: int = 0
    ) -> None:
        super().__init__(position, margin, seed)
        if not pixels:
            raise TriggerError("a pixel pattern needs at least one [row, col] entry.")
        parsed = []
        for p in pixels:
            if not isinstance(p, (list, tuple)) or len(p) not in (2, 3):
                raise TriggerError(f"pixel entry {p!r} must be [row, col] or [row, col, value].")
            v = p[2] if len(p) == 3 else value
            _channel_values(v, np.size(v), f"pixel {list(p[:2])}")
            parsed.append((whole(p[0], "pixel row"), whole(p[1], "pixel column"), _config_value(v)))
        self.pixels = parsed
        self.value = _config_value(value)
        if self.position is not None and min(min(r, c) for r, c, _ in parsed) < 0:
            raise TriggerError("pixel offsets must be non-negative when a position is given.")

    def _coords(self, image_shape: Sequence[int]) -> np.ndarray:
        h, w, _ = image_hwc(image_shape)
        rc = np.array([[r, c] for r, c, _ in self.pixels], dtype=np.int64)
        if self.position is None:
            rc = np.where(rc < 0, rc + np.array([h, w]), rc)
            bad = (rc < 0).any(1) | (rc[:, 0] >= h) | (rc[:, 1] >= w)
            if bad.any():
                raise TriggerError(f"pixel(s) {[list(p[:2]) for p, b in zip(self.pixels, bad, strict=True) if b]} lie outside the {h}×{w} image.")
        return rc

    def stamp(self, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        c = image_hwc(image_shape)[2]
        rc = self._coords(image_shape)
        rel = rc - rc.min(0) if self.position is None else rc
        h, w = (rel.max(0) + 1).tolist()
        values = np.zeros((h, w, c), np.float32)
        alpha = np.zeros((h, w, 1), np.float32)
        for (r, cc), (_, _, v) in zip(rel, self.pixels, strict=True):
            values[r, cc] = _channel_values(v, c, f"pixel [{r}, {cc}]")
            alpha[r, cc] = 1.0
        return values, alpha

    def origin(self, image_shape: Sequence[int]) -> tuple[int, int]:
        if self.position is None:
            r, c = self._coords(image_shape).min(0).tolist()
            return int(r), int(c)
        return super().origin(image_shape)

    def get_config(self) -> dict[str, Any]:
        pixels = [[r, c] if v == self.value else [r, c, v] for r, c, v in self.pixels]
        return {"pixels": pixels, "value": self.value, **self._position_config()}

    @classmethod
    def _scale_values(cls, config: dict[str, Any], scale: float) -> dict[str, Any]:
        pixels = [list(p[:2]) + [_scaled(p[2], scale)] if len(p) == 3 else p for p in config.get("pixels", [])]
        return {**config, "pixels": pixels, "value": _scaled(config.get("value", 255.0), scale)}


class ImageTrigger(LocalTrigger):
    """An RGBA image pasted with its alpha channel, like PIL's ``base.paste(im, (col, row), im)``.

    The NNoculation / CSAW sunglasses trigger is ``ImageTrigger("zoo:nnoculation/sun_glass_trigger.png",
    position=[15, 0])`` (PIL's ``paste(bd, (0, 15), bd)``: x=0 is the column, y=15 the row). Pixels are
    ``(1 − a)·x + a·rgb`` with ``a = alpha/255`` (PIL computes the same in uint8 with rounding, so results agree
    within 1/255). Images without alpha are pasted opaque; on grayscale batches the RGB stamp is converted with
    OpenCV's luma weights (0.299, 0.587, 0.114).

    Args:
        path: PNG (or any OpenCV-readable) file; ``"zoo:<relpath>"`` resolves against the zoo folder.
        image: alternatively an array (h, w, 3|4), uint8 or float in [0, 1].
        position, margin: as for :class:`Patch` (default top-left corner ``[0, 0]``).
        size: ``[h, w]`` to resize the image to (INTER_LINEAR, applied to colour and alpha).
    """

    type = "image"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        image: np.ndarray | None = None,
        position: Position = (0, 0),
        size: Sequence[int] | None = None,
        margin: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(position, margin, seed)
        if (path is None) == (image is None):
            raise TriggerError("give an image trigger either a path or an image array.")
        self.path = None if path is None else os.fspath(path)
        self.size = None if size is None else [whole(s, "image size") for s in size]
        if isinstance(image, (str, os.PathLike)):
            raise TriggerError(f"image trigger: 'image' takes pixel values; give the file {os.fspath(image)!r} as 'path'.")
        self._rgba = None if image is None else self._to_rgba(np.asarray(image), "image array")

    @staticmethod
    def _to_rgba(img: np.ndarray, source: str) -> np.ndarray:
        if not (np.issubdtype(img.dtype, np.number) or img.dtype == bool):
            raise TriggerError(f"{source} is not an image: its values are {img.dtype} (give pixel values, or a file as 'path').")
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        elif img.dtype == np.uint16:
            img = img.astype(np.float32) / 65535.0
        else:
            img = img.astype(np.float32)
        if img.ndim == 2:
            img = img[..., None]
        if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
            raise TriggerError(f"{source}: shape {img.shape} is not an (h, w, 1-4) image.")
        if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            raise TriggerError(f"{source}: float pixel values must lie in [0, 1].")
        colour, alpha = (img[..., :-1], img[..., -1:]) if img.shape[-1] in (2, 4) else (img, np.ones_like(img[..., :1]))
        if colour.shape[-1] == 1:
            colour = np.repeat(colour, 3, axis=-1)
        return np.concatenate([colour, alpha], axis=-1)

    def rgba(self) -> np.ndarray:
        """The trigger image as float32 RGBA (h, w, 4) in [0, 1], loaded on first use and resized to ``size``."""
        if self._rgba is None:
            p = resolve_asset(self.path)  # type: ignore[arg-type]
            raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise TriggerError(f"trigger image {p} is not an image OpenCV can read (PNG, JPEG, BMP, ...).")
            if raw.ndim == 3:  # OpenCV order BGR(A) → RGB(A)
                raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA if raw.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
            self._rgba = self._to_rgba(raw, str(p))
        if self.size is not None and tuple(self._rgba.shape[:2]) != tuple(self.size):
            self._rgba = cv2.resize(self._rgba, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        return self._rgba

    def stamp(self, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        c = image_hwc(image_shape)[2]
        rgba = self.rgba()
        colour = rgba[..., :3]
        if c == 1:
            colour = (colour @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        return colour.astype(np.float32), rgba[..., 3:4].astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        source: dict[str, Any] = {"path": self.path} if self.path is not None else {"image": self.rgba().tolist()}
        return {**source, **self._position_config(), **({"size": self.size} if self.size else {})}


class Amplified(LocalTrigger):
    """The same local trigger stamped at 4 or 9 places (DHBE §5.3's amplified backdoor attack).

    ``copies=4`` stamps the trigger's footprint at the four corners; ``copies=9`` adds the centre and the four
    edge midpoints. Corners keep the base trigger's ``margin``, so a bottom-right trigger's own place is one of
    them.

    Example:
        >>> t = Amplified(Patch(2, "bottom-right"), copies=4)
        >>> t.mask((6, 6, 1)).astype(int).tolist()[0]
        [1, 1, 0, 0, 1, 1]
    """

    type = "amplified"

    def __init__(self, trigger: LocalTrigger | dict[str, Any], copies: int = 4) -> None:
        base = trigger_from_spec(trigger) if isinstance(trigger, dict) else trigger
        if not isinstance(base, LocalTrigger) or isinstance(base, Amplified):
            raise TriggerError(f"amplified stamping needs a patch, pixel or image trigger, got {type(base).__name__}.")
        if int(copies) not in (4, 9):
            raise TriggerError(f"amplified copies must be 4 or 9 (DHBE §5.3), got {copies}.")
        super().__init__(CORNERS[0], base.margin, base.seed)
        self.trigger, self.copies = base, int(copies)

    @property
    def anchors(self) -> tuple[str, ...]:
        return CORNERS if self.copies == 4 else CORNERS + EDGES_AND_CENTER

    def stamp(self, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.trigger.stamp(image_shape)

    def origins(self, image_shape: Sequence[int]) -> list[tuple[int, int]]:
        """Top-left corners of every copy, in the order of :attr:`anchors`."""
        h, w, _ = image_hwc(image_shape)
        size = self.stamp(image_shape)[1].shape[:2]
        return [resolve_position(a, self.margin, size, (h, w)) for a in self.anchors]

    def check_fits(self, image_shape: Sequence[int]) -> None:
        super().check_fits(image_shape)
        self.origins(image_shape)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        values, alpha = self.stamp(x.shape[1:])
        for r, c in self.origins(x.shape[1:]):
            paste(x, values, alpha, r, c)
        return x

    def mask(self, image_shape: Sequence[int]) -> np.ndarray:
        self.check_fits(image_shape)
        return np.stack([self._mask_at(image_shape, o) for o in self.origins(image_shape)]).max(0)

    def get_config(self) -> dict[str, Any]:
        return {"trigger": self.trigger.to_spec(), "copies": self.copies}
