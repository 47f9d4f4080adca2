"""The quarantine store: a durable, embedded record of the inputs a deployed ensemble quarantined.

SQLite (the standard library's ``sqlite3``), because it is the most widely deployed durable embedded database: one
file, transactions that are atomic across a crash, several processes on one file. The choices that make it safe:

- **WAL journal mode**: readers never block the writer and a writer never blocks readers, so a treatment can
  export while serving processes keep adding; a killed writer leaves a write-ahead log that the next connection
  replays, never a half-written database.
- **``synchronous=FULL``**: every commit is flushed to disk before ``add`` returns. In WAL mode ``NORMAL`` survives
  a killed process too but may lose the last commits on a power cut; an entry ``add`` has reported must stay.
- **``BEGIN IMMEDIATE``** per batch: a writer takes the write lock before reading the bound, so two processes
  cannot both see room for the same slot, and a batch is entirely in the store or not at all. Waiting writers retry
  inside SQLite for ``timeout`` seconds (``busy_timeout``), after which ``add`` raises rather than dropping
  anything silently.
- **A bound** of ``max_entries`` with a documented policy: ``"drop-oldest"`` (default) deletes the oldest entries
  in the same transaction as the insert — the store never exceeds the bound, the newest quarantined inputs (those
  the next treatment needs) are kept, and the number dropped is counted — or ``"reject"``, which refuses a batch
  that does not fit (:class:`QuarantineFullError`) and keeps everything already stored.

Each entry holds the input as float32 bytes with its SHA-256 (of those bytes), the time (UTC seconds), the
BadNet's and the GoodNet's labels, the model version that flagged it and an optional source name. The checksum is
verified on every export. One store holds one image shape, recorded with the schema version on the first insert.
A store object wraps one connection: open one per process (and per thread) on the same path; never share it
across a ``fork``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError, KerasBDError

__all__ = ["POLICIES", "QuarantineFullError", "QuarantineStore", "QuarantinedSet", "checksum"]

SCHEMA_VERSION = 1
POLICIES = ("drop-oldest", "reject")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kerasbd_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    model_version TEXT NOT NULL,
    badnet_label INTEGER NOT NULL,
    goodnet_label INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT,
    image BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_version ON quarantine (model_version, id);
"""


class QuarantineFullError(KerasBDError):
    """A batch does not fit in a store whose policy is ``"reject"``."""


