"""Plotly figures and the one-file HTML page that holds them (report.py decides what goes in it).

The page inlines plotly.js once in <head>, and every figure is a `<div>` drawn by it, so a report opens
offline, from an e-mail attachment or a CI artifact, and never loads anything from a CDN.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

PLOT_CONFIG = {"displaylogo": False, "responsive": True}  # no "made with plotly" link in the modebar
MAX_CELL = 400  # characters of a prompt/prediction shown in a table cell; the rest is in generations.jsonl


@dataclass(frozen=True)
class Section:
    id: str
    """Anchor of the section and (prefixed `plot-`) of its figure's div: stable for tests and links."""
    title: str
    body: str
    """HTML: a figure, a table or a note."""


@dataclass(frozen=True)
class Curve:
    """One line of a learning-curve plot."""

    label: str
    steps: list[float]
    values: list[float]
    highlight: bool = False
    hover: str = ""


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def figure_html(fig: go.Figure, section_id: str, title: str) -> str:
    fig.update_layout(title=title, template="plotly_white", margin={"l": 60, "r": 30, "t": 60, "b": 50})
    if fig.layout.height is None:  # a div of "100%" height inside a page section would collapse to nothing
        fig.update_layout(height=480)
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"plot-{section_id}", config=PLOT_CONFIG
    )


def plot_section(section_id: str, title: str, build: Callable[[], go.Figure | str]) -> Section:
    """A figure, or the note `build` returns when there is nothing to draw.

    A plot that raises becomes a note naming the error: optuna's plot functions reject some unusual
    studies (one distinct value, a single trial), and one odd plot must not cost the user the report."""
    try:
        result = build()
    except Exception as e:  # noqa: BLE001 - shown to the user in the section, not swallowed
        return Section(section_id, title, note(f"could not draw this plot: {type(e).__name__}: {e}"))
    body = result if isinstance(result, str) else figure_html(result, section_id, title)
    return Section(section_id, title, body)


# ----------------------------------------------------------------------------------------------------
# Figures


def learning_curves(curves: Sequence[Curve], y_title: str) -> go.Figure | str:
    if not any(c.steps for c in curves):
        return note("no eval history in the trial folders (log.jsonl) yet")
    fig = go.Figure()
    for c in curves:
        if not c.steps:
            continue
        fig.add_trace(
            go.Scatter(
                x=c.steps,
                y=c.values,
                mode="lines+markers",
                name=c.label,
                line={"width": 4 if c.highlight else 1.5},
                opacity=1.0 if c.highlight else 0.75,
                hovertemplate=f"{html.escape(c.label)}<br>step %{{x}}<br>{y_title} %{{y:.4g}}"
                + (f"<br>{html.escape(c.hover)}" if c.hover else "")
                + "<extra></extra>",
            )
        )
    fig.update_layout(xaxis_title="step", yaxis_title=y_title, hovermode="closest")
    return fig


def importance_bars(importances: dict[str, float]) -> go.Figure:
    names = list(importances)[::-1]  # most important on top
    fig = go.Figure(
        go.Bar(
            x=[importances[n] for n in names],
            y=names,
            orientation="h",
            text=[f"{importances[n]:.2f}" for n in names],
            textposition="auto",
        )
    )
    fig.update_layout(xaxis_title="importance (sums to 1)", height=max(300, 40 * len(names) + 120))
    return fig


def price_scatter(
    rows: Sequence[dict[str, Any]],
    label: str,
    references: dict[str, list[tuple[float, float]]] | None = None,
) -> go.Figure | str:
    """Predicted vs true price, one point per generated row; unparseable answers are counted in a note.
    `references`: baseline name -> (true, predicted) points, drawn as a line where the baseline predicts
    one constant, else as faint points."""
    points = [
        (float(r["price_true"]), float(r["price_pred"]), str(r.get("prompt", ""))[:120])
        for r in rows
        if _is_number(r.get("price_true")) and _is_number(r.get("price_pred"))
    ]
    if not points:
        return note(f"{label}: no generations with numeric price_pred and price_true to plot")
    truth, pred, text = zip(*points, strict=True)
    refs = references or {}
    hi = max(max(truth), max(pred), *(max(p) for pts in refs.values() for p in pts)) * 1.05
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="perfect", line={"dash": "dash"}))
    for name, pts in refs.items():
        if len({p for _, p in pts}) == 1:  # a constant prediction: a horizontal line
            y, dotted = pts[0][1], {"dash": "dot", "width": 1}
            label = f"{name} baseline ({y:.4g})"
            fig.add_trace(go.Scatter(x=[0, hi], y=[y, y], mode="lines", name=label, line=dotted))
        else:
            xs, ys = zip(*pts, strict=True)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", opacity=0.35, name=f"{name} baseline"))
    fig.add_trace(
        go.Scatter(
            x=truth,
            y=pred,
            mode="markers",
            name=label,
            text=text,
            hovertemplate="true $%{x:.2f}<br>predicted $%{y:.2f}<br>%{text}<extra></extra>",
        )
    )
    unparsed = sum(1 for r in rows if _is_number(r.get("price_true")) and not _is_number(r.get("price_pred")))
    subtitle = f"{len(points)} rows" + (f"; {unparsed} unparseable answer(s) not shown" if unparsed else "")
    fig.update_layout(xaxis_title=f"true price ({subtitle})", yaxis_title="predicted price")
    return fig


