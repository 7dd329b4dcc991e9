"""Confusion matrices: one per model side by side, one large, and the cell images behind any quadrant."""

import plotly.graph_objects as go
import streamlit as st

from cnmc_core.dashboard import base, quadrants, thumbnails
from views import _ui as ui

PER_ROW = 4


def heatmap(m: base.Matrix, normalised: bool, large: bool = False) -> go.Figure:
    """Rows: true class (HEM, ALL); columns: predicted class. Hover shows count and row rate."""
    counts, rates = m.counts, m.rates
    z = rates if normalised else counts
    text = [[f"{rates[i][j]:.0%}" if normalised else f"{counts[i][j]}" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"called {c}" for c in base.CLASSES], y=[f"true {c}" for c in base.CLASSES],
        text=text, texttemplate="%{text}", textfont={"size": 22 if large else 15},
        customdata=[[[counts[i][j], rates[i][j]] for j in range(2)] for i in range(2)],
        hovertemplate="%{y}, %{x}<br>count: %{customdata[0]}<br>rate in row: %{customdata[1]:.1%}<extra></extra>",
        colorscale="Blues", showscale=large, zmin=0, zmax=1 if normalised else None,
    ))
    if large:  # one invisible point per quadrant: Plotly reports clicks on points (Streamlit's selection), not heatmaps
        called = [f"called {c}" for c in base.CLASSES]
        fig.add_trace(go.Scatter(
            x=called * 2, y=[f"true {c}" for c in base.CLASSES for _ in called], mode="markers", showlegend=False,
            marker={"symbol": "square", "size": 90, "color": "rgba(0, 0, 0, 0)"},
            customdata=[[counts[i][j], rates[i][j]] for i in range(2) for j in range(2)],
            hovertemplate="%{y}, %{x}<br>count: %{customdata[0]}<br>rate in row: %{customdata[1]:.1%}"
                          "<br>click to see these cells<extra></extra>",
            selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
        ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=None if large else m.name, height=380 if large else 260,
        margin={"l": 10, "r": 10, "t": 10 if large else 40, "b": 10},
    )
    return fig


def pick_quadrant() -> None:
    """A click on a quadrant of the large matrix chooses it (the selectbox and the link follow)."""
    points = st.session_state["large"].selection.points
    if points:
        true, called = str(points[0]["y"]).removeprefix("true "), str(points[0]["x"]).removeprefix("called ")
        st.session_state["quadrant"] = quadrants.quadrant_code(true, called) or st.session_state.get("quadrant")


def page() -> None:
    data = ui.start("Confusion matrices")
    normalised = ui.toggle("Row-normalised (share of each true class)", "normalised", False)
    matrices = ui.view(quadrants.confusion, data)

    thresholds = ", ".join(sorted({f"{m.threshold:g}" for m in matrices.values()}))
    st.caption(f"Unit: cell, validation split. A cell is called ALL when P(ALL) ≥ the model's threshold "
               f"({thresholds}). Rows: the true class; columns: the model's call.")
    for start in range(0, len(data.evaluated), PER_ROW):
        for col, key in zip(st.columns(PER_ROW), data.evaluated[start:start + PER_ROW]):
            m = matrices[key]
            col.plotly_chart(heatmap(m, normalised), key=f"small_{key}", config={"displayModeBar": False},
                             alt=f"{m.name}: confusion matrix, true HEM {m.counts[0][0]} called HEM, {m.counts[0][1]} "
                                 f"called ALL; true ALL {m.counts[1][0]} called HEM, {m.counts[1][1]} called ALL")

    st.header("One model up close")
    left, right = st.columns([3, 2])
    key = ui.models_choice(data, container=right)
    codes = list(quadrants.QUADRANT_CODES)
    code = ui.choice("Show the cells of", codes, "quadrant", "fn", container=right,
                     format_func=lambda c: quadrants.QUADRANTS[quadrants.QUADRANT_CODES[c]])
    true, called = quadrants.QUADRANT_CODES[code]
    m = matrices[key]
    left.plotly_chart(heatmap(m, normalised, large=True), key="large", on_select=pick_quadrant,
                      selection_mode="points", alt=f"{m.name}: confusion matrix; click a quadrant to see its cells")
    left.caption("Click a quadrant to see its cells.")

    images = ui.view(quadrants.quadrant_images, data, key, true, called, 24)
    right.metric("Cells in this quadrant", images.total)
    if not images.total:
        st.info("No validation image falls in this quadrant.")
        return
    source = ui.view(thumbnails.image_source, data)
    if not source.available:
        ui.no_images(source, "cell images")
        st.dataframe(images.rows, hide_index=True)
        return
    order = "most confidently called first" if true != called else "most confident first"
    st.caption(f"The first {len(images.rows)} of {images.total} ({order}). P(ALL) is {base.model_name(key)}'s output; "
               f"it calls a cell ALL when P(ALL) ≥ its threshold, {m.threshold:.3f}.")
    for start in range(0, len(images.rows), 8):
        for col, row in zip(st.columns(8), images.rows.iloc[start:start + 8].itertuples()):
            png = ui.thumbnail(data.stamp, row.image)
            side = "≥" if row.prob_all >= m.threshold else "<"
            words = f"P(ALL) {row.prob_all:.3f} {side} threshold {m.threshold:.3f}"
            caption = f"subject {ui.code(row.subject)} · {words}"  # the subject is from the study
            if png:
                col.image(png, caption=caption, width="stretch",
                          alt=f"Cell of subject {row.subject}, true {true}, called {called}, {words}")
            else:
                col.caption(f"{caption} (image unreadable, or outside the trusted data folders)")


ui.run(page)
