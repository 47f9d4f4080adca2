"""How close a reversed trigger came to the true one — reporting only, when the true trigger is known.

For every true backdoor and each of its target labels that was inspected, the reversed trigger's mask ``m``
(its per-pixel opacity) is compared with the true trigger's footprint ``f`` (its opacity map,
:meth:`kerasbd.attacks.Trigger.mask`): ``mask_on_trigger = Σ m·f / Σ m`` is the share of the reversed mask that
lies on the true trigger, ``trigger_covered = Σ m·f / Σ f`` the share of the true trigger it covers, and
``centroid_distance`` the distance in pixels between the two maps' centres of mass (a reversed trigger one pixel
beside a sparse true pattern overlaps it nowhere but sits close). Given the model, ``region_asr`` says whether
the reversed trigger holds *this* true trigger, whatever else it holds: the share of clean images (those the model
does not already give to the label, at most 500) that the reversed trigger, cut to the true footprint grown by
2 pixels, sends to the label — a multi-trigger model's reversed trigger may fire through one trigger alone. The ASR
of the whole reversed trigger on the defender's clean images is the inspector's own ``reversed_asr``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasbd.errors import TriggerError

__all__ = ["trigger_match"]

#: Clean images ``region_asr`` is measured on.
REGION_IMAGES = 500


def _centroid(weights: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(weights.shape)
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def _targets(backdoor: Any, labels: list[int]) -> list[int]:
    label = getattr(backdoor.target, "label", None)
    return [int(label)] if label is not None else list(labels)  # all-to-all: every label is some input's target


def _region_asr(model: Any, reversed_trigger: Any, footprint: np.ndarray, x: np.ndarray, label: int) -> float | None:
    import cv2

    if not len(x):  # a data-free run has no clean images to measure on
        return None
    x = x[np.argmax(np.asarray(model.predict(x, batch_size=256, verbose=0)), axis=1) != label][:REGION_IMAGES]
    if not len(x):
        return None
    region = cv2.dilate((footprint > 0).astype(np.uint8), np.ones((5, 5), np.uint8))[None, ..., None].astype(np.float32)
    cut = np.clip(x + region * (reversed_trigger.apply(x, rng=0) - x), 0.0, 1.0)
    return float(np.mean(np.argmax(np.asarray(model.predict(cut, batch_size=256, verbose=0)), axis=1) == label))


def trigger_match(result: Any, backdoors: list[Any], x: np.ndarray, model: Any = None) -> list[dict[str, Any]]:
    """Rows comparing each inspected target label's reversed trigger with the true trigger(s) (with ``model``, each
    row's ``region_asr`` too).

    Example:
        >>> from kerasbd.attacks import AllToOne, Backdoor, MaskedPattern, Patch
        >>> from kerasbd.reporting import InspectionResult
        >>> m = np.zeros((4, 4), np.float32); m[2:, 2:] = 1
        >>> r = InspectionResult("demo", labels=[0, 1, 2], flagged=[1],
        ...                      triggers={1: Backdoor(MaskedPattern(m, np.ones((4, 4, 1))), AllToOne(1))})
        >>> rows = trigger_match(r, [Backdoor(Patch(2, "bottom-right"), 1)], np.zeros((1, 4, 4, 1), np.float32))
        >>> rows[0]["mask_on_trigger"], rows[0]["trigger_covered"], rows[0]["centroid_distance"], rows[0]["target_flagged"]
        (1.0, 1.0, 0.0, True)
    """
    shape = x.shape[1:]
    rows: list[dict[str, Any]] = []
    for bd in backdoors:
        try:
            footprint = np.asarray(bd.trigger.mask(shape), np.float64)
        except TriggerError:  # e.g. a trigger at a random position has no fixed footprint
            footprint = None
        for label in _targets(bd, result.labels):
            if label not in result.triggers:
                continue
            row: dict[str, Any] = {"backdoor": bd.name, "label": label, "target_flagged": label in result.flagged}
            mask = np.clip(np.asarray(result.triggers[label].trigger.mask(shape), np.float64), 0.0, 1.0)
            reversed_l1 = float(mask.sum())
            row["reversed_l1"] = reversed_l1
            if footprint is not None:
                overlap, true_l1 = float((mask * footprint).sum()), float(footprint.sum())
                row.update(true_l1=true_l1,
                           mask_on_trigger=round(overlap / reversed_l1, 4) if reversed_l1 > 0 else None,
                           trigger_covered=round(overlap / true_l1, 4) if true_l1 > 0 else None,
                           centroid_distance=round(float(np.linalg.norm(_centroid(mask) - _centroid(footprint))), 2)
                           if reversed_l1 > 0 and true_l1 > 0 else None)
                if model is not None:
                    row["region_asr"] = _region_asr(model, result.triggers[label].trigger, footprint, x, label)
            rows.append(row)
    return rows