def reference_lines(fig: go.Figure | str, references: dict[str, float]) -> go.Figure | str:
    """Dotted horizontal lines at each baseline's value, on a figure of that metric (a note stays one)."""
    if isinstance(fig, str):
        return fig
    for name, value in references.items():
        fig.add_hline(
            y=value,
            line={"dash": "dot", "width": 1, "color": "gray"},
            annotation_text=f"{name} baseline {value:.4g}",
            annotation_position="top left",
        )
    return fig


def value_boxes(values: dict[str, list[float]], y_title: str) -> go.Figure | str:
    if not any(values.values()):
        return note("no complete trials in any study")
    fig = go.Figure()
    for name, vals in values.items():
        fig.add_trace(go.Box(y=vals, name=name, boxpoints="all", jitter=0.3, pointpos=0))
    fig.update_layout(yaxis_title=y_title, showlegend=False)
    return fig


def agreement_plot(
    steps: Sequence[int], rhos: Sequence[float | None], ns: Sequence[int], rungs: Sequence[bool], unit: str
) -> go.Figure:
    """Rung agreement: rho per step as bars (rungs dark), n on each bar, the warning level dotted."""
    fig = go.Figure(
        go.Bar(
            x=[str(s) for s in steps],
            y=[r if r is not None else 0.0 for r in rhos],
            text=[f"n={n}" if r is not None else f"n={n}, no rho" for r, n in zip(rhos, ns, strict=True)],
            marker_color=["#1f4e79" if rung else "#9ecae1" for rung in rungs],
            hovertemplate=f"{unit} %{{x}}<br>rho %{{y:.3f}}<br>%{{text}}<extra></extra>",
        )
    )
    fig.add_hline(y=0.5, line={"dash": "dot", "width": 1, "color": "gray"}, annotation_text="0.5")
    fig.update_layout(
        xaxis_title=f"{unit} (dark: a rung the pruner judges at)",
        yaxis_title="Spearman rho with the final value",
        yaxis_range=[-1, 1],
    )
    return fig


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------------------------------
# Tables


def fmt_cell(v: Any) -> str:
    """One display format for md and html tables: 4 significant digits, blanks for missing values."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_html(frame: pd.DataFrame, header: bool = True) -> str:
    shown = frame.map(fmt_cell).astype(object)
    return shown.to_html(index=False, header=header, escape=True, border=0, classes="table", na_rep="")


def generations_table(reference: Sequence[dict[str, Any]], columns: dict[str, dict[str, str]], n: int) -> str:
    """Prompt and reference from `reference` (rows of one trial), then one prediction column per trial.

    Trials generate on the same seeded subset, so rows are matched by prompt; a trial without that row
    shows a blank."""
    rows = [r for r in reference if "prompt" in r][:n]
    if not rows:
        return note("no generations.jsonl in the trial folders (generation off, or trials not finished)")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["prompt", "reference", *columns])
    body = []
    for r in rows:
        cells = [r.get("prompt", ""), r.get("reference", "")]
        cells += [by_prompt.get(str(r["prompt"]), "") for by_prompt in columns.values()]
        body.append("<tr>" + "".join(f"<td>{_cell_text(c)}</td>" for c in cells) + "</tr>")
    rows_html = "".join(body)
    return (
        f'<table class="table generations"><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>'
    )


def _cell_text(value: Any) -> str:
    text = fmt_cell(value)
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL] + " …"
    return html.escape(text).replace("\n", "<br>")


# ----------------------------------------------------------------------------------------------------
# The page

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: 0.3rem; }
nav a { margin-right: 1rem; } .note { color: #666; font-style: italic; }
table.table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
table.table th, table.table td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left;
       vertical-align: top; }
table.table th { background: #f5f5f5; } table.generations td { max-width: 28rem; white-space: pre-wrap; }
.scroll { overflow-x: auto; }
"""


def page(title: str, summary: str, sections: Sequence[Section]) -> str:
    """The whole report: plotly.js inlined once, then each section. No external URL is referenced."""
    from plotly.offline import get_plotlyjs

    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n'
        f'<div class="scroll">{s.body}</div>\n</section>'
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<h1>{html.escape(title)}</h1>\n{summary}\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def md_table(frame: pd.DataFrame) -> str:
    """GitHub markdown, rendered here so no extra dependency (tabulate) is needed; numbers right-aligned."""
    cols = [str(c) for c in frame.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame
    ]
    head = "| " + " | ".join(_md_escape(c) for c in cols) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = [
        "| " + " | ".join(_md_escape(fmt_cell(v)) for v in row) + " |"
        for row in frame.itertuples(index=False, name=None)
    ]
    return "\n".join([head, rule, *body])


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")
