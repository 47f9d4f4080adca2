"""Backdoor metrics: clean accuracy, attack success rate, robust accuracy, GYM's target class probability and DER."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError

__all__ = ["activation_difference", "amplified", "der", "evaluate_backdoor", "predict_logits", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a kerasbd model (Classifier or Keras model) on canonical images, in one batched predict."""
    from kerasbd.models import as_logits_model

    return np.asarray(as_logits_model(model).predict(x, batch_size=batch_size, verbose=0))


def _rate(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate_backdoor(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    backdoors: Sequence[Any] = (),
    *,
    asr_mode: str = "all",
    amplify: Sequence[int] = (),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Clean accuracy and, per backdoor, attack success rate, robust accuracy and target class probability.

    Definitions (for each backdoor with attack labels ``t = target.map(y)``):

    - ``clean_acc``: accuracy on the clean inputs.
    - ``asr``: fraction of triggered inputs predicted as their attack label, counted only over *eligible* inputs
      (``t ≠ y``: for all-to-one the non-target classes; for all-to-all every input, judged against its mapped
      label). ``asr_mode="correct"`` is DHBE's variant: only eligible inputs the model classifies correctly
      when clean.
    - ``robust_acc``: fraction of the same triggered inputs still predicted as their true label.
    - ``tcp``: GYM's target class probability — the fraction of *clean* inputs the model already assigns to the
      attack label (all-to-one: predicted as the target). GYM compares a defended model's ASR with it; a
      defense cannot be expected to push the ASR below this chance level.
    - ``target_prob``: mean softmax probability of the attack label on the triggered eligible inputs.

    With several backdoors the top-level ``asr``/``robust_acc``/``tcp``/``target_prob`` are means over
    ``per_trigger``; ``n_triggered`` is the total number of triggered inputs scored. Rates over an empty set are
    None.

    Args:
        model: a :class:`kerasbd.models.Classifier` or Keras model (canonical images → logits or softmax).
        x, y: canonical images and true labels.
        backdoors: :class:`kerasbd.attacks.Backdoor` objects (or their spec dicts).
        asr_mode: ``"all"`` or ``"correct"`` (DHBE).
        amplify: also score every local trigger stamped this many times (4 and/or 9, DHBE §5.3's amplified attack,
            see :func:`amplified`): ``result["amplified"]["x4"]`` holds the same metrics for those backdoors.
        batch_size: prediction batch size.
        seed: seeds triggers with per-image randomness (backdoor ``i`` uses ``(seed, i)``).

    Example:
        >>> import keras, numpy as np
        >>> from kerasbd.attacks import Backdoor, Patch
        >>> net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
        >>> r = evaluate_backdoor(net, np.zeros((4, 4, 4, 1), "float32"), np.array([0, 1, 0, 1]), [Backdoor(Patch(2), 1)])
        >>> sorted(r["per_trigger"]), r["n_clean"], r["per_trigger"]["patch→1"]["n_triggered"]
        (['patch→1'], 4, 2)
    """
    from kerasbd.attacks import Backdoor
    from kerasbd.attacks.spec import parse_spec
    from kerasbd.models import as_logits_model
    from kerasbd.validation import check_dataset

    if asr_mode not in ("all", "correct"):
        raise ConfigError(f"asr_mode must be 'all' or 'correct' (DHBE), got {asr_mode!r}.")
    net = as_logits_model(model)
    num_classes = int(net.output_shape[-1])
    x, y = check_dataset(x, y, num_classes=num_classes, image_shape=net.input_shape[1:], name="evaluation data")
    items = [b if isinstance(b, Backdoor) else parse_spec(b).backdoors[0] for b in backdoors]
    for bd in items:
        bd.trigger.check_fits(x.shape[1:])
    pred_clean = predict_logits(net, x, batch_size).argmax(axis=1)
    result: dict[str, Any] = {
        "clean_acc": float((pred_clean == y).mean()),
        "n_clean": int(len(y)),
        "asr_mode": asr_mode,
        "seed": int(seed),
    }
    per: dict[str, dict[str, Any]] = {}
    for i, bd in enumerate(items):
        target = bd.target.map(y, num_classes)
        eligible = target != y
        if asr_mode == "correct":
            eligible &= pred_clean == y
        idx = np.flatnonzero(eligible)
        entry: dict[str, Any] = {"n_triggered": int(idx.size), "tcp": float((pred_clean == target).mean())}
        if idx.size:
            xt = bd.trigger.apply(x[idx], np.random.default_rng([int(seed), i]))
            logits = predict_logits(net, xt, batch_size)
            pred = logits.argmax(axis=1)
            entry["asr"] = _rate(pred == target[idx])
            entry["robust_acc"] = _rate(pred == y[idx])
            entry["target_prob"] = float(softmax(logits)[np.arange(idx.size), target[idx]].mean())
        else:
            entry.update(asr=None, robust_acc=None, target_prob=None)
        per[bd.name] = entry
    if per:
        for key in ("asr", "robust_acc", "tcp", "target_prob"):
            result[key] = _mean([e[key] for e in per.values()])
        result["n_triggered"] = int(sum(e["n_triggered"] for e in per.values()))
        result["per_trigger"] = per
    else:
        result.update(asr=None, robust_acc=None, tcp=None, target_prob=None, n_triggered=0, per_trigger={})
    if amplify:
        result["amplified"] = {}
        for copies in amplify:
            more = amplified(items, copies)
            if more:
                sub = evaluate_backdoor(net, x, y, more, asr_mode=asr_mode, batch_size=batch_size, seed=seed)
                result["amplified"][f"x{copies}"] = {k: sub[k] for k in ("asr", "robust_acc", "target_prob", "n_triggered", "per_trigger")}
    return result


def amplified(backdoors: Sequence[Any], copies: int) -> list[Any]:
    """The backdoors whose trigger has a footprint (patch, pixels, image), stamped ``copies`` times (4: the four
    corners; 9: also the centre and the four edge midpoints; :class:`~kerasbd.attacks.Amplified`). Global triggers
    (blend, noise, warping) have no place to repeat and are left out.

    Example:
        >>> from kerasbd.attacks import Backdoor, Patch
        >>> [b.name for b in amplified([Backdoor(Patch(3, "bottom-right"), 7)], 9)]
        ['patch→7 x9']
    """
    from kerasbd.attacks import Amplified, Backdoor, LocalTrigger

    if int(copies) not in (4, 9):
        raise ConfigError(f"amplified triggers have 4 or 9 copies (DHBE §5.3), got {copies}.")
    return [Backdoor(Amplified(b.trigger, int(copies)), b.target, name=f"{b.name} x{int(copies)}") for b in backdoors
            if isinstance(b.trigger, LocalTrigger) and not isinstance(b.trigger, Amplified)]


def _penultimate(model: Any) -> Any:
    """The layer whose output feeds the logits layer (inside nested models too)."""
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return _penultimate(last)
    parents = last._inbound_nodes[0].parent_nodes
    if len(parents) != 1:
        raise ConfigError(f"the logits layer {last.name!r} has {len(parents)} inputs; the penultimate layer is ambiguous.")
    return parents[0].operation


def activation_difference(model: Any, x: np.ndarray, y: np.ndarray, backdoor: Any, *, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """DHBE §5.3: how much the model still reacts to a trigger — per eligible input (true label ≠ attack label),
    the L1 and L2 distance between its clean and its triggered activations at the penultimate layer (the input of
    the logits layer) and at the output (logits).

    Returns ``{"penultimate": {"l1": [...], "l2": [...]}, "output": {...}, "summary": {...}}`` with one value per input
    (for a box plot) and their means and medians in ``summary`` (``"penultimate_l1_mean"``, ...).

    Example:
        >>> import keras, numpy as np
        >>> from kerasbd.attacks import Backdoor, Patch
        >>> net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3), keras.layers.Dense(2)])
        >>> d = activation_difference(net, np.zeros((4, 4, 4, 1), "float32"), np.array([0, 0, 1, 0]), Backdoor(Patch(2), 1))
        >>> len(d["output"]["l1"]), sorted(d["summary"])[:2]
        (3, ['output_l1_mean', 'output_l1_median'])
    """
    import keras

    from kerasbd.attacks import Backdoor
    from kerasbd.attacks.spec import parse_spec
    from kerasbd.models import as_logits_model
    from kerasbd.models.surgery import layer_output_model

    net = as_logits_model(model)
    bd = backdoor if isinstance(backdoor, Backdoor) else parse_spec(backdoor).backdoors[0]
    idx = np.flatnonzero(bd.target.map(y, int(net.output_shape[-1])) != y)
    features = keras.Model(net.inputs, [layer_output_model(net, _penultimate(net)).outputs[0], net.outputs[0]])
    xc = x[idx]
    xt = bd.trigger.apply(xc, np.random.default_rng([int(seed), 0]))
    out: dict[str, Any] = {"n": int(idx.size), "summary": {}}
    clean, triggered = features.predict(xc, batch_size=batch_size, verbose=0), features.predict(xt, batch_size=batch_size, verbose=0)
    for where, a, b in zip(("penultimate", "output"), clean, triggered, strict=True):
        diff = (np.asarray(b) - np.asarray(a)).reshape(len(idx), -1)
        out[where] = {"l1": np.abs(diff).sum(axis=1).tolist(), "l2": np.sqrt((diff**2).sum(axis=1)).tolist()}
        for norm, values in out[where].items():
            out["summary"][f"{where}_{norm}_mean"] = float(np.mean(values)) if values else None
            out["summary"][f"{where}_{norm}_median"] = float(np.median(values)) if values else None
    return out


def der(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Defense effectiveness rating (BackdoorBench): ``(max(0, ΔASR) − max(0, ΔACC) + 1) / 2`` in [0, 1].

    ΔASR = ASR before − after (the attack removed), ΔACC = clean accuracy before − after (the price paid).
    1 means the backdoor is gone at no accuracy cost; 0.5 means nothing changed.

    Example:
        >>> der({"clean_acc": 0.99, "asr": 1.0}, {"clean_acc": 0.97, "asr": 0.02})
        0.98
    """
    keys = ("clean_acc", "asr")
    if not all(before.get(k) is not None and after.get(k) is not None for k in keys):
        return None
    d_asr = before["asr"] - after["asr"]
    d_acc = before["clean_acc"] - after["clean_acc"]
    return round((max(0.0, d_asr) - max(0.0, d_acc) + 1.0) / 2.0, 6)
