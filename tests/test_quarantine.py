"""The SQLite quarantine store: round trip, checksums, the bound, refusing foreign files, durability under SIGKILL
and concurrent writers (subprocesses that import only the store, not TensorFlow)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kerasbd.errors import ConfigError
from kerasbd.serving.quarantine import QuarantineFullError, QuarantineStore, checksum

ROOT = str(Path(__file__).resolve().parents[1])


def _images(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n, dtype=np.float32)[:, None, None, None] / 1000 + np.zeros((1, 4, 4, 1), np.float32))


def test_round_trip_and_filters(tmp_path):
    with QuarantineStore(tmp_path / "sub" / "q.sqlite") as store:
        ids = store.add(_images(3), [1, 2, 3], [0, 0, 0], model_version="v0", sources=["a", "b", "c"], times=[1.0, 2.0, 3.0])
        more = store.add(_images(2, 3), np.array([4, 5]), np.array([1, 1]), model_version="v1")
        assert ids == [1, 2, 3] and more == [4, 5]
        data = store.export()
        assert np.array_equal(data.x, np.concatenate([_images(3), _images(2, 3)]))
        assert data.badnet_labels.tolist() == [1, 2, 3, 4, 5] and data.goodnet_labels.tolist() == [0, 0, 0, 1, 1]
        assert data.model_versions.tolist() == ["v0"] * 3 + ["v1"] * 2 and data.sources.tolist()[:3] == ["a", "b", "c"]
        assert data.times.tolist()[:3] == [1.0, 2.0, 3.0] and data.checksums[0] == checksum(_images(1)[0])
        assert store.count(model_version="v0") == 3 and store.count(since_id=3) == 2 and len(store) == 5
        assert store.versions() == ["v0", "v1"] and store.image_shape == (4, 4, 1)
        assert store.export(model_version="v1", limit=1).ids.tolist() == [4]
        assert store.stats()["per_version"] == {"v0": 3, "v1": 2}
        with pytest.raises(ConfigError, match=r"shape \(4,4,1\).*\(5,5,1\)"):
            store.add(np.zeros((1, 5, 5, 1)), [0], [1], model_version="v1")
        with pytest.raises(ConfigError, match="whole numbers"):
            store.add(_images(2), [0.5, 1.0], [1, 1], model_version="v1")
        assert len(store) == 5  # refused batches leave nothing behind
        # WAL mode and FULL synchronous on the connection
        conn = sqlite3.connect(tmp_path / "sub" / "q.sqlite")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_a_corrupted_row_is_detected_on_export(tmp_path):
    path = tmp_path / "q.sqlite"
    with QuarantineStore(path) as store:
        store.add(_images(3), [1, 2, 3], [0, 0, 0], model_version="v0")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE quarantine SET image = ? WHERE id = 2", (np.ones((4, 4, 1), "<f4").tobytes(),))
    conn.commit()
    conn.close()
    with QuarantineStore(path) as store, pytest.raises(ConfigError, match="entry 2 .* corrupt"):
        store.export()


def test_bound_drop_oldest_and_reject(tmp_path):
    with QuarantineStore(tmp_path / "a.sqlite", max_entries=4) as store:
        for k in range(3):
            store.add(_images(2, 2 * k), [k, k], [9, 9], model_version="v0")
        assert len(store) == 4 and store.export().ids.tolist() == [3, 4, 5, 6] and store.stats()["dropped"] == 2
    with QuarantineStore(tmp_path / "b.sqlite", max_entries=3, policy="reject") as store:
        store.add(_images(2), [0, 0], [1, 1], model_version="v0")
        with pytest.raises(QuarantineFullError, match="does not fit"):
            store.add(_images(2, 2), [0, 0], [1, 1], model_version="v0")
        assert len(store) == 2 and store.add(_images(1, 9), [0], [1], model_version="v0") == [3]
    with pytest.raises(ConfigError, match="policy"):
        QuarantineStore(tmp_path / "c.sqlite", policy="newest")


def test_foreign_files_are_refused_and_left_unchanged(tmp_path):
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database")
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    for path, message in ((text, "not a SQLite file"), (other, "not a kerasbd quarantine store")):
        before = path.read_bytes()
        with pytest.raises(ConfigError, match=message):
            QuarantineStore(path)
        assert path.read_bytes() == before and not Path(f"{path}-wal").exists()


def test_export_npz_is_a_dataset(tmp_path):
    from kerasbd.data import load_data

    with QuarantineStore(tmp_path / "q.sqlite") as store:
        store.add(_images(3), [1, 2, 3], [0, 4, 5], model_version="v0")
        path = store.export_npz(tmp_path / "out" / "quarantined.npz")
    x, y = load_data(path)
    assert x.shape == (3, 4, 4, 1) and y.tolist() == [0, 4, 5]
    with np.load(path, allow_pickle=False) as z:
        assert z["model_versions"].tolist() == ["v0"] * 3 and z["badnet_labels"].tolist() == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["quarantined.npz"]  # no temporary file left


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from kerasbd.serving.quarantine import QuarantineStore

    store = QuarantineStore(sys.argv[2], max_entries=10**6)
    tag, batches = sys.argv[3], int(sys.argv[4])
    for k in range(batches):
        ids = store.add(np.full((4, 8, 8, 1), k / 1000, np.float32), [0, 1, 2, 3], [1, 1, 1, 1], model_version="v0",
                        sources=[f"{tag}-{k}-{i}" for i in range(4)])
        print(" ".join(map(str, ids)), flush=True)  # printed after the commit returned
    """
)


def _writer(path: Path, tag: str, batches: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, ROOT, str(path), tag, str(batches)], stdout=subprocess.PIPE, text=True)


def test_a_killed_writer_loses_no_committed_entry(tmp_path):
    path = tmp_path / "q.sqlite"
    proc = _writer(path, "w", 10**6)
    committed: list[int] = []
    deadline = time.time() + 120
    while len(committed) < 200 and time.time() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        committed.extend(int(v) for v in line.split())
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is writing its next batches
    proc.wait(timeout=30)
    committed.extend(int(v) for v in proc.stdout.read().split())  # type: ignore[union-attr]
    assert len(committed) >= 200
    with QuarantineStore(path) as store:
        ids = set(store.export().ids.tolist())
        assert set(committed) <= ids
        assert len(ids) % 4 == 0  # whole batches only
        assert store.add(np.zeros((1, 8, 8, 1)), [0], [1], model_version="v1")  # still writable
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "q.sqlite"
    QuarantineStore(path).close()  # created first, so both writers open an existing store
    procs = [_writer(path, tag, 50) for tag in ("a", "b")]
    for proc in procs:
        proc.communicate(timeout=180)
        assert proc.returncode == 0
    with QuarantineStore(path) as store:
        data = store.export()
    assert len(data) == 2 * 50 * 4 and len(set(data.ids.tolist())) == 400
    for tag in ("a", "b"):
        assert {s for s in data.sources.tolist() if s.startswith(tag)} == {f"{tag}-{k}-{i}" for k in range(50) for i in range(4)}
