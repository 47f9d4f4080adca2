"""Hostile and careless model files, each built here with h5py/zipfile and refused with its own clear message.

Every probe asserts the exception type and a message fragment, that the model file (and any file it points to)
is unchanged, and that no code named by the file ran (``probe>Pwned`` writes a marker file when constructed).
The probes that would exhaust memory if a check regressed run together in one subprocess under ``RLIMIT_AS``,
so a regression fails with a MemoryError instead of swapping.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from fixtures.legacy_h5 import conv_functional, mlp_reference_logits, mlp_sequential, write_legacy_h5

from kerasbd.errors import ConfigError, ModelFileError, ModelTooLargeError, UnsafeModelError, WeightsMismatchError
from kerasbd.io import sha256_file
from kerasbd.models import load_model, load_weights
from kerasbd.models.limits import MAX_CONFIG_DEPTH
from kerasbd.models.safety import check_config

KERNEL = "model_weights/dense_1/dense_1/kernel:0"  # the (16, 8) float32 first kernel of the MLP fixture
MEMORY_HEADROOM = 256 * 2**20  # what the memory probes may allocate beyond a warmed-up process
BOMB_BYTES = 2**30  # what each decompression bomb inflates to, far beyond the headroom


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A file that exists only if code named by a model file ran: ``probe>Pwned`` writes it when constructed."""
    path = tmp_path / "pwned"

    class Pwned(keras.initializers.Initializer):
        def __init__(self, *args, **kwargs):
            path.write_text("code from the model file ran")

        def __call__(self, shape, dtype=None):
            return keras.ops.zeros(shape, dtype)

    monkeypatch.setitem(keras.saving.get_custom_objects(), "probe>Pwned", Pwned)
    return path


def assert_refused(path, error, match, marker, *, watched=(), **options):
    """``load_model(path)`` raises ``error`` matching ``match``; no file changed, no code ran."""
    files = [Path(path), *watched]
    before = [sha256_file(f) for f in files]
    with pytest.raises(error, match=match):
        load_model(path, **options)
    assert [sha256_file(f) for f in files] == before
    assert not marker.exists()


def mlp_file(path: Path, config_edit=None, **options) -> Path:
    config, weights = mlp_sequential()
    if config_edit is not None:
        config_edit(config["config"]["layers"])
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_legacy_h5(path, config, weights, **options)


def conv_file(path: Path, edit) -> Path:
    """The Keras 2 conv model (layers input, conv_1, flatten_1, output) with its layer list changed by ``edit``."""
    config, weights = conv_functional()
    config = copy.deepcopy(config)
    edit(config["config"]["layers"])
    return write_legacy_h5(path, config, weights)


def replace_kernel(path: Path, put) -> Path:
    """Replace the MLP's first kernel by what ``put(file, name)`` creates at the same name."""
    with h5py.File(path, "r+") as f:
        del f[KERNEL]
        put(f, KERNEL)
    return path


def source_file(path: Path) -> Path:
    """Another local HDF5 file holding a (16, 8) dataset named ``kernel``."""
    with h5py.File(path, "w") as f:
        f["kernel"] = np.full((16, 8), 7.0, "float32")
    return path


# --- 1. data stored outside the model file ---------------------------------------------------------------------


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-path", "relative-path"])
def test_external_storage_is_refused(tmp_path, marker, monkeypatch, relative):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 32)
    path = mlp_file(tmp_path / "models" / "external.h5")
    monkeypatch.chdir(path.parent)  # HDF5 resolves relative external names against the working directory
    target = "../secret.txt" if relative else str(secret)
    replace_kernel(path, lambda f, name: f.create_dataset(name, shape=(16, 8), dtype="f4", external=[(target, 0, h5py.h5f.UNLIMITED)]))
    assert_refused(path, UnsafeModelError, rf"dataset '{KERNEL}' stores its data in the external file\(s\) \['{re.escape(target)}'\]",
                   marker, watched=[secret])


