"""Triggers, target maps, JSON specs, poisoning and BadNet training (kerasbd.attacks)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from kerasbd.attacks import (
    TRIGGERS,
    AdditivePerturbation,
    AllToAll,
    AllToOne,
    Amplified,
    Backdoor,
    Blend,
    Combination,
    Filter,
    ImageTrigger,
    InvisibleL0,
    InvisibleL2,
    MaskedPattern,
    NoisePattern,
    Patch,
    PixelPattern,
    from_spec,
    load_spec,
    parse_spec,
    poison_dataset,
    save_spec,
    to_spec,
    train_badnet,
    trigger_from_spec,
)
from kerasbd.errors import ConfigError, DataError, TriggerError

DILLONSD_PATTERN = [[27, 27], [25, 27], [27, 25], [25, 25], [23, 27], [27, 23]]


def rand_images(n=4, h=28, w=28, c=1, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 0.9, (n, h, w, c)).astype(np.float32)


def changed(a, b):
    """(row, col) pixels where any channel differs."""
    return {tuple(p) for p in np.argwhere(np.any(a != b, axis=-1))}


# ----------------------------------------------------------------------------------------------- patches


def test_nc_square_stamps_exact_pixels_and_leaves_the_rest():
    x = rand_images()
    out = Patch(4, "bottom-right", margin=1).apply(x)
    assert np.all(out[:, 23:27, 23:27] == 1.0)
    keep = np.ones((28, 28), bool)
    keep[23:27, 23:27] = False
    np.testing.assert_array_equal(out[:, keep], x[:, keep])
    assert x.max() < 1.0  # the input was not modified


def test_patch_named_corners_negative_offsets_and_channel_values():
    x = np.zeros((1, 10, 12, 3), np.float32)
    assert changed(Patch([2, 3], "top-right", margin=1).apply(x)[0], x[0]) == {(r, c) for r in (1, 2) for c in (8, 9, 10)}
    assert changed(Patch(2, [-2, -3]).apply(x)[0], x[0]) == {(r, c) for r in (8, 9) for c in (9, 10)}
    out = Patch(2, "top-left", value=[1.0, 0.5, 0.0]).apply(x)
    np.testing.assert_array_equal(out[0, 0, 0], [1.0, 0.5, 0.0])
    assert changed(Patch(2, "center").apply(x)[0], x[0]) == {(4, 5), (4, 6), (5, 5), (5, 6)}


def test_random_position_is_per_image_seeded_and_in_bounds():
    x = np.zeros((50, 12, 12, 1), np.float32)
    t = Patch(3, "random", margin=1)
    a, b, c = t.apply(x, rng=5), t.apply(x, rng=5), t.apply(x, rng=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a.sum(axis=(1, 2, 3)) == 9)  # whole patch inside every image
    assert not a[:, 0, :].any() and not a[:, -1, :].any() and not a[:, :, 0].any()  # the margin is respected
    corners = {tuple(np.argwhere(img[..., 0] == 1).min(0)) for img in a}
    assert len(corners) > 10  # positions really vary per image
    np.testing.assert_array_equal(t.apply(x), t.apply(x))  # no rng → the trigger's own seed


def test_pixel_pattern_dillonsd_exact_and_offsets():
    x = rand_images()
    out = PixelPattern(DILLONSD_PATTERN).apply(x)
    assert changed(out[0], x[0]) == {tuple(p) for p in DILLONSD_PATTERN}
    assert np.all(out[:, [p[0] for p in DILLONSD_PATTERN], [p[1] for p in DILLONSD_PATTERN]] == 1.0)
    neg = PixelPattern([[-1, -1]]).apply(x)
    assert changed(neg[0], x[0]) == {(27, 27)}
    rel = PixelPattern([[0, 0], [1, 2, 0.25]], position=[3, 4]).apply(np.zeros((1, 8, 8, 1), np.float32))
    assert rel[0, 3, 4, 0] == 1.0 and rel[0, 4, 6, 0] == 0.25 and rel.sum() == 1.25


def test_value_range_0_255_converts_to_canonical():
    t = trigger_from_spec({"type": "pixels", "pixels": [[0, 0], [1, 1, 51]], "value": 255, "value_range": "0-255"})
    out = t.apply(np.zeros((1, 4, 4, 1), np.float32))
    assert out[0, 0, 0, 0] == 1.0 and out[0, 1, 1, 0] == pytest.approx(0.2)
    p = trigger_from_spec({"type": "patch", "size": 2, "value": [255, 0, 127.5], "value_range": "0-255"})
    np.testing.assert_allclose(p.apply(np.zeros((1, 4, 4, 3), np.float32))[0, 3, 3], [1.0, 0.0, 0.5])


# ----------------------------------------------------------------------------------------------- image / alpha


def write_rgba(path, rgba):
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


def test_image_trigger_alpha_paste_matches_hand_computation(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 0
    rgba[..., 3] = [[255, 128, 0], [64, 255, 255]]
    write_rgba(tmp_path / "t.png", rgba)
    x = rand_images(2, 6, 5, 3)
    out = ImageTrigger(tmp_path / "t.png", position=[3, 1]).apply(x)
    a = rgba[..., 3:4] / 255.0
    expected = x.copy()
    expected[:, 3:5, 1:4] = (1 - a) * x[:, 3:5, 1:4] + a * (rgba[..., :3] / 255.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0, 3, 3].tolist() == x[0, 3, 3].tolist()  # alpha 0 leaves the pixel exactly


def test_image_trigger_matches_pil_paste(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 47, 4), dtype=np.uint8)
    write_rgba(tmp_path / "sg.png", rgba)
    base = rng.integers(0, 256, (55, 47, 3), dtype=np.uint8)
    pil = Image.fromarray(base)
    bd = Image.open(tmp_path / "sg.png")
    pil.paste(bd, (0, 15), bd)  # NNoculation poison.py: x=0 (column), y=15 (row)
    ours = ImageTrigger(tmp_path / "sg.png", position=[15, 0]).apply(base[None])[0] * 255.0
    assert np.abs(ours - np.asarray(pil, np.float64)).max() <= 1.0  # PIL rounds in uint8


def test_image_trigger_resize_grayscale_and_array(tmp_path):
    rgba = np.full((4, 4, 4), 255, np.uint8)
    write_rgba(tmp_path / "w.png", rgba)
    out = ImageTrigger(tmp_path / "w.png", size=[2, 2], position="bottom-right").apply(np.zeros((1, 5, 5, 1), np.float32))
    assert changed(out[0], np.zeros((5, 5, 1))) == {(3, 3), (3, 4), (4, 3), (4, 4)}
    assert out[0, 4, 4, 0] == pytest.approx(1.0)
    arr = ImageTrigger(image=np.ones((2, 2, 3), np.float32), position=[0, 0])
    assert arr.apply(np.zeros((1, 4, 4, 3), np.float32))[0, :2, :2].min() == 1.0
    assert trigger_from_spec(arr.to_spec()) == arr


def test_image_trigger_missing_file_is_a_trigger_error(tmp_path):
    with pytest.raises(TriggerError, match="not found"):
        ImageTrigger(tmp_path / "nope.png").apply(np.zeros((1, 8, 8, 3), np.float32))


@pytest.mark.zoo
def test_zoo_sunglasses_trigger_position():
    from kerasbd.zoo import zoo_dir

    try:
        zoo_dir()
    except Exception:
        pytest.skip("zoo not available")
    t = ImageTrigger("zoo:nnoculation/sun_glass_trigger.png", position=[15, 0])
    m = t.mask((55, 47, 3))
    rows, cols = np.nonzero(m)
    assert rows.min() >= 15 and rows.max() <= 34 and cols.max() <= 46 and m.sum() > 100


# ----------------------------------------------------------------------------------------------- global triggers


def test_blend_formula_noise_and_image(tmp_path):
    x = rand_images(3, 8, 8, 3)
    t = Blend("noise", alpha=0.3, seed=4)
    pattern = t.pattern_for(x.shape[1:])
    np.testing.assert_allclose(t.apply(x), 0.7 * x + 0.3 * pattern, atol=1e-6)
    np.testing.assert_array_equal(pattern, Blend("noise", 0.3, seed=4).pattern_for((8, 8, 3)))
    assert not np.array_equal(pattern, Blend("noise", 0.3, seed=5).pattern_for((8, 8, 3)))
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 2] = 255  # blue
    cv2.imwrite(str(tmp_path / "kitty.png"), img[..., ::-1])
    out = Blend(str(tmp_path / "kitty.png"), alpha=0.5).apply(np.zeros((1, 8, 8, 3), np.float32))
    np.testing.assert_allclose(out[0, 3, 3], [0.0, 0.0, 0.5], atol=1e-6)


def test_noise_pattern_fixed_and_bounded():
    x = np.full((2, 10, 10, 3), 0.5, np.float32)
    out = NoisePattern(0.05, seed=1).apply(x)
    d = out - x
    assert np.abs(d).max() <= 0.05 + 1e-6 and np.abs(d).max() > 0.04
    np.testing.assert_array_equal(d[0], d[1])  # one pattern for every image


def test_invisible_l0_and_l2_budgets():
    x = np.full((2, 16, 16, 3), 0.5, np.float32)
    out = InvisibleL0(budget=7, amplitude=0.1, seed=0).apply(x)
    assert len(changed(out[0], x[0])) == 7
    assert np.abs(out - x).max() == pytest.approx(0.1, abs=1e-6)
    frac = InvisibleL0(budget=0.05, seed=0)
    assert frac.n_pixels((16, 16, 3)) == 13 and frac.mask((16, 16, 3)).sum() == 13
    l2 = InvisibleL2(budget=0.8, seed=2).apply(x)
    assert np.linalg.norm(l2[0] - x[0]) == pytest.approx(0.8, rel=1e-4)
    dark = InvisibleL2(budget=0.8, seed=2).apply(np.zeros((1, 16, 16, 3), np.float32))
    assert np.linalg.norm(dark[0]) <= 0.8  # clipping only shrinks the change
    with pytest.raises(TriggerError, match="exceeds"):
        InvisibleL0(budget=300).check_fits((16, 16, 3))


def test_gotham_filter_formula_on_constant_image():
    # On a constant image the blur is the identity, so sharpening (1.3x - 0.3x) changes nothing and the result is
    # the two channel curves plus the +0.03 blue lift.
    x = np.full((1, 8, 8, 3), 0.35, np.float32)
    out = Filter("gotham").apply(x)[0, 4, 4]
    red = np.interp(0.35, np.linspace(0, 1, 11), [0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
    blue_pts = [0, 0.047, 0.118, 0.251, 0.318, 0.392, 0.42, 0.439, 0.475, 0.561, 0.58, 0.627, 0.671, 0.733, 0.847, 0.925, 1]
    blue = np.interp(0.38, np.linspace(0, 1, 17), blue_pts)
    np.testing.assert_allclose(out, [red, 0.35, blue], atol=1e-5)
    gray = Filter().apply(rand_images(2, 8, 8, 1))
    assert gray.shape == (2, 8, 8, 1)


# ----------------------------------------------------------------------------------------------- composite triggers


def test_combination_stamps_all_parts_and_exposes_them():
    a, b = Patch(2, "top-left"), PixelPattern([[-1, -1]])
    t = Combination([a, b])
    x = np.zeros((1, 6, 6, 1), np.float32)
    assert changed(t.apply(x)[0], x[0]) == {(0, 0), (0, 1), (1, 0), (1, 1), (5, 5)}
    assert t.parts == [a, b]
    assert changed(t.apply_parts(x, [1])[0], x[0]) == {(5, 5)}
    assert t.mask((6, 6, 1)).sum() == 5
    with pytest.raises(TriggerError, match="at least two"):
        Combination([a])


def test_amplified_positions_4_and_9():
    x = np.zeros((1, 12, 12, 1), np.float32)
    four = Amplified(Patch(2, "bottom-right", margin=1), copies=4)
    assert four.origins((12, 12, 1)) == [(1, 1), (1, 9), (9, 1), (9, 9)]
    assert four.apply(x).sum() == 16
    nine = Amplified(Patch(2, "bottom-right", margin=1), copies=9)
    assert sorted(nine.origins((12, 12, 1))) == sorted([(r, c) for r in (1, 5, 9) for c in (1, 5, 9)])
    assert nine.apply(x).sum() == 36
    pix = Amplified(PixelPattern(DILLONSD_PATTERN), copies=4)
    assert pix.apply(np.zeros((1, 28, 28, 1), np.float32)).sum() == 24
    with pytest.raises(TriggerError, match="4 or 9"):
        Amplified(Patch(2), copies=5)
    with pytest.raises(TriggerError, match="patch, pixel or image"):
        Amplified(Blend("noise"), copies=4)


# ----------------------------------------------------------------------------------------------- bad inputs


def test_trigger_larger_than_image_and_out_of_bounds():
    with pytest.raises(TriggerError, match="5×5 pixels .* only 4×4"):
        Patch(5).apply(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(TriggerError, match="outside the 8×8 image"):
        Patch(3, [7, 0]).check_fits((8, 8, 1))
    with pytest.raises(TriggerError, match="outside the 28×28 image"):
        PixelPattern([[28, 3]]).check_fits((28, 28, 1))
    with pytest.raises(TriggerError, match="3 channel values .* 1 channel"):
        Patch(2, value=[1.0, 0.0, 0.0]).apply(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(TriggerError, match="outside \\[0, 1\\]"):
        Patch(2, value=255)


def test_stamping_bad_images_gives_data_errors():
    with pytest.raises(DataError, match="NaN"):
        Patch(2).apply(np.full((1, 8, 8, 1), np.nan, np.float32))
    with pytest.raises(DataError, match="channels-first"):
        Patch(2).apply(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match="shape"):
        Patch(2).apply(np.zeros((8, 8), np.float32))


# ----------------------------------------------------------------------------------------------- targets


def test_target_maps():
    y = np.array([0, 3, 7, 9])
    assert AllToOne(7).map(y).tolist() == [7, 7, 7, 7]
    assert AllToOne(7).eligible(y).tolist() == [True, True, False, True]
    assert AllToAll(num_classes=10).map(y).tolist() == [1, 4, 8, 0]
    assert AllToAll(shift=2).map(y, num_classes=10).tolist() == [2, 5, 9, 1]
    assert AllToAll().eligible(y, 10).all()
    with pytest.raises(TriggerError, match="num_classes"):
        AllToAll().map(y)
    with pytest.raises(TriggerError, match="out of range"):
        AllToOne(12).map(y, num_classes=10)
    with pytest.raises(TriggerError, match="maps every class to itself"):
        AllToAll(shift=10, num_classes=10)


# ----------------------------------------------------------------------------------------------- specs


ALL_TRIGGERS = [
    Patch(3, "bottom-right", margin=1, value=0.8),
    Patch([2, 3], "random", seed=3),
    PixelPattern([[-1, -1], [-3, -1], [-1, -3]]),
    PixelPattern([[0, 0, 0.5], [1, 1]], position="center"),
    ImageTrigger(image=np.full((2, 2, 4), 0.5, np.float32), position=[1, 1]),
    Blend("noise", alpha=0.15, seed=2),
    NoisePattern(0.04, seed=1),
    Filter("gotham", sigma=4.0),
    InvisibleL0(budget=5, amplitude=0.2, seed=1),
    InvisibleL2(budget=0.5, seed=1),
    Combination([Patch(2, "top-left"), PixelPattern([[-1, -1]])]),
    Amplified(Patch(2, "bottom-right"), copies=9),
    Blend(np.linspace(0, 1, 12 * 12 * 3, dtype=np.float32).reshape(12, 12, 3), alpha=0.3),  # an array pattern round-trips too
    MaskedPattern(np.eye(12, dtype=np.float32) * 0.7, np.full((12, 12, 3), 0.3, np.float32)),
    AdditivePerturbation(np.linspace(-0.5, 0.5, 12 * 12 * 3, dtype=np.float32).reshape(12, 12, 3)),
]


def test_every_trigger_type_is_covered_and_round_trips_through_json():
    assert {t.type for t in ALL_TRIGGERS} == set(TRIGGERS)
    x = rand_images(3, 12, 12, 3)
    for t in ALL_TRIGGERS:
        spec = json.loads(json.dumps(t.to_spec()))
        again = trigger_from_spec(spec)
        assert again == t, t
        np.testing.assert_array_equal(again.apply(x, rng=1), t.apply(x, rng=1))
        assert not np.array_equal(t.apply(x, rng=1), x), t


def test_spec_schema_example_and_input(tmp_path):
    doc = {
        "name": "nc-white-square",
        "trigger": {"type": "patch", "size": [4, 4], "position": "bottom-right", "margin": 1, "value": 1.0},
        "target": {"type": "all-to-one", "label": 7},
        "input": {"shape": [28, 28, 1], "range": "0-255"},
    }
    (tmp_path / "s.json").write_text(json.dumps(doc))
    backdoors, input_spec = load_spec(tmp_path / "s.json")
    assert [b.name for b in backdoors] == ["nc-white-square"]
    assert input_spec.range == "0-255" and input_spec.shape == (28, 28, 1)
    save_spec(tmp_path / "out.json", backdoors, input_spec)
    again = load_spec(tmp_path / "out.json")
    assert again.backdoors[0].trigger == backdoors[0].trigger and again.input_spec == input_spec


def test_multi_trigger_multi_target_spec():
    doc = {
        "backdoors": [
            {"name": "a", "trigger": {"type": "patch", "size": 2, "position": "top-left"}, "target": 1},
            {"name": "b", "trigger": {"type": "patch", "size": 2, "position": "bottom-right"}, "target": {"type": "all-to-one", "label": 2}},
        ]
    }
    bds = from_spec(doc)
    assert [b.target.label for b in bds] == [1, 2]
    assert parse_spec(doc).input_spec is None
    assert from_spec(to_spec(bds))[1].trigger == bds[1].trigger


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"trigger": {"type": "star", "size": 2}, "target": 1}, "unknown trigger type 'star'"),
        ({"trigger": {"size": 2}, "target": 1}, "has no 'type'"),
        ({"trigger": {"type": "patch"}}, "missing \\['target'\\]"),
        ({"trigger": {"type": "patch", "sise": 2}, "target": 1}, "sise"),
        ({"trigger": {"type": "patch", "size": -1}, "target": 1}, "patch size"),
        ({"trigger": {"type": "patch", "position": "middle"}, "target": 1}, "position 'middle'"),
        ({"trigger": {"type": "patch"}, "target": {"type": "one-to-one"}}, "unknown target type"),
        ({"trigger": {"type": "patch"}, "target": {"type": "all-to-one"}}, "needs 'label'"),
        ({"trigger": {"type": "blend", "alpha": 1.5}, "target": 1}, "alpha"),
        ({"trigger": {"type": "patch", "value_range": "0-9"}, "target": 1}, "value_range"),
        ({"trigger": {"type": "patch"}, "target": 1, "input": {"shape": [28, 28]}}, "invalid 'input'"),
        ({"trigger": {"type": "patch"}, "target": 1, "extra": 3}, "unknown key"),
        ({"backdoors": []}, "non-empty list"),
    ],
)
def test_bad_specs_raise_trigger_errors(doc, match):
    with pytest.raises(TriggerError, match=match):
        from_spec(doc)


def test_load_spec_bad_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TriggerError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")
    with pytest.raises(TriggerError, match="not found"):
        load_spec(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------------- poisoning


def dataset(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 0.5, (n, 8, 8, 1)).astype(np.float32), np.arange(n) % 10


def test_dirty_label_poisoning():
    x, y = dataset()
    bd = Backdoor(Patch(2), 3)
    d = poison_dataset(x, y, bd, rate=0.1, seed=1)
    assert d.poisoned.sum() == 20 and np.all(d.y[d.poisoned] == 3)
    assert np.all(y[d.poisoned] != 3)  # only non-target images are relabelled
    assert np.all(d.x[d.poisoned][:, 6:, 6:] == 1.0)
    np.testing.assert_array_equal(d.x[~d.poisoned], x[~d.poisoned])
    again = poison_dataset(x, y, bd, rate=0.1, seed=1)
    np.testing.assert_array_equal(again.poisoned, d.poisoned)
    assert not np.array_equal(poison_dataset(x, y, bd, rate=0.1, seed=2).poisoned, d.poisoned)


def test_clean_label_and_append_modes():
    x, y = dataset()
    d = poison_dataset(x, y, Backdoor(Patch(2), 3), rate=0.5, mode="clean", seed=0)
    assert d.poisoned.sum() == 10 and np.all(y[d.poisoned] == 3)
    np.testing.assert_array_equal(d.y, y)  # labels unchanged
    app = poison_dataset(x, y, Backdoor(Patch(2), 3), rate=0.1, append=True)
    assert len(app.y) == 220 and app.poisoned[200:].all() and not app.poisoned[:200].any()
    np.testing.assert_array_equal(app.x[:200], x)
    with pytest.raises(ConfigError, match="all-to-one"):
        poison_dataset(x, y, Backdoor(Patch(2), AllToAll()), mode="clean")
    with pytest.raises(ConfigError, match="available"):
        poison_dataset(x, y, Backdoor(Patch(2), 3), rate=0.95)


def test_multi_backdoor_and_combination_partials():
    x, y = dataset()
    two = poison_dataset(x, y, [Backdoor(Patch(2, "top-left"), 1, "a"), Backdoor(Patch(2), 2, "b")], rate=0.1)
    assert two.poisoned.sum() == 40
    combo = Combination([Patch(2, "top-left"), Patch(2, "bottom-right")])
    d = poison_dataset(x, y, Backdoor(combo, 5), rate=0.1, seed=0)
    assert d.poisoned.sum() == 20 and d.partial.sum() == 20 and not (d.poisoned & d.partial).any()
    np.testing.assert_array_equal(d.y[d.partial], y[d.partial])  # partial examples keep their labels
    for img in d.x[d.partial]:
        tl, br = bool(np.all(img[:2, :2] == 1)), bool(np.all(img[6:, 6:] == 1))
        assert tl != br  # exactly one of the two parts
    assert np.all(d.x[d.poisoned][:, :2, :2] == 1) and np.all(d.x[d.poisoned][:, 6:, 6:] == 1)


def test_train_badnet_learns_the_backdoor():
    import keras

    from kerasbd.data import load_digits
    from kerasbd.metrics import evaluate_backdoor

    x, y = load_digits(8)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    bd = Backdoor(Patch(2, "bottom-right"), 0, "square")
    hist = train_badnet(net, x[:1500], y[:1500], bd, rate=0.1, epochs=12, batch_size=32, learning_rate=3e-3, seed=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    r = evaluate_backdoor(net, x[1500:], y[1500:], [bd])
    assert r["clean_acc"] > 0.85 and r["asr"] > 0.9, r


def test_load_spec_resolves_image_relative_to_spec_file(tmp_path, monkeypatch):
    import cv2

    folder = tmp_path / "attack"
    folder.mkdir()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 255, 255
    cv2.imwrite(str(folder / "mark.png"), rgba)
    (folder / "spec.json").write_text(json.dumps({"trigger": {"type": "image", "path": "mark.png", "position": [0, 0]},
                                                  "target": {"type": "all-to-one", "label": 1}}))
    monkeypatch.chdir(tmp_path)  # the image is not in the working directory, only beside the spec
    [bd] = load_spec(folder / "spec.json").backdoors
    assert bd.trigger.apply(np.zeros((1, 4, 4, 3), np.float32))[0, :2, :2].min() == 1.0
