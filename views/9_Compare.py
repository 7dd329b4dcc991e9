"""Compare: which differences between the models are real, how well each one is calibrated, which
subjects are hard, and this study beside another study of the same data."""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cnmc_core.dashboard import base, comparison
from views import _ui as ui

PER_ROW = 4
STUDY_COLORS = ("#3b5ba9", "#e07b00")  # this study, the other one
ALPHA = comparison.SIGNIFICANCE
# Holm-adjusted p on [0, 1]: greens below the significance level, pale grey above it.
P_SCALE = [[0.0, "#1b7837"], [ALPHA, "#a6dba0"], [ALPHA + 1e-9, "#ececec"], [1.0, "#fafafa"]]
PAIR_HOVER = ("p_value", "row_only", "column_only", "auc_diff", "auc_low", "auc_high")
SUBJECT_HOVER = ("p_subject", "subject_diff", "subject_low", "subject_high", "row_better", "column_better")


def p_label(p: float, significant: bool) -> str:
    if p != p:  # the diagonal
        return "—"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return f"<b>{text} ✱</b>" if significant else text


def p_matrix(view: comparison.CompareView) -> go.Figure:
    """The headline p of every pair: patients (sign-flip, Holm) or, for an old comparison.csv, cell-level McNemar."""
    names, pair, tested = view.models, view.pair, view.verdict.tested
    hover = (SUBJECT_HOVER if tested else ()) + PAIR_HOVER
    title = "p (patients, Holm)" if tested else "p (McNemar, Holm)"
    subject_lines = (
        "<br>sign-flip over patients: unadjusted %{customdata[0]:.4f}"
        "<br>per-patient accuracy %{y} − %{x}: %{customdata[1]:+.3f} (95%: %{customdata[2]:+.3f} to "
        "%{customdata[3]:+.3f})<br>patients %{y} better: %{customdata[4]}, %{x} better: %{customdata[5]}"
        "<br><i>cell-level McNemar (" + comparison.MCNEMAR + ")</i>: p %{customdata[6]:.4f}"
    ) if tested else "<br>cell-level McNemar (" + comparison.MCNEMAR + "): unadjusted %{customdata[0]:.4f}"
    k = len(hover) - len(PAIR_HOVER)  # where the McNemar / AUC hover values start
    fig = go.Figure(go.Heatmap(
        z=pair[view.headline].to_numpy(), x=names, y=names, zmin=0, zmax=1, colorscale=P_SCALE, xgap=2, ygap=2,
        text=[[p_label(pair[view.headline].loc[r, c], view.significant.loc[r, c]) for c in names] for r in names],
        texttemplate="%{text}", textfont={"size": 13},
        customdata=[[[pair[part].loc[r, c] for part in hover] for c in names] for r in names],
        colorbar={"title": {"text": title}, "tickvals": [0, ALPHA, 0.5, 1],
                  "ticktext": ["0", f"{ALPHA:g}", "0.5", "1"]},
        hovertemplate="<b>%{y}</b> vs <b>%{x}</b><br>" + title + " %{z:.4f}" + subject_lines
                      + f"<br>cells only %{{y}} called right: %{{customdata[{k + 1}]}}"
                      + f"<br>cells only %{{x}} called right: %{{customdata[{k + 2}]}}"
                      + f"<br>AUC %{{y}} − %{{x}}: %{{customdata[{k + 3}]:+.3f}} "
                      + f"(95%: %{{customdata[{k + 4}]:+.3f}} to %{{customdata[{k + 5}]:+.3f}})<extra></extra>",
    ))
    unit = (f"Unit: patient · N = {view.verdict.n_subjects} patients · Holm over {view.verdict.n_pairs} pairs"
            if tested else f"Unit: cell · N = {view.n_cells} cells · {comparison.MCNEMAR}")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=170 + 46 * len(names), margin={"t": 40, "b": 10, "l": 10, "r": 10},
                      title={"text": unit, "font": {"size": 13}})
    return fig


def from_top_chart(view: comparison.CompareView) -> go.Figure:
    """Each model's mean per-patient accuracy minus the top model's, with its 95% patient interval."""
    frame = view.from_top
    labels = [ui.plotly_text(m) for m in frame["Model"]]
    colours = ["#1b7837" if sig else "#8c8c8c" for sig in frame["significant"]]
    fig = go.Figure(go.Scatter(
        x=frame["difference"], y=labels, mode="markers", marker={"size": 11, "color": colours},
        error_x={"type": "data", "symmetric": False, "array": (frame["high"] - frame["difference"]).fillna(0),
                 "arrayminus": (frame["difference"] - frame["low"]).fillna(0), "thickness": 2, "width": 5},
        customdata=frame[["low", "high", "p_holm"]].to_numpy(),
        hovertemplate="%{y} − " + ui.plotly_text(view.top) + ": %{x:+.3f}<br>95%: %{customdata[0]:+.3f} to "
                      "%{customdata[1]:+.3f}<br>p (patients, Holm) %{customdata[2]:.4f}<extra></extra>",
    ))
    fig.add_vline(x=0, line={"color": "grey", "dash": "dot"})
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=110 + 36 * len(frame), margin={"t": 40, "b": 10, "l": 10, "r": 10},
                      xaxis={"title": f"mean per-patient accuracy − {view.top}", "tickformat": "+.2f"},
                      title={"text": f"Unit: patient · N = {view.verdict.n_subjects} patients",
                             "font": {"size": 13}})
    return fig