def test_external_link_is_refused(tmp_path, marker):
    other = source_file(tmp_path / "other.h5")
    path = replace_kernel(mlp_file(tmp_path / "link.h5"), lambda f, name: f.__setitem__(name, h5py.ExternalLink(str(other), "/kernel")))
    assert_refused(path, UnsafeModelError, rf"'{KERNEL}' is an external link to '/kernel' in the file '{re.escape(str(other))}'",
                   marker, watched=[other])


def test_virtual_dataset_is_refused(tmp_path, marker):
    other = source_file(tmp_path / "other.h5")

    def virtual(f, name):
        layout = h5py.VirtualLayout(shape=(16, 8), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "kernel", shape=(16, 8))
        f.create_virtual_dataset(name, layout)

    path = replace_kernel(mlp_file(tmp_path / "virtual.h5"), virtual)
    assert_refused(path, UnsafeModelError, rf"dataset '{KERNEL}' is a virtual dataset reading from \['{re.escape(str(other))}'\]",
                   marker, watched=[other])


def test_dev_source_is_refused(tmp_path, marker):
    path = replace_kernel(mlp_file(tmp_path / "dev.h5"),
                          lambda f, name: f.create_dataset(name, shape=(16, 8), dtype="f4", external=[("/dev/urandom", 0, h5py.h5f.UNLIMITED)]))
    assert_refused(path, UnsafeModelError, r"external file\(s\) \['/dev/urandom'\].*trust=True does not lift this", marker, trust=True)


def test_keras3_weights_file_with_external_storage_is_refused(tmp_path, marker):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    load_weights(fresh, path)  # the untampered file loads through kerasbd's checked copy
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(64))
    with h5py.File(path, "r+") as f:
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(4, 3), dtype="f4", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    before = sha256_file(path), sha256_file(secret)
    with pytest.raises(UnsafeModelError, match=r"dataset 'layers/dense/vars/0' stores its data in the external file"):
        load_weights(fresh, path)
    assert (sha256_file(path), sha256_file(secret)) == before and not marker.exists()


# --- 2. files that would exhaust memory (one subprocess under RLIMIT_AS) -------------------------------------------

PROBE_SCRIPT = r"""
import json, re, resource, sys
from kerasbd.models import load_model

paths, headroom = json.loads(sys.argv[1]), int(sys.argv[2])
load_model(paths.pop("warm_up"))  # imports, thread pools and first-use allocations happen before the limit
with open("/proc/self/status") as status:
    used = int(re.search(r"VmSize:\s+(\d+)", status.read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + headroom, resource.RLIM_INFINITY))
results = {}
for name, path in paths.items():
    try:
        load_model(path)
        results[name] = ["loaded", ""]
    except BaseException as exc:  # a MemoryError is a result too: the probe exhausted memory
        results[name] = [type(exc).__name__, str(exc)]
print(json.dumps(results))
"""


def raw_deflate(*parts: tuple[bytes, int]) -> bytes:
    """A raw deflate stream of each ``(block, count)`` part, the block compressed once and repeated (fast for GiB)."""
    stream = b""
    for block, count in parts:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        # A full flush ends the copy byte-aligned and lets the next copy refer to nothing before it.
        stream += (compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)) * count
    return stream + zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block


def checksum(function, *parts: tuple[bytes, int]) -> int:
    value = function(b"")
    for block, count in parts:
        for _ in range(count):
            value = function(block, value)
    return value


def huge_declared_dataset(path: Path) -> Path:
    """A few KB on disk declaring a 22.4 GiB kernel: HDF5 allocates storage only when a dataset is written."""
    replace_kernel(mlp_file(path), lambda f, name: f.create_dataset(name, shape=(77_000, 78_000), dtype="f4"))
    assert path.stat().st_size < 64 * 2**10
    return path


