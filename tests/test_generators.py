"""kerasbd.generators: the layers, the image pool, the schedule and the two-player Model base (with a tiny GAN)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbd.errors import ConfigError
from kerasbd.generators import AdversarialModel, ImagePool, LinearDecay, ReflectionPadding2D, instance_norm

LATENT = 4


# ---------------------------------------------------------------------------------------------------------------
# A minimal concrete two-player loop: a GAN on 8x8 images. The subprocess test imports it too.
# ---------------------------------------------------------------------------------------------------------------


def make_players(seed: int = 0) -> tuple[keras.Model, keras.Model]:
    keras.utils.set_random_seed(seed)
    generator = keras.Sequential(
        [
            keras.Input((LATENT,)),
            keras.layers.Dense(8 * 8 * 2),
            keras.layers.Reshape((8, 8, 2)),
            instance_norm(),
            ReflectionPadding2D(),
            keras.layers.Conv2D(1, 3, activation="sigmoid"),
        ],
        name="generator",
    )
    discriminator = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, strides=2), keras.layers.LeakyReLU(0.2), keras.layers.Flatten(), keras.layers.Dense(1)],
        name="discriminator",
    )
    return generator, discriminator


def gan_data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Latent codes and 'real' images (bright squares), fixed so that runs on one and two devices compare."""
    rng = np.random.default_rng(0)
    real = np.zeros((n, 8, 8, 1), np.float32)
    real[:, 2:6, 2:6] = rng.uniform(0.6, 1.0, (n, 1, 1, 1))
    return rng.normal(size=(n, LATENT)).astype(np.float32), real


def _bce(label: float, logits: tf.Tensor) -> tf.Tensor:
    # a loss function, not a reducing keras.losses.Loss object (those already divide by the replica count)
    return keras.ops.mean(keras.losses.binary_crossentropy(keras.ops.full_like(logits, label), logits, from_logits=True))


class TinyGAN(AdversarialModel):
    """fit(x=latent codes, y=real images); fakes reach the discriminator through an ImagePool."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, pool_size: int = 0, **kwargs):
        super().__init__(generator, discriminator, **kwargs)
        self.pool = ImagePool(pool_size, seed=0)
        self.pool.build((None, 8, 8, 1))

    def train_step(self, data):
        z, real = data
        with tf.GradientTape() as tape:
            fake = self.pool(self.generator(z, training=True))
            d_loss = _bce(1.0, self.discriminator(real, training=True)) + _bce(0.0, self.discriminator(fake, training=True))
        self.update_discriminator(tape, d_loss)
        with tf.GradientTape() as tape:
            g_loss = _bce(1.0, self.discriminator(self.generator(z, training=True), training=True))
        self.update_generator(tape, g_loss)
        return self.track(generator_loss=g_loss, discriminator_loss=d_loss)


def _compiled_gan(pool_size: int = 0, seed: int = 0, **compile_kw) -> TinyGAN:
    model = TinyGAN(*make_players(seed), pool_size=pool_size)
    model.compile(generator_optimizer=keras.optimizers.Adam(1e-2), discriminator_optimizer=keras.optimizers.Adam(1e-2), **compile_kw)
    return model


# ---------------------------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("padding", "np_pad"),
    [(1, ((1, 1), (1, 1))), ((2, 1), ((2, 2), (1, 1))), (((1, 3), (0, 2)), ((1, 3), (0, 2))), ([[0, 1], [4, 0]], ((0, 1), (4, 0)))],
)
def test_reflection_padding_matches_numpy_reflect(padding, np_pad, rng):
    x = rng.random((2, 5, 6, 3)).astype(np.float32)
    layer = ReflectionPadding2D(padding)
    out = np.asarray(layer(x))
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), *np_pad, (0, 0)), mode="reflect"))
    assert layer.compute_output_shape(x.shape) == out.shape
    assert layer.compute_output_shape((None, None, 6, 3)) == (None, None, out.shape[2], 3)


def test_reflection_padding_rejects_bad_padding():
    with pytest.raises(ConfigError, match="negative"):
        ReflectionPadding2D(-1)
    with pytest.raises(ConfigError, match="padding must be"):
        ReflectionPadding2D((1, 2, 3))
    with pytest.raises(ConfigError, match="width above it"):  # reflecting 3 pixels needs at least 4
        ReflectionPadding2D((0, 3))(np.zeros((1, 5, 3, 1), np.float32))


def test_instance_norm_normalises_each_sample_and_channel(rng):
    scale = rng.uniform(0.5, 5.0, (3, 1, 1, 4))
    shift = rng.uniform(-10, 10, (3, 1, 1, 4))
    x = (rng.normal(size=(3, 6, 7, 4)) * scale + shift).astype(np.float32)
    layer = instance_norm(name="norm")
    y = np.asarray(layer(x))
    assert isinstance(layer, keras.layers.GroupNormalization) and layer.name == "norm"
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1.0, atol=1e-3)
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), atol=1e-4)
    affine_free = instance_norm(center=False, scale=False)
    affine_free.build(x.shape)
    assert affine_free.weights == [] and affine_free.epsilon == 1e-5
    with pytest.raises(ConfigError, match="one group per channel"):
        instance_norm(groups=2)


def test_layers_serialize_and_a_saved_model_reloads_with_identical_outputs(tmp_path, rng):
    for layer in (ReflectionPadding2D(((1, 2), (0, 1))), ImagePool(7, seed=3), instance_norm(epsilon=1e-3)):
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
        revived = keras.saving.deserialize_keras_object(config)
        assert type(revived) is type(layer) and revived.get_config() == layer.get_config()

    inputs = keras.Input((8, 8, 3))
    x = ReflectionPadding2D(((1, 2), (0, 1)))(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    x = instance_norm()(x)
    outputs = keras.layers.Conv2D(2, 3, padding="valid")(ReflectionPadding2D()(keras.layers.ReLU()(x)))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "generator.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    batch = rng.random((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0))


# ---------------------------------------------------------------------------------------------------------------
# ImagePool
# ---------------------------------------------------------------------------------------------------------------


def _images(values) -> np.ndarray:
    """One tiny (2x2x1) image per value, every pixel holding it, so an image is identified by its value."""
    return np.broadcast_to(np.asarray(values, np.float32)[:, None, None, None], (len(values), 2, 2, 1)).copy()


def _values(images) -> np.ndarray:
    return np.asarray(images)[:, 0, 0, 0]


def _query(pool: ImagePool, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(returned values, stored values before, stored values after) of one query."""
    before = _values(pool.images)[: int(pool.count)] if pool.built else np.array([])
    out = _values(pool(_images(values)))
    return out, before, _values(pool.images)[: int(pool.count)]