def from_top_section(view: comparison.CompareView) -> None:
    if view.from_top is None or len(view.from_top) < 2:
        return
    st.plotly_chart(from_top_chart(view), key="from_top", config={"displayModeBar": False})
    st.caption(f"Each model's mean per-patient accuracy (each model at its own threshold) minus that of "
               f"{view.top}, the highest, with its 95% class-stratified patient-bootstrap interval. Green: the "
               f"paired sign-flip test over patients finds the gap real (Holm-adjusted p < {ALPHA:g}); grey: it "
               "could be chance, whatever the point says.")


def reliability_grid(view: comparison.CompareView) -> go.Figure:
    """One reliability diagram per row: bars = share of ALL in each P(ALL) bin, dash = the bin's mean P(ALL)."""
    names = list(view.ece)
    rows = -(-len(names) // PER_ROW)
    fig = make_subplots(rows=rows, cols=PER_ROW, subplot_titles=[f"{n} · ECE {view.ece[n]:.3f}" for n in names],
                        horizontal_spacing=0.05, vertical_spacing=0.22 / rows)
    for i, name in enumerate(names):
        part = view.reliability[view.reliability["Model"] == name]
        centre, at = (part["low"] + part["high"]) / 2, {"row": i // PER_ROW + 1, "col": i % PER_ROW + 1}
        custom = part[["low", "high", "n", "predicted"]].to_numpy()
        fig.add_trace(go.Bar(
            x=centre, y=part["observed"], width=0.09, marker={"color": ui.model_color(name)}, opacity=0.85,
            showlegend=False, customdata=custom, name=name,
            hovertemplate=f"{name}<br>P(ALL) %{{customdata[0]:.1f}}–%{{customdata[1]:.1f}}: %{{customdata[2]}} cells"
                          "<br>share ALL %{y:.2f}, mean P(ALL) %{customdata[3]:.2f}<extra></extra>",
        ), **at)
        fig.add_trace(go.Scatter(x=centre, y=part["predicted"], mode="markers", showlegend=i == 0,
                                 name="mean P(ALL) in the bin",
                                 marker={"symbol": "line-ew", "size": 16, "line": {"width": 3, "color": "black"}},
                                 hoverinfo="skip", legendgroup="mean"), **at)
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "grey", "dash": "dot"},
                                 hoverinfo="skip",
                                 showlegend=i == 0, name="perfectly calibrated", legendgroup="diagonal"), **at)
    fig.update_xaxes(range=[0, 1], dtick=0.5)
    fig.update_yaxes(range=[0, 1.02], dtick=0.5)
    fig.update_annotations(font_size=13)
    fig.update_layout(height=250 * rows + 100, margin={"t": 70, "b": 10}, bargap=0,
                      legend={"orientation": "h", "y": -0.06},
                      title={"text": f"Unit: cell · N = {view.n_cells} validation cells per model",
                             "font": {"size": 13}})
    return fig


