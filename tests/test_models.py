"""kerasbd.models: legacy translation, safety checks, strict weights, logits views, Classifier, architectures.

Everything here runs without the zoo: Keras 2-style files are written with h5py (tests/fixtures/legacy_h5.py).
"""

from __future__ import annotations

import copy
import json

import h5py
import keras
import numpy as np
import pytest
from fixtures.legacy_h5 import conv_functional, mlp_reference_logits, mlp_sequential, write_legacy_h5

from kerasbd.errors import ConfigError, DataError, ModelFileError, UnknownLayerError, UnsafeModelError, WeightsMismatchError
from kerasbd.io import sha256_file
from kerasbd.models import (
    ARCHITECTURES,
    Classifier,
    InputSpec,
    PreActivation,
    as_logits_model,
    build_architecture,
    load_model,
    load_weights,
    wrap,
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def mlp_file(tmp_path):
    config, weights = mlp_sequential()
    return write_legacy_h5(tmp_path / "mlp.h5", config, weights), weights


@pytest.fixture
def conv_file(tmp_path):
    config, weights = conv_functional()
    return write_legacy_h5(tmp_path / "conv.h5", config, weights, keras_version="2.3.1"), weights


def with_config(tmp_path, name, edit):
    """A copy of the Keras 2 conv model whose model_config was changed by ``edit(config)``."""
    config, weights = conv_functional()
    config = copy.deepcopy(config)
    edit(config)
    return write_legacy_h5(tmp_path / name, config, weights)


# --- legacy translation -------------------------------------------------------------------------------------


def test_sequential_with_batch_input_shape_keeps_its_input_rank(mlp_file):
    path, weights = mlp_file
    clf = load_model(path)
    assert clf.model.input_shape == (None, 16)  # Keras 3's own loader reads (None, None, 16)
    assert clf.input_spec is None and clf.num_classes == 5 and clf.output_activation == "softmax"
    x = np.random.default_rng(1).normal(size=(7, 16)).astype("float32")
    np.testing.assert_allclose(clf.predict_logits(x), mlp_reference_logits(weights, x), rtol=1e-4, atol=1e-4)
    assert clf.source["format"] == "h5-full" and clf.source["keras_version"] == "2.2.4"
    assert clf.source["sha256"] == sha256_file(path)


def test_keras2_functional_model_class_and_legacy_initializers(conv_file):
    path, weights = conv_file
    clf = load_model(path)
    assert clf.input_shape == (6, 6, 3) and clf.input_spec == InputSpec((6, 6, 3))
    x = np.random.default_rng(2).random((4, 6, 6, 3)).astype("float32")
    k, b = (v for _, v in weights["conv_1"])
    conv = np.stack([np.einsum("nhwc,hwcf->nf", x[:, i : i + 3, j : j + 3], k) for i in range(4) for j in range(4)], axis=1) + b
    h = np.maximum(conv, 0).reshape(4, -1)
    ko, bo = (v for _, v in weights["output"])
    np.testing.assert_allclose(clf.predict_logits(x), h @ ko + bo, rtol=1e-4, atol=1e-4)
    reg = clf.model.get_layer("conv_1").kernel_regularizer
    assert reg is not None and float(reg.l2) == pytest.approx(0.01)  # regularisers survive (fine-tuning uses them)


def test_loading_never_modifies_the_file(conv_file):
    path, _ = conv_file
    before = sha256_file(path)
    load_model(path)
    assert sha256_file(path) == before


# --- safety ---------------------------------------------------------------------------------------------------


def _add_lambda(config):
    config["config"]["layers"].insert(3, {"name": "sneaky", "class_name": "Lambda", "config": {
        "name": "sneaky", "function": ["4wEAAAAAAAAA", None, None], "function_type": "lambda", "module": "__main__"},
        "inbound_nodes": [[["flatten_1", 0, 0, {}]]]})
    config["config"]["layers"][4]["inbound_nodes"] = [[["sneaky", 0, 0, {}]]]


def test_lambda_layer_is_refused_naming_the_layer(tmp_path):
    path = with_config(tmp_path, "lambda.h5", _add_lambda)
    before = sha256_file(path)
    with pytest.raises(UnsafeModelError, match=r"'sneaky' \(Lambda\).*arbitrary code.*trust=True"):
        load_model(path)
    assert sha256_file(path) == before


def test_unknown_class_is_refused_then_unknown_with_trust(tmp_path):
    def custom(config):
        config["config"]["layers"][2]["class_name"] = "MyFlatten"

    path = with_config(tmp_path, "custom.h5", custom)
    with pytest.raises(UnsafeModelError, match=r"'flatten_1' \(MyFlatten\) is not a Keras built-in"):
        load_model(path)
    with pytest.raises(UnknownLayerError, match="MyFlatten.*register_keras_serializable"):
        load_model(path, trust=True)


def test_module_reference_is_refused(tmp_path):
    def module_ref(config):
        config["config"]["layers"][1]["config"]["kernel_initializer"] = {
            "module": "os", "class_name": "system", "config": {"command": "echo pwned"}, "registered_name": "system"}

    path = with_config(tmp_path, "module.h5", module_ref)
    with pytest.raises(UnsafeModelError, match=r"'conv_1'.*module 'os'"):
        load_model(path)


def test_registered_function_outside_keras_is_refused(tmp_path):
    def fn(config):
        config["config"]["layers"][3]["config"]["activation"] = {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}

    with pytest.raises(UnsafeModelError, match="output"):
        load_model(with_config(tmp_path, "fn.h5", fn))


def test_keras_archive_with_lambda_is_refused_before_loading(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2, name="double")(inp))
    path = tmp_path / "lam.keras"
    model.save(path)
    with pytest.raises(UnsafeModelError, match="'double' \\(Lambda\\)"):
        load_model(path)