def test_pool_stores_and_returns_while_filling_then_conserves_images():
    pool = ImagePool(pool_size=3, seed=0)
    out, _, stored = _query(pool, [1, 2])
    np.testing.assert_array_equal(out, [1, 2])
    np.testing.assert_array_equal(stored, [1, 2])
    assert int(pool.count) == 2
    new = np.arange(10, 60)
    for start in range(0, 50, 5):  # the first of these fills the pool, the others swap
        values = new[start : start + 5]
        out, before, after = _query(pool, values)
        assert int(pool.count) == 3
        # a filling image is stored and returned; any other is either stored or returned, a swap trading places
        filled = values[: len(after) - len(before)]
        np.testing.assert_array_equal(np.sort(np.r_[out, after]), np.sort(np.r_[values, before, filled]))
        for i, (o, v) in enumerate(zip(out, values, strict=True)):
            assert o == v or o in before or o in values[:i]  # a history image: stored earlier, or earlier in this batch


def test_pool_swaps_half_the_time_over_all_slots():
    pool = ImagePool(pool_size=10, seed=1)
    query = tf.function(pool)
    query(_images(np.arange(10)))
    values = np.arange(100, 4100)
    out = _values(query(_images(values)))
    swapped = out != values
    assert abs(swapped.mean() - 0.5) < 0.04, swapped.mean()  # binomial sd 0.008
    # swaps reach every slot: each of the 10 first images comes back once a swap picks its slot
    assert set(range(10)) <= set(out[swapped])


def test_pool_is_deterministic_under_a_seed_in_eager_and_graph_mode():
    queries = [np.arange(0, 6), np.arange(6, 9), np.arange(9, 20), np.arange(20, 40)]

    def run(seed: int, graph: bool) -> list[np.ndarray]:
        pool = ImagePool(pool_size=5, seed=seed)
        call = tf.function(pool) if graph else pool
        return [_values(call(_images(q))) for q in queries]

    first = run(7, graph=False)
    for again in (run(7, graph=False), run(7, graph=True)):
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, run(8, graph=False), strict=True))


