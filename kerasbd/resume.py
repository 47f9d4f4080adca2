"""One resume store for every long loop: a folder of finished work, tied to the settings that produced it.

A :class:`ResumeStore` is opened on a folder with the *settings* of a run (configuration, seed, and fingerprints
of the model and data). One rule everywhere:

- the same settings resume: items saved earlier are read back instead of recomputed;
- other settings, or a folder whose record cannot be read, raise :class:`~kerasbd.errors.ConfigError` naming
  the settings that differ (or the unreadable file) — nothing is silently retrained or overwritten;
- ``restart=True`` discards what the folder holds and starts afresh.

Items are JSON documents, NumPy arrays (``.npz``) or Keras weights, each written atomically, so a run killed at
any moment leaves either the previous version of an item or the new one.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> store = ResumeStore(folder, {"steps": 10, "seed": 0})
    >>> store.save_json("cell_0", {"acc": 0.9})
    >>> ResumeStore(folder, {"steps": 10, "seed": 0}).load_json("cell_0")
    {'acc': 0.9}
    >>> ResumeStore(folder, {"steps": 20, "seed": 0})
    Traceback (most recent call last):
    ...
    kerasbd.errors.ConfigError: ...differs in: steps (saved 10, now 20)...
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.io import atomic_path, to_jsonable, write_json

__all__ = ["ResumeStore", "fingerprint", "open_store"]

_MANIFEST = "settings.json"
_KEY = re.compile(r"^[A-Za-z0-9._=-]+$")


def fingerprint(*values: Any) -> str:
    """Short SHA-256 of arrays (shape, dtype and bytes) and JSON-able values, in order.

    Example:
        >>> fingerprint(np.zeros(3)) == fingerprint(np.zeros(3)), fingerprint(np.zeros(3)) == fingerprint(np.ones(3))
        (True, False)
    """
    h = hashlib.sha256()
    for v in values:
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(to_jsonable(v), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[str] = []
        for k in sorted(set(saved) | set(now), key=str):
            out += _differences(saved.get(k), now.get(k), f"{prefix}{k}.")
        return out
    return [] if saved == now else [f"{prefix[:-1] or 'settings'} (saved {saved!r}, now {now!r})"]


class ResumeStore:
    """A checkpoint folder bound to one run's settings (see the module docstring for the rule).

    Args:
        directory: the folder (created when missing).
        settings: JSON-able description of everything that determines the results (configuration, seed,
            :func:`fingerprint` of the model weights and the data).
        restart: discard whatever the folder holds instead of resuming from it.
    """

    def __init__(self, directory: str | os.PathLike, settings: dict[str, Any], *, restart: bool = False) -> None:
        self.dir = Path(directory)
        self.settings = json.loads(json.dumps(to_jsonable(settings)))
        manifest = self.dir / _MANIFEST
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        if manifest.exists():
            try:
                saved = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConfigError(f"checkpoint {manifest} cannot be read ({exc}); pass restart (--restart) to discard it.") from None
            diff = _differences(saved, self.settings)
            if diff:
                raise ConfigError(
                    f"checkpoint folder {self.dir} belongs to another run; it differs in: {'; '.join(diff)}. "
                    "Use another checkpoint folder, or pass restart (--restart) to discard it."
                )
        elif self.dir.exists() and any(self.dir.iterdir()):
            raise ConfigError(f"{self.dir} is not empty and is not a kerasbd checkpoint folder; choose an empty or new folder.")
        else:
            write_json(manifest, self.settings)

    def _path(self, key: str, suffix: str) -> Path:
        if not _KEY.match(key):
            raise ConfigError(f"checkpoint item name {key!r} may only use letters, digits and . _ = -")
        return self.dir / f"{key}{suffix}"

    def _read_error(self, path: Path, exc: Exception) -> ConfigError:
        return ConfigError(f"checkpoint item {path} cannot be read ({exc}); pass restart (--restart) to discard the folder.")

    def has(self, key: str) -> bool:
        """Whether item ``key`` was saved (in any of the three forms)."""
        return any(self._path(key, s).exists() for s in (".json", ".npz", ".weights.h5"))

    def remove(self, key: str) -> None:
        """Delete item ``key`` (all its forms), e.g. a superseded per-epoch checkpoint."""
        for suffix in (".json", ".npz", ".weights.h5"):
            self._path(key, suffix).unlink(missing_ok=True)

    def save_json(self, key: str, obj: Any) -> None:
        write_json(self._path(key, ".json"), obj)

    def load_json(self, key: str) -> Any:
        """The JSON item ``key``, or None when it was never saved."""
        path = self._path(key, ".json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._read_error(path, exc) from None

    def save_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self._path(key, ".npz")) as tmp:
            np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle

    def load_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays of item ``key`` (no pickled objects are read), or None when it was never saved."""
        path = self._path(key, ".npz")
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise self._read_error(path, exc) from None

    def save_weights(self, key: str, model: Any) -> None:
        with atomic_path(self._path(key, ".weights.h5"), suffix=".weights.h5") as tmp:
            model.save_weights(tmp)

    def load_weights(self, key: str, model: Any) -> None:
        """Load item ``key``'s weights into ``model`` (same architecture as when saved)."""
        path = self._path(key, ".weights.h5")
        try:
            model.load_weights(path)
        except (OSError, ValueError) as exc:
            raise self._read_error(path, exc) from None


def open_store(directory: str | os.PathLike | None, settings: dict[str, Any], *, restart: bool = False) -> ResumeStore | None:
    """A :class:`ResumeStore` on ``directory``, or None when no directory is given (no checkpoints)."""
    return None if directory is None or directory == "" else ResumeStore(directory, settings, restart=restart)
