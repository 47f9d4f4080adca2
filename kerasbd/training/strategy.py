"""The one place that decides how training is distributed.

Every training loop in kerasbd calls :func:`get_strategy` and :func:`on_strategy` instead of touching
``tf.distribute`` itself, so a user switches a whole defense to several GPUs or workers with one argument or
one environment variable (``TF_CONFIG`` for multi-worker, ``KERASBD_STRATEGY`` to force a kind).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from kerasbd.errors import ConfigError

__all__ = ["get_strategy", "strategy_name", "KINDS"]

KINDS = ("auto", "default", "mirrored", "multi-worker")


def get_strategy(kind: str | tf.distribute.Strategy | None = None) -> tf.distribute.Strategy:
    """Return the ``tf.distribute`` strategy for ``kind``.

    - ``"auto"`` (default): multi-worker when ``TF_CONFIG`` names more than one worker, mirrored when more than
      one local GPU (or logical CPU device configured by the user) is visible, otherwise the default strategy.
    - ``"default"``: no distribution. ``"mirrored"``: all local devices. ``"multi-worker"``: from ``TF_CONFIG``.
    - A ``tf.distribute.Strategy`` instance is returned unchanged.

    The environment variable ``KERASBD_STRATEGY`` overrides ``"auto"``.

    Example:
        >>> get_strategy("default").num_replicas_in_sync
        1
    """
    if isinstance(kind, tf.distribute.Strategy):
        return kind
    kind = kind or os.environ.get("KERASBD_STRATEGY", "auto")
    if kind not in KINDS:
        raise ConfigError(f"strategy {kind!r} is unknown; choose one of {', '.join(KINDS)}.")
    if kind == "auto":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
        if len(cluster.get("worker", [])) > 1:
            kind = "multi-worker"
        else:
            gpus = tf.config.list_logical_devices("GPU")
            cpus = tf.config.list_logical_devices("CPU")
            kind = "mirrored" if len(gpus) > 1 or (not gpus and len(cpus) > 1) else "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.MultiWorkerMirroredStrategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """Short description for reports, e.g. ``"MirroredStrategy×2"``."""
    return f"{type(strategy).__name__}×{strategy.num_replicas_in_sync}"
