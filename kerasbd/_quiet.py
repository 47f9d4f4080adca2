"""Import TensorFlow without its C++/absl start-up lines (written straight to file descriptor 2, past Python)."""

from __future__ import annotations

import os
import sys

__all__ = ["import_tensorflow_quietly"]


def import_tensorflow_quietly(verbose: int) -> None:
    """Import TensorFlow with OS-level stderr sent to /dev/null unless ``verbose >= 2``.

    ``TF_CPP_MIN_LOG_LEVEL`` does not silence the lines absl prints before its logging is initialised (CUDA stubs,
    plugin registration), so the descriptor itself is redirected for the duration of the import and restored after,
    also when the import fails (its exception is then raised normally).
    """
    if verbose >= 2:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel("ERROR")
