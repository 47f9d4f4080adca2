"""Read-only access to Keras ``.h5`` files: opening with clear errors, storage checks, bounded dataset reads.

Files are opened read-only from the handle :func:`kerasbd.models.files.open_model_file` checked, so a model file
can never be modified by loading it. Before anything else, :func:`check_storage` refuses every link or dataset
whose data lives outside the file (external links, external storage, virtual datasets): they would read other
local files (``/etc/passwd``, ``/dev/zero``) into the weights, and the file's sha256 would not pin them.

A Keras 2 full model keeps its weights under the ``model_weights`` group; a ``save_weights`` file keeps the same
layout at the root: attribute ``layer_names``; one group per layer with attribute ``weight_names``; datasets at
those (slash-separated) names. :func:`weight_table` lists those datasets without reading them, so their declared
shapes are checked against the model first; :func:`read_dataset` then reads one, inflating gzip chunks itself so
that no chunk can expand beyond its declared size.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import h5py
import numpy as np

from kerasbd.errors import ModelFileError, ModelTooLargeError, UnsafeModelError

__all__ = ["open_h5", "check_storage", "read_attr", "read_dataset", "weight_table", "WeightTable"]

WeightTable = dict[str, list[tuple[str, h5py.Dataset]]]
"""``{layer_name: [(weight_name, dataset), ...]}`` in stored layer order; datasets are not read yet."""

_DEFLATE, _SHUFFLE = h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE
# A compressed chunk may be larger than its dataset (resizable datasets) but not by more than this.
_MAX_CHUNK_BYTES = 2**20
_HDF5_ERRORS = (OSError, KeyError, RuntimeError)


@contextlib.contextmanager
def open_h5(handle: BinaryIO, source: str) -> Iterator[h5py.File]:
    """Open HDF5 data read-only from ``handle`` and check its storage (:func:`check_storage`).

    Raises:
        ModelFileError: truncated or corrupt HDF5.
        UnsafeModelError: data stored outside the file.
    """
    try:
        f = h5py.File(handle, "r")
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg:
            raise ModelFileError(
                f"{source} is truncated (the file is shorter than its HDF5 header says: {msg.split('(')[-1].rstrip(')')}); "
                "download or copy it again."
            ) from None
        raise ModelFileError(f"{source} cannot be read as HDF5 ({msg}); the file is corrupt or incomplete.") from None
    try:
        check_storage(f, source)
        yield f
    finally:
        f.close()


def check_storage(f: h5py.File, source: str) -> None:
    """Refuse any link or dataset whose data does not live inside the file; nothing is read or followed."""
    try:
        problem = f.id.links.visit(lambda name, info: _link_problem(f, name, info), info=True) or f.visititems(_dataset_problem)
    except _HDF5_ERRORS as exc:
        raise ModelFileError(f"{source}: the HDF5 structure cannot be read ({exc}); the file is corrupt.") from None
    if problem:
        raise UnsafeModelError(
            f"{source}: {problem}. kerasbd reads only data stored inside the model file: outside data could pull any "
            "local file into the weights, and the file's checksum would not pin them. The file is malformed or hostile; "
            "trust=True does not lift this."
        )


def _link_problem(f: h5py.File, name: bytes, info: Any) -> str | None:
    if info.type in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):  # soft links are paths inside the same file
        return None
    link = name.decode(errors="replace")
    if info.type == h5py.h5l.TYPE_EXTERNAL:
        filename, target = (part.decode(errors="replace") for part in f.id.links.get_val(name))
        return f"{link!r} is an external link to {target!r} in the file {filename!r}"
    return f"{link!r} is a user-defined HDF5 link (type {info.type})"


def _dataset_problem(name: str, obj: Any) -> str | None:
    if not isinstance(obj, h5py.Dataset):
        return None
    if obj.is_virtual:
        sources = sorted({vds.file_name for vds in obj.virtual_sources()})
        return f"dataset {name!r} is a virtual dataset reading from {sources}"
    if obj.external:
        files = [entry[0] for entry in obj.external]
        return f"dataset {name!r} stores its data in the external file(s) {files}"
    return None


def read_attr(obj: h5py.HLObject, name: str) -> Any:
    """An attribute as a Python value (bytes decoded), or None when absent."""
    if name not in obj.attrs:
        return None
    value = obj.attrs[name]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):  # name lists; an empty list is stored as an empty float array
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in value.tolist()]
    return value


def weight_table(group: h5py.Group, source: str) -> WeightTable:
    """The datasets of every stored layer (layers without weights included), declared but not read."""
    names = read_attr(group, "layer_names")
    if names is None:
        raise ModelFileError(f"{source}: no 'layer_names' attribute where Keras stores weights; this is not a Keras weights file.")
    if not isinstance(names, list):
        raise ModelFileError(f"{source}: the 'layer_names' attribute is not a list of names; the file is malformed.")
    try:
        return {layer: _layer_datasets(group[layer], source) for layer in names}
    except ModelFileError:
        raise
    except _HDF5_ERRORS as exc:
        raise ModelFileError(f"{source}: weights listed in the file cannot be found ({exc}); the file is truncated or corrupt.") from None


def _layer_datasets(g: h5py.Group, source: str) -> list[tuple[str, h5py.Dataset]]:
    names = read_attr(g, "weight_names") or []
    datasets = [(w, g[w]) for w in names]
    for w, ds in datasets:
        if not isinstance(ds, h5py.Dataset):
            raise ModelFileError(f"{source}: weight {w!r} of layer {g.name!r} is a group, not a dataset; the file is malformed.")
    return datasets


def read_dataset(ds: h5py.Dataset, source: str) -> np.ndarray:
    """The values of ``ds``. Check its declared shape first: this bounds decompression, not the declared size.

    Uncompressed data is read by HDF5 (it reads exactly the declared bytes). Compressed chunks are inflated here,
    never beyond the chunk's declared size; filters other than gzip and shuffle are refused, since HDF5 would
    load a plugin library to decode them.

    Raises:
        ModelTooLargeError: a chunk inflates beyond its declared size (a decompression bomb).
        ModelFileError: an unsupported filter, or data that cannot be read.
    """
    try:
        filters = _filters(ds, source)
        return _read_chunks(ds, filters, source) if filters else np.asarray(ds[()])
    except ModelFileError:  # kerasbd's own refusals are OSErrors too
        raise
    except _HDF5_ERRORS as exc:
        raise ModelFileError(f"{source}: dataset {ds.name!r} cannot be read ({exc}); the file is truncated or corrupt.") from None


def _filters(ds: h5py.Dataset, source: str) -> list[tuple[int, tuple[int, ...]]]:
    """``[(filter id, parameters), ...]`` in the order they were applied when writing."""
    plist = ds.id.get_create_plist()
    found = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    unsupported = [f"{name.decode(errors='replace')} (id {code})" for code, _, _, name in found if code not in (_DEFLATE, _SHUFFLE)]
    if unsupported:
        raise ModelFileError(
            f"{source}: dataset {ds.name!r} is encoded with the HDF5 filter(s) {unsupported}; kerasbd reads only "
            "uncompressed and gzip/shuffle datasets (Keras never writes others). Re-save the model with Keras."
        )
    return [(code, tuple(values)) for code, _, values, _ in found]


def _read_chunks(ds: h5py.Dataset, filters: list[tuple[int, tuple[int, ...]]], source: str) -> np.ndarray:
    chunk_shape = ds.chunks
    chunk_bytes = math.prod(chunk_shape) * ds.dtype.itemsize
    if chunk_bytes > max(ds.size * ds.dtype.itemsize, _MAX_CHUNK_BYTES):
        raise ModelFileError(f"{source}: dataset {ds.name!r} of shape {ds.shape} declares chunks of shape {chunk_shape}; the file is malformed.")
    out = np.full(ds.shape, ds.fillvalue, dtype=ds.dtype)  # chunks never written hold the fill value
    stored: list[Any] = []
    ds.id.chunk_iter(stored.append)
    for info in stored:
        mask, raw = ds.id.read_direct_chunk(info.chunk_offset)
        data = _decode(raw, filters, mask, chunk_bytes, ds.dtype.itemsize, f"{source}: a chunk of dataset {ds.name!r}")
        chunk = np.frombuffer(data, dtype=ds.dtype).reshape(chunk_shape)
        target = tuple(slice(o, min(o + c, s)) for o, c, s in zip(info.chunk_offset, chunk_shape, ds.shape, strict=True))
        out[target] = chunk[tuple(slice(0, t.stop - t.start) for t in target)]
    return out


def _decode(raw: bytes, filters: list[tuple[int, tuple[int, ...]]], mask: int, size: int, itemsize: int, where: str) -> bytes:
    """Undo the filters of one chunk, last applied first; bit ``i`` of ``mask`` marks filter ``i`` as skipped."""
    data = raw
    for index in reversed(range(len(filters))):
        if mask & (1 << index):
            continue
        code, values = filters[index]
        data = _inflate(data, size, where) if code == _DEFLATE else _unshuffle(data, values[0] if values else itemsize)
    if len(data) != size:
        raise ModelFileError(f"{where} holds {len(data):,} bytes instead of {size:,}; the file is corrupt.")
    return data


def _inflate(data: bytes, size: int, where: str) -> bytes:
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(data, size + 1)  # one byte more than allowed tells a bomb from a full chunk
    except zlib.error as exc:
        raise ModelFileError(f"{where} is not valid gzip data ({exc}); the file is corrupt.") from None
    if len(out) > size:
        raise ModelTooLargeError(
            f"{where} inflates beyond its declared {size:,} bytes (a decompression bomb); refused before inflating "
            "further. The file is hostile or corrupt."
        )
    if not stream.eof:
        raise ModelFileError(f"{where} ends in the middle of its gzip data; the file is truncated or corrupt.")
    return out


def _unshuffle(data: bytes, itemsize: int) -> bytes:
    """Inverse of HDF5's shuffle filter: byte ``k`` of every element was stored together; a remainder is kept as is."""
    count = len(data) // itemsize
    planes = np.frombuffer(data, dtype=np.uint8, count=count * itemsize).reshape(itemsize, count)
    return planes.T.tobytes() + data[count * itemsize:]
