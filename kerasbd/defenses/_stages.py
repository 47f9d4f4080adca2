"""Helpers shared by the repair defenses: an independent copy of a model, and one table row per stage.

GYM, NNoculation and fine-pruning all train a copy of the suspicious model (the caller's model is never
modified) and report intermediate stages (GYM's Table-2 columns, the two fine-pruning rows, the grid cells).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["copy_model", "stage_metrics", "stage_row", "subsample"]


def copy_model(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights (layer names kept), sharing no variables."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def stage_metrics(model: keras.Model, eval_data: tuple[np.ndarray, np.ndarray], backdoors: Sequence[Any]) -> dict[str, Any]:
    """``evaluate_backdoor`` on the evaluation data (clean accuracy, ASR, robust accuracy, TCP)."""
    from kerasbd.metrics import evaluate_backdoor

    return evaluate_backdoor(model, *eval_data, backdoors=list(backdoors))


def stage_row(stage: str, model: keras.Model, eval_data: tuple[np.ndarray, np.ndarray], backdoors: Sequence[Any]) -> dict[str, Any]:
    """One comparison-table row: ``stage`` with ACC, ASR, robust accuracy and TCP on the evaluation data."""
    m = stage_metrics(model, eval_data, backdoors)
    return {"stage": stage, "clean_acc": m.get("clean_acc"), "asr": m.get("asr"), "robust_acc": m.get("robust_acc"), "tcp": m.get("tcp")}


def subsample(data: tuple[np.ndarray, np.ndarray], size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of ``size`` examples (all when ``size`` is None or larger than the set)."""
    x, y = data
    if size is None or size >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=int(size), replace=False))
    return x[idx], y[idx]