def subject_heatmap(frame) -> go.Figure:
    models = [c for c in frame.columns if c not in ("Subject", "Class", "Cells")]
    # subjects come from the study's subjects.csv: Plotly would read HTML tags in them
    rows = zip(frame["Subject"], frame["Class"], frame["Cells"])
    labels = [ui.plotly_text(f"{s} ({c}, {n} cells)") for s, c, n in rows]
    fig = go.Figure(go.Heatmap(
        # cividis, not red-yellow-green: dark (few called right) to yellow (all), the same under colour blindness
        z=frame[models].to_numpy(dtype=float), x=models, y=labels, zmin=0, zmax=1, colorscale=ui.palette.SEQUENTIAL,
        xgap=1, ygap=1,
        texttemplate="%{z:.0%}", colorbar={"title": {"text": "called right"}, "tickformat": ".0%"},
        hovertemplate="subject %{y}<br>%{x}: %{z:.0%} of the cells called right<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    fig.update_layout(height=150 + 24 * len(labels), margin={"t": 80, "b": 10, "l": 10, "r": 10},
                      title={"text": f"Unit: patient · N = {len(labels)} patients (each cell: its share of cells "
                                     "called right)", "font": {"size": 13}})
    return fig


def study_chart(cmp: comparison.StudyComparison, n_cells: int) -> go.Figure:
    """Each model's value in both studies, one line per model: this study just above, the other just below."""
    models = list(cmp.table["Model"])
    fig = go.Figure()
    for shift, study, colour in zip((-0.17, 0.17), cmp.names, STUDY_COLORS):
        part = cmp.points[cmp.points["Study"] == study]
        fig.add_trace(go.Scatter(
            x=part["value"], y=[models.index(m) + shift for m in part["Model"]], mode="markers", name=study,
            text=part["Model"],
            marker={"size": 10, "color": colour}, customdata=part[["low", "high"]].to_numpy(),
            error_x={"type": "data", "symmetric": False, "array": part["high"] - part["value"],
                     "arrayminus": part["value"] - part["low"], "thickness": 2, "width": 5},
            hovertemplate=f"{study}: %{{text}}<br>{cmp.metric} %{{x:.3f}}<br>"
                          "95% %{customdata[0]:.3f} – %{customdata[1]:.3f}<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", tickvals=list(range(len(models))), ticktext=models, zeroline=False,
                     showgrid=False, range=[len(models) - 0.5, -0.5])
    fig.update_layout(height=120 + 44 * len(models), margin={"t": 40, "b": 10}, xaxis={"title": cmp.metric},
                      title={"text": f"Unit: cell · N = {n_cells} validation cells (intervals resample patients)",
                             "font": {"size": 13}},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "title": {"text": "Study"}})
    return fig


def pairs_section(view: comparison.CompareView, data: base.StudyData) -> None:
    st.header("Which differences between the models are real?")
    if len(data.models) < 2:
        st.info("This study has one model: there is no pair to compare.")
        return
    if len(view.models) < 2:
        st.info(f"No model comparisons are saved for this study. Compute them: `{base.stats_command(data)}`")
        return
    if view.recompute:
        st.warning(view.recompute, icon="🔁")
    left, right = st.columns([3, 2])
    left.plotly_chart(p_matrix(view), key="p_matrix", config={"displayModeBar": False},
                      alt=f"Adjusted p-value of every pair of models; {view.verdict.sentence}")
    n = len(view.pairs)
    if view.verdict.tested:
        right.markdown(
            f"Each cell: the **Holm-adjusted p-value** of a **paired sign-flip test over patients** between the row "
            f"and the column model: each of the {view.verdict.n_subjects} validation patients gives one difference "
            "(the share of its cells the row model calls right minus the column model's, each at its own threshold), "
            f"and the test asks whether their mean could be chance. **✱ and green: p < {ALPHA:g}** after adjusting "
            f"for all {n} pairs. Hover a cell for the per-patient difference with its 95% interval, the cell-level "
            "counts and the difference in ROC AUC."
        )
        right.caption(f"Cell-level McNemar is in the hover and the table as a secondary column: it "
                      f"{comparison.MCNEMAR}, but cells of one patient are not independent, so its p-values are far "
                      "too small (docs/statistics.md). The ensemble is not in the matrix: it is made of these models.")
    else:
        right.markdown(
            f"Each cell: the Holm-adjusted p-value of an exact **McNemar test** on the validation cells that exactly "
            f"one of the two calls right (✱: p < {ALPHA:g}). McNemar {comparison.MCNEMAR}; cells of one patient are "
            "not, so these p-values are optimistic. Recompute the statistics for the subject-level test."
        )
    if ui.toggle(f"Show all {n} pairs as a table", "pairs_table", False):
        fmt = {c: st.column_config.NumberColumn(format="%.4f") for c in view.pairs.columns if c.startswith("p ")}
        signed = [c for c in view.pairs.columns if "−" in c or "95%" in c]
        st.dataframe(view.pairs, hide_index=True, width="stretch", column_config={
            **fmt, **{c: st.column_config.NumberColumn(format="%+.3f") for c in signed}})


def patients_section(view: comparison.CompareView) -> None:
    if view.patients.empty:  # statistics older than the patient block: the stats note says how to add it
        return
    st.header("Per patient: one call per person")
    st.dataframe(view.patients, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in view.patients.columns
        if c.startswith(("Patient ", "AUC", "Acc.", "Share threshold")) and c != "Share threshold from"})
    n = int(view.patients["Patients"].max())
    st.caption(f"Unit: patient, N = {n}. A patient is called ALL when the share of its cells called ALL reaches the "
               "share threshold; patient AUC ranks patients by their mean P(ALL). Intervals: class-stratified "
               "bootstrap over patients. With so few patients the intervals are wide.")


