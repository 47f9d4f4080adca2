"""The single result object every defense and detector returns.

A :class:`DefenseResult` holds the repaired or defended model (if any), backdoor metrics before and after,
the run's parameters, seed and wall time, method-specific findings (``details``: anomaly indices, flagged
labels, selected grid cell...), tabular rows (``rows``: GYM's Table-2 columns, the NNoculation grid, a
fine-pruning curve), arrays (``arrays``: reversed masks and patterns) and matplotlib figures. It renders as
JSON and as a markdown table, and :meth:`DefenseResult.save` writes everything atomically into a folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.io import atomic_path, to_jsonable, write_json, write_text

__all__ = ["DefenseResult", "markdown_table", "der"]


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

    def to_markdown(self) -> str:
        """Readable report: the before/after summary, then the method's own table if it has one."""
        parts = [f"### {self.method} (seed {self.seed}, {self.seconds:.1f} s)", "", markdown_table([self.summary_row()])]
        if self.rows:
            parts += ["", markdown_table(self.rows)]
        return "\n".join(parts) + "\n"

    def save(self, directory: str | os.PathLike, *, save_model: bool = True) -> Path:
        """Write ``result.json``, ``result.md``, ``arrays.npz``, ``<figure>.png`` and ``model.keras`` atomically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "result.json", self.to_dict())
        write_text(out / "result.md", self.to_markdown())
        if self.arrays:
            with atomic_path(out / "arrays.npz") as tmp:
                np.savez_compressed(tmp, **self.arrays)
        for name, fig in self.figures.items():
            with atomic_path(out / f"{name}.png") as tmp:
                fig.savefig(tmp, dpi=120, bbox_inches="tight")
        if save_model and self.model is not None:
            with atomic_path(out / "model.keras") as tmp:
                self.model.save(tmp)
        return out
