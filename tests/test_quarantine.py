"""The quarantine store: round trip, checksums, the bound, foreign files, npz export, SIGKILL durability, concurrent writers.

The subprocess tests run real separate processes on one file (what several serving processes do); they wait for
the lines the writers print, never for fixed times.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kerasbd.errors import DataError, KerasBDError
from kerasbd.serving.quarantine import (
    NotAQuarantineStoreError,
    QuarantineCorruptError,
    QuarantinedSet,
    QuarantineError,
    QuarantineFullError,
    QuarantineStore,
    image_checksum,
)

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (6, 5, 3)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def _env() -> dict[str, str]:
    """The environment of a writer subprocess: imports kerasbd from this worktree."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def _readline(proc: subprocess.Popen) -> str:
    """One line of a writer's stdout; a writer that died (or was killed by its watchdog) fails the test."""
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"writer stopped before printing (rc={proc.wait(timeout=30)}): {proc.stderr.read()}")
    return line


def test_round_trip_ids_and_filters(tmp_path: Path) -> None:
    x1, x2 = _images(3, seed=1), _images(2, seed=2)
    path = tmp_path / "nested" / "dir" / "q.db"  # parents are created
    with QuarantineStore(path) as store:
        ids1 = store.add(x1, [5, 5, 5], np.array([0, 1, 2], np.int32), model_version="v1", sources=["a", None, "c"], times=[1.0, 2.0, 3.0])
        ids2 = store.add(x2, [5, 5], [3, 4], model_version="v2")
        assert ids1 == [1, 2, 3] and ids2 == [4, 5]
        assert len(store) == store.count() == 5
        assert store.count(model_version="v1") == 3 and store.count(model_version="v2") == 2
        assert store.count(since_id=3) == 2 and store.count(model_version="v1", since_id=2) == 1
        assert store.versions() == ["v1", "v2"]
        assert store.image_shape == SHAPE

        data = store.export()
        assert isinstance(data, QuarantinedSet) and len(data) == 5
        assert data.x.dtype == np.float32 and data.x.shape == (5, *SHAPE)
        np.testing.assert_array_equal(data.x, np.concatenate([x1, x2]))  # bit-exact
        assert data.ids.tolist() == [1, 2, 3, 4, 5]
        assert data.badnet_labels.tolist() == [5] * 5 and data.goodnet_labels.tolist() == [0, 1, 2, 3, 4]
        assert data.model_versions.tolist() == ["v1"] * 3 + ["v2"] * 2
        assert data.sources.tolist() == ["a", "", "c", "", ""]
        assert data.times[:3].tolist() == [1.0, 2.0, 3.0] and abs(data.times[3] - time.time()) < 60
        expected = [hashlib.sha256(np.ascontiguousarray(im, dtype="<f4").tobytes()).hexdigest() for im in data.x]
        assert data.checksums.tolist() == expected == [image_checksum(im) for im in np.concatenate([x1, x2])]

        assert store.export(model_version="v2").ids.tolist() == [4, 5]
        assert store.export(since_id=1, limit=2).ids.tolist() == [2, 3]
        assert store.export(limit=0).x.shape == (0, *SHAPE)

        stats = store.stats()
        assert stats["entries"] == 5 and stats["dropped"] == 0 and stats["image_shape"] == SHAPE
        assert stats["versions"] == {"v1": 3, "v2": 2} and stats["path"] == str(path) and stats["policy"] == "drop-oldest"
        config = store.get_config()
        assert config == {"path": str(path), "max_entries": 10_000, "policy": "drop-oldest", "timeout": 30.0}

    with QuarantineStore.from_config(config) as reopened:  # persisted; the next id continues
        assert reopened.count() == 5 and reopened.add(x1[0], 1, 2, model_version="v1") == [6]
    with pytest.raises(QuarantineError, match="closed"):
        reopened.count()


def test_add_validates_inputs(tmp_path: Path) -> None:
    with QuarantineStore(tmp_path / "q.db") as store:
        x = _images(2)
        for bad, good, match in [([1.0, 2.0], [0, 1], "integer"), ([1], [0, 1], "shape"), ([1, -1], [0, 1], "negative")]:
            with pytest.raises(DataError, match=match):
                store.add(x, bad, good, model_version="v1")
        with pytest.raises(DataError, match="model_version"):
            store.add(x, [1, 1], [0, 1], model_version="")
        with pytest.raises(DataError, match="sources"):
            store.add(x, [1, 1], [0, 1], model_version="v1", sources=["only one"])
        with pytest.raises(DataError, match=r"\[0, 1\]"):
            store.add(x * 255, [1, 1], [0, 1], model_version="v1")
        assert store.count() == 0 and store.image_shape is None  # nothing half-stored, not even the shape
    with pytest.raises(KerasBDError, match="policy"):
        QuarantineStore(tmp_path / "p.db", policy="keep-newest")


