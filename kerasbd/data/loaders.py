"""Dataset loaders for the formats the papers' artifacts use, all returning canonical data.

Every loader returns ``(x, y)``: ``x`` float32 (N, H, W, C), channels last, RGB, values in [0, 1]; ``y`` int64
class indices. Files are only read, never modified. Anything malformed (missing file, truncated or non-HDF5 file,
missing keys, NaN, labels out of range) raises :class:`~kerasbd.errors.DataError` naming the problem.

Formats:

- CSAW-HackML / NNoculation ``.h5`` (:func:`load_csaw_h5`): ``data`` (N, 3, H, W) channels-first, 0-255, ``label``.
- Neural Cleanse ``gtsrb_dataset_int.h5`` (:func:`load_nc_gtsrb_h5`): ``X_test``/``Y_test`` (or ``X_train``/
  ``Y_train``), raw 0-255 pixels, labels possibly one-hot.
- ``.npz`` and generic ``.h5`` (:func:`load_npz`, :func:`load_h5`): common key names are detected.
- per-class ``.npy`` folders (:func:`load_npy_class_folder`): ``{d}_test.npy`` holds the images of class ``d``
  (the zoo's MNIST test set).
- image folders (:func:`load_image_folder`): one sub-folder per class.
- scikit-learn's bundled digits (:func:`load_digits`): the embedded default, no download.

:func:`load_data` dispatches on a path's extension and structure, so command-line ``--data`` accepts any of them.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kerasbd.errors import DataError
from kerasbd.validation import check_dataset

__all__ = [
    "load_csaw_h5",
    "load_nc_gtsrb_h5",
    "load_h5",
    "load_npz",
    "load_npz_array",
    "load_npy_class_folder",
    "load_image_folder",
    "load_digits",
    "load_data",
    "mnist_test_set",
    "IMAGE_EXTENSIONS",
]

Dataset = tuple[np.ndarray, np.ndarray]

#: (images, labels) key pairs tried in order when a file's keys are not given.
KEY_PAIRS: tuple[tuple[str, str], ...] = (
    ("x", "y"),
    ("X", "Y"),
    ("data", "label"),
    ("data", "labels"),
    ("images", "labels"),
    ("x_test", "y_test"),
    ("X_test", "Y_test"),
    ("x_train", "y_train"),
    ("X_train", "Y_train"),
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_RANGES = {"0-1": 1.0, "0-255": 255.0}


def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} {p} does not exist; check the path.")
    return p


def _scaled(x: np.ndarray, value_range: str | None, name: str) -> np.ndarray:
    """Bring raw pixels to [0, 1]: ``value_range`` states the stored range; None lets check_images decide (uint8 → /255)."""
    if value_range is None:
        return x
    if value_range not in _RANGES:
        raise DataError(f"{name}: value_range {value_range!r} is unknown; use '0-1' or '0-255'.")
    return np.asarray(x, dtype=np.float32) / np.float32(_RANGES[value_range])


def _pick_keys(keys: Sequence[str], x_key: str | None, y_key: str | None, source: str) -> tuple[str, str]:
    found = sorted(keys)
    if x_key is None and y_key is None:
        candidates: Sequence[tuple[str, str]] = KEY_PAIRS
    elif x_key is not None and y_key is not None:
        candidates = [(x_key, y_key)]
    else:  # one key given: complete it from the known pairs
        candidates = [(a, b) for a, b in KEY_PAIRS if a == x_key or b == y_key]
    for xk, yk in candidates:
        if xk in found and yk in found:
            return xk, yk
    asked = f" (asked for x_key={x_key!r}, y_key={y_key!r})" if x_key or y_key else ""
    raise DataError(
        f"{source}: cannot find the image and label arrays{asked}; the file holds {found}. "
        "Pass x_key= and y_key= naming them."
    )


def _read_h5(path: str | os.PathLike, keys: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read datasets from an HDF5 file; a truncated or non-HDF5 file becomes a DataError."""
    import h5py

    p = _existing(path, "data file")
    try:
        with h5py.File(p, "r") as f:
            found = sorted(k for k in f.keys() if isinstance(f[k], h5py.Dataset))
            wanted = found if keys is None else [k for k in keys if k in found]
            return {k: np.asarray(f[k][()]) for k in wanted}, found
    except OSError as exc:
        raise DataError(f"{p} is not a readable HDF5 file (truncated, corrupt or another format): {exc}") from exc


def load_h5(path: str | os.PathLike, x_key: str | None = None, y_key: str | None = None, *, value_range: str | None = None) -> Dataset:
    """Load images and labels from a generic HDF5 file (keys detected from :data:`KEY_PAIRS` when not given).

    Images must already be channels-last; use :func:`load_csaw_h5` for the channels-first CSAW layout.
    ``value_range="0-255"`` divides float pixels by 255 (uint8 pixels are always divided).
    """
    _, found = _read_h5(path, keys=())
    xk, yk = _pick_keys(found, x_key, y_key, str(path))
    arrays, _ = _read_h5(path, keys=(xk, yk))
    return check_dataset(_scaled(arrays[xk], value_range, str(path)), arrays[yk], name=Path(path).name)