def cv_section(view: comparison.CompareView) -> None:
    if view.cv is None or view.cv.empty:  # a study trained without --split cv
        return
    st.header("Cross-validated over the training patients")
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(view.cv, hide_index=True, width="stretch", column_config={
        c: number for c in view.cv.columns if c.startswith(("AUC", "Bal. acc.", "Fold AUC"))})
    n = int(view.cv["Subjects"].max())
    st.caption(f"Unit: cell, N = {int(view.cv['Cells'].max())} training cells of {n} patients; intervals resample "
               "patients within each class. Each training cell's P(ALL) comes from the head trained without its "
               "fold (out-of-fold), so these figures rest on every training patient and no fold chose anything for "
               "itself; ranked by out-of-fold AUC. Fold AUC min / max / SD: the spread over the folds.")


def calibration_section(view: comparison.CompareView) -> None:
    st.header("Calibration: reliability diagrams")
    st.plotly_chart(reliability_grid(view), key="reliability", config={"displayModeBar": False},
                    alt="Reliability diagram of each model: "
                        + ", ".join(f"{m} ECE {e:.3f}" for m, e in view.ece.items()))
    st.caption("Validation cells in 10 equal-width bins of P(ALL). A calibrated model's bars reach the diagonal: of "
               "the cells it gives P(ALL) ≈ 0.8, about 80% are ALL. The black dash is the bin's mean P(ALL); ECE is "
               "the size-weighted mean gap between bar and dash. Bars above the diagonal: the model is too unsure of "
               "ALL; below: too sure.")
    st.caption(comparison.P_ALL_DEFINITION)


def subjects_section(view: comparison.CompareView, data: base.StudyData) -> None:
    st.header("Which patients are hard?")
    if view.subjects.empty:
        st.info(f"No accuracy per subject is saved for this study. Compute it: `{base.stats_command(data)}`")
        return
    st.plotly_chart(subject_heatmap(view.subjects), key="subjects", config={"displayModeBar": False},
                    alt=f"Share of each of {len(view.subjects)} validation patients' cells called right, per model, "
                        "hardest patient first")
    st.caption("Share of each validation subject's cells called right (at each model's threshold), hardest first "
               "(lowest mean over the models). For an ALL subject this is its sensitivity, for a HEM subject its "
               "specificity. A subject hard for every model may look atypical, or be worth a second look at its "
               "labels.")


def studies_section(data: base.StudyData) -> None:
    st.header("Two studies side by side")
    others = comparison.other_studies(data)
    if not others:
        st.info("This is the only study under the artifacts root. Train another on the same data (for instance "
                "`python -m cnmc_core train --data <C-NMC folder> --study finetune --preset finetune`) to compare "
                "the two here.")
        return
    names = list(others)
    left, right = st.columns(2)
    other = ui.choice(f"Compare {ui.code(data.name)} with", names, "versus", names[0], container=left,
                      format_func=others.get)
    scores = {**base.METRICS, **base.LOWER_IS_BETTER}
    metric = ui.choice("Metric", list(scores), "versus_metric", "roc_auc", container=right, format_func=scores.get)
    cmp = ui.view(comparison.compare_studies, data, other, metric, base.stamp(data.root, other))
    for note in cmp.notes:
        st.warning(note)
    n_cells = ui.view(comparison.compare, data).n_cells
    st.plotly_chart(study_chart(cmp, n_cells), key="studies", config={"displayModeBar": False})
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(cmp.table, hide_index=True, width="stretch", column_config={
        **{c: number for c in cmp.table.columns if c not in ("Model", comparison.PAIRED_P)},
        f"{other} − {data.name}": st.column_config.NumberColumn(format="%+.3f"),
        comparison.PAIRED_P: st.column_config.NumberColumn(format="%.4f"),
    })
    st.caption(f"{cmp.metric} of each model in both studies, with 95% subject-bootstrap intervals. The paired p-value "
               "compares the same model's calls on the same validation cells in the two studies (exact McNemar, "
               "Holm-adjusted over the models); it is empty when the studies did not evaluate the same cells.")
    st.markdown("**How the two studies were made**")
    st.dataframe(cmp.settings, hide_index=True, width="stretch")


def page() -> None:
    data = ui.start("Compare")
    view = ui.view(comparison.compare, data)
    if view.verdict.sentence:
        st.markdown(f"**{view.verdict.sentence}**")
    from_top_section(view)
    if view.stopping:
        st.caption(view.stopping)
    if view.note:
        st.info(view.note, icon="ℹ️")
    pairs_section(view, data)
    patients_section(view)
    cv_section(view)
    calibration_section(view)
    subjects_section(view, data)
    studies_section(data)


ui.run(page)
