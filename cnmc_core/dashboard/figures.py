"""Plotly figures of the read model's values, for the study report (dashboard.report): the 95% intervals,
the confusion matrices, ROC / PR, calibration and the significance matrix. Drawn as the pages draw them
(same colours per model, same axes and hover text), from the same read-model values.

Text from a study (subjects) reaches a figure only through `plotly_text`: Plotly reads a few HTML tags in
labels. Model names here are registry names.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..palette import ENSEMBLE_STYLE_COLOR, model_style
from .base import CLASSES, ENSEMBLE_NAME, METRICS, PAPER, Matrix

ENSEMBLE_COLOR = ENSEMBLE_STYLE_COLOR  # the colours are the pages' own (cnmc_core/palette.py)
SIGNIFICANCE = 0.05
P_SCALE = [[0.0, "#1b7837"], [SIGNIFICANCE, "#a6dba0"], [SIGNIFICANCE + 1e-9, "#ececec"], [1.0, "#fafafa"]]
AXES = {"fpr": "false positive rate (1 − specificity)", "tpr": "true positive rate (recall)",
        "recall": "recall (share of ALL cells found)", "precision": "precision (share of ALL calls that are ALL)"}
RANGE = [-0.01, 1.01]
DIAGONAL = {"color": "grey", "dash": "dot"}
PER_ROW = 4
TEMPLATE = "plotly_white"
# Points drawn per ROC / PR line: a curve of 12,800 cells has thousands of corners, invisible at 440 px and
# megabytes in a report file (measured: docs/benchmarks.md, section 11).
MAX_CURVE_POINTS = 1000


def plotly_text(words) -> str:
    """Text for a Plotly label or hover: Plotly reads a few HTML tags (<a href>, <b>); entities show literally."""
    return html.escape(str(words), quote=False)


def model_color(name_or_key: str) -> str:
    """The colour the pages give a model (by key or display name); the ensemble's is black (cnmc_core/palette.py)."""
    return model_style(name_or_key).color


def _line(model: str) -> dict:
    return {"color": ENSEMBLE_COLOR, "dash": "dash"} if model == ENSEMBLE_NAME else {"color": model_color(model)}


