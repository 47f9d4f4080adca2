"""kerasbd.zoo and kerasbd.models on the real published BadNets in ../shared/zoo (or $KERASBD_ZOO).

Tests marked ``zoo`` skip when the zoo directory is absent; the manifest and error-path tests run anywhere.
Crafted bad files are made from copies in tmp_path; the zoo itself is only read (checksums compared after).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings

import h5py
import keras
import numpy as np
import pytest

from kerasbd import zoo
from kerasbd.errors import ModelFileError, UnsafeModelError, WeightsMismatchError, ZooError
from kerasbd.io import sha256_file
from kerasbd.models import InputSpec, build_architecture, load_model, load_weights


def _zoo_or_none():
    try:
        return zoo.zoo_dir()
    except ZooError:
        return None


ZOO = _zoo_or_none()
needs_zoo = [pytest.mark.zoo, pytest.mark.skipif(ZOO is None, reason="model zoo not found (set KERASBD_ZOO)")]
MODELS = [e for e in zoo.list_entries() if e["format"] in ("full", "weights")]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def zoo_checksums():
    """sha256 of every zoo file before the module's tests; compared again at the end."""
    if ZOO is None:
        pytest.skip("model zoo not found")
    files = sorted(p for p in ZOO.rglob("*") if p.is_file())
    before = {p: sha256_file(p) for p in files}
    yield before
    assert {p: sha256_file(p) for p in files} == before, "a zoo file changed during the tests"


# --- manifest (no zoo needed) ---------------------------------------------------------------------------------


def test_manifest_entries_are_complete():
    entries = zoo.list_entries()
    assert len(entries) == len({e["name"] for e in entries}) >= 20
    for e in entries:
        assert e["role"] in zoo.ROLES and e["format"] in ("full", "weights", "data")
        assert set(e["source"]) == {"repo", "commit", "path"} and len(e["source"]["commit"]) == 40
        assert e["license"] and e["notes"]
        assert e["sha256"] is None and e["files"] or len(e["sha256"]) == 64
        if e["format"] != "data":
            assert e["input"] is None or InputSpec.from_dict(e["input"]).shape == tuple(e["expected_input_shape"][1:])
            assert {"clean_acc", "asr", "verified"} <= set(e["reported"])
            assert e["format"] == "full" or e["architecture"]
            for bd in e["backdoors"] or []:
                assert {"name", "trigger", "target", "input"} <= set(bd)
                assert bd["target"]["type"] in ("all-to-one", "all-to-all")


def test_manifest_records_the_documented_triggers():
    pattern = zoo.get_entry("dillonsd_pattern_all_to_one")["backdoors"][0]
    assert sorted(map(tuple, pattern["trigger"]["pixels"])) == sorted(
        [(27, 27, 1.0), (25, 27, 1.0), (27, 25, 1.0), (25, 25, 1.0), (23, 27, 1.0), (27, 23, 1.0)])
    assert pattern["target"] == {"type": "all-to-one", "label": 0}
    assert zoo.get_entry("dillonsd_single_pixel_all_to_all")["backdoors"][0]["target"] == {"type": "all-to-all", "shift": 1}
    ruiz = zoo.get_entry("ruizegao_mnist_backdoor_7")
    assert ruiz["backdoors"][0]["trigger"] == {"type": "patch", "size": [4, 4], "position": [23, 23], "value": 1.0}
    assert ruiz["input"]["range"] == "0-255" and ruiz["reported"] == {**ruiz["reported"], "clean_acc": 0.9589, "asr": 1.0, "verified": True}
    nc = zoo.get_entry("nc_gtsrb_backdoor_33_logits")["backdoors"][0]
    assert nc["trigger"]["position"] == "bottom-right" and nc["trigger"]["margin"] == 1 and nc["target"]["label"] == 33
    sg = zoo.get_entry("csaw2020_sunglasses_weights")["backdoors"][0]
    assert sg["trigger"]["path"] == "zoo:nnoculation/sun_glass_trigger.png" and sg["trigger"]["position"] == [15, 0]
    assert "INFERRED" in zoo.get_entry("csaw_f_mnist_all_to_all")["notes"]
    assert zoo.find_by_sha256(zoo.get_entry("trojannet")["sha256"])["name"] == "trojannet"


def test_manifest_specs_parse_with_the_attacks_module():
    attacks = pytest.importorskip("kerasbd.attacks")
    from_spec = getattr(attacks, "from_spec", None)
    if from_spec is None:
        pytest.skip("kerasbd.attacks.from_spec not available yet")
    for e in MODELS:
        for bd in e["backdoors"] or []:
            assert from_spec(bd), e["name"]


def test_unknown_entry_and_role():
    with pytest.raises(ZooError, match="no zoo entry named 'nope'"):
        zoo.get_entry("nope")
    with pytest.raises(ZooError, match="unknown role"):
        zoo.list_entries(role="evil")
    with pytest.raises(ZooError, match="is data"):
        zoo.load_zoo_model("mnist_test")