# --- file errors ----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "nope.h5")


def test_non_hdf5_file(tmp_path):
    path = tmp_path / "page.h5"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(ModelFileError, match="not an HDF5 file"):
        load_model(path)


def test_truncated_file(conv_file, tmp_path):
    path, _ = conv_file
    data = path.read_bytes()
    cut = tmp_path / "half.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)


def test_weights_only_file_needs_architecture(tmp_path):
    _, weights = conv_functional()
    path = write_legacy_h5(tmp_path / "w.h5", None, weights)
    with pytest.raises(ModelFileError, match="weights-only file.*architecture="):
        load_model(path)


def test_model_config_that_is_not_json(tmp_path):
    _, weights = conv_functional()
    path = write_legacy_h5(tmp_path / "bad.h5", "{'class_name': Sequential", weights)
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(path)


def test_unbuildable_config_is_a_model_file_error(tmp_path):
    def bad(config):
        config["config"]["layers"][1]["config"]["filters"] = "many"

    with pytest.raises(ModelFileError, match="cannot be built"):
        load_model(with_config(tmp_path, "unbuildable.h5", bad))


# --- weights --------------------------------------------------------------------------------------------------


def _tiny_named(units=3):
    inp = keras.Input((6, 6, 3), name="input")
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv_1")(inp)
    x = keras.layers.Flatten(name="flatten_1")(x)
    return keras.Model(inp, keras.layers.Dense(units, name="output")(x))


def test_weights_only_file_loads_into_an_architecture(tmp_path):
    _, weights = conv_functional()
    path = write_legacy_h5(tmp_path / "w.h5", None, weights)
    clf = load_model(path, architecture=_tiny_named())
    assert clf.source["format"] == "h5-weights" and clf.output_activation is None
    np.testing.assert_array_equal(clf.model.get_layer("output").kernel.numpy(), weights["output"][0][1])


def test_weights_shape_mismatch_names_layer_and_both_shapes(tmp_path):
    _, weights = conv_functional()
    path = write_legacy_h5(tmp_path / "w.h5", None, weights)
    model = _tiny_named(units=4)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(WeightsMismatchError, match=r"'output', weight 'kernel': shape \(32, 3\) in the file but \(32, 4\) in the model"):
        load_weights(model, path)
    for old, new in zip(before, model.weights):  # nothing assigned on failure
        np.testing.assert_array_equal(old, new.numpy())


def test_weights_name_mismatch_lists_layers(tmp_path):
    _, weights = conv_functional()
    path = write_legacy_h5(tmp_path / "w.h5", None, weights)
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv_a")(inp))
    model = keras.Model(inp, keras.layers.Dense(3, name="output")(x))
    with pytest.raises(WeightsMismatchError, match=r"\['conv_a'\].*\['conv_1'\]"):
        load_weights(model, path)
    load_weights(model, path, by="order")  # positions agree, so order matching works
    np.testing.assert_array_equal(model.get_layer("conv_a").kernel.numpy(), weights["conv_1"][0][1])


# --- logits views and the Classifier ---------------------------------------------------------------------------