def load_csaw_h5(path: str | os.PathLike) -> Dataset:
    """Load a CSAW-HackML-2020 / NNoculation ``.h5`` file: ``data`` (N, 3, H, W) in 0-255 and ``label``.

    The images are transposed to NHWC and divided by 255, as the challenge's ``eval.py`` does.

    Example:
        >>> x, y = load_csaw_h5("clean_validation_data.h5")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        (11547, 55, 47, 3)
    """
    arrays, found = _read_h5(path, keys=("data", "label"))
    missing = [k for k in ("data", "label") if k not in arrays]
    if missing:
        raise DataError(f"{path}: not a CSAW/NNoculation file, key(s) {missing} are missing; the file holds {found}.")
    data = arrays["data"]
    if data.ndim != 4 or data.shape[1] not in (1, 3):
        raise DataError(f"{path}: 'data' has shape {tuple(data.shape)}; expected channels-first (N, 3, H, W).")
    x = np.transpose(data, (0, 2, 3, 1)).astype(np.float32) / np.float32(255.0)
    return check_dataset(x, arrays["label"], name=Path(path).name)


def load_nc_gtsrb_h5(path: str | os.PathLike, split: str = "test") -> Dataset:
    """Load Neural Cleanse's ``gtsrb_dataset_int.h5``: ``X_<split>`` raw 0-255 and ``Y_<split>`` (one-hot or indices).

    Args:
        path: the h5 file.
        split: ``"test"`` or ``"train"``.
    """
    if split not in ("test", "train"):
        raise DataError(f"split must be 'test' or 'train', got {split!r}.")
    xk, yk = f"X_{split}", f"Y_{split}"
    arrays, found = _read_h5(path, keys=(xk, yk))
    missing = [k for k in (xk, yk) if k not in arrays]
    if missing:
        raise DataError(f"{path}: key(s) {missing} are missing for split {split!r}; the file holds {found}.")
    return check_dataset(_scaled(arrays[xk], "0-255", str(path)), arrays[yk], name=Path(path).name)


def load_npz(path: str | os.PathLike, x_key: str | None = None, y_key: str | None = None, *, value_range: str | None = None) -> Dataset:
    """Load an ``.npz`` archive (keys detected from :data:`KEY_PAIRS` when not given; never unpickles).

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> np.savez(p, x_test=np.zeros((2, 4, 4, 1), np.uint8), y_test=np.array([0, 1]))
        >>> load_npz(p)[0].shape
        (2, 4, 4, 1)
    """
    p = _existing(path, "data file")
    try:
        with np.load(p, allow_pickle=False) as archive:
            xk, yk = _pick_keys(archive.files, x_key, y_key, str(p))
            x, y = archive[xk], archive[yk]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p} is not a readable .npz archive (truncated, corrupt, or holds pickled objects): {exc}") from exc
    return check_dataset(_scaled(x, value_range, str(p)), y, name=p.name)


def load_npz_array(path: str | os.PathLike, key: str) -> np.ndarray | None:
    """The array ``key`` of an ``.npz`` archive, or None when the file is not an ``.npz`` or has no such key.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> np.savez(p, x=np.zeros((2, 4, 4, 1)), y=np.array([0, 1]), triggered=np.array([False, True]))
        >>> load_npz_array(p, "triggered").tolist(), load_npz_array(p, "flags")
        ([False, True], None)
    """
    p = Path(path).expanduser()
    if p.suffix.lower() != ".npz" or not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as archive:
            return archive[key] if key in archive.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{p} is not a readable .npz archive (truncated, corrupt, or holds pickled objects): {exc}") from exc


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array (truncated, corrupt, or pickled): {exc}") from exc


def load_npy_class_folder(directory: str | os.PathLike, pattern: str = r"^(\d+)_test\.npy$") -> Dataset:
    """Load a folder of per-class ``.npy`` files (``{d}_test.npy`` holds class ``d``), e.g. the zoo's MNIST test set.

    uint8 (n, H, W) arrays become (n, H, W, 1) in [0, 1]; images are ordered by class.

    Args:
        directory: the folder.
        pattern: regular expression whose first group is the class index.
    """
    d = _existing(directory, "data folder")
    regex = re.compile(pattern)
    files = sorted(((int(m.group(1)), f) for f in d.iterdir() if (m := regex.match(f.name))), key=lambda t: t[0])
    if not files:
        raise DataError(f"{d}: no per-class .npy files matching {pattern!r} (e.g. 0_test.npy, 1_test.npy, ...).")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for label, f in files:
        arr = _load_npy(f)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise DataError(f"{f}: array of shape {tuple(arr.shape)}; expected (n, H, W) or (n, H, W, C).")
        if xs and arr.shape[1:] != xs[0].shape[1:]:
            raise DataError(f"{f}: image shape {tuple(arr.shape[1:])} differs from the other files' {tuple(xs[0].shape[1:])}.")
        xs.append(arr)
        ys.append(np.full(len(arr), label, dtype=np.int64))
    return check_dataset(np.concatenate(xs), np.concatenate(ys), name=d.name)


