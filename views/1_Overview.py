"""Overview: what the study is, and the metrics of all its models and their ensemble beside the paper's
Table I, with each metric's 95% interval."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cnmc_core.dashboard import base, overview
from views import _ui as ui


def best_style(table: pd.DataFrame, best: dict[str, list[str]]):
    """Green and bold for the model the subject-level test says beats every other (nothing when none does)."""

    def column(col: pd.Series) -> list[str]:
        winners = best.get(col.name, [])
        ours = table["Source"] == base.OURS
        return ["background-color: rgba(33, 195, 84, 0.25); font-weight: bold"
                if o and m in winners else "" for o, m in zip(ours, table["Model"])]

    scores = [*base.METRICS.values(), *base.LOWER_IS_BETTER.values()]
    numbers = {label: "{:.3f}" for label in scores} | {"Threshold": "{:.2f}"}
    return table.style.apply(column, subset=list(best)).format(numbers, na_rep="—")


def interval_chart(view: overview.Overview, metric: str, with_paper: bool) -> go.Figure:
    """One dot per row with its 95% interval as an error bar; the paper's value as a grey ring."""
    part = view.intervals[view.intervals["metric"] == metric]
    label = base.METRICS[metric]
    fig = go.Figure(go.Scatter(
        x=part["value"], y=part["Model"], mode="markers", name=f"{base.OURS}, with 95% interval",
        error_x={"type": "data", "symmetric": False, "array": part["high"] - part["value"],
                 "arrayminus": part["value"] - part["low"], "thickness": 2, "width": 6},
        marker={"size": 11, "color": [ui.model_color(m) for m in part["Model"]],
                "symbol": ["diamond" if m == base.ENSEMBLE_NAME else "circle" for m in part["Model"]]},
        customdata=part[["low", "high"]].to_numpy(),
        hovertemplate=f"%{{y}}<br>{label} %{{x:.3f}}<br>95% interval %{{customdata[0]:.3f}} – "
                      "%{customdata[1]:.3f}<extra></extra>",
    ))
    paper = view.table[(view.table["Source"] == base.PAPER) & view.table[label].notna()]
    if not with_paper:
        paper = paper.iloc[:0]
    if len(paper):
        fig.add_trace(go.Scatter(
            x=paper[label], y=paper["Model"], mode="markers", name=base.PAPER,
            marker={"size": 11, "symbol": "circle-open", "color": "grey", "line": {"width": 2}},
            hovertemplate=f"%{{y}}, {base.PAPER}<br>{label} %{{x:.3f}}<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=list(part["Model"]))
    fig.update_layout(height=60 + 34 * len(part), margin={"t": 10, "b": 10}, xaxis={"title": label},
                      legend={"orientation": "h", "y": -0.35 if len(part) < 5 else -0.15}, showlegend=True)
    return fig


def page() -> None:
    data = ui.start("Overview", home=True)
    with_paper = ui.toggle("Show the paper's Table I as reference rows", "paper", True)
    view = ui.view(overview.overview, data, with_paper)

    st.subheader(f"Study {ui.code(data.name)}")
    facts, splits = st.columns([3, 2])
    facts.markdown("\n".join(f"- **{k}:** {ui.code(v)}" for k, v in view.facts.items()))  # values from study.json
    splits.dataframe(view.splits, hide_index=True, width="stretch")
    splits.caption(f"Images and subjects per split ({int(view.splits['images'].sum())} images). "
                   "Splits are by subject: no person is in two splits.")

    st.subheader("Metrics on the validation split")
    if view.verdict:
        st.markdown(f"**{view.verdict}**")
    st.dataframe(best_style(view.table, view.best), hide_index=True, width="stretch", placeholder="—",
                 height=35 * (len(view.table) + 1) + 3)  # every row visible, no inner scrolling
    st.caption(
        "ALL (leukemic lymphoblast) is the positive class; recall is sensitivity for ALL. Weighted F1: the F1 of each "
        "class weighted by its size (how the C-NMC challenge ranked entries). ECE: expected calibration error "
        "(10 bins of P(ALL)); Brier: mean squared error of P(ALL); lower is better for both. Green marks a model only "
        "when the paired sign-flip test over patients (Compare page) says it beats every other model, and only in "
        "the columns it also leads. Click a column header to sort. "
        + (f"**{base.ENSEMBLE_NAME}** averages the P(ALL) of {', '.join(view.members)} and calls ALL at its "
           "threshold (0.5: it has no training-side predictions to tune one on); "
           "it is not trained itself. " if view.members else "")
        + ("The paper's rows report only accuracy, precision and recall (its Table I)." if with_paper else "")
    )
    st.download_button("Download the table as CSV (with the 95% intervals)", view.csv,
                       file_name=f"{data.name}_metrics.csv",
                       mime="text/csv", icon="⬇️")

    if not view.patients.empty:
        st.subheader("Per patient")
        st.dataframe(view.patients, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in view.patients.columns
            if c.startswith(("Patient ", "AUC", "Acc.")) or c == "Share threshold"})
        st.caption(f"Unit: patient, N = {int(view.patients['Patients'].max())} validation patients. Patient AUC ranks "
                   "patients by their mean P(ALL); a patient is called ALL when the share of its cells called ALL "
                   "reaches the share threshold. 95% intervals: class-stratified bootstrap over patients.")

    st.subheader("How sure are these numbers? 95% intervals")
    if view.stats_note:
        st.info(view.stats_note, icon="ℹ️")
    metrics = [m for m in base.METRICS if m in set(view.intervals["metric"])]
    if metrics:
        pick, chart = st.columns([1, 4])
        metric = ui.choice("Metric", metrics, "metric", "roc_auc", container=pick, format_func=base.METRICS.get)
        pick.caption("The interval resamples validation *subjects* (2,000 times): the cells of one patient are not "
                     "independent, so this is how much the number could move with other patients. Overlapping "
                     "intervals do not mean equal models; the **Compare** page tests each pair.")
        chart.plotly_chart(interval_chart(view, metric, with_paper), key="intervals", config={"displayModeBar": False})


ui.run(page)
