"""Read-only access to Keras ``.h5`` files: opening with clear errors, stored JSON attributes, weight tables.

Files are always opened with mode ``"r"`` so a model file can never be modified by loading it. A Keras 2 full
model keeps its weights under the ``model_weights`` group; a ``save_weights`` file keeps the same layout at the
root. Either way the layout is: attribute ``layer_names``; one group per layer with attribute ``weight_names``;
datasets at those (slash-separated) names.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerasbd.errors import ModelFileError

__all__ = ["open_h5", "file_kind", "read_json_attr", "read_attr", "weight_table", "HDF5_SIGNATURE"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"


def file_kind(path: str | os.PathLike) -> str:
    """``"hdf5"``, ``"zip"`` (a ``.keras`` archive) or a :class:`ModelFileError` for anything else or nothing."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file. Check the path (zoo files are found with kerasbd.zoo.entry_path).")
    if p.is_dir():
        raise ModelFileError(f"{p} is a directory; pass a .h5 or .keras model file (SavedModel folders are not read).")
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_SIGNATURE):
        return "zip"
    # HDF5 allows a user block before the superblock (at 512, 1024, ... bytes); h5py checks all offsets.
    if head == HDF5_SIGNATURE or h5py.is_hdf5(str(p)):
        return "hdf5"
    if not head:
        raise ModelFileError(f"{p} is empty (0 bytes); the download or copy probably failed.")
    raise ModelFileError(
        f"{p} is not an HDF5 file (first bytes {head!r}); kerasbd reads Keras .h5 files and .keras archives. "
        "A Git LFS pointer or an HTML error page saved under a model name looks like this."
    )


@contextlib.contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only, turning HDF5 library errors into :class:`ModelFileError`."""
    p = Path(path)
    if file_kind(p) != "hdf5":
        raise ModelFileError(f"{p} is a zip archive, not an HDF5 file; load .keras files with kerasbd.models.load_model.")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg:
            raise ModelFileError(
                f"{p} is truncated (the file is shorter than its HDF5 header says: {msg.split('(')[-1].rstrip(')')}); "
                "download or copy it again."
            ) from None
        raise ModelFileError(f"{p} cannot be read as HDF5 ({msg}); the file is corrupt or incomplete.") from None
    try:
        yield f
    finally:
        f.close()


def read_attr(obj: h5py.HLObject, name: str) -> Any:
    """An attribute as a Python value (bytes decoded), or None when absent."""
    if name not in obj.attrs:
        return None
    value = obj.attrs[name]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):  # name lists; an empty list is stored as an empty float array
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    return value


def read_json_attr(f: h5py.File, name: str, path: str | os.PathLike) -> Any:
    """Parse a JSON-valued attribute (``model_config``, ``training_config``); None when absent."""
    text = read_attr(f, name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelFileError(f"{path}: the {name!r} attribute is not valid JSON ({exc}); the file is corrupt.") from None


def weight_table(group: h5py.Group, path: str | os.PathLike) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``{layer_name: [(weight_name, array), ...]}`` in stored layer order (layers without weights included)."""
    names = read_attr(group, "layer_names")
    if names is None:
        raise ModelFileError(f"{path}: no 'layer_names' attribute where Keras stores weights; this is not a Keras weights file.")
    table: dict[str, list[tuple[str, np.ndarray]]] = {}
    try:
        for layer in names:
            g = group[layer]
            weights = read_attr(g, "weight_names") or []
            table[layer] = [(w, np.asarray(g[w][()])) for w in weights]
    except (KeyError, OSError) as exc:
        raise ModelFileError(f"{path}: weights listed in the file cannot be read ({exc}); the file is truncated or corrupt.") from None
    return table
