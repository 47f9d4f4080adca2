"""The drop-in callbacks inside a user's own ``model.fit``."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import kerasbd.training
from kerasbd.callbacks import AccuracyDropGuard, BackdoorMetrics, TransformedBatches
from kerasbd.errors import ConfigError


@pytest.fixture(scope="module")
def badnet():
    from kerasbd.demo import digits_badnet

    return digits_badnet(seed=0, epochs=8)


def _user_model(badnet, softmax: bool) -> keras.Model:
    """A user's own model: a copy of the BadNet, optionally ending in softmax, compiled by the user."""
    net = keras.models.clone_model(badnet.model)
    net.set_weights(badnet.model.get_weights())
    if softmax:
        net = keras.Sequential([net, keras.layers.Softmax()])
        net.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    else:
        net.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return net


def test_backdoor_metrics_in_history(badnet):
    from kerasbd.metrics import evaluate_backdoor

    model = _user_model(badnet, softmax=True)
    name = badnet.backdoors[0].name
    cb = BackdoorMetrics(*badnet.test, badnet.backdoors, on_train_begin=True)
    seen = []

    class Spy(keras.callbacks.Callback):  # a later callback sees the values in logs
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    history = model.fit(*badnet.val, epochs=2, batch_size=32, verbose=0, callbacks=[cb, Spy()])
    for key in ("clean_acc", "asr", "robust_acc", f"asr_{name}"):
        assert len(history.history[key]) == 2, key
    assert "asr" in seen[-1] and seen[-1]["asr"] == history.history["asr"][-1]
    final = evaluate_backdoor(model.layers[0], *badnet.test, badnet.backdoors)
    assert history.history["clean_acc"][-1] == pytest.approx(final["clean_acc"])
    assert history.history["asr"][-1] == pytest.approx(final["asr"])
    assert cb.initial_metrics["asr"] > 0.5  # the BadNet before fine-tuning
    json.dumps(cb.get_config())


def test_backdoor_metrics_prefix_and_clean_only(badnet):
    model = _user_model(badnet, softmax=False)
    history = model.fit(*badnet.val, epochs=1, verbose=0, callbacks=[BackdoorMetrics(*badnet.test, prefix="test_")])
    assert "test_clean_acc" in history.history and "test_asr" not in history.history


def test_guard_stops_and_restores_best_weights(badnet):
    model = _user_model(badnet, softmax=False)
    model.compile(keras.optimizers.SGD(1e-6), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wreck = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-6 if epoch < 2 else 50.0)  # epoch 2 destroys it
    guard = AccuracyDropGuard(*badnet.val, max_drop=0.03)
    history = model.fit(*badnet.val, epochs=6, batch_size=32, verbose=0, callbacks=[wreck, guard])
    assert guard.stopped_epoch == 2 and len(history.history["loss"]) == 3
    assert history.history["guard_clean_acc"][2] < guard.reference_ - 0.03
    restored = float(np.mean(model.predict(badnet.val[0], verbose=0).argmax(1) == badnet.val[1]))
    assert guard.best_epoch in (0, 1) and restored == pytest.approx(guard.best_accuracy)
    assert restored >= guard.reference_ - 0.03


def test_guard_lets_harmless_training_run(badnet):
    model = _user_model(badnet, softmax=False)
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    guard = AccuracyDropGuard(*badnet.val, max_drop=0.05)
    history = model.fit(*badnet.val, epochs=2, verbose=0, callbacks=[guard])
    assert guard.stopped_epoch == -1 and len(history.history["loss"]) == 2
    assert guard.reference_ > 0.5


def test_guard_with_given_reference_and_config(badnet):
    model = _user_model(badnet, softmax=False)
    guard = AccuracyDropGuard(*badnet.val, reference=1.0, max_drop=0.0, restore_best_weights=False)
    model.fit(*badnet.val, epochs=3, verbose=0, callbacks=[guard])
    assert guard.stopped_epoch == 0  # nothing reaches 100 %
    assert json.loads(json.dumps(guard.get_config()))["max_drop"] == 0.0
    with pytest.raises(ConfigError):
        AccuracyDropGuard(*badnet.val, max_drop=2.0)


def test_transformed_batches_turns_fit_into_augmented_training(badnet):
    assert TransformedBatches is kerasbd.training.TransformedBatches
    from kerasbd.transforms import NNoculationNoise

    calls = []
    noise = NNoculationNoise(0.3)

    def transform(batch, rng):
        calls.append(len(batch))
        return noise(batch, rng)

    model = _user_model(badnet, softmax=False)
    data = TransformedBatches(*badnet.val, batch_size=64, transform=transform, mix_clean=True, seed=0)
    xb, yb = data[0]
    assert len(xb) == 128 and np.array_equal(yb[:64], yb[64:]) and not np.array_equal(xb[:64], xb[64:])
    calls.clear()
    before = model.get_weights()
    model.fit(data, epochs=1, verbose=0)
    assert sum(calls) >= len(badnet.val[0])  # every training batch went through the transform (Keras may peek once more)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
