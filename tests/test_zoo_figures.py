"""The zoo's verified figures, reproduced through kerasbd on the full real MNIST test set.

Everything goes through the library: the per-class .npy loader, the safe model loader, the zoo manifest's
backdoor specs (the triggers expressed in the attacks abstraction) and evaluate_backdoor. Figures must match the
manifest's verified values within 0.1 percentage points.
"""

from __future__ import annotations

import pytest

from kerasbd.errors import ZooError

pytestmark = pytest.mark.zoo

TOLERANCE = 0.001  # 0.1 percentage points


@pytest.fixture(scope="module")
def mnist():
    from kerasbd.data import mnist_test_set

    try:
        return mnist_test_set()
    except ZooError as exc:
        pytest.skip(f"zoo not available: {exc}")


def evaluate_entry(name, x, y, spec_from=None):
    from kerasbd.attacks import from_spec
    from kerasbd.metrics import evaluate_backdoor
    from kerasbd.zoo import get_entry, load_zoo_model

    specs = get_entry(spec_from or name).get("backdoors") or []
    return evaluate_backdoor(load_zoo_model(name), x, y, from_spec(specs) if specs else [])


@pytest.mark.parametrize(
    "name, clean_acc, asr",
    [
        ("dillonsd_pattern_all_to_one", 0.9934, 0.9999),  # 6-pixel pattern → 0
        ("dillonsd_single_pixel_all_to_all", 0.9910, 0.9893),  # pixel (27, 27) → y + 1
        ("ruizegao_mnist_backdoor_7", 0.9589, 1.0),  # NC recipe: 4×4 square [23:27, 23:27] = 255 → 7, raw 0-255 input
        ("csaw_f_mnist_all_to_all", 0.9771, None),  # CSAW-2020 model F; its trigger is undocumented
        ("dillonsd_baseline", 0.9906, None),  # clean baseline
    ],
)
def test_verified_figures(mnist, name, clean_acc, asr):
    r = evaluate_entry(name, *mnist)
    assert r["n_clean"] == 10000
    assert abs(r["clean_acc"] - clean_acc) <= TOLERANCE, r
    if asr is not None:
        assert abs(r["asr"] - asr) <= TOLERANCE, r


def test_asr_population_excludes_the_target_class(mnist):
    x, y = mnist
    r = evaluate_entry("dillonsd_pattern_all_to_one", x, y)
    assert r["n_triggered"] == int((y != 0).sum()) == 9020
    a2a = evaluate_entry("dillonsd_single_pixel_all_to_all", x, y)
    assert a2a["n_triggered"] == 10000  # all-to-all: every input, judged against y + 1