def interval_chart(intervals: pd.DataFrame, table: pd.DataFrame, metric: str) -> go.Figure:
    """One dot per row with its 95% interval (`overview.metric_intervals`), the paper's value as a grey ring."""
    part = intervals[intervals["metric"] == metric]
    label = METRICS[metric]
    fig = go.Figure(go.Scatter(
        x=part["value"], y=part["Model"], mode="markers", name="This study, with 95% interval",
        error_x={"type": "data", "symmetric": False, "array": part["high"] - part["value"],
                 "arrayminus": part["value"] - part["low"], "thickness": 2, "width": 6},
        marker={"size": 11, "color": [model_color(m) for m in part["Model"]],
                "symbol": ["diamond" if m == ENSEMBLE_NAME else "circle" for m in part["Model"]]},
        customdata=part[["low", "high"]].to_numpy(),
        hovertemplate=f"%{{y}}<br>{label} %{{x:.3f}}<br>95% interval %{{customdata[0]:.3f}} – "
                      "%{customdata[1]:.3f}<extra></extra>",
    ))
    paper = table[(table["Source"] == PAPER) & table[label].notna()]
    if len(paper):
        fig.add_trace(go.Scatter(
            x=paper[label], y=paper["Model"], mode="markers", name=PAPER,
            marker={"size": 11, "symbol": "circle-open", "color": "grey", "line": {"width": 2}},
            hovertemplate=f"%{{y}}, {PAPER}<br>{label} %{{x:.3f}}<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=list(part["Model"]))
    fig.update_layout(template=TEMPLATE, height=110 + 30 * len(part), margin={"t": 30, "b": 10},
                      title={"text": label, "font": {"size": 14}}, xaxis={"title": label},
                      legend={"orientation": "h", "y": -0.35 if len(part) < 5 else -0.15})
    return fig


def confusion_grid(matrices: list[Matrix]) -> go.Figure:
    """Every model's confusion matrix side by side: count and row share in each cell, coloured by the share."""
    rows = -(-len(matrices) // PER_ROW)
    fig = make_subplots(rows=rows, cols=PER_ROW, subplot_titles=[f"{m.name} (threshold {m.threshold:g})"
                                                                 for m in matrices],
                        horizontal_spacing=0.07, vertical_spacing=0.3 / rows)
    x, y = [f"called {c}" for c in CLASSES], [f"true {c}" for c in CLASSES]
    for i, m in enumerate(matrices):
        text = [[f"{m.counts[r][c]}<br>{m.rates[r][c]:.0%}" for c in range(2)] for r in range(2)]
        fig.add_trace(go.Heatmap(
            z=m.rates, x=x, y=y, text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
            showscale=False, customdata=m.counts, name=m.name,
            hovertemplate=f"{m.name}<br>%{{y}}, %{{x}}<br>count %{{customdata}}<br>rate in row %{{z:.1%}}"
                          "<extra></extra>",
        ), row=i // PER_ROW + 1, col=i % PER_ROW + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font_size=12)
    fig.update_layout(template=TEMPLATE, height=250 * rows + 40, margin={"t": 50, "b": 10, "l": 10, "r": 10})
    return fig


def curve_lines(frame: pd.DataFrame, x: str, y: str, label: dict[str, float], what: str, diagonal: bool) -> go.Figure:
    """ROC (x fpr, y tpr) or precision-recall (x recall, y precision) curves, one line per row."""
    fig = go.Figure()
    for model, part in frame.groupby("Model", sort=False):
        part = thin(part)
        fig.add_trace(go.Scatter(
            x=part[x], y=part[y], mode="lines", name=f"{model} ({what} {label[model]:.3f})", line=_line(model),
            hovertemplate=f"{model}<br>{x} %{{x:.3f}}<br>{y} %{{y:.3f}}<extra></extra>",
        ))
    if diagonal:
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=DIAGONAL))
    fig.update_layout(template=TEMPLATE, height=440, margin={"t": 10, "b": 10}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"range": RANGE, "title": AXES[x]}, yaxis={"range": RANGE, "title": AXES[y]})
    return fig


def calibration(frame: pd.DataFrame, ece: dict[str, float]) -> go.Figure:
    """Reliability curves: mean P(ALL) of each saved bin against the share of ALL in it (`base.reliability_frame`)."""
    fig = go.Figure()
    for model, part in frame.groupby("Model", sort=False):
        fig.add_trace(go.Scatter(
            x=part["predicted"], y=part["observed"], mode="lines+markers", name=f"{model} (ECE {ece[model]:.3f})",
            customdata=part[["n", "low", "high"]].to_numpy(), line=_line(model),
            hovertemplate=f"{model}<br>P(ALL) %{{customdata[1]:.1f}}–%{{customdata[2]:.1f}}: mean %{{x:.2f}}"
                          f"<br>share ALL %{{y:.2f}}<br>%{{customdata[0]}} images<extra></extra>",
        ))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", line=DIAGONAL))
    fig.update_layout(template=TEMPLATE, height=440, margin={"t": 10, "b": 10}, legend={"orientation": "h", "y": -0.2},
                      xaxis={"range": RANGE, "title": "mean predicted P(ALL) in the bin"},
                      yaxis={"range": RANGE, "title": "share of the bin that is ALL"})
    return fig


def p_matrix(names: list[str], p: pd.DataFrame, significant: pd.DataFrame, tested: bool, unit: str) -> go.Figure:
    """The headline p of every model pair (Holm-adjusted; `comparison.compare`'s pair[headline]), ✱ where
    significant. `unit` says the test's unit and N (the title)."""
    title = "p (patients, Holm)" if tested else "p (McNemar, Holm)"

    def label(value: float, marked: bool) -> str:
        if value != value:
            return "—"
        shown = "<0.001" if value < 0.001 else f"{value:.3f}"
        return f"<b>{shown} ✱</b>" if marked else shown

    fig = go.Figure(go.Heatmap(
        z=p.to_numpy(dtype=float), x=names, y=names, zmin=0, zmax=1, colorscale=P_SCALE, xgap=2, ygap=2,
        text=[[label(p.loc[r, c], bool(significant.loc[r, c])) for c in names] for r in names],
        texttemplate="%{text}", textfont={"size": 13},
        colorbar={"title": {"text": title}, "tickvals": [0, SIGNIFICANCE, 0.5, 1],
                  "ticktext": ["0", f"{SIGNIFICANCE:g}", "0.5", "1"]},
        hovertemplate="<b>%{y}</b> vs <b>%{x}</b><br>" + title + " %{z:.4f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, height=170 + 46 * len(names), margin={"t": 40, "b": 10, "l": 10, "r": 10},
                      title={"text": plotly_text(unit), "font": {"size": 13}})
    return fig


def subject_heatmap(frame: pd.DataFrame) -> go.Figure:
    """Share of each validation subject's cells called right, per model (`comparison.compare().subjects`)."""
    models = [c for c in frame.columns if c not in ("Subject", "Class", "Cells")]
    labels = [plotly_text(f"{s} ({c}, {n} cells)") for s, c, n in zip(frame["Subject"], frame["Class"], frame["Cells"])]
    fig = go.Figure(go.Heatmap(
        z=frame[models].to_numpy(dtype=float), x=models, y=labels, zmin=0, zmax=1, colorscale="RdYlGn", xgap=1,
        ygap=1, texttemplate="%{z:.0%}", colorbar={"title": {"text": "called right"}, "tickformat": ".0%"},
        hovertemplate="subject %{y}<br>%{x}: %{z:.0%} of the cells called right<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    fig.update_layout(template=TEMPLATE, height=150 + 24 * len(labels), margin={"t": 80, "b": 10, "l": 10, "r": 10},
                      title={"text": f"Unit: patient · N = {len(labels)} patients", "font": {"size": 13}})
    return fig


def thin(part: pd.DataFrame, limit: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """At most `limit` rows of one curve, evenly spaced along it, the first and last kept: for drawing only (the
    AUC and AP in the legend are the read model's, from every point)."""
    if len(part) <= limit:
        return part
    return part.iloc[np.unique(np.linspace(0, len(part) - 1, limit).round().astype(int))]
