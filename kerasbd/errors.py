"""Exceptions raised by kerasbd.

Every error a user can cause (bad file, bad data, bad trigger spec) is a subclass of :class:`KerasBDError`
and carries a message that names the problem and says what to do. Subclasses also derive from the built-in
exception a caller would naturally catch (``ValueError``, ``OSError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class KerasBDError(Exception):
    """Base class of every error kerasbd raises on purpose."""


class DataError(KerasBDError, ValueError):
    """Images or labels are malformed: wrong shape, dtype, range, channel order, NaN, labels out of range."""


class ModelFileError(KerasBDError, OSError):
    """A model or weights file cannot be read: missing, truncated, not HDF5, or structurally inconsistent."""


class UnsafeModelError(KerasBDError, ValueError):
    """A model file asks for code execution (Lambda layer, custom class, module reference) and trust was not given."""


class UnknownLayerError(ModelFileError):
    """A model config names a layer class that neither Keras nor kerasbd provides."""


class WeightsMismatchError(ModelFileError):
    """A weights file does not fit the architecture it is loaded into (layer names or tensor shapes differ)."""


class ModelTooLargeError(ModelFileError):
    """A model file declares more than a loading limit allows (parameters, config size, decompressed bytes).

    The message names the limit and the ``load_model`` option that raises it; a tiny file declaring a huge model
    is refused before anything is allocated.
    """


class TriggerError(KerasBDError, ValueError):
    """A trigger or target specification is invalid or does not fit the images it is applied to."""


class ZooError(KerasBDError, LookupError):
    """A zoo entry is unknown, its file is missing, or its checksum does not match the manifest."""


class ConfigError(KerasBDError, ValueError):
    """A defense, transform or detector was configured with invalid parameters."""
