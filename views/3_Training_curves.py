"""Training curves: loss and accuracy per epoch of every model, training and validation, best epoch marked."""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cnmc_core.dashboard import base
from cnmc_core.dashboard import curves as curves_view
from views import _ui as ui

DASH = {"train": "solid", "validation": "dash"}


def figure(curves: curves_view.Curves, shown: list[str]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss (binary cross-entropy)", "Accuracy"),
                        horizontal_spacing=0.08)
    for col, metric in enumerate(("loss", "accuracy"), start=1):
        of_metric = curves.frame[curves.frame["metric"] == metric]
        for (model, split), part in of_metric.groupby(["Model", "split"], sort=False):
            if model not in shown:
                continue
            fig.add_trace(go.Scatter(
                x=part["epoch"], y=part["value"], mode="lines", name=f"{model} ({split})",
                legendgroup=model, showlegend=col == 1, line={"color": ui.model_color(model), "dash": DASH[split]},
                hovertemplate=f"{model}, {split}<br>epoch %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>",
            ), row=1, col=col)
        best = curves.best[curves.best["Model"].isin(shown)]
        fig.add_trace(go.Scatter(
            x=best["epoch"], y=best[metric], mode="markers", name="kept (best) epoch", legendgroup="best",
            showlegend=col == 1, marker={"symbol": "star", "size": 14, "line": {"width": 1, "color": "black"},
                                         "color": [ui.model_color(m) for m in best["Model"]]},
            customdata=best["Model"],
            hovertemplate=f"%{{customdata}}: kept epoch %{{x}}<br>validation {metric} %{{y:.3f}}<extra></extra>",
        ), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(height=480, margin={"t": 40, "b": 10}, legend={"orientation": "h", "y": -0.2})
    return fig


def page() -> None:
    data = ui.start("Training curves")
    curves = ui.view(curves_view.training_curves, data)
    names = [base.model_name(k) for k in data.models]
    shown = st.multiselect("Models", names, default=names, key="curves_models")
    if not shown:
        st.info("Choose at least one model.")
        return
    st.plotly_chart(figure(curves, shown), key="curves")
    st.caption("Solid: training; dashed: validation. The star marks the epoch whose weights were kept "
               "(lowest validation loss; early stopping restores it).")
    kept = curves.best.rename(columns={"epoch": "Kept epoch", "loss": "Validation loss",
                                       "accuracy": "Validation accuracy"})
    st.dataframe(kept, hide_index=True)


ui.run(page)
