"""Layer lookup and sub-models ending at a layer, in nested functional, Sequential and InputAdapter-wrapped models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasbd.errors import ConfigError
from kerasbd.models import InputSpec, wrap
from kerasbd.models.surgery import conv_layers, copy_model, find_layer, layer_output_model

X = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)


def _conv_block(name: str) -> keras.Sequential:
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, name=f"{name}_conv1"), keras.layers.ReLU(name=f"{name}_relu"),
         keras.layers.Conv2D(2, 3, name=f"{name}_conv2")],
        name=name,
    )


def _functional_in_functional() -> keras.Model:
    x = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(3, 3, name="conv1")(x)
    h = keras.layers.ReLU(name="relu")(h)
    inner = keras.Model(x, keras.layers.Conv2D(2, 3, name="conv2")(h), name="inner")
    inp = keras.Input((8, 8, 1))
    h = inner(keras.layers.Rescaling(2.0, name="double")(inp))
    return keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(h)), name="outer")


def _np(t: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


def test_functional_in_functional():
    model = _functional_in_functional()
    assert [layer.name for layer in conv_layers(model)] == ["conv1", "conv2"]
    conv1, relu, conv2 = (find_layer(model, n) for n in ("conv1", "relu", "conv2"))
    assert find_layer(model, "inner") is model.get_layer("inner")
    sub = layer_output_model(model, conv2)
    assert sub.inputs[0] is model.inputs[0] and sub.output_shape == (None, 4, 4, 2)
    np.testing.assert_allclose(sub.predict(X, verbose=0), _np(conv2(relu(conv1(2.0 * X)))), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer_output_model(model, relu).predict(X, verbose=0), _np(relu(conv1(2.0 * X))), rtol=1e-5, atol=1e-6)
    head = model.get_layer("head")  # a top-level layer
    np.testing.assert_allclose(layer_output_model(model, head).predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


def test_sequential_in_sequential():
    block = _conv_block("block")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(0.5, name="half"), block, keras.layers.Flatten(), keras.layers.Dense(3)])
    assert [layer.name for layer in conv_layers(model)] == ["block_conv1", "block_conv2"]
    conv1, relu = find_layer(model, "block_conv1"), find_layer(model, "block_relu")
    np.testing.assert_allclose(layer_output_model(model, relu).predict(X, verbose=0), _np(relu(conv1(0.5 * X))), rtol=1e-5, atol=1e-6)
    # two levels down: a functional model around the Sequential one
    inp = keras.Input((8, 8, 1))
    outer = keras.Model(inp, model(inp))
    np.testing.assert_allclose(layer_output_model(outer, relu).predict(X, verbose=0), _np(relu(conv1(0.5 * X))), rtol=1e-5, atol=1e-6)


def test_input_adapter_wrapped_model():
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(),
                            keras.layers.Dense(3, activation="softmax", name="fc")])
    model = wrap(net, InputSpec((8, 8, 1), range="0-255")).model
    (conv,) = conv_layers(model)
    assert conv is net.get_layer("conv") and find_layer(model, "input_adapter") is model.layers[1]
    # the adapter feeds the file's network raw 0-255 pixels
    np.testing.assert_allclose(layer_output_model(model, conv).predict(X, verbose=0), _np(conv(255.0 * X)), rtol=1e-5, atol=1e-4)
    # hand-computed activation of a 1x1 convolution: one matrix product per pixel
    inp = keras.Input((8, 8, 1))
    point = keras.layers.Conv2D(2, 1, name="point")
    wrapped = wrap(keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(point(inp)))), InputSpec((8, 8, 1), range="0-255")).model
    kernel, bias = point.kernel.numpy()[0, 0], point.bias.numpy()
    np.testing.assert_allclose(layer_output_model(wrapped, point).predict(X, verbose=0), 255.0 * X @ kernel + bias, rtol=1e-5, atol=1e-4)


def test_surgery_leaves_the_model_unchanged():
    model = _functional_in_functional()
    before, layers = model.predict(X, verbose=0), model.layers
    layer_output_model(model, find_layer(model, "conv2"))
    assert model.layers == layers and len(model.outputs) == 1
    np.testing.assert_array_equal(model.predict(X, verbose=0), before)


def test_shared_nested_model_listed_once():
    block = _conv_block("shared")
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Add()([block(inp), block(keras.layers.Rescaling(2.0)(inp))]))
    assert [layer.name for layer in conv_layers(model)] == ["shared_conv1", "shared_conv2"]
    # a layer called twice: its first call in topological order (here on the unscaled input)
    relu, conv1 = find_layer(model, "shared_relu"), find_layer(model, "shared_conv1")
    np.testing.assert_allclose(layer_output_model(model, relu).predict(X, verbose=0), _np(relu(conv1(X))), rtol=1e-5, atol=1e-6)


def test_compiled_and_multi_input_models():
    model = _functional_in_functional()
    model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean((y - p) ** 2))  # a loss clone_model cannot copy
    conv1 = find_layer(model, "conv1")
    np.testing.assert_allclose(layer_output_model(model, conv1).predict(X, verbose=0), _np(conv1(2.0 * X)), rtol=1e-5, atol=1e-6)
    block = _conv_block("pair")
    a, b = keras.Input((8, 8, 1), name="a"), keras.Input((8, 8, 1), name="b")
    pair = keras.Model({"a": a, "b": b}, block(keras.layers.Subtract()([a, b])))
    conv1 = find_layer(pair, "pair_conv1")
    sub = layer_output_model(pair, conv1)
    np.testing.assert_allclose(sub.predict({"a": X, "b": 0.5 * X}, verbose=0), _np(conv1(0.5 * X)), rtol=1e-5, atol=1e-6)


def test_copy_model_shares_no_variables():
    model = _functional_in_functional()
    twin = copy_model(model)
    np.testing.assert_allclose(twin.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)
    assert find_layer(twin, "conv2") is not find_layer(model, "conv2")


def test_find_layer_error_lists_nested_names():
    with pytest.raises(ConfigError, match=r"no layer named 'nope'; its layers are: .*inner, .*conv1, relu, conv2, .*head"):
        find_layer(_functional_in_functional(), "nope")


def test_layer_output_model_errors():
    model = _functional_in_functional()
    with pytest.raises(ConfigError, match="not part of the model 'outer'"):
        layer_output_model(model, keras.layers.Dense(2, name="stranger"))
    with pytest.raises(ConfigError, match="not part of the model"):  # another model's copy of the layer
        layer_output_model(model, find_layer(copy_model(model), "conv1"))

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="subclassed")
            self.conv = keras.layers.Conv2D(2, 3, name="sub_conv")

        def call(self, x):
            return self.conv(x)

    sub = Subclassed()
    inp = keras.Input((8, 8, 1))
    outer = keras.Model(inp, keras.layers.Flatten()(sub(inp)))
    assert conv_layers(outer) == [sub.conv]
    with pytest.raises(ConfigError, match="'subclassed' .*cannot be traced"):
        layer_output_model(outer, sub.conv)
