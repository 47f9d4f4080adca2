"""Resource limits for loading untrusted model files, checked before anything is allocated.

A model file is small compared with what it can declare: a 13 KB ``.h5`` can declare a 22 GiB dataset, a few
megabytes of zip can inflate to gigabytes of JSON, a one-line config can ask for a billion-unit ``Dense``. Every
such declaration is compared with these limits first and refused with a
:class:`~kerasbd.errors.ModelTooLargeError` naming the limit and the ``load_model`` option that raises it.
The defaults load every model of the zoo (the largest has 0.6 M parameters and a 9 KB config) and common
ImageNet networks (VGG-16: 138 M parameters).
"""

from __future__ import annotations

import dataclasses

from kerasbd.errors import ConfigError

__all__ = ["MAX_PARAMS", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "Limits"]

MAX_PARAMS = 150_000_000
"""Default ``max_params``: weights a model config may describe (600 MB of float32)."""

MAX_CONFIG_BYTES = 16 * 2**20
"""Default ``max_config_bytes``: size of a stored JSON document (``model_config``, ``config.json``), 16 MiB."""

MAX_CONFIG_DEPTH = 100
"""Nesting depth of a stored JSON document; Keras configs need about 10 levels, plus 4 per nested model."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits one ``load_model`` call enforces (see the module constants for the defaults)."""

    max_params: int = MAX_PARAMS
    max_config_bytes: int = MAX_CONFIG_BYTES

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{field.name} must be a positive integer, got {value!r}.")
