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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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
    """Minimal progress line for long loops, written to stderr; silent when ``verbose`` is 0.

    Example:
        >>> p = Progress(3, "demo", verbose=0)
        >>> for _ in range(3):
        ...     p.update()
        >>> p.close()
    """

    def __init__(self, total: int, desc: str, verbose: int = 1, stream: Any = None) -> None:
        self.total, self.desc, self.verbose = int(total), desc, verbose
        self.stream = stream or sys.stderr
        self.count = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1, **info: Any) -> None:
        self.count += n
        if not self.verbose:
            return
        now = time.perf_counter()
        if now - self._last < 0.5 and self.count < self.total:
            return
        self._last = now
        elapsed = now - self.start
        eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        self.stream.write(f"\r{self.desc}: {self.count}/{self.total} [{elapsed:.0f}s<{eta:.0f}s] {extra}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.verbose:
            self.stream.write("\n")
            self.stream.flush()
