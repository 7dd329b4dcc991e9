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


def p_label(p: float, significant: bool) -> str:
    if p != p:  # the diagonal
        return "—"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return f"<b>{text} ✱</b>" if significant else text


def p_matrix(view: comparison.CompareView) -> go.Figure:
    names, pair = view.models, view.pair
    fig = go.Figure(go.Heatmap(
        z=pair["p_holm"].to_numpy(), x=names, y=names, zmin=0, zmax=1, colorscale=P_SCALE, xgap=2, ygap=2,
        text=[[p_label(pair["p_holm"].loc[r, c], view.significant.loc[r, c]) for c in names] for r in names],
        texttemplate="%{text}", textfont={"size": 13},
        customdata=[[[pair[part].loc[r, c] for part in PAIR_HOVER] for c in names] for r in names],
        colorbar={"title": {"text": "p (Holm)"}, "tickvals": [0, ALPHA, 0.5, 1],
                  "ticktext": ["0", f"{ALPHA:g}", "0.5", "1"]},
        hovertemplate="<b>%{y}</b> vs <b>%{x}</b><br>p (Holm) %{z:.4f}; unadjusted %{customdata[0]:.4f}"
                      "<br>cells only %{y} called right: %{customdata[1]}"
                      "<br>cells only %{x} called right: %{customdata[2]}"
                      "<br>AUC %{y} − %{x}: %{customdata[3]:+.3f} "
                      "(95%: %{customdata[4]:+.3f} to %{customdata[5]:+.3f})<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=140 + 46 * len(names), margin={"t": 10, "b": 10, "l": 10, "r": 10})
    return fig


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
    fig.update_layout(height=250 * rows + 70, margin={"t": 30, "b": 10}, bargap=0,
                      legend={"orientation": "h", "y": -0.06})
    return fig


def subject_heatmap(frame) -> go.Figure:
    models = [c for c in frame.columns if c not in ("Subject", "Class", "Cells")]
    # subjects come from the study's subjects.csv: Plotly would read HTML tags in them
    rows = zip(frame["Subject"], frame["Class"], frame["Cells"])
    labels = [ui.plotly_text(f"{s} ({c}, {n} cells)") for s, c, n in rows]
    fig = go.Figure(go.Heatmap(
        z=frame[models].to_numpy(dtype=float), x=models, y=labels, zmin=0, zmax=1, colorscale="RdYlGn", xgap=1, ygap=1,
        texttemplate="%{z:.0%}", colorbar={"title": {"text": "called right"}, "tickformat": ".0%"},
        hovertemplate="subject %{y}<br>%{x}: %{z:.0%} of the cells called right<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top")
    fig.update_layout(height=110 + 24 * len(labels), margin={"t": 10, "b": 10, "l": 10, "r": 10})
    return fig


def study_chart(cmp: comparison.StudyComparison) -> go.Figure:
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
    fig.update_layout(height=90 + 44 * len(models), margin={"t": 10, "b": 10}, xaxis={"title": cmp.metric},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "title": {"text": "Study"}})
    return fig


def pairs_section(view: comparison.CompareView, data: base.StudyData) -> None:
    st.subheader("Which differences between the models are real?")
    if len(data.models) < 2:
        st.info("This study has one model: there is no pair to compare.")
        return
    if len(view.models) < 2:
        st.info(f"No model comparisons are saved for this study. Compute them: `{base.stats_command(data)}`")
        return
    left, right = st.columns([3, 2])
    left.plotly_chart(p_matrix(view), key="p_matrix", config={"displayModeBar": False})
    n = len(view.pairs)
    right.markdown(
        f"Each cell: the **Holm-adjusted p-value** of an exact **McNemar test** between the row and the column model, "
        f"on the validation cells that exactly one of the two calls right. **✱ and green: p < {ALPHA:g}** after "
        f"adjusting for all {n} pairs: these two models really do call cells differently. Hover a cell for the counts "
        "and the difference in ROC AUC with its 95% subject-bootstrap interval."
    )
    right.caption("McNemar counts cells as independent; cells of one patient are not, so its p-values are optimistic. "
                  "The AUC interval resamples patients and is the more cautious answer: a difference whose interval "
                  "holds 0 may be chance. The ensemble is not in the matrix: it is made of these models.")
    if ui.toggle(f"Show all {n} pairs as a table", "pairs_table", False):
        st.dataframe(view.pairs, hide_index=True, width="stretch", column_config={
            "p (McNemar)": st.column_config.NumberColumn(format="%.4f"),
            "p (Holm)": st.column_config.NumberColumn(format="%.4f"),
            **{c: st.column_config.NumberColumn(format="%+.3f") for c in ("AUC A − B", "95% low", "95% high")},
        })


def calibration_section(view: comparison.CompareView) -> None:
    st.subheader("Calibration: reliability diagrams")
    st.plotly_chart(reliability_grid(view), key="reliability", config={"displayModeBar": False})
    st.caption("Validation cells in 10 equal-width bins of P(ALL). A calibrated model's bars reach the diagonal: of "
               "the cells it gives P(ALL) ≈ 0.8, about 80% are ALL. The black dash is the bin's mean P(ALL); ECE is "
               "the size-weighted mean gap between bar and dash. Bars above the diagonal: the model is too unsure of "
               "ALL; below: too sure.")


def subjects_section(view: comparison.CompareView, data: base.StudyData) -> None:
    st.subheader("Which patients are hard?")
    if view.subjects.empty:
        st.info(f"No accuracy per subject is saved for this study. Compute it: `{base.stats_command(data)}`")
        return
    st.plotly_chart(subject_heatmap(view.subjects), key="subjects", config={"displayModeBar": False})
    st.caption("Share of each validation subject's cells called right (at each model's threshold), hardest first "
               "(lowest mean over the models). For an ALL subject this is its sensitivity, for a HEM subject its "
               "specificity. A subject hard for every model may look atypical, or be worth a second look at its "
               "labels.")


def studies_section(data: base.StudyData) -> None:
    st.subheader("Two studies side by side")
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
    st.plotly_chart(study_chart(cmp), key="studies", config={"displayModeBar": False})
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
    if view.note:
        st.info(view.note, icon=":material/info:")
    pairs_section(view, data)
    calibration_section(view)
    subjects_section(view, data)
    studies_section(data)


ui.run(page)
