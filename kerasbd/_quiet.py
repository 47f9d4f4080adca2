"""Import TensorFlow without its C++ start-up chatter on stderr.

``TF_CPP_MIN_LOG_LEVEL=3`` hides TensorFlow's own C++ log lines, but not everything written while
``import tensorflow`` runs: absl's "All log messages before absl::InitializeLog() is called are written to
STDERR", the CUDA/XLA plugin registration lines ("Unable to register cuDNN factory ...", "Could not find cuda
drivers ...") are printed by C++ code straight to file descriptor 2, before or regardless of the level, where
Python's ``sys.stderr`` redirection cannot reach them. The command line calls :func:`import_tensorflow_quietly`
first so its output stays readable; ``--verbose 2`` or more keeps every line for debugging.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["import_tensorflow_quietly"]


@contextlib.contextmanager
def _fd2_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null inside the block; restore it on the way out, exception or not."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()  # what Python already buffered belongs to the terminal, not /dev/null
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all (a detached process): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()  # Python-level writes made during the block go where the block's output went
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly(verbose: int) -> None:
    """Import TensorFlow (and absl logging) with start-up messages hidden, unless ``verbose >= 2``.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the environment already chose a level, imports ``tensorflow``
    with the process's file descriptor 2 pointed at ``/dev/null`` (so lines written by C++ code vanish too),
    then restores it — also when the import fails, so the Python exception is raised and its traceback seen.
    Afterwards absl's and TensorFlow's Python loggers report errors only. Importing again later is free.

    Only lines written *during the import* are dropped; warnings and errors raised later still show.

    Example:
        >>> import_tensorflow_quietly(1)
        >>> import sys; "tensorflow" in sys.modules
        True
    """
    if verbose >= 2:
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        with _fd2_to_devnull():
            import tensorflow  # noqa: F401
    import tensorflow as tf
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    tf.get_logger().setLevel("ERROR")
