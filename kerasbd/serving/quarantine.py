"""A durable, embedded store of quarantined inputs (NNoculation's deployment stage).

In deployment NNoculation runs the suspect BadNet and the pre-deployment GoodNet side by side; an input on which
their labels differ is *quarantined*. Once enough of them are collected (N=200 in the paper) a CycleGAN learns
to add the trigger to clean images from them. :class:`QuarantineStore` keeps those inputs on disk, in one SQLite
file that several serving processes can write at once, and hands them back as arrays (:meth:`QuarantineStore.export`)
or as an ``.npz`` file (:meth:`QuarantineStore.export_npz`).

Design, and why:

- **SQLite, stdlib only.** Embedded (no server to run next to each model), one file to copy, no new dependency,
  and it needs neither TensorFlow nor Keras, so a serving process or a test subprocess starts fast.
- **WAL journal.** Readers (an export, a dashboard) never block the writers and the writers never block them;
  concurrent writers queue on SQLite's single write lock.
- **``synchronous=FULL``.** A transaction is on disk when ``add`` returns. A killed process never loses a
  committed transaction in any mode; with WAL and ``NORMAL`` a *power loss* can still roll back the last few
  commits, because the WAL is not synced at each commit. ``FULL`` syncs it, and a quarantined input is rare and
  small enough that one fsync per batch is cheap.
- **One ``BEGIN IMMEDIATE`` transaction per batch.** The write lock is taken when the transaction starts, so a
  writer that has to wait does so inside SQLite's busy handler (``timeout`` seconds, 30 by default) instead of
  failing half-way with ``SQLITE_BUSY`` when a read turns into a write. The shape check, the bound, the inserts
  and the dropping of old rows all happen in it, so a batch is stored whole or not at all. Nothing is retried
  by hand: a writer that still cannot get the lock after ``timeout`` raises :class:`QuarantineError` saying
  that nothing of the batch was stored; an entry is never lost silently.
- **A bound.** ``max_entries`` rows at most. ``policy="drop-oldest"`` (the default) deletes the oldest rows in
  the insert's own transaction, so the file never holds more than the bound, and counts them (``stats()["dropped"]``);
  ``policy="reject"`` refuses a batch that would not fit (:class:`QuarantineFullError`), storing none of it.
  A batch larger than the whole bound is refused under either policy. Ids come from ``AUTOINCREMENT``, so they
  only ever grow, even after old rows were dropped, and ``since_id`` reads stay correct.
- **Integrity.** Each row keeps the sha256 of its image's canonical bytes (C-contiguous little-endian float32,
  exactly the stored blob); every read checks it (:class:`QuarantineCorruptError` names the row).
- **Only our files.** A path that holds something else (not SQLite, SQLite without this schema, a newer schema
  version) raises :class:`NotAQuarantineStoreError` before anything is written to it. An empty (0-byte) file
  counts as a new store, which is also how two processes creating the same store at once agree.

A store object holds one SQLite connection and belongs to the process and thread that opened it: every serving
process (and every thread) opens its own :class:`QuarantineStore` on the same path. A connection must not cross
a ``fork``; a store used in a child process raises :class:`QuarantineError` rather than risk the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError, DataError, KerasBDError
from kerasbd.io import atomic_path
from kerasbd.validation import check_images

__all__ = [
    "QuarantineStore",
    "QuarantinedSet",
    "QuarantineError",
    "QuarantineFullError",
    "QuarantineCorruptError",
    "NotAQuarantineStoreError",
    "image_checksum",
    "SCHEMA_VERSION",
    "POLICIES",
]

#: The schema this module writes; a store with a higher version is refused (written by a newer kerasbd).
SCHEMA_VERSION = 1
#: What happens when a batch would take the store past ``max_entries``.
POLICIES = ("drop-oldest", "reject")

_FORMAT = "kerasbd-quarantine"  # meta 'format': tells our files from any other SQLite database
_SQLITE_HEADER = b"SQLite format 3\x00"
_DTYPE = np.dtype("<f4")  # canonical bytes: little-endian float32, whatever the host's byte order

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # AUTOINCREMENT: an id is never reused, whatever was deleted, so a since_id reader never misses or re-reads a row
    "CREATE TABLE entries ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " time REAL NOT NULL,"
    " badnet_label INTEGER NOT NULL,"
    " goodnet_label INTEGER NOT NULL,"
    " model_version TEXT NOT NULL,"
    " checksum TEXT NOT NULL,"
    " shape TEXT NOT NULL,"
    " image BLOB NOT NULL,"
    " source TEXT)",
    "CREATE INDEX entries_model_version ON entries (model_version, id)",
)


class QuarantineError(KerasBDError):
    """A quarantine store cannot do what was asked (closed, used across a fork, locked past its timeout)."""


class QuarantineFullError(QuarantineError):
    """A batch does not fit under ``max_entries`` (``policy="reject"``, or a batch larger than the bound)."""


class QuarantineCorruptError(QuarantineError, ValueError):
    """A stored row no longer matches its checksum, length or shape."""


class NotAQuarantineStoreError(QuarantineError, OSError):
    """A path holds a file that is not a kerasbd quarantine store (or one of a newer schema); it is left untouched."""


@dataclass(frozen=True, eq=False)
class QuarantinedSet:
    """Quarantined inputs read back from a store, in id order (oldest first).

    Attributes:
        x: float32 images (N, H, W, C), exactly as they were added.
        ids: int64 row ids (increasing).
        badnet_labels: int64 labels the BadNet (the deployed, suspect model) gave.
        goodnet_labels: int64 labels the GoodNet gave.
        times: float64 UTC epoch seconds at which each input was quarantined.
        model_versions: unicode array, the model version each input was quarantined under.
        checksums: unicode array, sha256 hex of each image's canonical bytes.
        sources: unicode array, each input's free-text source ('' where none was given).
    """

    x: np.ndarray
    ids: np.ndarray
    badnet_labels: np.ndarray
    goodnet_labels: np.ndarray
    times: np.ndarray
    model_versions: np.ndarray
    checksums: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def image_checksum(image: np.ndarray) -> str:
    """sha256 hex of an image's canonical bytes (C-contiguous little-endian float32), as stored per row."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=_DTYPE).tobytes()).hexdigest()


