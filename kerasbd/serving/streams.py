"""Input streams a deployed ensemble serves: a folder of images, an ``.npz`` archive, or a simulated attack.

A stream is an :class:`ArrayStream`, an iterable of :class:`StreamBatch` — the images, a name per input
(``sources``: the file name, ``file.npz[i]``, ``sim[i]``) and, where known, the true labels and which inputs
carry a trigger, so that quarantine precision and recall can be measured. Field inputs have neither.

:func:`simulated_stream` is the paper's set-up (§4.2.2, ``deploy.py``): held-out clean inputs with a chosen
fraction stamped with the attacker's trigger (labels unchanged); the original poisons every fifth input (20 %,
evenly spaced indices), here the poisoned positions are a seeded random draw of the same fraction (an attacker
does not keep to a period), and several triggers may share the stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError, DataError

__all__ = ["ArrayStream", "StreamBatch", "folder_stream", "npz_stream", "open_stream", "simulated_stream"]


@dataclass(frozen=True)
class StreamBatch:
    """A batch of stream inputs: canonical images, their names, and the ground truth where it is known."""

    x: np.ndarray
    sources: list[str]
    labels: np.ndarray | None = None
    triggered: np.ndarray | None = None


class ArrayStream:
    """Inputs held in memory, served in order in batches of ``batch_size``.

    Example:
        >>> import numpy as np
        >>> s = ArrayStream(np.zeros((5, 2, 2, 1), "float32"), batch_size=2)
        >>> [len(b.x) for b in s], len(s), s.batches
        ([2, 2, 1], 5, 3)
    """

    def __init__(self, x: np.ndarray, *, sources: Sequence[str] | None = None, labels: np.ndarray | None = None,
                 triggered: np.ndarray | None = None, batch_size: int = 64) -> None:
        from kerasbd.validation import check_images

        self.x = check_images(x, name="stream inputs")
        n = len(self.x)
        self.sources = list(sources) if sources is not None else [f"stream[{i}]" for i in range(n)]
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.triggered = None if triggered is None else np.asarray(triggered, bool)
        for name, values in (("sources", self.sources), ("labels", self.labels), ("triggered", self.triggered)):
            if values is not None and len(values) != n:
                raise ConfigError(f"the stream has {n} inputs but {len(values)} {name}.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def batches(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[StreamBatch]:
        for i in range(0, len(self.x), self.batch_size):
            s = slice(i, i + self.batch_size)
            yield StreamBatch(self.x[s], self.sources[s], None if self.labels is None else self.labels[s],
                              None if self.triggered is None else self.triggered[s])


def simulated_stream(x: np.ndarray, y: np.ndarray, backdoors: Sequence[Any], *, poison_fraction: float = 0.2, seed: int = 0,
                     batch_size: int = 64) -> ArrayStream:
    """Clean inputs with ``poison_fraction`` of them triggered (the triggers of ``backdoors`` in turn), shuffled.

    Example:
        >>> import numpy as np
        >>> from kerasbd.attacks import from_spec
        >>> backdoors = from_spec({"trigger": {"type": "patch", "size": [2, 2], "position": "bottom-right", "value": 1.0},
        ...                 "target": {"type": "all-to-one", "label": 0}})
        >>> s = simulated_stream(np.zeros((10, 6, 6, 1), "float32"), np.arange(10) % 3, backdoors, poison_fraction=0.3)
        >>> int(s.triggered.sum()), float(s.x[s.triggered][:, 4:, 4:].min()), float(s.x[~s.triggered].max())
        (3, 1.0, 0.0)
    """
    from kerasbd.validation import check_dataset

    x, y = check_dataset(x, y, name="stream data")
    if not 0.0 <= poison_fraction <= 1.0:
        raise ConfigError(f"poison_fraction must be in [0, 1], got {poison_fraction}.")
    if poison_fraction > 0 and not backdoors:
        raise ConfigError("a simulated stream with triggered inputs needs the attacker's trigger (--trigger).")
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(x))
    x, y = x[order].copy(), y[order]
    n_poison = int(round(poison_fraction * len(x)))
    poisoned = np.zeros(len(x), bool)
    poisoned[rng.choice(len(x), n_poison, replace=False)] = True
    idx = np.flatnonzero(poisoned)
    for k, backdoor in enumerate(backdoors):
        part = idx[k :: len(backdoors)]
        if len(part):
            x[part] = backdoor.trigger.apply(x[part], rng)
    return ArrayStream(x, sources=[f"sim[{i}]" for i in order], labels=y, triggered=poisoned, batch_size=batch_size)


def folder_stream(directory: str | os.PathLike, image_shape: Sequence[int], *, batch_size: int = 64) -> ArrayStream:
    """The image files of ``directory`` (not recursive, sorted by name), read at the model's ``image_shape``.

    Images are never resized: a file of another size is refused with its name.
    """
    import cv2

    from kerasbd.data.loaders import IMAGE_EXTENSIONS

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(f"stream folder {root} does not exist or is not a folder.")
    h, w, c = (int(s) for s in image_shape)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{root}: no image files with extensions {IMAGE_EXTENSIONS}.")
    images = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{f}: cannot decode the image (corrupt or unsupported format).")
        img = img[..., None] if c == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.shape != (h, w, c):
            raise DataError(f"{f}: image of shape {img.shape}, the model takes {(h, w, c)}; streams are not resized.")
        images.append(img)
    return ArrayStream(np.stack(images), sources=[f.name for f in files], batch_size=batch_size)


def npz_stream(path: str | os.PathLike, *, batch_size: int = 64) -> ArrayStream:
    """An ``.npz`` of inputs (key ``x``, ``x_test``, ``images`` or ``data``); ``y`` / ``labels`` and ``triggered``
    are used as ground truth when present. Pickled objects are never read."""
    import zipfile

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"stream file {p} does not exist.")
    try:
        with np.load(p, allow_pickle=False) as archive:
            keys = archive.files
            x_key = next((k for k in ("x", "x_test", "images", "data") if k in keys), None)
            if x_key is None:
                raise DataError(f"{p}: no inputs found; expected a key x, x_test, images or data, the file holds {keys}.")
            y_key = next((k for k in ("y", "y_test", "labels", "label") if k in keys), None)
            x = archive[x_key]
            labels = archive[y_key] if y_key else None
            triggered = archive["triggered"] if "triggered" in keys else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p} is not a readable .npz archive (truncated, corrupt, or holds pickled objects): {exc}") from exc
    return ArrayStream(x, sources=[f"{p.name}[{i}]" for i in range(len(x))], labels=labels, triggered=triggered, batch_size=batch_size)


def open_stream(source: str | os.PathLike, image_shape: Sequence[int], *, batch_size: int = 64) -> ArrayStream:
    """A folder of images or an ``.npz`` file, by what ``source`` is."""
    p = Path(source).expanduser()
    if p.is_dir():
        return folder_stream(p, image_shape, batch_size=batch_size)
    if p.suffix.lower() == ".npz":
        return npz_stream(p, batch_size=batch_size)
    raise DataError(f"stream {p}: give a folder of images or an .npz file (or --simulate with --test and --trigger).")