def _softmax_net(kind):
    inp = keras.Input((5,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    if kind == "dense":
        out = keras.layers.Dense(3, activation="softmax")(h)
    elif kind == "softmax_layer":
        out = keras.layers.Softmax()(keras.layers.Dense(3)(h))
    elif kind == "activation_layer":
        out = keras.layers.Activation("softmax")(keras.layers.Dense(3)(h))
    else:
        out = keras.layers.Dense(3)(h)
    return keras.Model(inp, out)


@pytest.mark.parametrize("kind", ["dense", "softmax_layer", "activation_layer"])
def test_logits_view_matches_softmax_of_the_original(kind):
    model = _softmax_net(kind)
    x = np.random.default_rng(3).normal(size=(6, 5)).astype("float32")
    logits = np.asarray(as_logits_model(model)(x))
    np.testing.assert_allclose(softmax(logits), np.asarray(model(x)), atol=1e-6)
    assert not np.allclose(logits.sum(axis=1), 1.0)  # really pre-softmax
    np.testing.assert_allclose(np.asarray(model(x)).sum(axis=1), 1.0, atol=1e-5)  # original untouched


def test_model_without_softmax_is_returned_unchanged():
    model = _softmax_net("linear")
    assert as_logits_model(model) is model


def test_logits_view_shares_variables_with_the_original():
    model = _softmax_net("dense")
    view = as_logits_model(model)
    x = np.ones((1, 5), "float32")
    before = np.asarray(view(x))
    last = model.layers[-1]
    last.bias.assign(last.bias.numpy() + 1.0)
    np.testing.assert_allclose(np.asarray(view(x)), before + 1.0, atol=1e-5)
    assert {id(v) for v in view.trainable_variables} == {id(v) for v in model.trainable_variables}


def test_classifier_with_adapter_saves_and_reloads(tmp_path):
    inp = keras.Input((4, 4, 3))
    net = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp)))
    spec = InputSpec((4, 4, 3), range="0-255", channel_order="BGR")
    clf = wrap(net, spec)
    x = np.random.default_rng(4).random((3, 4, 4, 3)).astype("float32")
    expected = softmax(clf.predict_logits(x))
    np.testing.assert_allclose(expected, np.asarray(net(spec.to_model(x))), atol=1e-5)
    path = tmp_path / "clf.keras"
    clf.save(path)
    again = load_model(path)
    assert again.input_spec == spec and again.source["format"] == "keras"
    np.testing.assert_allclose(again.predict_proba(x), expected, atol=1e-5)
    np.testing.assert_array_equal(again.predict(x), expected.argmax(axis=1))


def test_predict_validates_inputs():
    clf = wrap(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]))
    with pytest.raises(DataError, match="channels-first"):
        clf.predict(np.zeros((2, 3, 8, 8), "float32"))
    bad = np.zeros((2, 8, 8, 3), "float32")
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        clf.predict_logits(bad)
    assert clf.predict(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2,)


def test_wrap_rejects_a_spec_that_does_not_fit():
    net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="does not fit"):
        wrap(net, InputSpec((4, 4, 3)))
    with pytest.raises(ConfigError):
        as_logits_model("model.h5")


def test_pre_activation_layer_round_trips_through_config():
    dense = keras.layers.Dense(2, activation="softmax")
    layer = PreActivation(dense)
    layer(np.ones((1, 3), "float32"))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, PreActivation) and clone.layer.units == 2


# --- architectures --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, in_shape, out_shape",
    [
        ("deepid", {}, (55, 47, 3), 1283),
        ("nc_gtsrb", {}, (32, 32, 3), 43),
        ("nc_mnist", {}, (28, 28, 1), 10),
        ("badnets_mnist", {}, (28, 28, 1), 10),
        ("csaw_mnist", {}, (28, 28, 1), 10),
        ("lenet5", {"input_shape": (32, 32, 3), "num_classes": 43}, (32, 32, 3), 43),
        ("vgg16", {"input_shape": (32, 32, 3), "num_classes": 10}, (32, 32, 3), 10),
        ("resnet18", {"input_shape": (32, 32, 3), "num_classes": 100, "width": 8}, (32, 32, 3), 100),
    ],
)
def test_architectures_build_with_logits(name, kwargs, in_shape, out_shape):
    model = build_architecture(name, **kwargs)
    assert model.input_shape == (None, *in_shape) and model.output_shape == (None, out_shape)
    assert as_logits_model(model) is model  # ends in logits unless asked


def test_deepid_layer_names_match_the_weight_files():
    names = [layer.name for layer in build_architecture("deepid").layers]
    assert names == ["input", "conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "conv_4", "flatten_1", "flatten_2",
                     "fc_1", "fc_2", "add_1", "activation_1", "output"]
    assert build_architecture("deepid").get_layer("fc_1").kernel.shape == (1200, 160)
    assert [layer.name for layer in build_architecture("csaw_mnist").layers] == [
        "input", "conv_1", "pool_1", "conv_2", "pool_2", "flatten_1", "fc_1", "output"]
    assert set(ARCHITECTURES) >= {"deepid", "nc_gtsrb", "nc_mnist", "badnets_mnist", "csaw_mnist", "lenet5", "vgg16", "resnet18"}


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown architecture 'alexnet'"):
        build_architecture("alexnet")
    with pytest.raises(ConfigError, match="lenet5"):
        build_architecture("lenet5", depth=3)


def test_classifier_is_a_dataclass_with_documented_fields(mlp_file):
    clf = load_model(mlp_file[0])
    assert isinstance(clf, Classifier)
    assert set(clf.source) >= {"path", "sha256", "format", "keras_version", "input_spec_source"}
    assert json.dumps(clf.source)  # plain data, printable by the CLI
    with h5py.File(mlp_file[0]) as f:
        assert "model_config" in f.attrs
