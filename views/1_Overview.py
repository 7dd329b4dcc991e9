"""Overview: what the study is, and the metrics of all its models and their ensemble beside the paper's
Table I, with each metric's 95% interval; ranked by the cross-validated figures, shown with their fold spread,
when the study has them."""

import altair as alt
import pandas as pd
import streamlit as st

from cnmc_core.dashboard import base, overview, report
from views import _ui as ui


def best_style(table: pd.DataFrame, best: dict[str, list[str]]):
    """Bold and a pale blue for the model the subject-level test says beats every other (nothing when none does)."""

    def column(col: pd.Series) -> list[str]:
        winners = best.get(col.name, [])
        return ["background-color: #dbe4f0; font-weight: bold" if m in winners else "" for m in table["Model"]]

    scores = [*base.METRICS.values(), *base.LOWER_IS_BETTER.values()]
    numbers = {label: "{:.3f}" for label in scores if label in table} | {"Threshold": "{:.2f}"}
    return table.style.apply(column, subset=[c for c in best if c in table]).format(numbers, na_rep="—")


SHORT = {"Balanced accuracy": "Bal. acc.", "Specificity": "Specif.", "Weighted F1": "W. F1"}  # so 12 columns fit
HELP = {
    "Balanced accuracy": "Mean of recall and specificity: accuracy as if both classes were equally common.",
    "Recall": "Sensitivity for ALL: the share of ALL cells called ALL.",
    "Specificity": "The share of normal (HEM) cells called HEM.",
    "Weighted F1": "The F1 of each class weighted by its size (how the C-NMC challenge ranked entries).",
    "ECE": "Expected calibration error over 10 bins of P(ALL): lower is better.",
    "Brier": "Mean squared error of P(ALL): lower is better.",
    "Threshold": "A cell is called ALL when P(ALL) is at least this value (chosen on the training side).",
}


def paper_values(view: overview.Overview, metric: str) -> pd.DataFrame:
    """The paper's value of `metric` per model on the chart (Model, paper), where Table I gives one."""
    label = base.METRICS[metric]
    shown = view.table["Model"].isin(view.intervals.loc[view.intervals["metric"] == metric, "Model"])
    paper = view.table[(view.table["Source"] == base.PAPER) & view.table[label].notna() & shown]
    return paper[["Model", label]].rename(columns={label: "paper"})


def interval_chart(view: overview.Overview, metric: str, rings: pd.DataFrame) -> alt.LayerChart:
    """One marker per row with its 95% interval as a line; the paper's values (`paper_values`, or none) as grey rings.

    Vega-Lite (Altair), not plotly: on this page the one plotly chart was half of the warm drawing time (plotly.js
    itself; docs/benchmarks.md section 5). Each model keeps its colour and marker (cnmc_core/palette.py)."""
    part = view.intervals.loc[view.intervals["metric"] == metric, ["Model", "value", "low", "high"]]
    label = base.METRICS[metric]
    models = list(part["Model"])
    styles = [ui.palette.model_style(m) for m in models]
    axis = alt.Scale(zero=False)
    y = alt.Y("Model:N", sort=models, title=None)
    colour = alt.Color("Model:N", legend=None, scale=alt.Scale(domain=models, range=[s.color for s in styles]))
    shape = alt.Shape("Model:N", legend=None,
                      scale=alt.Scale(domain=models, range=[ui.palette.vega_shape(s.symbol) for s in styles]))
    tooltip = [alt.Tooltip("Model:N"), alt.Tooltip("value:Q", title=label, format=".3f"),
               alt.Tooltip("low:Q", title="95% interval from", format=".3f"),
               alt.Tooltip("high:Q", title="95% interval to", format=".3f")]
    layers = [alt.Chart(part).mark_rule(strokeWidth=2, aria=False).encode(  # (the markers and the description say it)
        x=alt.X("low:Q", title=label, scale=axis), x2="high:Q", y=y, color=colour, tooltip=tooltip)]
    for filled in (True, False):  # the ensemble's marker is open (its "-open" symbol)
        rows = part[[s.symbol.endswith("-open") != filled for s in styles]]
        if len(rows):
            layers.append(alt.Chart(rows).mark_point(size=110, filled=filled, opacity=1, strokeWidth=2).encode(
                x=alt.X("value:Q", title=label, scale=axis), y=y, color=colour, shape=shape, tooltip=tooltip))
    if len(rings):
        layers.append(alt.Chart(rings).mark_point(
            size=110, filled=False, strokeWidth=2, opacity=1, color=ui.palette.REFERENCE_GREY).encode(
            x="paper:Q", y=y,
            tooltip=[alt.Tooltip("Model:N"), alt.Tooltip("paper:Q", title=f"{label}, {base.PAPER}", format=".3f")]))
    summary = "; ".join(f"{m} {v:.3f} ({lo:.3f} to {hi:.3f})" for m, v, lo, hi in part.itertuples(index=False))
    return alt.layer(*layers).properties(  # the description is what a screen reader says for the chart
        height=34 * len(models) + 10, description=f"{label} with its 95% interval, per model: {summary}")


def cv_section(view: overview.Overview) -> None:
    """The cross-validated ranking with each row's spread over the folds (only for a study run with --split cv)."""
    if view.cv is None or view.cv.empty:
        return
    st.header("Cross-validated over the training patients")
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(view.cv, hide_index=True, width="stretch", column_config={
        c: number for c in view.cv.columns if c.startswith(("AUC", "Fold AUC"))})
    st.caption(view.cv_note)