def test_pool_zero_size_passes_through_and_output_has_no_gradient():
    x = tf.constant(_images([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(ImagePool(0)(x)), x.numpy())
    pool = ImagePool(4, seed=0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = pool(x)
    assert tape.gradient(tf.reduce_sum(y), x) is None


def test_pool_rejects_bad_configuration():
    with pytest.raises(ConfigError, match="non-negative integer"):
        ImagePool(-1)
    with pytest.raises(ConfigError, match="non-negative integer"):
        ImagePool(2.5)
    with pytest.raises(ConfigError, match="fixed-size images"):
        ImagePool(3).build((None, None, 8, 3))


# ---------------------------------------------------------------------------------------------------------------
# LinearDecay
# ---------------------------------------------------------------------------------------------------------------


def test_linear_decay_values_and_serialization():
    lr = LinearDecay(2e-4, hold_steps=100, total_steps=200)
    values = [float(lr(s)) for s in (0, 50, 100, 125, 150, 200, 10_000)]
    np.testing.assert_allclose(values, [2e-4, 2e-4, 2e-4, 1.5e-4, 1e-4, 0.0, 0.0], rtol=1e-6, atol=1e-12)
    floor = LinearDecay(1.0, hold_steps=0, total_steps=10, final_learning_rate=0.5)
    np.testing.assert_allclose([float(floor(s)) for s in (0, 5, 10, 20)], [1.0, 0.75, 0.5, 0.5], rtol=1e-6)

    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(floor))))
    assert isinstance(revived, LinearDecay) and revived.get_config() == floor.get_config()
    assert LinearDecay.from_config(floor.get_config()).get_config() == floor.get_config()
    config = json.loads(json.dumps(keras.optimizers.serialize(keras.optimizers.Adam(lr))))
    assert keras.optimizers.deserialize(config).get_config()["learning_rate"] == keras.saving.serialize_keras_object(lr)


def test_linear_decay_rejects_bad_steps():
    with pytest.raises(ConfigError, match="must exceed hold_steps"):
        LinearDecay(1e-3, hold_steps=10, total_steps=10)
    with pytest.raises(ConfigError, match="non-negative"):
        LinearDecay(1e-3, hold_steps=-1, total_steps=10)


# ---------------------------------------------------------------------------------------------------------------
# AdversarialModel
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A TinyGAN fitted for 2 epochs of 4 steps with a weights checkpoint, and its generator's initial weights."""
    z, real = gan_data()
    model = _compiled_gan(pool_size=4)
    initial = model.generator.get_weights()
    ckpt = tmp_path_factory.mktemp("gan") / "epoch.weights.h5"
    history = model.fit(z, real, batch_size=8, epochs=2, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(ckpt, save_weights_only=True)])
    return model, history, initial, ckpt


def test_fit_logs_both_losses_and_resets_them_per_epoch(trained):
    model, history, initial, _ = trained
    assert set(history.history) == {"generator_loss", "discriminator_loss"}
    for values in history.history.values():
        assert len(values) == 2 and np.all(np.isfinite(values))
    assert int(model.trackers["generator_loss"].count) == 4  # the 4 steps of the last epoch only: reset per epoch
    assert int(model.generator_optimizer.iterations) == int(model.discriminator_optimizer.iterations) == 8
    assert any(not np.array_equal(a, b) for a, b in zip(initial, model.generator.get_weights(), strict=True))
    assert int(model.pool.count) == 4


def test_save_and_load_weights_round_trip(trained, tmp_path):
    model, _, _, ckpt = trained
    z, real = gan_data()
    path = tmp_path / "gan.weights.h5"
    model.save_weights(path)
    for weights in (path, ckpt):  # ModelCheckpoint wrote the same final weights after the last epoch
        fresh = _compiled_gan(pool_size=4, seed=1)
        assert not np.array_equal(fresh.generator(z), model.generator(z))
        fresh.load_weights(weights)
        assert int(fresh.generator_optimizer.iterations) == 8  # the optimizers' state comes back: training resumes
        np.testing.assert_array_equal(fresh.generator(z), model.generator(z))
        np.testing.assert_array_equal(fresh.discriminator(real), model.discriminator(real))
        np.testing.assert_array_equal(np.asarray(fresh.pool.images), np.asarray(model.pool.images))  # the history resumes too
        assert int(fresh.pool.count) == 4


