"""Training curves: loss and accuracy per epoch of every model (training, the inner slice that chose the epoch when
there is one, validation), the kept epoch marked on the curve that chose it."""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cnmc_core.dashboard import base
from cnmc_core.dashboard import curves as curves_view
from views import _ui as ui

DASH = {"train": "solid", curves_view.INNER: "dot", "validation": "dash"}
CHOOSER = {curves_view.INNER: "inner-slice", "validation": "validation"}  # chosen_on -> hover word


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
        fig.add_trace(go.Scatter(  # on the curve whose loss chose the epoch
            x=best["epoch"], y=best[metric], mode="markers", name="kept epoch", legendgroup="best",
            showlegend=col == 1, marker={"symbol": "star", "size": 14, "line": {"width": 1, "color": "black"},
                                         "color": [ui.model_color(m) for m in best["Model"]]},
            customdata=list(zip(best["Model"], best["chosen_on"].map(CHOOSER))),
            hovertemplate=f"%{{customdata[0]}}: kept epoch %{{x}}<br>%{{customdata[1]}} {metric} %{{y:.3f}}"
                          "<extra></extra>",
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
    inner = (curves.frame["split"] == curves_view.INNER).any()
    st.plotly_chart(figure(curves, shown), key="curves", alt=f"Loss and accuracy per epoch, training, "
                    f"{'inner slice, ' if inner else ''}validation, of {', '.join(shown)}; kept epochs starred")
    st.caption(("Solid: training; dotted: the inner slice of training patients held out to choose the epoch; "
                if inner else "Solid: training; ") + "dashed: validation. The star marks the epoch whose weights were "
               "kept, on the curve that chose it. Unit: cell (the cells of each split at each epoch).")
    if curves.sentence:
        st.markdown(curves.sentence)
    kept = curves.best[curves.best["Model"].isin(shown)].assign(chosen_on=lambda f: f["chosen_on"].map(
        {curves_view.INNER: "inner slice of training patients", "validation": "validation split"}))
    st.dataframe(kept.drop(columns="accuracy").rename(columns={
        "epoch": "Kept epoch", "chosen_on": "Chosen on", "loss": "Loss that chose it", "val_loss": "Validation loss",
        "val_accuracy": "Validation accuracy"}), hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in
        ("Loss that chose it", "Validation loss", "Validation accuracy")})


ui.run(page)
