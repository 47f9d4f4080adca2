"""Shared pytest fixtures: quiet TensorFlow, a seeded RNG, the zoo directory (skips when absent), a small digits BadNet
saved as files for the command-line tests."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import json

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def zoo_dir():
    """The real-model zoo; tests that need it are skipped (not failed) where it is not installed."""
    from kerasbd.errors import ZooError

    try:
        from kerasbd.zoo import zoo_dir as find
    except ImportError as exc:  # pragma: no cover - only while the zoo module is missing
        pytest.skip(f"kerasbd.zoo unavailable: {exc}")
    try:
        return find()
    except ZooError as exc:
        pytest.skip(str(exc))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "zoo_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.zoo)


SPEC = {
    "name": "corner",
    "trigger": {"type": "patch", "size": [3, 3], "position": "bottom-right", "value": 1.0},
    "target": {"type": "all-to-one", "label": 0},
}


@pytest.fixture(scope="session")
def badnet_files(tmp_path_factory):
    """A tiny digits BadNet saved as a legacy-style .h5 full model, its clean data as .npz, its trigger spec."""
    import keras

    from kerasbd.attacks import from_spec, train_badnet
    from kerasbd.data import load_digits, split_defender
    from kerasbd.models import as_logits_model

    out = tmp_path_factory.mktemp("cli")
    x, y = load_digits(size=12)
    (x_clean, y_clean), (x_train, y_train) = split_defender(x, y, val_fraction=0.3, seed=0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    logits = as_logits_model(model)  # shares weights: training it trains the softmax model that is saved
    train_badnet(logits, x_train, y_train, from_spec(SPEC), rate=0.1, epochs=8, batch_size=32, seed=0)
    model.save(out / "badnet.h5")
    np.savez(out / "clean.npz", x=x_clean, y=y_clean)
    (out / "trigger.json").write_text(json.dumps(SPEC))
    return out


def run_script_result(script: str, *args: str, timeout: int = 300) -> dict:
    """Run ``script`` in a fresh Python (two-device tests must set logical devices before TensorFlow starts) and
    return the JSON it prints on its ``RESULT `` line; a failing script fails the test with its stderr."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
