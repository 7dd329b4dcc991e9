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
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=None if large else m.name, height=380 if large else 260,
        margin={"l": 10, "r": 10, "t": 10 if large else 40, "b": 10},
    )
    return fig


def page() -> None:
    data = ui.start("Confusion matrices")
    normalised = ui.toggle("Row-normalised (share of each true class)", "normalised", False)
    matrices = ui.view(quadrants.confusion, data)

    thresholds = ", ".join(sorted({f"{m.threshold:g}" for m in matrices.values()}))
    st.caption(f"Validation split. A cell is called ALL when P(ALL) ≥ the model's threshold ({thresholds}). "
               "Rows: true class; columns: the call.")
    for start in range(0, len(data.evaluated), PER_ROW):
        for col, key in zip(st.columns(PER_ROW), data.evaluated[start:start + PER_ROW]):
            col.plotly_chart(heatmap(matrices[key], normalised), key=f"small_{key}", config={"displayModeBar": False})

    st.subheader("One model up close")
    left, right = st.columns([3, 2])
    key = ui.models_choice(data, container=right)
    quadrant = right.selectbox("Show the cells of", list(quadrants.QUADRANTS), format_func=quadrants.QUADRANTS.get,
                               key="quadrant")
    left.plotly_chart(heatmap(matrices[key], normalised, large=True), key="large")

    images = ui.view(quadrants.quadrant_images, data, key, quadrant[0], quadrant[1], 24)
    right.metric("Cells in this quadrant", images.total)
    if not images.total:
        st.info("No validation image falls in this quadrant.")
        return
    source = ui.view(thumbnails.image_source, data)
    if not source.available:
        ui.no_images(source, "cell images")
        st.dataframe(images.rows, hide_index=True)
        return
    called = "most confidently called first" if quadrant[0] != quadrant[1] else "most confident first"
    st.caption(f"The first {len(images.rows)} of {images.total} ({called}). P(ALL) is {base.model_name(key)}'s output.")
    for start in range(0, len(images.rows), 8):
        for col, row in zip(st.columns(8), images.rows.iloc[start:start + 8].itertuples()):
            png = ui.thumbnail(data.stamp, row.image)
            caption = f"subject {ui.code(row.subject)} · P(ALL) {row.prob_all:.2f}"  # the subject is from the study
            if png:
                col.image(png, caption=caption, width="stretch")
            else:
                col.caption(f"{caption} (image unreadable, or outside the trusted data folders)")


ui.run(page)