def checksum(image: np.ndarray) -> str:
    """SHA-256 of an image's canonical bytes (C-ordered little-endian float32).

    Example:
        >>> import numpy as np
        >>> checksum(np.zeros((2, 2, 1))) == checksum(np.zeros((2, 2, 1), np.float32)), len(checksum(np.zeros(1)))
        (True, 64)
    """
    return hashlib.sha256(np.ascontiguousarray(image, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True)
class QuarantinedSet:
    """Quarantined inputs as arrays, in the order they were stored."""

    x: np.ndarray
    ids: np.ndarray
    badnet_labels: np.ndarray
    goodnet_labels: np.ndarray
    times: np.ndarray
    model_versions: np.ndarray
    checksums: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class QuarantineStore:
    """Quarantined inputs in the SQLite file ``path`` (created with its folder when missing).

    Args:
        path: the database file.
        max_entries: the most entries the store keeps.
        policy: ``"drop-oldest"`` (keep the newest ``max_entries``) or ``"reject"`` (refuse what does not fit).
        timeout: seconds a writer waits for another process' transaction before ``add`` fails.

    Example:
        >>> import numpy as np, tempfile
        >>> store = QuarantineStore(tempfile.mkdtemp() + "/q.sqlite", max_entries=3)
        >>> store.add(np.zeros((2, 4, 4, 1)), [0, 1], [3, 3], model_version="v0")
        [1, 2]
        >>> store.add(np.ones((2, 4, 4, 1)), [0, 0], [2, 2], model_version="v1")  # over the bound: the oldest goes
        [3, 4]
        >>> len(store), store.count(model_version="v0"), store.stats()["dropped"]
        (3, 1, 1)
        >>> store.export(model_version="v1").x.shape
        (2, 4, 4, 1)
        >>> store.close()
    """

    def __init__(self, path: str | os.PathLike, *, max_entries: int = 10_000, policy: str = "drop-oldest", timeout: float = 30.0) -> None:
        if int(max_entries) != max_entries or max_entries < 1:
            raise ConfigError(f"max_entries must be a positive whole number, got {max_entries!r}.")
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive seconds, got {timeout!r}.")
        self.path, self.max_entries, self.policy, self.timeout = Path(path), int(max_entries), policy, float(timeout)
        self._conn = self._open()

    def get_config(self) -> dict[str, Any]:
        return {"path": str(self.path), "max_entries": self.max_entries, "policy": self.policy, "timeout": self.timeout}

    def _open(self) -> sqlite3.Connection:
        if self.path.exists():
            if not self.path.is_file():
                raise ConfigError(f"quarantine store {self.path} is not a file.")
            with open(self.path, "rb") as f:
                head = f.read(16)
            if head and head != b"SQLite format 3\x00":
                raise ConfigError(f"{self.path} is not a SQLite file, so not a kerasbd quarantine store; choose another path.")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode (isolation_level=None): every transaction is an explicit BEGIN IMMEDIATE ... COMMIT
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{self.path} cannot be read as a SQLite database ({exc}).") from None
        ours = {"kerasbd_meta", "quarantine"}
        if tables and not ours <= tables:
            conn.close()
            raise ConfigError(f"{self.path} is a SQLite database but not a kerasbd quarantine store (tables: "
                              f"{', '.join(sorted(tables - {'sqlite_sequence'}))}); choose another path.")
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        if not tables:
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO kerasbd_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT OR IGNORE INTO kerasbd_meta VALUES ('dropped', '0')")
            conn.execute("COMMIT")
        version = self._meta(conn, "schema_version")
        if version is None or int(version) > SCHEMA_VERSION:
            conn.close()
            raise ConfigError(f"{self.path} is a quarantine store of schema version {version}, newer than this kerasbd's "
                              f"{SCHEMA_VERSION}; upgrade kerasbd to read it.")
        return conn

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM kerasbd_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """The shape of every stored image (None before the first insert)."""
        value = self._meta(self._conn, "image_shape")
        return None if value is None else tuple(int(s) for s in value.split(","))

    def add(self, images: np.ndarray, badnet_labels: Sequence[int] | np.ndarray, goodnet_labels: Sequence[int] | np.ndarray, *,
            model_version: str, sources: Sequence[str] | None = None, times: Sequence[float] | None = None) -> list[int]:
        """Store a batch of quarantined inputs in one transaction; returns their ids (in order)."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or not len(x):
            raise ConfigError(f"quarantined inputs must be a batch (N, H, W, C) or one image (H, W, C), got shape {np.shape(images)}.")
        n = len(x)
        labels = []
        for name, values in (("badnet_labels", badnet_labels), ("goodnet_labels", goodnet_labels)):
            arr = np.asarray(values)
            if arr.shape != (n,) or arr.dtype.kind not in "iu":
                raise ConfigError(f"{name} must be {n} whole numbers (one per input), got shape {arr.shape} of {arr.dtype}.")
            labels.append([int(v) for v in arr])
        for name, seq in (("sources", sources), ("times", times)):
            if seq is not None and len(seq) != n:
                raise ConfigError(f"{len(seq)} {name} for {n} inputs.")
        if not isinstance(model_version, str) or not model_version:
            raise ConfigError("model_version must be a non-empty string (the version of the ensemble that flagged the inputs).")
        now = time.time()
        stamps = [float(t) for t in times] if times is not None else [now] * n
        rows = [(stamps[i], model_version, labels[0][i], labels[1][i], checksum(x[i]), None if sources is None else str(sources[i]),
                 np.ascontiguousarray(x[i], dtype="<f4").tobytes()) for i in range(n)]
        shape = ",".join(str(s) for s in x.shape[1:])
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = self._meta(conn, "image_shape")
            if stored is None:
                conn.execute("INSERT INTO kerasbd_meta VALUES ('image_shape', ?)", (shape,))
            elif stored != shape:
                raise ConfigError(f"this store holds images of shape ({stored}), the batch has ({shape}); use one store per model input shape.")
            count = int(conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])
            excess = count + n - self.max_entries
            if excess > 0 and self.policy == "reject":
                raise QuarantineFullError(f"the quarantine store {self.path} holds {count} of at most {self.max_entries} entries: "
                                          f"a batch of {n} does not fit (policy reject); export and clear it, or raise max_entries.")
            ids = []
            for row in rows:
                cur = conn.execute("INSERT INTO quarantine (time, model_version, badnet_label, goodnet_label, sha256, source, image) "
                                   "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                ids.append(int(cur.lastrowid or 0))
            if excess > 0:  # drop-oldest, within the same transaction: the bound always holds
                conn.execute("DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?)", (excess,))
                conn.execute("UPDATE kerasbd_meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped'", (excess,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ids

    def _where(self, model_version: str | None, since_id: int | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if model_version is not None:
            clauses.append("model_version = ?")
            params.append(model_version)
        if since_id is not None:
            clauses.append("id > ?")
            params.append(int(since_id))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count(self, model_version: str | None = None, since_id: int | None = None) -> int:
        """Entries (of one ``model_version``, after ``since_id``)."""
        where, params = self._where(model_version, since_id)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM quarantine{where}", params).fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    def versions(self) -> list[str]:
        """The model versions that quarantined the stored entries, oldest first."""
        rows = self._conn.execute("SELECT model_version, MIN(id) FROM quarantine GROUP BY model_version ORDER BY MIN(id)")
        return [str(r[0]) for r in rows]

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": len(self), "dropped": int(self._meta(self._conn, "dropped") or 0),
                "max_entries": self.max_entries, "policy": self.policy, "image_shape": self.image_shape,
                "per_version": {v: self.count(model_version=v) for v in self.versions()}}

    def export(self, model_version: str | None = None, since_id: int | None = None, limit: int | None = None) -> QuarantinedSet:
        """The entries (of one ``model_version``, after ``since_id``, the first ``limit``) as arrays; every image's
        checksum is verified."""
        where, params = self._where(model_version, since_id)
        sql = f"SELECT id, time, model_version, badnet_label, goodnet_label, sha256, source, image FROM quarantine{where} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._conn.execute(sql, params).fetchall()
        shape = self.image_shape or (0, 0, 0)
        x = np.empty((len(rows), *shape), np.float32)
        for i, row in enumerate(rows):
            image = np.frombuffer(row[7], dtype="<f4")
            if image.size != int(np.prod(shape)) or hashlib.sha256(row[7]).hexdigest() != row[5]:
                raise ConfigError(f"quarantine entry {row[0]} in {self.path} is corrupt (its image does not match its checksum); "
                                  "export the other entries with since_id, or remove the file.")
            x[i] = image.reshape(shape)
        col = list(zip(*rows, strict=True)) if rows else [()] * 8
        return QuarantinedSet(x=x, ids=np.asarray(col[0], np.int64), times=np.asarray(col[1], np.float64),
                              model_versions=np.asarray(col[2], dtype=str), badnet_labels=np.asarray(col[3], np.int64),
                              goodnet_labels=np.asarray(col[4], np.int64), checksums=np.asarray(col[5], dtype=str),
                              sources=np.asarray(["" if s is None else s for s in col[6]], dtype=str))

    def export_npz(self, path: str | os.PathLike, model_version: str | None = None, since_id: int | None = None) -> Path:
        """Write the entries as an ``.npz`` dataset (``x``, ``y`` = GoodNet's labels, ``badnet_labels``, ``ids``, ``times``,
        ``model_versions``, ``checksums``, ``sources``; no pickled objects), atomically."""
        from kerasbd.io import atomic_path

        data = self.export(model_version, since_id)
        target = Path(path)
        with atomic_path(target) as tmp:
            np.savez(tmp, x=data.x, y=data.goodnet_labels, badnet_labels=data.badnet_labels, ids=data.ids, times=data.times,
                     model_versions=data.model_versions, checksums=data.checksums, sources=data.sources)
        return target

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> QuarantineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
