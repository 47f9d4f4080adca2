"""Quiet, conventional output: tqdm progress with an honest time left, TensorFlow's start-up lines hidden,
Keras epoch lines only when asked for."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kerasbd.io import Progress

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """Stands in for tqdm's clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    import tqdm.std

    fake = FakeClock()
    monkeypatch.setattr(tqdm.std, "time", fake)  # a bar reads tqdm.std.time when it is created
    return fake


def _last_state(text: str) -> str:
    """The last line a bar drew (it redraws in place with carriage returns)."""
    return [part for part in re.split(r"[\r\n]", text) if part.strip()][-1]


def test_progress_counts_and_postfix() -> None:
    out = io.StringIO()
    with Progress(4, "grid", stream=out) as p:
        for k in range(4):
            p.update(acc=0.25 * k, cell=f"c{k}")
    assert p.n == 4
    last = _last_state(out.getvalue())
    assert last.startswith("grid:") and "4/4" in last
    assert "acc=0.75" in last and "cell=c3" in last
    assert out.getvalue().endswith("\n")  # the finished bar keeps its own line


def test_progress_silent_at_verbose_0(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    with Progress(5, "quiet", verbose=0, stream=out) as p:
        p.update(5, loss=1.0)
    quiet_default = Progress(5, "quiet", verbose=0)
    quiet_default.update(2)
    quiet_default.close()
    assert out.getvalue() == ""
    assert capsys.readouterr() == ("", "")
    assert p.n == 5 and p.seconds_left is None


def test_progress_writes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(2, "to stderr") as p:
        p.update(2)
    captured = capsys.readouterr()
    assert captured.out == "" and "2/2" in captured.err


def test_time_left_of_a_steady_loop(clock: FakeClock) -> None:
    """Half the work done in t seconds leaves about t seconds; 0 is shown only when everything is done."""
    out = io.StringIO()
    p = Progress(10, "steady", stream=out)
    for _ in range(5):
        clock.now += 2.0
        p.update()
    assert p.seconds_left == pytest.approx(10.0, rel=0.05)
    assert "5/10 [00:10<00:10" in _last_state(out.getvalue())
    for _ in range(4):
        clock.now += 2.0
        p.update()
        assert p.seconds_left is not None and p.seconds_left > 0
    clock.now += 2.0
    p.update()
    assert p.seconds_left == 0
    p.close()
    assert "10/10 [00:20<00:00" in _last_state(out.getvalue())


def test_time_left_before_any_work_is_unknown_not_zero(clock: FakeClock) -> None:
    out = io.StringIO()
    p = Progress(10, "slow start", stream=out)
    clock.now += 138.0
    assert p.seconds_left is None  # nothing done yet: no rate, so no (false) "0 s left"
    assert "<?" in _last_state(out.getvalue())
    p.close()


def test_resumed_work_counts_towards_total_not_rate(clock: FakeClock) -> None:
    out = io.StringIO()
    p = Progress(10, "resumed", stream=out, initial=6)
    for _ in range(2):
        clock.now += 3.0
        p.update()
    # 2 units in 6 s this session: 2 left at 3 s each (the 6 resumed units took no time here)
    assert p.n == 8
    assert p.seconds_left == pytest.approx(6.0, rel=0.05)
    p.close()


def test_lowering_the_total_when_work_is_skipped(clock: FakeClock) -> None:
    out = io.StringIO()
    p = Progress(100, "early stop", stream=out)
    for _ in range(3):
        clock.now += 1.0
        p.update(10)
    p.set_total(50)  # half the planned work will not run
    clock.now += 1.0
    p.update(10)
    assert p.seconds_left == pytest.approx(1.0, rel=0.05)  # 10 left at 10 per second
    clock.now += 1.0
    p.update(10)
    p.close()
    assert p.seconds_left == 0 and "50/50" in _last_state(out.getvalue())


class _StopAfter:
    """A schedule family stopping slot ``s``'s label after ``2 + s`` steps: labels stop early, unevenly."""

    def get_config(self) -> dict[str, Any]:
        return {}

    def allocate(self, slots: int) -> _StopAfterState:
        return _StopAfterState(slots)


class _StopAfterState:
    def __init__(self, slots: int) -> None:
        self.cost = np.zeros(slots)
        self.count = np.zeros(slots, np.int64)

    def reset(self, slots: np.ndarray) -> None:
        self.count[slots] = 0

    def update(self, slots: np.ndarray, acc: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.count[slots] += 1
        return np.ones(len(slots), bool), self.count[slots] >= 2 + np.asarray(slots)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.count = state["count"]


def test_inversion_counts_label_steps_and_ends_done(capsys: pytest.CaptureFixture[str]) -> None:
    """Neural Cleanse's inversion counts label-steps; labels stopping early take their unrun steps off the total."""
    import keras

    from kerasbd.defenses.inspection.neural_cleanse import MaskPatternCandidates
    from kerasbd.training.inversion import LabelBatchedInversion

    net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")
    inv = LabelBatchedInversion(steps=6, mini_batches=1, batch_size=8, label_batch_size=2)
    out = inv.run(net, x, [0, 1, 2, 3, 4], MaskPatternCandidates(), _StopAfter(), verbose=1)
    steps = sum(rec["steps"] for rec in out.values())
    assert steps < 5 * 6  # the labels did stop early
    err = capsys.readouterr().err
    assert "/30 " in err  # announced: at most 5 labels × 6 steps
    last = _last_state(err)
    assert f"{steps}/{steps} " in last and "<00:00" in last and "labels_done=5/5" in last


def _env_without_tf_level() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_import_tensorflow_quietly_prints_nothing() -> None:
    code = "from kerasbd._quiet import import_tensorflow_quietly; import_tensorflow_quietly(1); import tensorflow as tf; print(tf.__name__)"
    run = subprocess.run([sys.executable, "-c", code], env=_env_without_tf_level(), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "tensorflow"
    assert run.stderr == "", f"TensorFlow start-up lines reached stderr:\n{run.stderr}"


def test_import_failure_is_still_visible(tmp_path: Path) -> None:
    """A failing import raises normally, and stderr works again afterwards (only the import's own chatter is dropped)."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.write(2, b'c++ chatter\\n')\nraise RuntimeError('broken tensorflow install')\n")
    code = textwrap.dedent("""
        import sys
        from kerasbd._quiet import import_tensorflow_quietly
        try:
            import_tensorflow_quietly(1)
        finally:
            print("stderr restored", file=sys.stderr)
    """)
    env = _env_without_tf_level()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "RuntimeError: broken tensorflow install" in run.stderr and "stderr restored" in run.stderr
    assert "c++ chatter" not in run.stderr


def _tiny_fit(verbose: int) -> None:
    import keras

    from kerasbd.training import fit_classifier

    net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")
    fit_classifier(net, x, np.arange(16) % 2, epochs=2, batch_size=8, verbose=verbose)


@pytest.mark.parametrize("verbose", [0, 1])
def test_fit_prints_no_epoch_lines_by_default(verbose: int, capfd: pytest.CaptureFixture[str]) -> None:
    _tiny_fit(verbose)
    out, err = capfd.readouterr()
    assert "Epoch" not in out and "Epoch" not in err
    assert "accuracy" not in out


def test_fit_prints_one_line_per_epoch_at_verbose_2(capfd: pytest.CaptureFixture[str]) -> None:
    _tiny_fit(2)
    out, _ = capfd.readouterr()
    assert out.count("Epoch 1/2") == 1 and out.count("Epoch 2/2") == 1
    assert "accuracy" in out