def test_checksum_mismatch_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with QuarantineStore(path) as store:
        store.add(_images(3), [1, 1, 1], [0, 0, 0], model_version="v1")
    raw = sqlite3.connect(path)  # corrupt the file behind the store's back
    blob = bytearray(raw.execute("SELECT image FROM entries WHERE id = 2").fetchone()[0])
    blob[7] ^= 0x01
    with raw:
        raw.execute("UPDATE entries SET image = ? WHERE id = 2", (bytes(blob),))
    raw.close()
    with QuarantineStore(path) as store:
        with pytest.raises(QuarantineCorruptError, match="row 2 is corrupt") as info:
            store.export()
        assert "\n" not in str(info.value)
        assert store.export(limit=1).ids.tolist() == [1]  # rows before it still read


def test_drop_oldest_keeps_the_newest(tmp_path: Path) -> None:
    x = _images(10)
    with QuarantineStore(tmp_path / "q.db", max_entries=4) as store:
        for i in range(0, 10, 3):  # batches of 3, 3, 3, 1
            store.add(x[i : i + 3], [1] * len(x[i : i + 3]), [0] * len(x[i : i + 3]), model_version="v1")
            assert store.count() <= 4
        data = store.export()
        assert data.ids.tolist() == [7, 8, 9, 10]
        np.testing.assert_array_equal(data.x, x[6:])
        assert store.stats()["dropped"] == 6
        with pytest.raises(QuarantineFullError, match="larger than max_entries=4"):
            store.add(_images(5), [1] * 5, [0] * 5, model_version="v1")
        assert store.export().ids.tolist() == [7, 8, 9, 10]


def test_reject_stores_nothing_of_the_batch(tmp_path: Path) -> None:
    with QuarantineStore(tmp_path / "q.db", max_entries=4, policy="reject") as store:
        assert store.add(_images(3), [1, 1, 1], [0, 0, 0], model_version="v1") == [1, 2, 3]
        with pytest.raises(QuarantineFullError, match="max_entries=4") as info:
            store.add(_images(2, seed=9), [1, 1], [0, 0], model_version="v2")
        assert "\n" not in str(info.value)
        assert store.count() == 3 and store.versions() == ["v1"] and store.stats()["dropped"] == 0
        assert store.add(_images(1), [1], [0], model_version="v1") == [4]  # what fits still goes in


def test_shape_mismatch(tmp_path: Path) -> None:
    with QuarantineStore(tmp_path / "q.db") as store:
        store.add(_images(2), [1, 1], [0, 0], model_version="v1")
        with pytest.raises(DataError, match=r"shape \(6, 6, 3\).*shape \(6, 5, 3\)") as info:
            store.add(np.zeros((2, 6, 6, 3), np.float32), [1, 1], [0, 0], model_version="v1")
        assert "\n" not in str(info.value) and store.count() == 2


def test_foreign_files_are_refused_and_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 20)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    impostor = tmp_path / "impostor.db"  # our table names, someone else's meta
    conn = sqlite3.connect(impostor)
    with conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    conn.close()
    for path in (text, other, impostor):
        before = path.read_bytes()
        with pytest.raises(NotAQuarantineStoreError) as info:
            QuarantineStore(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(path.name)) == [path.name]  # no -wal/-shm left


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    QuarantineStore(path).close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(NotAQuarantineStoreError, match="schema version 99.*upgrade kerasbd"):
        QuarantineStore(path)


def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.touch()
    with QuarantineStore(path) as store:
        assert store.add(_images(1), 1, 0, model_version="v1") == [1]


def test_export_npz_is_atomic_and_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kerasbd.data import load_npz

    x = _images(4)
    out = tmp_path / "exports" / "quarantine.npz"
    with QuarantineStore(tmp_path / "q.db") as store:
        store.add(x, [9, 9, 9, 9], [0, 1, 2, 3], model_version="v1", sources=["s0", "s1", "s2", "s3"])
        assert store.export_npz(out) == out
        assert [p.name for p in out.parent.iterdir()] == ["quarantine.npz"]  # the temporary file is gone
        data = store.export()
        with np.load(out, allow_pickle=False) as archive:
            assert {"x", "y", "ids", "badnet_labels", "goodnet_labels", "times", "model_versions", "checksums"} <= set(archive.files)
            np.testing.assert_array_equal(archive["x"], x)
            assert archive["model_versions"].dtype.kind == "U" and archive["model_versions"].tolist() == ["v1"] * 4
            assert archive["checksums"].tolist() == data.checksums.tolist()
            assert archive["ids"].tolist() == [1, 2, 3, 4] and archive["goodnet_labels"].tolist() == [0, 1, 2, 3]
        lx, ly = load_npz(out)
        np.testing.assert_array_equal(lx, x)
        assert ly.tolist() == [0, 1, 2, 3]  # y is the GoodNet's label

        out.write_bytes(b"old")
        store.add(_images(1), 1, 0, model_version="v2")

        def fail(file: object, **arrays: object) -> None:
            file.write(b"half a zip")  # type: ignore[attr-defined]
            raise RuntimeError("disk full")

        with monkeypatch.context() as patch:  # a write that dies half-way leaves the old file
            patch.setattr(np, "savez", fail)
            with pytest.raises(RuntimeError, match="disk full"):
                store.export_npz(out)
        assert out.read_bytes() == b"old" and [p.name for p in out.parent.iterdir()] == ["quarantine.npz"]
        store.export_npz(out, model_version="v2")
        with np.load(out, allow_pickle=False) as archive:
            assert archive["ids"].tolist() == [5]


