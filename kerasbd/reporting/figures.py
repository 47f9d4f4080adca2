"""Figures and rendered tables of each method, drawn from what its result recorded.

Algorithm modules return numbers (``details``, ``arrays``, the reporter's measured series); the pictures and
markdown renderings are made here, after the framework has added its measurements, by :func:`figures_for`
(called by ``Defense.run`` and ``ModelInspector.inspect``). A method without an entry has no figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["figures_for", "nnoculation_grid_rows", "translation_grid"]


def figures_for(result: Any) -> dict[str, Any]:
    """The matplotlib figures of a :class:`DefenseResult` or :class:`InspectionResult` (by its ``method``)."""
    draw = _FIGURES.get(result.method)
    return draw(result) if draw is not None else {}


def _neural_cleanse(result: Any) -> dict[str, Any]:
    d, a = result.details, result.arrays
    labels, norms = [int(lab) for lab in a["labels"]], a["l1_norms"]
    return {"reversed_triggers": _trigger_grid(labels, a["masks"], a["patterns"], norms, d["flagged"]),
            "anomaly_index": _anomaly_plot(labels, norms, d["median"], d["mad"], d["mad_threshold"], d["flagged"])}


def _nnoculation(result: Any) -> dict[str, Any]:
    d = result.details
    lrs, gammas = result.params["learning_rates"], result.params["noise_fractions"]
    chosen = _chosen_cell(d)
    return {"grid": _grid_figure(d["grid"], chosen, d["baseline_holdout_acc"], lrs, gammas)}


def _fine_pruning(result: Any) -> dict[str, Any]:
    d = result.details
    return {"pruning_curve": _curve_figure(d["curve"], d["validation_acc_before"], result.params["max_drop"], d["layer"])}


def _chosen_cell(details: dict[str, Any]) -> dict[str, Any]:
    pick = details["selected"]
    return next(c for c in details["grid"] if c["learning_rate"] == pick["learning_rate"] and c["noise"] == pick["noise"])


def nnoculation_grid_rows(cells: list[dict[str, Any]], chosen: dict[str, Any], base_acc: float, max_drop: float,
                          lrs: Sequence[float], gammas: Sequence[float]) -> list[dict[str, Any]]:
    """Rows like NNoculation's Table 2: one per noise level, one column per learning rate (held-out CA %),
    ``**bold**`` within the tolerated drop, ``★`` on the pick, ``—`` for cells not trained (a larger learning
    rate already had a cell within the drop)."""
    by_key = {(c["learning_rate"], c["noise"]): c for c in cells}
    rows = []
    for g in gammas:
        row: dict[str, Any] = {"γ": f"{g:.0%}"}
        for a in lrs:
            c = by_key.get((a, g))
            if c is None:
                row[f"α={a:g}"] = "—"
                continue
            text = f"{100 * c['holdout_acc']:.2f}"
            if c["holdout_acc"] >= base_acc - max_drop - 1e-9:
                text = f"**{text}**"
            if c is chosen:
                text += " ★"
            row[f"α={a:g}"] = text
        rows.append(row)
    return rows



def _grid_figure(cells: list[dict[str, Any]], chosen: dict[str, Any], base_acc: float,
                 lrs: Sequence[float], gammas: Sequence[float]) -> Any:
    from matplotlib.figure import Figure

    panels = [("holdout_acc", "held-out clean accuracy")]
    if cells and cells[0].get("asr") is not None:
        panels.append(("asr", "attack success rate (evaluation data)"))
    fig = Figure(figsize=(4.2 * len(panels) + 0.8, 3.6), layout="constrained")  # keeps each colorbar off the next panel
    by_key = {(c["learning_rate"], c["noise"]): c for c in cells}
    for k, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        grid = np.array([[by_key[(a, g)][key] if (a, g) in by_key else np.nan for a in lrs] for g in gammas], dtype=float)
        im = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for r, g in enumerate(gammas):
            for c, a in enumerate(lrs):
                if (a, g) not in by_key:  # not trained: the pick lies at a larger learning rate
                    ax.text(c, r, "—", ha="center", va="center", fontsize=7)
                    continue
                mark = "*" if by_key[(a, g)] is chosen else ""
                ax.text(c, r, f"{100 * grid[r, c]:.1f}{mark}", ha="center", va="center", fontsize=7,
                        color="black" if grid[r, c] > 0.6 else "white")  # readable on viridis' bright end
        ax.set_xticks(range(len(lrs)), [f"{a:g}" for a in lrs])
        ax.set_yticks(range(len(gammas)), [f"{g:.0%}" for g in gammas])
        ax.set_xlabel("learning rate α")
        ax.set_ylabel("noise level γ")
        ax.set_title(title + (f" (baseline {100 * base_acc:.1f})" if key == "holdout_acc" else ""), fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return fig

def _curve_figure(curve: list[dict[str, Any]], base_acc: float, max_drop: float, layer: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.add_subplot()
    k = [p["pruned"] for p in curve]
    ax.plot(k, [p["clean_acc"] for p in curve], marker=".", label="clean accuracy (validation)")
    if curve and curve[0].get("asr") is not None:
        ax.plot(k, [p["asr"] for p in curve], marker=".", label="attack success rate")
    ax.axhline(base_acc - max_drop, color="grey", linestyle="--", linewidth=1, label=f"accuracy − {max_drop:g}")
    ax.set_xlabel(f"pruned channels of {layer}")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Fine-pruning: pruning in increasing order of activation", fontsize=9)
    return fig

def _trigger_grid(labels: list[int], masks: np.ndarray, patterns: np.ndarray, norms: np.ndarray, flagged: list[int], max_labels: int = 50) -> Any:
    """Reversed mask (top) and pattern·mask (bottom) per label; the ``max_labels`` smallest masks when there are more."""
    from matplotlib.figure import Figure

    order = np.argsort(norms)[:max_labels] if len(labels) > max_labels else np.arange(len(labels))
    cols = min(10, len(order))
    blocks = math.ceil(len(order) / cols)
    fig = Figure(figsize=(1.3 * cols, 2.8 * blocks), layout="constrained")
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(order):
        r, c = 2 * (k // cols), k % cols
        fusion = masks[i][..., None] * patterns[i]
        axes[r, c].imshow(masks[i], cmap="gray", vmin=0, vmax=1)
        mark, colour = (" *", "red") if labels[i] in flagged else ("", "black")
        axes[r, c].set_title(f"{labels[i]}{mark}\nL1 {norms[i]:.1f}", fontsize=7, color=colour)
        axes[r + 1, c].imshow(fusion[..., 0] if fusion.shape[-1] == 1 else fusion, cmap="gray" if fusion.shape[-1] == 1 else None, vmin=0, vmax=1)
    fig.suptitle("Neural Cleanse reversed triggers: mask / pattern·mask (* = flagged)", fontsize=9)
    return fig



def _anomaly_plot(labels: list[int], norms: np.ndarray, median: float, mad: float, threshold: float, flagged: list[int]) -> Any:
    """Signed anomaly index ``(median − L1)/MAD`` per label with the flagging threshold."""
    signed = (median - norms) / mad if mad > 0 else np.zeros_like(norms)
    return _index_bars(labels, signed, threshold, flagged, "(median − L1) / MAD")


def _gangsweep(result: Any) -> dict[str, Any]:
    a, d = result.arrays, result.details  # an InspectionResult or the gangsweep defense's DefenseResult
    labels, flagged = [int(lab) for lab in a["labels"]], d["flagged"]
    return {"masks": _mask_grid(labels, a["masks"], a["persistence"], flagged, "P",
                                "GangSweep mean perturbation |δ| per target label (P = persistence, * = flagged)"),
            "shift_scatter": _shift_scatter(labels, a["shift_variance"], a["shift_distance"], flagged),
            "anomaly_index": _index_bars(labels, a["anomaly_index"], d["ai_threshold"], flagged, "(Z_V + Z_D) / 2")}


def _mask_grid(labels: list[int], masks: np.ndarray, values: np.ndarray, flagged: list[int], value_name: str, title: str, *,
               smallest_first: bool = False, max_labels: int = 50) -> Any:
    """Each label's mean generated perturbation |δ| with one value per label (the ``max_labels`` largest values, or
    smallest with ``smallest_first``, when there are more)."""
    from matplotlib.figure import Figure

    order = np.argsort(values if smallest_first else -values)[:max_labels]
    cols = min(10, len(order))
    rows = math.ceil(len(order) / cols)
    fig = Figure(figsize=(1.3 * cols, 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(order):
        ax = axes[k // cols, k % cols]
        ax.imshow(np.abs(masks[i]).max(axis=-1), cmap="gray", vmin=0, vmax=1)
        mark, colour = (" *", "red") if labels[i] in flagged else ("", "black")
        ax.set_title(f"{labels[i]}{mark}\n{value_name} {values[i]:.2f}", fontsize=7, color=colour)
    fig.suptitle(title, fontsize=9)
    return fig


def translation_grid(clean: np.ndarray, translated: np.ndarray, reference: np.ndarray | None = None, *, n: int = 8,
                     title: str = "CycleGAN: clean → quarantined domain") -> Any:
    """Rows of clean images, their CycleGAN translations and, when known, the same images with the true trigger.

    Example:
        >>> import numpy as np
        >>> fig = translation_grid(np.zeros((3, 4, 4, 1)), np.ones((3, 4, 4, 1)), np.ones((3, 4, 4, 1)))
        >>> len(fig.axes)
        9
    """
    from matplotlib.figure import Figure

    rows = [("clean", clean), ("CycleGAN", translated)] + ([("true trigger", reference)] if reference is not None else [])
    cols = min(n, len(clean))
    fig = Figure(figsize=(1.2 * cols, 1.3 * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for i in range(cols):
            ax = axes[r, i]
            img = np.clip(images[i], 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def _deepinspect(result: Any) -> dict[str, Any]:
    a, d = result.arrays, result.details
    labels, flagged = [int(lab) for lab in a["labels"]], d["flagged"]
    return {"triggers": _mask_grid(labels, a["masks"], a["magnitude"], flagged, "L1",
                                   "DeepInspect mean generated trigger |δ| per target label (L1 = magnitude, * = flagged)", smallest_first=True),
            "anomaly_index": _index_bars(labels, a["deviation"], d["threshold"], flagged, "(median − L1) / MAD_low")}


def _shift_scatter(labels: list[int], variance: np.ndarray, distance: np.ndarray, flagged: list[int]) -> Any:
    """Shift variance against shift distance per label (GangSweep's Fig. 8: a target sits low-variance, far)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.4), layout="constrained")
    ax = fig.subplots()
    colours = ["tab:red" if lab in flagged else "tab:blue" for lab in labels]
    ax.scatter(variance, distance, c=colours, s=18)
    if len(labels) <= 60:
        for lab, v, d in zip(labels, variance, distance, strict=True):
            ax.annotate(str(lab), (v, d), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("shift variance V")
    ax.set_ylabel("shift distance D")
    ax.set_title("GangSweep: V and D per target label (red = flagged)", fontsize=8)
    return fig


def _index_bars(labels: list[int], index: np.ndarray, threshold: float, flagged: list[int], ylabel: str) -> Any:
    """One bar per label (flagged in red) against the flagging threshold."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 0.3 * len(labels)), 3.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(labels)), np.nan_to_num(index, posinf=10.0, neginf=-10.0),
           color=["tab:red" if lab in flagged else "tab:blue" for lab in labels])
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if len(labels) <= 60:
        ax.set_xticks(range(len(labels)), [str(lab) for lab in labels], fontsize=7)
    ax.set_xlabel("label")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return fig


_FIGURES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "gangsweep": _gangsweep,
    "deepinspect": _deepinspect,
    "neural-cleanse": _neural_cleanse,
    "nnoculation-pre": _nnoculation,
    "fine-pruning": _fine_pruning,
}