def load_image_folder(
    directory: str | os.PathLike,
    *,
    grayscale: bool = False,
    size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """Load ``directory/<class>/<image>`` files (OpenCV reads BGR; converted to RGB).

    Labels: when every class folder name is an integer the integer is the label (``0/``, ``1/``, ...); otherwise
    the folders are sorted by name and numbered from 0 (pass ``class_names`` to fix the order).

    Args:
        directory: root folder with one sub-folder per class.
        grayscale: read as single-channel images.
        size: ``(height, width)`` to resize every image to (INTER_AREA); required when sizes differ.
        class_names: explicit folder order defining the labels.
    """
    root = _existing(directory, "image folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root}: no class sub-folders found; expected {root}/<class>/<image files>.")
    if class_names is not None:
        unknown = [c for c in class_names if c not in folders]
        if unknown:
            raise DataError(f"{root}: class folder(s) {unknown} not found; present: {folders}.")
        labels = {c: i for i, c in enumerate(class_names)}
    elif all(f.isdigit() for f in folders):
        labels = {f: int(f) for f in folders}
    else:
        labels = {f: i for i, f in enumerate(folders)}
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    images: list[np.ndarray] = []
    ys: list[int] = []
    for name, label in labels.items():
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            img = cv2.imread(str(f), flag)
            if img is None:
                raise DataError(f"{f}: cannot decode the image (corrupt or unsupported format).")
            if size is not None:
                img = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)
            img = img[..., None] if grayscale else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if images and img.shape != images[0].shape:
                raise DataError(f"{f}: image shape {img.shape} differs from {images[0].shape}; pass size=(H, W) to resize.")
            images.append(img)
            ys.append(label)
    if not images:
        raise DataError(f"{root}: the class folders hold no images with extensions {IMAGE_EXTENSIONS}.")
    return check_dataset(np.stack(images), np.asarray(ys, dtype=np.int64), name=root.name)


def load_digits(size: int = 16) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images, 10 classes), resized to ``size``×``size`` grayscale.

    Pixel values 0-16 are divided by 16, then resized with ``cv2.INTER_LINEAR``; no download is needed, which
    makes this the embedded default of the demo and the tests.

    Example:
        >>> x, y = load_digits(16)
        >>> x.shape, int(y.max())
        ((1797, 16, 16, 1), 9)
    """
    from sklearn.datasets import load_digits as _sk_digits

    if not 8 <= int(size) <= 256:
        raise DataError(f"digits size must be between 8 and 256 pixels, got {size}.")
    bunch = _sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    if size != 8:
        x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in x])
    return check_dataset(np.clip(x, 0.0, 1.0)[..., None], bunch.target, name="digits")


def mnist_test_set() -> Dataset:
    """The full MNIST test set (10,000 images) from the zoo's ``catchbackdoor_mnist/Clean_test_data``."""
    from kerasbd.zoo import zoo_dir

    return load_npy_class_folder(Path(zoo_dir()) / "catchbackdoor_mnist" / "Clean_test_data")


def load_data(source: str | os.PathLike, **kwargs: Any) -> Dataset:
    """Load a dataset from a path in any supported format, or a built-in name.

    Names: ``"digits"`` (optionally ``"digits:28"`` for the size) and ``"mnist"`` (the zoo's MNIST test set).
    Files: ``.npz``; ``.h5``/``.hdf5`` with CSAW keys (``data``/``label``), Neural Cleanse keys
    (``X_test``/``Y_test``) or any pair in :data:`KEY_PAIRS`. Folders: per-class ``{d}_test.npy`` files or
    class sub-folders of images. Extra keyword arguments go to the selected loader.

    Example:
        >>> load_data("digits:12")[0].shape
        (1797, 12, 12, 1)
    """
    text = os.fspath(source)
    name, _, arg = text.partition(":")
    if name == "digits" and not Path(text).exists():
        return load_digits(int(arg) if arg else 16, **kwargs)
    if text == "mnist" and not Path(text).exists():
        return mnist_test_set()
    p = _existing(text, "data source")
    if p.is_dir():
        if any(re.match(r"^\d+_test\.npy$", f.name) for f in p.iterdir()):
            return load_npy_class_folder(p, **kwargs)
        return load_image_folder(p, **kwargs)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz(p, **kwargs)
    if suffix in (".h5", ".hdf5"):
        _, found = _read_h5(p, keys=())
        if {"data", "label"} <= set(found) and not kwargs:
            return load_csaw_h5(p)
        if {"X_test", "Y_test"} <= set(found) and not kwargs:
            return load_nc_gtsrb_h5(p, "test")
        return load_h5(p, **kwargs)
    raise DataError(
        f"{p}: unsupported data format {suffix or '(no extension)'}; use .npz, .h5, a per-class .npy folder, "
        "an image folder, or 'digits'."
    )
