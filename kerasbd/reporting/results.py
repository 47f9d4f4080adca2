"""The result objects: :class:`DefenseResult` (defenses, detectors) and :class:`InspectionResult` (inspectors).

A :class:`DefenseResult` holds the repaired or defended model (if any), backdoor metrics before and after,
the run's parameters, seed and wall time, method-specific findings (``details``: anomaly indices, flagged
labels, selected grid cell...), tabular rows (``rows``: GYM's Table-2 columns, the NNoculation grid, a
fine-pruning curve), arrays (``arrays``: reversed masks and patterns) and matplotlib figures. It renders as
JSON and as a markdown table, and :meth:`DefenseResult.save` writes everything into a folder as one unit.

An :class:`InspectionResult` holds an inspector's verdict: per-label statistics, the flagged labels, one
model-level score with the decision rule and threshold, and the reversed triggers as :mod:`kerasbd.attacks`
backdoors.

Saving writes a whole run's folder at once: everything goes into a temporary folder beside the target, which
then replaces it, so a rerun into the same folder never leaves an earlier run's files beside the new ones and
an interrupted save leaves the previous folder intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.io import atomic_path, to_jsonable, write_json, write_text
from kerasbd.metrics.backdoor import der

__all__ = ["DefenseResult", "InspectionResult", "markdown_table", "save_folder", "settings_lines"]


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    if v is None:
        return "—"
    return str(v)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Render a list of dicts as a GitHub markdown table (floats with 4 decimals).

    Example:
        >>> print(markdown_table([{"a": 1, "b": 0.5}]))
        | a | b |
        |---|---|
        | 1 | 0.5000 |
    """
    if not rows:
        return "(no rows)\n"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def settings_lines(details: dict[str, Any]) -> list[str]:
    """Markdown lines for the preset a run used and the scale warnings it raised (``Method._settings``)."""
    lines = []
    preset = details.get("preset")
    if preset:
        changes = ", ".join(f"`{k}={v}`" for k, v in preset["params"].items()) or "the class defaults"
        lines.append(f"**Settings:** preset `{preset['name']}` ({changes}) — {preset['reason']}")
    lines += [f"**Warning:** {w}" for w in details.get("warnings") or []]
    return [line for item in lines for line in (item, "")]


