"""Opening an untrusted model file once: a regular file, its format decided from its content, its checksum.

Everything kerasbd inspects and loads is read through the one handle :func:`open_model_file` returns, and the
sha256 is computed from that handle, so the bytes that are checked, hashed and loaded are the same (the path is
never reopened, and the format never depends on the file's name). Zip members of a ``.keras`` archive are read
only up to a bound given by the caller, whatever the archive declares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from kerasbd.errors import ModelFileError, ModelTooLargeError

__all__ = ["ModelFile", "open_model_file", "open_archive", "read_member", "HDF5_SIGNATURE"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_FILE_TYPES = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket"}


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """An open model file: ``kind`` is ``"hdf5"`` or ``"zip"``, ``sha256`` is of the bytes ``handle`` reads."""

    path: Path
    handle: io.BufferedReader
    kind: str
    sha256: str


@contextlib.contextmanager
def open_model_file(path: str | os.PathLike) -> Iterator[ModelFile]:
    """Open ``path`` read-only as a regular file, decide its format from its first bytes, hash it.

    Raises:
        ModelFileError: missing, unreadable, not a regular file (directory, FIFO, device), empty, neither HDF5
            nor zip, or both at once (a polyglot that two loaders would read differently).
    """
    p = Path(path)
    with _open_regular(p) as handle:
        kind = _detect_kind(p, handle)
        handle.seek(0)
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        handle.seek(0)
        yield ModelFile(p, handle, kind, digest)


def _open_regular(p: Path) -> io.BufferedReader:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the open descriptor.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{p}: no such file. Check the path (zoo files are found with kerasbd.zoo.entry_path).") from None
    except OSError as exc:
        raise ModelFileError(f"{p} cannot be opened ({exc.strerror}).") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise ModelFileError(f"{p} is a directory; pass a .h5 or .keras model file (SavedModel folders are not read).")
        what = _FILE_TYPES.get(stat.S_IFMT(mode), "a special file")
        raise ModelFileError(
            f"{p} is {what}, not a regular file. kerasbd reads models only from regular files (a pipe or device can "
            "block forever or never end); copy the model into a file first."
        )
    return os.fdopen(fd, "rb")


def _detect_kind(p: Path, handle: io.BufferedReader) -> str:
    head = handle.read(8)
    if not head:
        raise ModelFileError(f"{p} is empty (0 bytes); the download or copy probably failed.")
    hdf5 = _has_hdf5_superblock(handle)
    if head.startswith(_ZIP_SIGNATURE):
        if hdf5:
            raise ModelFileError(
                f"{p} is both a zip archive and an HDF5 file (a polyglot): loaders that pick the format by file name "
                "would read a different model from the one kerasbd inspects, so it is refused. Re-save the model."
            )
        return "zip"
    if hdf5:
        return "hdf5"
    raise ModelFileError(
        f"{p} is not an HDF5 file (first bytes {head!r}); kerasbd reads Keras .h5 files and .keras archives. "
        "A Git LFS pointer or an HTML error page saved under a model name looks like this."
    )


def _has_hdf5_superblock(handle: io.BufferedReader) -> bool:
    """Whether the HDF5 signature sits where the HDF5 library looks for it: offset 0, 512, 1024, 2048, ..."""
    size = os.fstat(handle.fileno()).st_size
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
        handle.seek(offset)
        if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            return True
        offset = max(512, offset * 2)
    return False


@contextlib.contextmanager
def open_archive(handle: BinaryIO, source: str) -> Iterator[zipfile.ZipFile]:
    """The zip archive read from ``handle``, with damage reported as :class:`ModelFileError`."""
    try:
        with zipfile.ZipFile(handle) as archive:
            yield archive
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ModelFileError(f"{source} starts like a zip archive (the .keras format) but cannot be read as one ({exc}): "
                             "it is a truncated or corrupt .keras file, and not an HDF5 .h5 model, whatever its name.") from None


def read_member(archive: zipfile.ZipFile, name: str, limit: int, *, source: str, hint: str) -> bytes:
    """The uncompressed bytes of ``name``, refused before inflating when it declares more than ``limit``.

    ``zipfile`` stops reading at the declared size (and checks the CRC), so the declared size bounds memory.
    ``hint`` tells the user how to raise the limit.
    """
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{source} is a zip archive without {name}; it is not a Keras .keras file.") from None
    if info.file_size > limit:
        raise ModelTooLargeError(
            f"{source}: {name} declares {info.file_size:,} bytes uncompressed ({info.compress_size:,} stored), more "
            f"than the limit of {limit:,} bytes; the archive is a decompression bomb or not a model kerasbd loads. {hint}"
        )
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
        raise ModelFileError(f"{source}: {name} is encrypted or compressed with an unusual method; Keras never writes that.")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ModelFileError(f"{source}: {name} cannot be read from the archive ({exc}); the file is corrupt.") from None
