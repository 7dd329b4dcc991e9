"""ROC and precision-recall curves, calibration (the reliability bins saved with the metrics), and one
model's results at any threshold; the ensemble of the models is drawn like a model."""

import plotly.graph_objects as go
import streamlit as st

from cnmc_core.dashboard import base
from cnmc_core.dashboard import curves as curves_view
from views import _ui as ui

AXES = {"fpr": "false positive rate (1 − specificity)", "tpr": "true positive rate (recall)",
        "recall": "recall (share of ALL cells found)", "precision": "precision (share of ALL calls that are ALL)"}
RANGE = [-0.01, 1.01]
DIAGONAL = {"color": ui.palette.REFERENCE_GREY, "dash": "dot"}
MARKS = 8  # markers drawn along each curve where models need a second cue (not one per threshold)


def line_style(model: str, n_models: int) -> dict:
    """Colour, and from five models on a dash of the model's own (the ensemble is always dashed)."""
    style = ui.palette.model_style(model)
    if model == base.ENSEMBLE_NAME or ui.palette.needs_second_cue(n_models):
        return {"color": style.color, "dash": style.dash}
    return {"color": style.color}


def marker_style(model: str, n_models: int) -> tuple[str, dict]:
    """(Plotly mode, marker): the model's own symbol, a few per curve, from five models on."""
    style = ui.palette.model_style(model)
    if not ui.palette.needs_second_cue(n_models):
        return "lines", {}
    return "lines+markers", {"symbol": style.symbol, "size": 8, "color": style.color, "maxdisplayed": MARKS}


def lines(frame, x: str, y: str, label: dict[str, float], what: str, diagonal: bool) -> go.Figure:
    fig = go.Figure()
    n = frame["Model"].nunique()
    for model, part in frame.groupby("Model", sort=False):
        mode, marker = marker_style(model, n)
        fig.add_trace(go.Scatter(
            x=part[x], y=part[y], mode=mode, name=f"{model} ({what} {label[model]:.3f})", marker=marker,
            line=line_style(model, n), hovertemplate=f"{model}<br>{x} %{{x:.3f}}<br>{y} %{{y:.3f}}<extra></extra>",
        ))
    if diagonal:
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=DIAGONAL))
    fig.update_layout(height=420, margin={"t": 10, "b": 10}, legend={"orientation": "h", "y": -0.25},
                      xaxis={"range": RANGE, "title": AXES[x]}, yaxis={"range": RANGE, "title": AXES[y]})
    return fig


def calibration(frame, ece: dict[str, float]) -> go.Figure:
    fig = go.Figure()
    n = frame["Model"].nunique()
    for model, part in frame.groupby("Model", sort=False):
        style = ui.palette.model_style(model)
        fig.add_trace(go.Scatter(
            x=part["predicted"], y=part["observed"], mode="lines+markers", name=f"{model} (ECE {ece[model]:.3f})",
            marker={"symbol": style.symbol if ui.palette.needs_second_cue(n) else "circle", "size": 8},
            customdata=part[["n", "low", "high"]].to_numpy(), line=line_style(model, n),
            hovertemplate=f"{model}<br>P(ALL) %{{customdata[1]:.1f}}–%{{customdata[2]:.1f}}: mean %{{x:.2f}}"
                          f"<br>share ALL %{{y:.2f}}<br>%{{customdata[0]}} images<extra></extra>",
        ))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", line=DIAGONAL))
    fig.update_layout(height=420, margin={"t": 10, "b": 10}, legend={"orientation": "h", "y": -0.25},
                      xaxis={"range": RANGE, "title": "mean predicted P(ALL) in the bin"},
                      yaxis={"range": RANGE, "title": "share of the bin that is ALL"})
    return fig


