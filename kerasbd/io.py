"""Atomic file output, checksums and progress reporting.

Every file kerasbd writes (results, models, plots, checkpoints) goes through :func:`atomic_path`, so an
interrupted run leaves either the old file or the new one, never half of one, and never touches its inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

__all__ = ["atomic_path", "write_json", "write_text", "sha256_file", "to_jsonable", "Progress"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file keeps ``path``'s suffix (or ``suffix``) because writers such as Keras and matplotlib
    choose the format from it.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()  # writers create the file themselves; some refuse to overwrite
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def to_jsonable(obj: Any) -> Any:
    """Convert NumPy scalars/arrays, paths, tuples and dataclass-like objects into JSON-serialisable values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    return obj


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically and return the path."""
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Progress:
    """A progress bar for long loops (a thin wrapper over ``tqdm``), written to stderr; silent when ``verbose`` is 0.

    ``total`` is the amount of work, counted in units that each take about the same time, so tqdm's estimate
    of the time left (from the recent rate) holds. ``initial`` is work already done, e.g. by an earlier session
    a run resumed from: it counts towards the total but not towards the rate. When the total turns out
    smaller than announced (a loop stops early), :meth:`set_total` lowers it; the time left reaches 0 only when
    the count reaches the total. ``update(n, **info)`` adds ``n`` and shows ``info`` after the bar. Works as a
    context manager (closed on exit).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(3, "demo", stream=out) as p:
        ...     for k in range(3):
        ...         p.update(k=k)
        >>> p.n, "3/3" in out.getvalue(), "k=2" in out.getvalue()
        (3, True, True)
        >>> with Progress(3, "demo", verbose=0) as quiet:
        ...     quiet.update(3)
        >>> quiet.n, quiet.seconds_left
        (3, None)
    """

    def __init__(self, total: int, desc: str, verbose: int = 1, stream: Any = None, *, initial: int = 0, unit: str = "it",
                 mininterval: float = 0.5) -> None:
        self.total, self.desc, self.verbose = int(total), desc, verbose
        self.n = int(initial)
        self._bar = tqdm(total=self.total, desc=desc, initial=self.n, unit=unit, file=stream if stream is not None else sys.stderr,
                         disable=not verbose, mininterval=mininterval, dynamic_ncols=True, leave=True)

    def update(self, n: int = 1, **info: Any) -> None:
        """Add ``n`` units of work done (0 to only refresh ``info``, shown as ``key=value`` after the bar)."""
        self.n += n
        if self._bar.disable:
            return
        if info:
            self._bar.set_postfix(ordered_dict=info, refresh=False)
        self._bar.update(n)

    def set_total(self, total: int) -> None:
        """Change the amount of work (e.g. lower it when part of the planned work is skipped)."""
        self.total = int(total)
        if not self._bar.disable:
            self._bar.total = self.total  # shown at the next update (a refresh now would show a stale rate)

    @property
    def seconds_left(self) -> float | None:
        """tqdm's estimate of the time left in seconds (None while unknown or when silent)."""
        if not self.verbose:
            return None
        d = self._bar.format_dict
        rate = d["rate"] or ((d["n"] - d["initial"]) / d["elapsed"] if d["elapsed"] else None)
        return (d["total"] - d["n"]) / rate if rate else None

    def close(self) -> None:
        """End the bar (leaves its last state on its own line)."""
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