def zip_bomb(path: Path) -> Path:
    """A .keras archive whose config.json (a tiny model, then 1 GiB of spaces) is stored as about 1 MB."""
    head = json.dumps({"module": "keras", "class_name": "Sequential", "config": {"name": "bomb", "layers": []}}).encode()
    parts = ((head, 1), (b" " * 2**20, BOMB_BYTES // 2**20))
    data, crc, size, name = raw_deflate(*parts), checksum(zlib.crc32, *parts), len(head) + BOMB_BYTES, b"config.json"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size, len(name), 0) + name
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size, len(name),
                          0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    assert zipfile.ZipFile(path).getinfo("config.json").file_size == size and path.stat().st_size < 2 * 2**20
    return path


def gzip_bomb(path: Path) -> Path:
    """The MLP's first kernel as one gzip chunk declared as 512 bytes that inflates to 1 GiB."""
    parts = ((bytes(2**20), BOMB_BYTES // 2**20),)
    chunk = b"\x78\xda" + raw_deflate(*parts) + struct.pack(">L", checksum(zlib.adler32, *parts))

    def bomb(f, name):
        f.create_dataset(name, shape=(16, 8), dtype="f4", chunks=(16, 8), compression="gzip").id.write_direct_chunk((0, 0), chunk)

    return replace_kernel(mlp_file(path), bomb)


def billion_unit_dense(path: Path) -> Path:
    """The MLP with a 10^9-unit output layer (64 GB of float32 if it were built)."""
    return mlp_file(path, lambda layers: layers[2]["config"].update(units=10**9))


@pytest.fixture(scope="module")
def memory_probes(tmp_path_factory):
    """``{probe: (exception name, message, path, sha256 before)}`` from loading each file in a limited subprocess."""
    folder = tmp_path_factory.mktemp("memory")
    files = {"warm_up": mlp_file(folder / "warm_up.h5"), "huge_dataset": huge_declared_dataset(folder / "huge.h5"),
             "zip_bomb": zip_bomb(folder / "bomb.keras"), "gzip_bomb": gzip_bomb(folder / "gzip.h5"),
             "billion_units": billion_unit_dense(folder / "dense.h5")}
    before = {name: sha256_file(path) for name, path in files.items()}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "MALLOC_ARENA_MAX": "2"}
    run = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, json.dumps({k: str(v) for k, v in files.items()}), str(MEMORY_HEADROOM)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    return {name: (*results[name], files[name], before[name]) for name in results}


def assert_probe_refused(memory_probes, name, error, match):
    kind, message, path, digest = memory_probes[name]
    assert kind == error.__name__, message
    assert re.search(match, message), message
    assert sha256_file(path) == digest


def test_huge_declared_dataset_is_refused_before_reading(memory_probes):
    assert_probe_refused(memory_probes, "huge_dataset", WeightsMismatchError,
                         r"'dense_1', weight 'kernel': shape \(77000, 78000\) in the file but \(16, 8\) in the model")


def test_zip_bomb_config_is_refused_before_inflating(memory_probes):
    assert_probe_refused(memory_probes, "zip_bomb", ModelTooLargeError,
                         r"config.json declares 1,073,741,\d{3} bytes uncompressed \(\d{1,3}(,\d{3})* stored\), more than the limit of 16,777,216")


def test_gzip_bomb_dataset_is_refused_while_inflating(memory_probes):
    assert_probe_refused(memory_probes, "gzip_bomb", ModelTooLargeError,
                         rf"a chunk of dataset '/{KERNEL}' inflates beyond its declared 512 bytes \(a decompression bomb\)")


def test_billion_unit_dense_is_refused_before_allocating(memory_probes):
    assert_probe_refused(memory_probes, "billion_units", ModelTooLargeError,
                         r"describes 9,000,000,\d{3} parameters, more than max_params=150,000,000 \(the largest weight, "
                         r"'[\w/]*dense_2/kernel', has shape \(8, 1000000000\)\).*load_model\(\.\.\., max_params=N\)")


@pytest.mark.parametrize("depth", [MAX_CONFIG_DEPTH + 1, 100_000], ids=["beyond-the-limit", "beyond-python-recursion"])
def test_deeply_nested_config_is_refused(tmp_path, marker, depth):
    _, weights = mlp_sequential()
    text = '{"class_name": "Sequential", "config": {"name": "deep", "layers": ' + "[" * depth + "]" * depth + "}}"
    path = write_legacy_h5(tmp_path / "deep.h5", text, weights)
    assert_refused(path, ModelFileError, f"nested more than {MAX_CONFIG_DEPTH} levels deep", marker)


def test_limits_are_options(tmp_path, marker):
    path = mlp_file(tmp_path / "mlp.h5")  # 16·8 + 8 + 4·8 + 8·5 + 5 = 213 parameters
    assert_refused(path, ModelTooLargeError, r"describes 213 parameters, more than max_params=212", marker, max_params=212)
    assert_refused(path, ModelTooLargeError, r"more than max_config_bytes=100\b", marker, max_config_bytes=100)
    assert load_model(path, max_params=213).num_classes == 5
    with pytest.raises(ConfigError, match="max_params must be a positive integer"):
        load_model(path, max_params=0)


def _open_writer(fifo: Path) -> None:
    with contextlib.suppress(OSError):  # no reader waiting: nothing to unblock
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_fifo_is_refused_without_blocking(tmp_path, marker):
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    unblock = threading.Timer(10, _open_writer, [fifo])  # a regressed loader blocked on the FIFO gets EOF, not a hang
    unblock.daemon = True
    unblock.start()
    try:
        with pytest.raises(ModelFileError, match=r"model.h5 is a named pipe \(FIFO\), not a regular file"):
            load_model(fifo)
    finally:
        unblock.cancel()
    assert not marker.exists()


def test_device_is_refused(marker):
    with pytest.raises(ModelFileError, match=r"/dev/zero is a character device, not a regular file"):
        load_model("/dev/zero")
    assert not marker.exists()


# --- 3. what kerasbd inspects is what it loads ---------------------------------------------------------------------


def make_polyglot(path: Path, archive: bytes) -> None:
    """Put a zip's members into the HDF5 user block at offset 0 and its central directory after the HDF5 data."""
    cd_size, cd_offset = struct.unpack("<2L", archive[-10:-2])  # end record: ..., directory size, offset, comment length
    with open(path, "r+b") as f:
        f.write(archive[:cd_offset])
        end = f.seek(0, os.SEEK_END)
        f.write(archive[cd_offset:cd_offset + cd_size] + archive[-22:-6] + struct.pack("<LH", end, 0))


def test_zip_hdf5_polyglot_named_h5_is_refused(tmp_path, marker):
    benign = tmp_path / "benign.keras"
    keras.Sequential([keras.Input((16,)), keras.layers.Dense(5)]).save(benign)
    archive = benign.read_bytes()
    hostile = mlp_file(tmp_path / "polyglot.h5", lambda layers: layers[1]["config"].update(beta_initializer="probe>Pwned"),
                       userblock_size=1 << max(9, len(archive).bit_length()))
    make_polyglot(hostile, archive)
    with zipfile.ZipFile(hostile) as z, h5py.File(hostile, "r") as f:  # both readings are valid, and differ
        assert z.read("config.json") == zipfile.ZipFile(benign).read("config.json") and "probe>Pwned" in f.attrs["model_config"]
    assert_refused(hostile, ModelFileError, "polyglot.h5 is both a zip archive and an HDF5 file", marker)


def test_damaged_zip_named_h5_is_described_in_the_users_terms(tmp_path, marker):
    damaged = tmp_path / "model.h5"
    damaged.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    assert_refused(damaged, ModelFileError, re.escape("starts like a zip archive (the .keras format) but cannot be read as one"), marker)


def test_format_comes_from_the_content_not_the_name(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    saved = tmp_path / "model.keras"
    model.save(saved)
    renamed = tmp_path / "model.h5"
    renamed.write_bytes(saved.read_bytes())
    monkeypatch.setattr(keras.saving, "load_model", None)  # kerasbd never hands a path to a Keras loader
    clf = load_model(renamed)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    assert clf.source["format"] == "keras"
    np.testing.assert_allclose(clf.predict_logits(x), np.asarray(model(x)), atol=1e-6)


def test_registered_name_next_to_a_keras_module_is_refused(tmp_path, marker):
    path = conv_file(tmp_path / "registered.h5", lambda layers: layers[3].update(module="keras.layers", registered_name="probe>Pwned"))
    assert_refused(path, UnsafeModelError, r"layer 'output' \(Dense\) names the registered object 'probe>Pwned'.*\(key 'registered_name'\)", marker)


def test_keras_utils_get_file_as_activation_is_refused(tmp_path, marker):
    def get_file(layers):
        layers[3]["config"]["activation"] = {"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": "function"}

    assert_refused(conv_file(tmp_path / "get_file.h5", get_file), UnsafeModelError,
                   r"layer 'output' \(Dense\) references the function 'get_file' of module 'keras.utils', which is not a Keras "
                   r"activation \(key 'config.activation'\)", marker)


def test_non_builtin_class_under_a_keras_src_module_is_refused(tmp_path, marker):
    path = conv_file(tmp_path / "src.h5", lambda layers: layers[2].update(module="keras.src.ops.numpy", class_name="Add"))
    assert_refused(path, UnsafeModelError, r"layer 'flatten_1' \(Add\) names 'Add' in module 'keras.src.ops.numpy', where Keras "
                                           r"ships no such built-in.*\(key 'module'\)", marker)


def test_registered_object_named_by_a_string_is_refused(tmp_path, marker):
    """Keras resolves a string identifier through the custom-object registry, even in safe mode."""
    path = conv_file(tmp_path / "string.h5", lambda layers: layers[1]["config"].update(kernel_initializer="probe>Pwned"))
    assert_refused(path, UnsafeModelError, r"layer 'conv_1' \(Conv2D\) names the registered object 'probe>Pwned'.*"
                                           r"\(key 'config.kernel_initializer'\)", marker)


def test_exact_allow_list_accepts_keras_own_module_paths():
    dense = {"module": "keras.src.layers.core.dense", "class_name": "Dense", "registered_name": None,
             "config": {"name": "d", "units": 2, "activation": {"module": "builtins", "class_name": "function", "config": "relu",
                                                                "registered_name": "function"},
                        "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {}}}}
    check_config({"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [dense]}})


def test_gzip_compressed_weights_load_exactly(tmp_path):
    """kerasbd's bounded reader decodes what HDF5 would: gzip and shuffle filters, partial chunks at the edges."""
    path = mlp_file(tmp_path / "gzip.h5")
    _, weights = mlp_sequential()
    with h5py.File(path, "r+") as f:
        kernels = [f"model_weights/{layer}/{layer}/kernel:0" for layer in ("dense_1", "dense_2")]
        for name in kernels:
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data, chunks=(5, 3), compression="gzip", shuffle=True)
    x = np.random.default_rng(1).normal(size=(7, 16)).astype("float32")
    np.testing.assert_allclose(load_model(path).predict_logits(x), mlp_reference_logits(weights, x), rtol=1e-4, atol=1e-4)


def _transform_layer(transform: dict) -> dict:
    return {"module": None, "class_name": "TransformLayer", "registered_name": "kerasbd>TransformLayer",
            "config": {"name": "preprocessing", "transform": transform, "seed": 0}}


def test_kerasbd_transform_inside_a_kerasbd_layer_is_plain_data():
    """A GYM-defended model: kerasbd rebuilds the transform from its own classes, so it loads without trust."""
    gym = {"class_name": "GYMLightweight", "config": {"median_ksize": 3}}
    check_config({"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [_transform_layer(gym)]}})


@pytest.mark.parametrize("transform, message", [
    ({"class_name": "GYMLightweight", "module": "os", "config": {}}, r"names the Python module 'os'"),
    ({"class_name": "Popen", "config": {}}, r"is not a Keras built-in class \('Popen'\)"),
], ids=["module", "unknown-class"])
def test_only_kerasbd_components_without_a_module_pass_inside_kerasbd_layers(transform, message):
    with pytest.raises(UnsafeModelError, match=message):
        check_config({"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [_transform_layer(transform)]}})


def test_a_kerasbd_component_outside_a_kerasbd_layer_is_refused():
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2,
                                                                          "kernel_initializer": {"class_name": "GYMLightweight", "config": {}}}}
    with pytest.raises(UnsafeModelError, match=r"is not a Keras built-in class \('GYMLightweight'\)"):
        check_config({"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [dense]}})
