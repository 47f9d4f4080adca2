"""A scan's report as one self-contained HTML page: the verdict, the tables and every picture inline (base64 PNG),
so it opens offline and travels as one file."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

__all__ = ["scan_html", "summary_html"]

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.bad{color:#b00020}.ok{color:#1b5e20}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.small{color:#666;font-size:.9em}"""


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")


def scan_html(result: Any) -> str:
    """The page of one :class:`~kerasbd.scan.ScanResult`."""
    mark = "bad" if result.backdoored else "ok"
    parts = [f"<h1>Scan of {html.escape(result.name)}</h1>", f'<p class="{mark}"><b>{html.escape(result.verdict())}</b></p>',
             f'<p class="small">Calibration: {html.escape(result.calibration)}. Seed {result.seed}, budget {html.escape(result.budget)}, '
             f"{result.seconds:.1f} s.</p>", "<h2>Inspectors</h2>", _table(result.inspector_rows())]
    for name, inspection in result.inspections.items():
        parts += [f"<h2>{html.escape(name)}</h2>", f"<p>{html.escape(inspection.verdict())}</p>"]
        parts += [_png(fig) for fig in inspection.figures.values()]
        parts.append(_table(inspection.statistics))
    return _page(f"kerasbd scan: {result.name}", "".join(parts))


def summary_html(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """A page with the summary table of a scan over many models."""
    return _page(title, f"<h1>{html.escape(title)}</h1>{_table(rows)}")