def first_screen(data: base.StudyData, view: overview.Overview) -> bool:
    """What this is, the answer in words, then the table that fits the page; how the study ran is folded away."""
    st.markdown(overview.INTRO)
    st.page_link("views/8_About.py", label="About: the protocol, the data and the paper", icon="ℹ️")
    if view.takeaway:
        st.markdown(f"**{view.takeaway}**")

    st.header("Metrics on the validation split")
    labels = {c: st.column_config.NumberColumn(SHORT.get(c, c), help=HELP.get(c), format="%.2f" if c == "Threshold"
                                               else "%.3f") for c in view.ours.columns if c != "Model"}
    st.dataframe(best_style(view.ours, view.best), hide_index=True, width="stretch", placeholder="—",
                 column_config=labels, height=35 * (len(view.ours) + 1) + 3)  # every row visible, no inner scrolling
    n = view.table.loc[view.table["Source"] == base.OURS, "Val. images"].max()
    st.caption(
        f"Unit: cell, N = {n} validation cells of people no model was trained on. ALL (leukemic lymphoblast) is the "
        "positive class; recall is sensitivity for ALL. Hover a column header for what it means; click it to sort. "
        + ("The ranking that rests on more patients, cross-validated over the training patients, follows the table. "
           if len(view.cv) else "")
        + "Bold marks a model only when the paired sign-flip test over patients (**Compare** page) says it beats "
        "every other model, and only in the columns it also leads. "
        + (f"**{base.ENSEMBLE_NAME}** averages the P(ALL) of {', '.join(view.members)} and {view.ensemble_rule}; "
           "it is not trained itself." if view.members else "")
    )
    if view.stopping_caveat:
        st.warning(view.stopping_caveat, icon="⚠️")
    cv_section(view)
    with_paper = ui.toggle("Show the paper's Table I beside this study", "paper", True)
    if with_paper and not view.paper.empty:
        st.markdown("**Beside the paper (Vijesh & Sikka, Table I: validation accuracy, precision, recall)**")
        def short(column: str) -> str:  # "Precision, this study" -> "Prec. here": ten columns fit the page
            for word, abbreviation in (("Accuracy", "Acc."), ("Precision", "Prec."), ("Recall", "Recall")):
                column = column.replace(word, abbreviation)
            return column.replace(", paper", " paper").replace(", this study", " here").replace(" difference", " Δ")

        st.dataframe(view.paper, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(short(c), help=c, format="%+.3f" if "difference" in c else "%.3f")
            for c in view.paper.columns if c != "Model"})
        st.caption("Δ: this study − the paper (hover a header for its full name). The paper split its data "
                   "differently and reports no interval, so a difference is a pointer, not a test.")
    st.download_button("Download the table as CSV (with the 95% intervals)", view.csv,
                       file_name=f"{data.name}_metrics.csv",
                       mime="text/csv", icon="⬇️")

    with st.expander("How this study was run: data, split, compute, paths"):
        st.markdown(f"Study {ui.code(data.name)}")
        facts, splits = st.columns([3, 2])
        facts.markdown("\n".join(f"- **{k}:** {ui.code(v)}" for k, v in view.facts.items()))  # values from study.json
        splits.dataframe(view.splits, hide_index=True, width="stretch")
        splits.caption(f"Images and subjects per split ({int(view.splits['images'].sum())} images). "
                       "Splits are by subject: no person is in two splits.")
    return with_paper


def page() -> None:
    data = ui.start("Overview", home=True)
    view = ui.view(overview.overview, data, True)
    with_paper = first_screen(data, view)

    if not view.patients.empty:
        st.header("Per patient")
        st.dataframe(view.patients, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in view.patients.columns
            if c.startswith(("Patient ", "AUC", "Acc.")) or c == "Share threshold"})
        st.caption(f"Unit: patient, N = {int(view.patients['Patients'].max())} validation patients. Patient AUC ranks "
                   "patients by their mean P(ALL); a patient is called ALL when the share of its cells called ALL "
                   "reaches the share threshold. 95% intervals: class-stratified bootstrap over patients.")

    st.header("How sure are these numbers? 95% intervals")
    if view.stats_note:
        st.info(view.stats_note, icon="ℹ️")
    metrics = [m for m in base.METRICS if m in set(view.intervals["metric"])]
    if metrics:
        pick, chart = st.columns([1, 4])
        metric = ui.choice("Metric", metrics, "metric", "roc_auc", container=pick, format_func=base.METRICS.get)
        pick.caption("The interval resamples validation *subjects* (2,000 times): the cells of one patient are not "
                     "independent, so this is how much the number could move with other patients. Overlapping "
                     "intervals do not mean equal models; the **Compare** page tests each pair.")
        rings = paper_values(view, metric).iloc[: None if with_paper else 0]  # none when the paper is switched off
        chart.altair_chart(interval_chart(view, metric, rings), key="intervals")
        chart.caption(f"Marker and line: {base.OURS}, with its 95% interval"
                      + (f"; grey ring: {base.PAPER} (no interval reported)." if len(rings) else "."))

    st.header("Take the study with you")
    st.download_button(  # a callable: the report is built only when the button is clicked, on its own thread
        "Download the study report (one HTML file)", lambda: report.report_bytes(data),
        file_name=report.report_file_name(data), mime="text/html", icon="📄", on_click="ignore")
    st.caption("Metrics with intervals and the paper's rows, confusion matrices, ROC / PR and calibration, the "
               "significance tests, the Grad-CAM gallery and the study's facts in one file that opens in any browser "
               "without a server or a network. It takes a few seconds to build after the click.")


ui.run(page)