def test_zoo_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.ENV_VAR, str(tmp_path))
    assert zoo.zoo_dir() == tmp_path
    monkeypatch.setenv(zoo.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(ZooError, match="KERASBD_ZOO"):
        zoo.zoo_dir()


def test_checksum_mismatch_refuses_to_load(tmp_path, monkeypatch):
    fake = tmp_path / "trojannet" / "trojannet.h5"
    fake.parent.mkdir()
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    monkeypatch.setenv(zoo.ENV_VAR, str(tmp_path))
    name, ok, message = zoo.verify("trojannet")[0]
    assert name == "trojannet" and not ok and "checksum mismatch" in message
    assert not zoo.verify()[1][1]  # other entries: missing files reported, not raised
    with pytest.raises(ZooError, match="checksum mismatch.*Refusing"):
        zoo.load_zoo_model("trojannet")


# --- the real zoo ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("zoo_checksums")
class TestRealZoo:
    pytestmark = needs_zoo

    def test_every_checksum_verifies(self):
        results = zoo.verify()
        assert [r for r in results if not r[1]] == []
        assert len(results) == len(zoo.list_entries())

    @pytest.mark.parametrize("name", [e["name"] for e in MODELS])
    def test_every_model_loads_with_its_manifest_shapes(self, name):
        entry = zoo.get_entry(name)
        with pytest.warns(UserWarning, match="NaN") if name == "ruizegao_cifar10_clean_logits" else _no_warning():
            clf = zoo.load_zoo_model(name)
        in_shape, out_shape = entry["expected_input_shape"], entry["expected_output_shape"]
        assert clf.model.output_shape == tuple(out_shape)
        assert (None, *clf.input_shape) == tuple(in_shape)
        assert clf.source["sha256"] == entry["sha256"] and clf.source["zoo_entry"] == name
        assert clf.source["format"] == ("h5-full" if entry["format"] == "full" else "h5-weights")
        assert clf.input_spec == (InputSpec.from_dict(entry["input"]) if entry["input"] else None)
        if entry["format"] == "full":
            assert clf.output_activation == entry["output_activation"]

    def test_trojannet_input_is_16_dimensional(self):
        clf = zoo.load_zoo_model("trojannet")
        assert clf.model.input_shape == (None, 16) and clf.num_classes == 4369
        x = np.eye(16, dtype="float32")[:4]
        np.testing.assert_allclose(clf.predict_proba(x).sum(axis=1), 1.0, atol=1e-5)

    def test_youtube_full_model_and_weights_only_agree(self):
        full = zoo.load_zoo_model("nyu_lab3_badnet")
        weights = zoo.load_zoo_model("nyu_lab3_badnet_weights")
        x = np.random.default_rng(0).random((6, 55, 47, 3)).astype("float32")
        np.testing.assert_array_equal(full.predict_logits(x), weights.predict_logits(x))
        other = zoo.load_zoo_model("csaw2020_sunglasses_weights")
        assert not np.allclose(other.predict_logits(x), full.predict_logits(x))  # a different BadNet

    def test_logits_are_the_stored_softmax_inputs(self):
        path = zoo.entry_path("dillonsd_pattern_all_to_one")
        clf = load_model(path)
        stored = keras.models.load_model(path, compile=False)  # Keras reads this (2.11) file correctly
        x = np.random.default_rng(1).random((8, 28, 28, 1)).astype("float32")
        np.testing.assert_allclose(softmax(clf.predict_logits(x)), np.asarray(stored(x)), atol=1e-6)

    def test_raw_pixel_model_gets_an_input_adapter(self):
        clf = zoo.load_zoo_model("ruizegao_mnist_backdoor_7")
        stored = load_model(zoo.entry_path("ruizegao_mnist_backdoor_7"), input_spec=InputSpec((28, 28, 1)))
        x = np.random.default_rng(2).random((4, 28, 28, 1)).astype("float32")
        np.testing.assert_allclose(clf.predict_logits(x), stored.model.predict(x * 255.0, verbose=0), rtol=1e-5, atol=1e-4)
        assert clf.source["input_spec_source"] == "zoo:ruizegao_mnist_backdoor_7"

    def test_reproduces_verified_clean_accuracy(self):
        xs, ys = [], []
        for d in range(10):
            a = np.load(zoo.entry_path("mnist_test") / f"{d}_test.npy")
            xs.append(a[::10])
            ys.append(np.full(len(a[::10]), d))
        x, y = np.concatenate(xs)[..., None], np.concatenate(ys)
        acc = (zoo.load_zoo_model("csaw_f_mnist_all_to_all").predict(x) == y).mean()
        assert acc > 0.95  # 1,000-image subsample of a 97.71% model

    # --- crafted bad files from zoo copies ---

    def test_lambda_injected_into_a_real_file(self, tmp_path):
        path = tmp_path / "trojannet_lambda.h5"
        shutil.copy(zoo.entry_path("trojannet"), path)
        path.chmod(0o644)
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            config["config"]["layers"].insert(1, {"class_name": "Lambda", "config": {"name": "lambda_1", "function": ["4wEA", None, None], "function_type": "lambda", "module": "__main__"}})
            f.attrs["model_config"] = json.dumps(config).encode()
        with pytest.raises(UnsafeModelError, match="'lambda_1'"):
            load_model(path)

    def test_truncated_real_file(self, tmp_path):
        data = zoo.entry_path("ruizegao_mnist_clean").read_bytes()
        path = tmp_path / "half.h5"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ModelFileError, match="truncated"):
            load_model(path)

    def test_real_weights_into_the_wrong_architecture(self):
        path = zoo.entry_path("csaw_f_mnist_all_to_all_weights")
        with pytest.raises(WeightsMismatchError, match=r"'output', weight 'kernel': shape \(512, 10\) in the file but \(512, 11\)"):
            load_weights(build_architecture("csaw_mnist", num_classes=11), path)
        with pytest.raises(WeightsMismatchError, match="conv_3"):
            load_weights(build_architecture("deepid"), path)
        with pytest.raises(ModelFileError, match="weights-only"):
            load_model(path)


@contextlib.contextmanager
def _no_warning():
    """Assert that nothing warns about non-finite weights inside the block."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield
    assert not [w for w in records if "NaN" in str(w.message)]