def test_import_is_light() -> None:
    code = "import sys, kerasbd.serving.quarantine; print(sorted(m for m in ('tensorflow', 'keras', 'h5py', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from kerasbd.serving.quarantine import QuarantineStore

    path, tag, batches, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = QuarantineStore(path, max_entries=1_000_000, timeout=60.0)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(1)
    rng = np.random.default_rng()
    b = 0
    while batches < 0 or b < batches:  # batches < 0: until killed
        x = rng.random((size, 6, 5, 3), dtype=np.float32)
        ids = store.add(x, [1] * size, [0] * size, model_version=tag, sources=[f"{tag}-{b}-{j}" for j in range(size)])
        print(" ".join(map(str, ids)), flush=True)  # only after add returned, i.e. after the commit
        b += 1
    store.close()
    print("done", flush=True)
    """
)


def _writer(path: Path, tag: str, batches: int, size: int, watchdog: float = 300.0) -> subprocess.Popen:
    """Start a writer; a watchdog kills it after ``watchdog`` s, so a hung writer fails the test instead of hanging it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), tag, str(batches), str(size)],
        env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    timer = threading.Timer(watchdog, proc.kill)
    timer.daemon = True
    timer.start()
    return proc


def test_sigkill_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    proc = _writer(path, "killed", -1, 3)
    try:
        assert _readline(proc).strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        printed = [int(i) for _ in range(40) for i in _readline(proc).split()]
        os.kill(proc.pid, signal.SIGKILL)  # while it is in its next add
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    with QuarantineStore(path) as store:
        stored = set(store.export().ids.tolist())
        assert set(printed) <= stored and len(stored) % 3 == 0  # whole batches only
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        new = store.add(_images(2), [1, 1], [0, 0], model_version="after")
        assert min(new) > max(stored) and store.count() == len(stored) + 2


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "q.db"  # neither process finds a store: they also race to create it
    batches, size = 50, 4
    procs = {tag: _writer(path, tag, batches, size) for tag in ("p0", "p1")}
    try:
        for proc in procs.values():
            assert _readline(proc).strip() == "ready"
        for proc in procs.values():  # release both together so their writes interleave
            proc.stdin.write("go\n")
            proc.stdin.flush()
        printed: dict[str, list[int]] = {}
        for tag, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            lines = out.split()
            assert lines[-1] == "done"
            printed[tag] = [int(i) for i in lines[:-1]]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
    with QuarantineStore(path) as store:
        assert store.count() == 2 * batches * size
        data = store.export()
        for tag in procs:
            assert store.count(model_version=tag) == batches * size
            assert set(data.sources[data.model_versions == tag]) == {f"{tag}-{b}-{j}" for b in range(batches) for j in range(size)}
            assert set(printed[tag]) == set(data.ids[data.model_versions == tag].tolist())
        assert len(set(data.ids.tolist())) == len(data)


def test_a_writer_that_cannot_get_the_lock_raises(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with QuarantineStore(path, timeout=0.2) as store:
        store.add(_images(1), 1, 0, model_version="v1")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process in the middle of its write
        try:
            with pytest.raises(QuarantineError, match="none of the 2 entries was stored"):
                store.add(_images(2), [1, 1], [0, 0], model_version="v1")
            assert store.count() == 1  # readers are not blocked by the writer (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.add(_images(2), [1, 1], [0, 0], model_version="v1") == [2, 3]


def test_a_store_is_not_used_across_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = QuarantineStore(tmp_path / "q.db")
    monkeypatch.setattr(os, "getpid", lambda: store._pid + 1)  # what a forked child sees
    with pytest.raises(QuarantineError, match="open a QuarantineStore in each process"):
        store.count()
    monkeypatch.undo()
    store.close()