def matrix(m: base.Matrix) -> go.Figure:
    text = [[f"{m.counts[i][j]}<br>{m.rates[i][j]:.0%}" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(
        z=m.rates, x=[f"called {c}" for c in base.CLASSES], y=[f"true {c}" for c in base.CLASSES],
        text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, showscale=False,
        hovertemplate="%{y}, %{x}<br>%{text}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=320, margin={"t": 10, "b": 10, "l": 10, "r": 10})
    return fig


@st.fragment
def threshold_section(data: base.StudyData) -> None:
    """Reruns on its own when the slider moves, so the rest of the page is not redrawn."""
    ui.run(lambda: threshold_body(data))


def threshold_body(data: base.StudyData) -> None:
    st.header("Choose a threshold")
    left, right = st.columns([2, 3])
    key = ui.choice("Model", data.evaluated, "model", data.evaluated[0], container=left, format_func=base.model_name)
    threshold = ui.slider("Call a cell ALL when P(ALL) ≥", "threshold", 0.0, 1.0, 0.5, 0.01, container=left)
    at = ui.view(curves_view.at_threshold, data, key, threshold)
    m = at.matrix
    left.plotly_chart(matrix(m), key="threshold_matrix", config={"displayModeBar": False},
                      alt=f"{m.name} at threshold {threshold:.2f}: true HEM {m.counts[0][0]} called HEM, "
                          f"{m.counts[0][1]} called ALL; true ALL {m.counts[1][0]} called HEM, {m.counts[1][1]} "
                          "called ALL")
    cols = right.columns(2)
    for i, (label, value) in enumerate(at.metrics.items()):
        own = at.saved.get(label)
        moved = value is not None and own is not None and abs(value - own) >= 0.0005
        delta = f"{value - own:+.3f} vs its own threshold" if moved else None
        # blue up, orange down (not green and red), with the arrow as a second cue; every metric here: higher is better
        colour = ui.palette.DIVERGING_UP if moved and value > own else ui.palette.DIVERGING_DOWN
        cols[i % 2].metric(label, "n/a" if value is None else f"{value:.3f}", delta, delta_color=colour)
    n = sum(map(sum, m.counts))
    right.caption(f"Unit: cell, N = {n} validation cells. ROC AUC does not depend on the threshold. The differences "
                  "compare with the model at its own threshold, the one chosen when it was trained "
                  "(the Overview table shows it).")


def page() -> None:
    data = ui.start("Curves and calibration")
    curves = ui.view(curves_view.roc_pr, data)
    if curves.skipped:
        st.warning(f"The validation split of {', '.join(curves.skipped)} holds one class only: no ROC or PR curve.")
    if not curves.auc:
        st.info("No model has a validation split with both classes, so there are no curves to draw.")
    else:
        roc, pr = st.columns(2)
        roc.markdown("**ROC curve** (ALL is positive)")
        roc.plotly_chart(lines(curves.roc, "fpr", "tpr", curves.auc, "AUC", True), key="roc",
                         alt="ROC curves of " + ", ".join(f"{m} (AUC {a:.3f})" for m, a in curves.auc.items()))
        pr.markdown("**Precision-recall curve**")
        pr.plotly_chart(lines(curves.pr, "recall", "precision", curves.ap, "AP", False), key="pr",
                        alt="Precision-recall curves of "
                            + ", ".join(f"{m} (AP {a:.3f})" for m, a in curves.ap.items()))
        st.markdown("**Calibration**: does P(ALL) = 0.8 mean that 80% of such cells are ALL? (10 equal-width bins)")
        st.plotly_chart(calibration(curves.calibration, curves.ece), key="calibration",
                        alt="Calibration: share of ALL against mean P(ALL) in 10 bins, of "
                            + ", ".join(f"{m} (ECE {e:.3f})" for m, e in curves.ece.items()))
        st.caption("Each point is one bin of P(ALL) at its mean P(ALL): the bins saved with the model's metrics, from "
                   "which its ECE (the Overview table) is computed: the size-weighted mean gap to the diagonal. "
                   "The **Compare** page draws each model's bins on its own.")
    threshold_section(data)


ui.run(page)
