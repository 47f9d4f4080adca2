"""A BadNet trained under tf.distribute's mirrored strategy over two logical CPU devices reaches the same band.

The logical devices must be configured before TensorFlow initialises, so the check runs in a fresh subprocess.
"""

from __future__ import annotations

import textwrap

import numpy as np
from conftest import run_script_result

SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from kerasbd.attacks import Backdoor, Patch, train_badnet
    from kerasbd.data import load_digits, split_defender
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.training import get_strategy

    (x_test, y_test), (x_train, y_train) = split_defender(*load_digits(8), n_val=300, seed=0)
    backdoor = Backdoor(Patch(2, "bottom-right"), 0, "square")
    out = {"devices": len(tf.config.list_logical_devices("CPU"))}
    for kind in ("default", "mirrored"):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
        strategy = get_strategy(kind)
        train_badnet(net, x_train, y_train, backdoor, rate=0.1, epochs=10, batch_size=32,
                     learning_rate=3e-3, seed=0, strategy=strategy)
        r = evaluate_backdoor(net, x_test, y_test, [backdoor])
        out[kind] = {"replicas": strategy.num_replicas_in_sync, "clean_acc": r["clean_acc"], "asr": r["asr"]}
    print("RESULT " + json.dumps(out))
    """
)


def test_mirrored_strategy_matches_single_device():
    res = run_script_result(SCRIPT)
    assert res["devices"] == 2
    assert res["default"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    for kind in ("default", "mirrored"):
        assert res[kind]["clean_acc"] > 0.85 and res[kind]["asr"] > 0.9, res
    assert abs(res["mirrored"]["clean_acc"] - res["default"]["clean_acc"]) < 0.05, res
    assert abs(res["mirrored"]["asr"] - res["default"]["asr"]) < 0.08, res


INVERSION_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from kerasbd.training import get_strategy
    from kerasbd.defenses.inspection.neural_cleanse import CostSchedule, MaskPatternCandidates
    from kerasbd.training.inversion import LabelBatchedInversion

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(5)])
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    inv = LabelBatchedInversion(steps=3, mini_batches=4, batch_size=16)
    out = {}
    for kind in ("default", "mirrored"):
        strategy = get_strategy(kind)
        res = inv.run(net, x, [0, 1, 2, 3, 4], MaskPatternCandidates(), CostSchedule(), strategy=strategy, verbose=0)
        out[kind] = {"replicas": strategy.num_replicas_in_sync, "masks": res.stacked("mask").tolist(),
                     "acc": [res[l]["acc"] for l in sorted(res)]}
    out["init"] = [np.random.default_rng([0, l]).random((8, 8)).tolist() for l in range(5)]
    print("RESULT " + json.dumps(out))
    """
)


def test_trigger_inversion_under_mirrored_strategy_matches_single_device():
    res = run_script_result(INVERSION_SCRIPT)
    assert res["default"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    one, two = np.asarray(res["default"]["masks"]), np.asarray(res["mirrored"]["masks"])
    # 12 Adam updates from the same start: only summation order differs between one device and two replicas
    assert np.abs(one - two).max() < 1e-3, np.abs(one - two).max()
    assert np.abs(one - np.asarray(res["init"])).max() > 0.05  # the masks really were optimised
    assert res["default"]["acc"] == res["mirrored"]["acc"]