@dataclasses.dataclass
class DefenseResult:
    """Outcome of one defense or detector run.

    Attributes:
        method: short name, e.g. ``"neural-cleanse"``.
        model: the repaired/defended ``keras.Model`` (canonical images → logits), or None for pure detectors.
        params: the configuration used (the defense's ``get_config()``).
        seed: the seed the run used.
        seconds: wall time of the run.
        metrics_before / metrics_after: backdoor metrics (``clean_acc``, ``asr``, ``robust_acc``, ...) on the
            evaluation data given to the defense, when a trigger was given.
        details: JSON-able method-specific findings.
        rows: table rows for the method's comparison table.
        arrays: NumPy arrays worth saving (``.npz``), e.g. reversed masks.
        figures: matplotlib figures, saved as PNG.

    Example:
        >>> r = DefenseResult("demo", params={"k": 1}, seed=0, seconds=1.5,
        ...                   metrics_before={"clean_acc": 0.99, "asr": 1.0},
        ...                   metrics_after={"clean_acc": 0.98, "asr": 0.01})
        >>> r.to_dict()["der"]
        0.99
    """

    method: str
    model: Any = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    seconds: float = 0.0
    metrics_before: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics_after: dict[str, Any] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the model, arrays and figures are referenced, not embedded)."""
        return to_jsonable(
            {
                "method": self.method,
                "verdict": self.verdict(),
                "seed": self.seed,
                "seconds": round(float(self.seconds), 3),
                "params": self.params,
                "metrics_before": self.metrics_before,
                "metrics_after": self.metrics_after,
                "der": der(self.metrics_before, self.metrics_after),
                "details": self.details,
                "rows": self.rows,
                "arrays": sorted(self.arrays),
                "figures": sorted(self.figures),
            }
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    def summary_row(self) -> dict[str, Any]:
        """One flat row: metrics before/after, DER, time and seed."""
        b, a = self.metrics_before, self.metrics_after
        return {
            "defense": self.method,
            "clean_acc_before": b.get("clean_acc"),
            "asr_before": b.get("asr"),
            "clean_acc": a.get("clean_acc"),
            "asr": a.get("asr"),
            "robust_acc": a.get("robust_acc"),
            "der": der(b, a),
            "seconds": round(float(self.seconds), 2),
            "seed": self.seed,
        }

    def verdict(self) -> str:
        """One line: what the run found and changed, and the measured effect when evaluation data were given.

        Example:
            >>> DefenseResult("demo", details={"note": "pruned 3 channels"}, metrics_before={"clean_acc": 0.99, "asr": 1.0},
            ...               metrics_after={"clean_acc": 0.97, "asr": 0.02}).verdict()
            'demo: pruned 3 channels; ASR 1.000 → 0.020, clean accuracy 0.990 → 0.970'
        """
        found = self.details.get("note") or ("returned a defended model" if self.model is not None else "done")
        b, a = self.metrics_before, self.metrics_after
        effect = [f"{label} {b[key]:.3f} → {a[key]:.3f}" for key, label in (("asr", "ASR"), ("clean_acc", "clean accuracy"))
                  if b.get(key) is not None and a.get(key) is not None]
        return f"{self.method}: {found}" + (f"; {', '.join(effect)}" if effect else "")

    def to_markdown(self) -> str:
        """Readable report: the verdict, the before/after summary, then the method's own table if it has one."""
        parts = [f"### {self.method} (seed {self.seed}, {self.seconds:.1f} s)", "", f"**Verdict:** {self.verdict()}", "",
                 *settings_lines(self.details), markdown_table([self.summary_row()])]
        if self.rows:
            parts += ["", markdown_table(self.rows)]
        return "\n".join(parts) + "\n"

    def save(self, directory: str | os.PathLike, *, save_model: bool = True) -> Path:
        """Write ``result.json``, ``result.md``, ``arrays.npz``, ``<figure>.png`` and ``model.keras`` as one folder."""

        def write(out: Path) -> None:
            _write_common(out, self.to_dict(), self.to_markdown(), self.arrays, self.figures)
            if save_model and self.model is not None:
                self.model.save(out / "model.keras")

        return save_folder(directory, write)


