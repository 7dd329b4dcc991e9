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
    n = len(shown)  # dashes already tell training from validation: more than four models also get markers
    for col, metric in enumerate(("loss", "accuracy"), start=1):
        of_metric = curves.frame[curves.frame["metric"] == metric]
        for (model, split), part in of_metric.groupby(["Model", "split"], sort=False):
            if model not in shown:
                continue
            style = ui.palette.model_style(model)
            fig.add_trace(go.Scatter(
                x=part["epoch"], y=part["value"], mode="lines+markers" if ui.palette.needs_second_cue(n) else "lines",
                name=f"{model} ({split})", legendgroup=model, showlegend=col == 1,
                line={"color": style.color, "dash": DASH[split]},
                marker={"symbol": style.symbol, "size": 7, "color": style.color},
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
    last = int(curves.frame["epoch"].max()) if len(curves.frame) else 1
    # epochs are counted from 1; the axis ends at the last one (not at a padded last + 1)
    fig.update_xaxes(title_text="epoch", tick0=1, dtick=1 if last <= 20 else 5, range=[0.7, last + 0.3])
    fig.update_layout(height=480, margin={"t": 40, "b": 10}, legend={"orientation": "h", "y": -0.2})
    return fig


def page() -> None:
    data = ui.start("Training curves")
    curves = ui.view(curves_view.training_curves, data)
    shown_keys = ui.multichoice("Models", data.models, "curves_models", data.models, format_func=base.model_name)
    shown = [base.model_name(k) for k in shown_keys]
    if not shown:
        st.info("Choose at least one model.")
        return
    st.plotly_chart(figure(curves, shown), key="curves",
                    alt=f"Loss and accuracy per epoch, training and validation, of {', '.join(shown)}")
    st.caption("Solid: training; dashed: validation. The star marks the epoch whose weights were kept "
               "(lowest validation loss; early stopping restores it). Unit: cell (the training and validation "
               "cells of each epoch).")
    kept = curves.best.rename(columns={"epoch": "Kept epoch", "loss": "Validation loss",
                                       "accuracy": "Validation accuracy"})
    st.dataframe(kept, hide_index=True)


ui.run(page)
