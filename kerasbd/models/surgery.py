"""Model surgery on public Keras API: copies, layer lookup in nested models, sub-models ending at a layer.

Repair defenses work on an independent copy of the suspicious model (the caller's model is never modified) and
some look inside it: fine-pruning ranks the channels of a convolutional layer that may sit in a nested model
(a kerasbd model is often ``InputAdapter`` followed by the file's own network).

Only layers of a model's graph count, as ``model.layers`` lists them, recursively through nested models; a layer
held inside another layer (the ``Dense`` of a :class:`~kerasbd.models.PreActivation`) has no output tensor of
its own and is not found.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras

from kerasbd.errors import ConfigError

__all__ = ["copy_model", "conv_layers", "find_layer", "layer_output_model"]


def copy_model(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights (layer names kept), sharing no variables.

    Example:
        >>> import numpy as np
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> twin = copy_model(net)
        >>> twin.get_layer("fc") is net.get_layer("fc"), bool(np.array_equal(twin.get_weights()[0], net.get_weights()[0]))
        (False, True)
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _walk(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model`` and of its nested models, depth first in topological order, each once."""
    seen: set[int] = set()

    def visit(m: keras.Model) -> Iterator[keras.layers.Layer]:
        for layer in m.layers:
            if id(layer) in seen:  # a layer shared by an outer and a nested model
                continue
            seen.add(id(layer))
            yield layer
            if isinstance(layer, keras.Model):
                yield from visit(layer)

    return visit(model)


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """``Conv2D`` layers of ``model`` in topological order, looking inside nested models.

    Example:
        >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c1"), keras.layers.Conv2D(2, 3, name="c2")])
        >>> inp = keras.Input((8, 8, 1))
        >>> outer = keras.Model(inp, keras.layers.Conv2D(1, 1, name="head")(net(inp)))
        >>> [layer.name for layer in conv_layers(outer)]
        ['c1', 'c2', 'head']
    """
    return [layer for layer in _walk(model) if isinstance(layer, keras.layers.Conv2D)]


def find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The layer called ``name`` anywhere in ``model`` (nested models included), or a ConfigError listing names.

    Example:
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")], name="net")
        >>> inp = keras.Input((4,))
        >>> outer = keras.Model(inp, net(inp))
        >>> find_layer(outer, "fc") is net.get_layer("fc")
        True
        >>> find_layer(outer, "conv")
        Traceback (most recent call last):
        ...
        kerasbd.errors.ConfigError: the model has no layer named 'conv'; its layers are: input_layer..., net, fc.
    """
    for layer in _walk(model):
        if layer.name == name:
            return layer
    names = [layer.name for layer in _walk(model)]
    raise ConfigError(f"the model has no layer named {name!r}; its layers are: {', '.join(names)}.")


def _contains(model: keras.Model, layer: keras.layers.Layer) -> bool:
    return any(inner is layer for inner in _walk(model))


def layer_output_model(model: keras.Model, layer: keras.layers.Layer) -> keras.Model:
    """A model from ``model``'s inputs to ``layer``'s output, also when the layer sits in a nested model.

    The graph of ``model`` is re-applied from its own inputs, calling its layers again (weights shared): a
    Sequential model through its layer list, a functional one through ``keras.models.clone_model`` with
    ``call_function``. A nested model holding ``layer`` is replaced there by its own sub-model, recursively. A
    layer called several times yields its first output in topological order.

    Example:
        >>> import numpy as np
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"), keras.layers.ReLU()])
        >>> inp = keras.Input((4,))
        >>> outer = keras.Model(inp, keras.layers.Dense(1)(net(inp)))
        >>> fc = find_layer(outer, "fc")
        >>> sub = layer_output_model(outer, fc)
        >>> x = np.ones((2, 4), "float32")
        >>> bool(np.allclose(sub.predict(x, verbose=0), x @ fc.kernel.numpy() + fc.bias.numpy(), atol=1e-6))
        True
    """
    if not _contains(model, layer):
        raise ConfigError(f"layer {layer.name!r} is not part of the model {model.name!r}.")
    found: list[Any] = []

    def call(op: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        out = op(*args, **kwargs)
        if not found:
            if op is layer:
                found.append(out)
            elif isinstance(op, keras.Model) and _contains(op, layer):
                found.append(layer_output_model(op, layer)(*args, **kwargs))
        return out

    if isinstance(model, keras.Sequential):
        # a Sequential model's `input` is the tensor of its first call (maybe in an outer graph): use its own
        inputs: Any = model.inputs[0]
        x = inputs
        for inner in model.layers:
            x = call(inner, x)
            if found:
                break
    elif hasattr(model, "outputs"):
        inputs = model.input
        # an uncompiled view of the same graph: clone_model copies a compile config through serialisation,
        # which fails for a lambda or any unregistered loss or metric
        view = keras.Model(inputs, model.output, name=model.name)
        keras.models.clone_model(view, input_tensors=inputs, clone_function=lambda same: same, call_function=call)
    else:  # a subclassed model: its call is code, not a graph that can be re-applied
        raise ConfigError(
            f"layer {layer.name!r} sits in model {model.name!r} ({type(model).__name__}), whose graph cannot be "
            f"traced; only functional and Sequential models can be cut at a layer."
        )
    return keras.Model(inputs, found[0])