def save_folder(directory: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a fresh temporary folder beside ``directory``, then put it in ``directory``'s place.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> _ = save_folder(out, lambda d: (d / "a.txt").write_text("1"))
        >>> _ = save_folder(out, lambda d: (d / "b.txt").write_text("2"))
        >>> sorted(p.name for p in out.iterdir())  # the first run's a.txt is gone
        ['b.txt']
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output folder {target} is an existing file; choose a folder path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = target.with_name(f".{target.name}.old-{tmp.name.rsplit('.', 1)[-1]}")
    try:
        write(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return target


def _write_common(out: Path, summary: dict[str, Any], markdown: str, arrays: dict[str, np.ndarray], figures: dict[str, Any]) -> None:
    write_json(out / "result.json", summary)
    write_text(out / "result.md", markdown)
    if arrays:
        with atomic_path(out / "arrays.npz") as tmp:
            np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    for name, fig in figures.items():
        fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")


@dataclasses.dataclass
class InspectionResult:
    """Outcome of one model inspection: is the model backdoored, and towards which label(s)?

    Attributes:
        method: short name, e.g. ``"neural-cleanse"``.
        labels: the labels inspected.
        statistics: one row per label (the method's per-label figures, e.g. L1 norm and anomaly index).
        flagged: labels the decision rule flags as backdoor targets (most anomalous first).
        score: one model-level score, higher = more likely backdoored.
        threshold, rule: the decision: the model is called backdoored when ``score > threshold``; ``rule``
            says in words what the score is and how the threshold was chosen.
        triggers: the reversed trigger of every inspected label as a :class:`kerasbd.attacks.Backdoor`
            (all-to-one towards that label), usable by ``evaluate_backdoor``, repair methods and the JSON schema.
        trigger_match: with the true trigger known (reporting only), how close each reversed trigger came to it.
        facts: the figures behind the decision that the verdict line states besides the score (e.g. Neural
            Cleanse's ``max_low_index`` and ``null_flag_rate``).
        params, seed, seconds: the configuration, seed and wall time of the run.
        details, arrays, figures: method-specific findings, arrays (saved as ``.npz``) and matplotlib figures.

    Example:
        >>> r = InspectionResult("demo", labels=[0, 1, 2], flagged=[1], score=3.2, threshold=2.0,
        ...                      rule="anomaly index of the smallest trigger > 2")
        >>> r.backdoored, r.verdict()
        (True, 'demo: backdoored — label(s) 1 flagged (score 3.2 > threshold 2; anomaly index of the smallest trigger > 2)')
    """

    method: str
    labels: list[int] = dataclasses.field(default_factory=list)
    statistics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    flagged: list[int] = dataclasses.field(default_factory=list)
    score: float = 0.0
    threshold: float = 0.0
    rule: str = ""
    triggers: dict[int, Any] = dataclasses.field(default_factory=dict)
    trigger_match: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    facts: dict[str, float] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def backdoored(self) -> bool:
        """The verdict: ``score > threshold``."""
        return bool(self.score > self.threshold)

    def backdoors(self, labels: Sequence[int] | None = None) -> list[Any]:
        """The reversed triggers of ``labels`` (default: the flagged ones) as :class:`kerasbd.attacks.Backdoor`."""
        return [self.triggers[int(label)] for label in (self.flagged if labels is None else labels)]

    def verdict(self) -> str:
        """One line: what was found."""
        if self.backdoored:
            found = f"backdoored — label(s) {', '.join(map(str, self.flagged)) or 'none'} flagged"
        else:
            found = "no backdoor found"
        sign = ">" if self.backdoored else "≤"
        facts = "".join(f"; {k} {v:.3g}" for k, v in self.facts.items())
        return f"{self.method}: {found} (score {self.score:.3g} {sign} threshold {self.threshold:g}; {self.rule}{facts})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (arrays and figures are referenced, triggers of the flagged labels embedded)."""
        from kerasbd.attacks.spec import to_spec

        return to_jsonable(
            {
                "method": self.method,
                "verdict": self.verdict(),
                "backdoored": self.backdoored,
                "flagged": self.flagged,
                "score": self.score,
                "threshold": self.threshold,
                "rule": self.rule,
                "facts": self.facts,
                "seed": self.seed,
                "seconds": round(float(self.seconds), 3),
                "params": self.params,
                "labels": self.labels,
                "statistics": self.statistics,
                "trigger_match": self.trigger_match,
                "details": self.details,
                "reversed_triggers": to_spec(self.backdoors()) if self.flagged else None,
                "arrays": sorted(self.arrays),
                "figures": sorted(self.figures),
            }
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    def to_markdown(self) -> str:
        """Readable report: the verdict, the per-label table, and the match with the true trigger if known."""
        parts = [f"### {self.method} (seed {self.seed}, {self.seconds:.1f} s)", "", f"**Verdict:** {self.verdict()}", "",
                 *settings_lines(self.details), markdown_table(self.statistics)]
        if self.trigger_match:
            parts += ["", "Reversed trigger vs the true trigger (reporting only):", "", markdown_table(self.trigger_match)]
        return "\n".join(parts) + "\n"

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``result.json``, ``result.md``, ``arrays.npz``, ``<figure>.png`` and, when labels are flagged,
        ``reversed_triggers.json`` (the trigger schema, for ``kerasbd evaluate --trigger``) as one folder."""
        from kerasbd.attacks.spec import to_spec

        def write(out: Path) -> None:
            _write_common(out, self.to_dict(), self.to_markdown(), self.arrays, self.figures)
            if self.flagged:
                write_json(out / "reversed_triggers.json", to_spec(self.backdoors()))

        return save_folder(directory, write)