def _xla_unavailable() -> str | None:
    try:
        tf.function(lambda x: x + 1.0, jit_compile=True)(tf.constant(1.0))
    except Exception as exc:  # any failure means no XLA on this CPU
        return f"XLA (jit_compile) is unavailable on this CPU: {type(exc).__name__}: {exc}"
    return None


def test_fit_with_jit_compile():
    reason = _xla_unavailable()
    if reason:
        pytest.skip(reason)
    z, real = gan_data()
    model = _compiled_gan(pool_size=4, jit_compile=True)
    assert model.jit_compile is True
    history = model.fit(z, real, batch_size=8, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert int(model.pool.count) == 4


def test_contract_errors():
    generator, discriminator = make_players()
    with pytest.raises(ConfigError, match="built keras.Model"):
        AdversarialModel(keras.Sequential([keras.layers.Dense(2)]), discriminator)
    model = AdversarialModel(generator, discriminator)
    with pytest.raises(ConfigError, match="does not take loss"):
        model.compile(generator_optimizer="adam", discriminator_optimizer="adam", loss="mse")
    shared = keras.optimizers.Adam()
    with pytest.raises(ConfigError, match="separate optimizer"):
        model.compile(generator_optimizer=shared, discriminator_optimizer=shared)
    model.compile(generator_optimizer="adam", discriminator_optimizer={"class_name": "SGD", "config": {"learning_rate": 0.5}})
    assert float(model.discriminator_optimizer.learning_rate) == 0.5
    with pytest.raises(ConfigError, match="no tracker named critic_gap"):
        model.track(critic_gap=1.0)
    z, real = gan_data(8)
    with pytest.raises(NotImplementedError, match="must implement train_step"):
        model.fit(z, real, epochs=1, verbose=0)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    sys.path.insert(0, sys.argv[1])
    from test_generators import TinyGAN, gan_data, make_players
    from kerasbd.training import get_strategy

    z, real = gan_data()
    out = {"devices": len(tf.config.list_logical_devices("CPU"))}
    for kind in ("default", "mirrored"):
        strategy = get_strategy(kind)
        with strategy.scope():
            # a pool larger than the run is always filling, so it returns its input and both runs compare
            model = TinyGAN(*make_players(0), pool_size=64)
            model.compile(generator_optimizer=keras.optimizers.SGD(0.5), discriminator_optimizer=keras.optimizers.SGD(0.5))
        history = model.fit(z, real, batch_size=16, epochs=2, shuffle=False, verbose=0)
        out[kind] = {"replicas": strategy.num_replicas_in_sync, "history": history.history,
                     "weights": np.concatenate([w.ravel() for w in model.generator.get_weights() + model.discriminator.get_weights()]).tolist()}
    out["pool_counts"] = [int(v.numpy()) for v in model.pool.count.value.values]
    out["pool_images"] = [v.numpy().ravel().tolist() for v in model.pool.images.value.values]
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module", autouse=True)
def mirrored_run():
    """The two-device run, in a fresh process (logical devices must be set before TensorFlow starts), started with
    this module's first test so that its start-up overlaps the others; the mirrored test reads its result."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    tests_dir = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen([sys.executable, "-c", MIRRORED_SCRIPT, tests_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_trains_under_mirrored_strategy_like_one_device(mirrored_run):
    stdout, stderr = mirrored_run.communicate(timeout=300)
    assert mirrored_run.returncode == 0, stderr[-3000:]
    res = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert res["devices"] == 2 and res["default"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    one, two = np.asarray(res["default"]["weights"]), np.asarray(res["mirrored"]["weights"])
    # the same 4 SGD steps per player: halves of each batch on two replicas give the full-batch gradients
    assert np.abs(one - two).max() < 1e-5, np.abs(one - two).max()
    for name in ("generator_loss", "discriminator_loss"):
        np.testing.assert_allclose(res["mirrored"]["history"][name], res["default"]["history"][name], rtol=1e-5)
    # each replica keeps its own history of the images it generated: 2 epochs x 2 steps x 8 images
    assert res["pool_counts"] == [32, 32]
    first, second = (np.asarray(v) for v in res["pool_images"])
    assert first.max() > 0 and second.max() > 0 and not np.array_equal(first, second)