class QuarantineStore:
    """A bounded, durable SQLite store of the inputs a BadNet/GoodNet ensemble disagreed on.

    Args:
        path: the store's file (created with its parent directories when missing).
        max_entries: the most rows the store holds (see ``policy``).
        policy: ``"drop-oldest"`` deletes the oldest rows in the insert's transaction and counts them;
            ``"reject"`` raises :class:`QuarantineFullError` for a batch that would not fit and stores none of it.
        timeout: seconds a writer waits for another process's write lock before :meth:`add` gives up (raising).

    The constructor takes configuration only (:meth:`get_config` returns it). A store object belongs to one
    process and thread; each serving process opens its own on the same path.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "serving", "quarantine.db")
        >>> images = np.random.default_rng(0).random((3, 4, 4, 1), dtype=np.float32)
        >>> with QuarantineStore(path, max_entries=2) as store:
        ...     store.add(images[:2], [7, 7], [1, 2], model_version="v1", sources=["a.png", "b.png"])
        ...     store.add(images[2], 7, 3, model_version="v2")  # one image; the oldest row is dropped
        ...     data = store.export()
        ...     stats = store.stats()
        [1, 2]
        [3]
        >>> data.ids.tolist(), data.goodnet_labels.tolist(), data.model_versions.tolist(), bool(np.array_equal(data.x, images[1:]))
        ([2, 3], [2, 3], ['v1', 'v2'], True)
        >>> stats["entries"], stats["dropped"], stats["image_shape"], stats["versions"]
        (2, 1, (4, 4, 1), {'v1': 1, 'v2': 1})
        >>> with QuarantineStore(path, max_entries=2, policy="reject") as store:
        ...     store.add(images[0], 7, 1, model_version="v2")
        Traceback (most recent call last):
        ...
        kerasbd.serving.quarantine.QuarantineFullError: ...: a batch of 1 would take the store past max_entries=2 by 1 (policy 'reject'); ...
    """

    def __init__(self, path: str | os.PathLike, *, max_entries: int = 10_000, policy: str = "drop-oldest", timeout: float = 30.0) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, (int, np.integer)) or max_entries < 1:
            raise ConfigError(f"max_entries must be a positive integer, got {max_entries!r}.")
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {list(POLICIES)}, got {policy!r}.")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout < 0:
            raise ConfigError(f"timeout must be a non-negative number of seconds, got {timeout!r}.")
        self.path = Path(path).expanduser()
        self.max_entries, self.policy, self.timeout = int(max_entries), policy, float(timeout)
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = self._open()

    # -- opening ---------------------------------------------------------------------------------------------

    def _not_ours(self, why: str) -> NotAQuarantineStoreError:
        return NotAQuarantineStoreError(f"{self.path} is not a kerasbd quarantine store ({why}); it was left untouched, choose another path.")

    def _open(self) -> sqlite3.Connection:
        # Look at the bytes before SQLite does anything with the file: a file that is not SQLite is never opened.
        existed = self.path.exists()
        if existed and not self.path.is_file():
            raise self._not_ours("not a regular file")
        if existed and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                if f.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                    raise self._not_ours("not an SQLite database")
            new = False
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = True  # missing or 0-byte: ours to create (another process may be creating it right now)
        # isolation_level=None: no implicit transactions, every write goes through BEGIN IMMEDIATE below.
        # sqlite3's timeout is SQLite's busy_timeout: how long to wait for another connection's lock.
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise QuarantineError(f"{self.path}: cannot open the quarantine store: {exc}") from exc
        try:
            tables = self._tables(conn)
            if not tables:
                if not new:
                    raise self._not_ours("an SQLite database without the quarantine schema")
                self._create(conn)
                tables = self._tables(conn)
            self._check_schema(conn, tables)
            # Persistent in the file; a no-op when it is already WAL. Only ever done to a file checked to be ours.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QuarantineError(f"{self.path}: SQLite refused WAL journal mode (got {mode!r}); is the file on a network file system?")
            # Per connection. FULL, not NORMAL: with WAL, NORMAL can lose the last commits on power loss, FULL cannot.
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as exc:  # locked past the timeout, I/O, permissions: the file may well be ours
            conn.close()
            raise QuarantineError(f"{self.path}: cannot open the quarantine store (waited up to {self.timeout:g} s for locks): {exc}") from exc
        except sqlite3.DatabaseError as exc:  # 'file is not a database', 'malformed': SQLite's own header checks
            conn.close()
            raise self._not_ours(f"SQLite: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> set[str]:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()
        return {str(r[0]) for r in rows}

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._tables(conn):  # re-checked under the write lock: another process may have created it first
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("format", _FORMAT), ("schema_version", str(SCHEMA_VERSION)), ("dropped", "0"), ("created", repr(time.time()))],
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection, tables: set[str]) -> None:
        if not {"meta", "entries"} <= tables:
            raise self._not_ours(f"an SQLite database with tables {sorted(tables)}")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != _FORMAT:
            raise self._not_ours(f"its meta table has format {meta.get('format')!r}, not {_FORMAT!r}")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._not_ours(f"unreadable schema version {meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise NotAQuarantineStoreError(
                f"{self.path} is a quarantine store of schema version {version}, newer than this kerasbd reads ({SCHEMA_VERSION}); "
                "upgrade kerasbd to read it (the file was left untouched)."
            )

    # -- configuration and lifetime ------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments: ``QuarantineStore(**store.get_config())`` opens the same store the same way."""
        return {"path": str(self.path), "max_entries": self.max_entries, "policy": self.policy, "timeout": self.timeout}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QuarantineStore:
        """Open a store from :meth:`get_config`'s output."""
        return cls(**config)

    def close(self) -> None:
        """Close the connection (idempotent). Every committed batch is already on disk."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> QuarantineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"max_entries={self.max_entries}, policy={self.policy!r}"
        return f"QuarantineStore({str(self.path)!r}, {state})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QuarantineError(f"the quarantine store {self.path} is closed; open a new QuarantineStore.")
        if os.getpid() != self._pid:  # an SQLite connection must not cross fork(): it would corrupt locks and the WAL
            raise QuarantineError(
                f"the quarantine store {self.path} was opened in process {self._pid} and used in process {os.getpid()}; "
                "open a QuarantineStore in each process."
            )
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one snapshot (WAL readers do not wait for writers)."""
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------------------

    def add(
        self,
        images: np.ndarray,
        badnet_labels: Sequence[int] | np.ndarray | int,
        goodnet_labels: Sequence[int] | np.ndarray | int,
        *,
        model_version: str,
        sources: Sequence[str | None] | None = None,
        times: Sequence[float] | np.ndarray | None = None,
    ) -> list[int]:
        """Quarantine a batch of inputs in one transaction and return the new rows' ids (increasing).

        Args:
            images: (N, H, W, C), or one image (H, W, C); float in [0, 1] or uint8 (divided by 255), the canonical
                kerasbd form. Every image in a store has the shape of the first one added.
            badnet_labels: N integer labels from the BadNet (a single int for a single image).
            goodnet_labels: N integer labels from the GoodNet.
            model_version: the deployed model's version (non-empty text).
            sources: N optional free-text sources (file name, stream index) or None.
            times: N UTC epoch seconds; default now.

        Raises:
            DataError: malformed images, labels, sources or times, or images of another shape than the store's.
            QuarantineFullError: under ``policy="reject"`` the batch would exceed ``max_entries``, or the batch alone
                is larger than ``max_entries``; nothing of it is stored.
            QuarantineError: the write lock was not obtained within ``timeout`` (or SQLite failed); nothing of the
                batch is stored.
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        x = check_images(x, name="quarantined images")
        n = x.shape[0]
        bad = _labels(badnet_labels, n, "badnet_labels")
        good = _labels(goodnet_labels, n, "goodnet_labels")
        if not isinstance(model_version, str) or not model_version:
            raise DataError(f"model_version must be a non-empty string, got {model_version!r}.")
        src = _sources(sources, n)
        when = _times(times, n)
        if n > self.max_entries:
            raise QuarantineFullError(
                f"{self.path}: a batch of {n} entries is larger than max_entries={self.max_entries}; "
                "nothing was stored, add it in smaller batches or raise max_entries."
            )
        shape = tuple(int(s) for s in x.shape[1:])
        shape_text = json.dumps(list(shape))
        x = np.ascontiguousarray(x, dtype=_DTYPE)
        blobs = [x[i].tobytes() for i in range(n)]
        rows = [
            (float(when[i]), int(bad[i]), int(good[i]), model_version, hashlib.sha256(blobs[i]).hexdigest(), shape_text, blobs[i], src[i])
            for i in range(n)
        ]
        conn = self._connection()
        try:
            # IMMEDIATE: take the write lock now, waiting up to `timeout` in SQLite's busy handler.
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise QuarantineError(
                f"{self.path}: could not start a write within {self.timeout:g} s ({exc}); none of the {n} entries was stored."
            ) from exc
        try:
            ids = self._insert(conn, shape, shape_text, rows)
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise QuarantineError(f"{self.path}: the write failed ({exc}); none of the {n} entries was stored.") from exc
            raise
        return ids

    def _insert(self, conn: sqlite3.Connection, shape: tuple[int, ...], shape_text: str, rows: list[tuple[Any, ...]]) -> list[int]:
        """The body of :meth:`add`'s transaction: shape, bound, inserts, drops."""
        stored = conn.execute("SELECT value FROM meta WHERE key = 'image_shape'").fetchone()
        if stored is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('image_shape', ?)", (shape_text,))
        elif tuple(json.loads(stored[0])) != shape:
            raise DataError(f"{self.path}: images of shape {shape} cannot join a store of images of shape {tuple(json.loads(stored[0]))}.")
        n = len(rows)
        excess = int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]) + n - self.max_entries
        if excess > 0:
            if self.policy == "reject":
                raise QuarantineFullError(
                    f"{self.path}: a batch of {n} would take the store past max_entries={self.max_entries} by {excess} (policy 'reject'); "
                    "nothing was stored, export and clear the store or raise max_entries."
                )
            # excess <= the rows already stored, since a batch is at most max_entries: only old rows go
            conn.execute("DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY id LIMIT ?)", (excess,))
            conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE key = 'dropped'", (excess,))
        ids = []
        for row in rows:
            cur = conn.execute(
                "INSERT INTO entries (time, badnet_label, goodnet_label, model_version, checksum, shape, image, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            assert cur.lastrowid is not None
            ids.append(int(cur.lastrowid))
        return ids

    # -- reading -------------------------------------------------------------------------------------------

    def count(self, model_version: str | None = None, since_id: int | None = None) -> int:
        """Rows stored, optionally only those of ``model_version`` and/or with an id greater than ``since_id``."""
        where, params = _where(model_version, since_id)
        return int(self._connection().execute(f"SELECT COUNT(*) FROM entries{where}", params).fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    def versions(self) -> list[str]:
        """The model versions present, in the order they first appear."""
        rows = self._connection().execute("SELECT model_version FROM entries GROUP BY model_version ORDER BY MIN(id)").fetchall()
        return [str(r[0]) for r in rows]

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """(H, W, C) of the store's images, None before the first :meth:`add`."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'image_shape'").fetchone()
        return None if row is None else tuple(int(s) for s in json.loads(row[0]))

    def stats(self) -> dict[str, Any]:
        """A summary: entries, dropped (by ``drop-oldest``, ever), bound, policy, image shape, rows per version, ids, path."""
        with self._read() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            entries, first, last = conn.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM entries").fetchone()
            per_version = conn.execute("SELECT model_version, COUNT(*) FROM entries GROUP BY model_version ORDER BY MIN(id)").fetchall()
        return {
            "path": str(self.path),
            "entries": int(entries),
            "dropped": int(meta.get("dropped", 0)),
            "max_entries": self.max_entries,
            "policy": self.policy,
            "image_shape": tuple(json.loads(meta["image_shape"])) if "image_shape" in meta else None,
            "versions": {str(v): int(c) for v, c in per_version},
            "first_id": first,
            "last_id": last,
            "schema_version": int(meta["schema_version"]),
        }

    def export(self, model_version: str | None = None, since_id: int | None = None, limit: int | None = None) -> QuarantinedSet:
        """The quarantined inputs as arrays, oldest first, each row's checksum verified.

        Args:
            model_version: only this version's rows.
            since_id: only rows with a larger id (pass the last id already consumed to read what is new).
            limit: at most this many rows (the oldest that match).

        Raises:
            QuarantineCorruptError: a row's image does not match its checksum, length or shape (the message names it).
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
            raise DataError(f"limit must be a non-negative integer or None, got {limit!r}.")
        where, params = _where(model_version, since_id)
        sql = f"SELECT id, time, badnet_label, goodnet_label, model_version, checksum, shape, image, source FROM entries{where} ORDER BY id"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, int(limit)]
        with self._read() as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key = 'image_shape'").fetchone()
            rows = conn.execute(sql, params).fetchall()
        shape = tuple(int(s) for s in json.loads(stored[0])) if stored is not None else (0, 0, 0)
        x = np.empty((len(rows), *shape), dtype=np.float32)
        nbytes = int(np.prod(shape)) * _DTYPE.itemsize
        for i, (row_id, _, _, _, _, checksum, row_shape, blob, _) in enumerate(rows):
            if tuple(json.loads(row_shape)) != shape or len(blob) != nbytes:
                raise QuarantineCorruptError(
                    f"{self.path}: quarantined row {row_id} is corrupt: shape {row_shape} with {len(blob)} bytes, "
                    f"expected {list(shape)} with {nbytes}; delete the row or restore the store from a backup."
                )
            actual = hashlib.sha256(blob).hexdigest()
            if actual != checksum:
                raise QuarantineCorruptError(
                    f"{self.path}: quarantined row {row_id} is corrupt: its image's sha256 {actual[:16]}... does not match "
                    f"the recorded {str(checksum)[:16]}...; delete the row or restore the store from a backup."
                )
            x[i] = np.frombuffer(blob, dtype=_DTYPE).reshape(shape)
        return QuarantinedSet(
            x=x,
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            times=np.array([r[1] for r in rows], dtype=np.float64),
            badnet_labels=np.array([r[2] for r in rows], dtype=np.int64),
            goodnet_labels=np.array([r[3] for r in rows], dtype=np.int64),
            model_versions=np.array([str(r[4]) for r in rows], dtype=np.str_),
            checksums=np.array([str(r[5]) for r in rows], dtype=np.str_),
            sources=np.array(["" if r[8] is None else str(r[8]) for r in rows], dtype=np.str_),
        )

    def export_npz(
        self, path: str | os.PathLike, model_version: str | None = None, since_id: int | None = None, limit: int | None = None
    ) -> Path:
        """Write :meth:`export`'s rows to an ``.npz`` file atomically (and synced) and return its path.

        Keys: ``x``, ``ids``, ``badnet_labels``, ``goodnet_labels``, ``times``, ``model_versions``, ``checksums``,
        ``sources`` (text as NumPy unicode arrays, so ``np.load(..., allow_pickle=False)`` reads it), and ``y``, a copy
        of ``goodnet_labels``: with ``x``/``y`` the file is what :func:`kerasbd.data.load_npz` (and so ``--data`` /
        ``--clean``) reads. ``y`` is the GoodNet's label, NNoculation's best guess at the true class, not ground truth.
        """
        data = self.export(model_version=model_version, since_id=since_id, limit=limit)
        target = Path(path).expanduser()
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a path without it
                np.savez(
                    f, x=data.x, y=data.goodnet_labels, ids=data.ids, badnet_labels=data.badnet_labels, goodnet_labels=data.goodnet_labels,
                    times=data.times, model_versions=data.model_versions, checksums=data.checksums, sources=data.sources,
                )
                f.flush()
                os.fsync(f.fileno())  # the rename must not publish a file whose bytes are still in the page cache
        return target


def _labels(labels: Any, n: int, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 0:
        y = y.reshape(1)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} must be integer class indices, got dtype {y.dtype}.")
    if y.shape != (n,):
        raise DataError(f"{name} has shape {tuple(y.shape)}; expected ({n},), one label per image.")
    if n and int(y.min()) < 0:
        raise DataError(f"{name} holds the negative label {int(y.min())}; labels are class indices.")
    return y.astype(np.int64)


def _sources(sources: Sequence[str | None] | None, n: int) -> list[str | None]:
    if sources is None:
        return [None] * n
    if isinstance(sources, str):
        sources = [sources]
    src = list(sources)
    if len(src) != n:
        raise DataError(f"sources has {len(src)} entries for {n} images.")
    for s in src:
        if s is not None and not isinstance(s, str):
            raise DataError(f"sources must be strings or None, got {type(s).__name__} {s!r}.")
    return src


def _times(times: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    if times is None:
        return np.full(n, time.time(), dtype=np.float64)  # time.time() is UTC epoch seconds on every platform
    t = np.asarray(times)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.dtype == bool or not np.issubdtype(t.dtype, np.number) or t.shape != (n,):
        raise DataError(f"times must be {n} numbers (UTC epoch seconds), got shape {tuple(t.shape)} and dtype {t.dtype}.")
    t = t.astype(np.float64)
    if not np.isfinite(t).all():
        raise DataError("times holds NaN or infinite values.")
    return t


def _where(model_version: str | None, since_id: int | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if model_version is not None:
        clauses.append("model_version = ?")
        params.append(model_version)
    if since_id is not None:
        if isinstance(since_id, bool) or not isinstance(since_id, (int, np.integer)):
            raise DataError(f"since_id must be an integer row id or None, got {since_id!r}.")
        clauses.append("id > ?")
        params.append(int(since_id))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
