"""Shared pytest fixtures: quiet TensorFlow, a seeded RNG, the zoo directory (skips when absent)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

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
