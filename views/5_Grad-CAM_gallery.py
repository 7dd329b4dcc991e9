"""Grad-CAM gallery: validation cells explained by every model when the study ran (cached, so it opens
at once). One cell across all models side by side, or one model across many cells; filter by true
class and by right or wrong."""

import streamlit as st

from cnmc_core.dashboard import base, classify, gallery_view
from views import _ui as ui

ONE_CELL, ONE_MODEL = "One cell, every model", "One model, many cells"
CLASSES = {"both": "both classes", "ALL": "true ALL", "HEM": "true HEM"}
OUTCOMES = {"both": "right and wrong", "right": "right only", "wrong": "wrong only"}
PER_ROW = 4


@st.cache_resource(show_spinner=False, max_entries=4)
def gallery(stamp: tuple) -> gallery_view.GalleryView | None:
    return gallery_view.load_gallery(stamp[0], stamp[1])


def picture(column, image, caption: str) -> None:
    """An image of the gallery, or one line where its file is missing, broken or refused."""
    if image is None:
        column.caption(f"{caption}: the gallery file is missing, broken, or not a plain file of the study")
    else:
        column.image(image, caption=caption, width="stretch")


def page() -> None:
    data = ui.start("Grad-CAM gallery")
    shown = gallery(data.stamp)
    if shown is None:
        st.info("This study has no Grad-CAM gallery yet: it is made at the end of a study. Run the study's "
                "`python -m cnmc_core train …` (or `demo`) command again: finished models are skipped and the "
                "gallery is built.")
        st.dataframe(ui.view(gallery_view.gradcam_layers, data), hide_index=True)
        return
    stale = shown.stale()
    if stale:
        st.warning("Retrained since the gallery was made (their heatmaps show the old model): "
                   + ", ".join(ui.code(base.model_name(k)) for k in stale)
                   + ". Rerun the study's command to refresh it.")
    method = ui.code(shown.method)  # as the study's index.json names it
    st.caption(f"{len(shown.cells)} validation cells, {method} on each model's last convolutional block. "
               "The heatmap shows the evidence for the class the model predicts.")

    mode = st.radio("View", [ONE_CELL, ONE_MODEL], horizontal=True, key="gallery_mode")
    left, middle, right = st.columns(3)
    label = left.selectbox("True class", list(CLASSES), format_func=CLASSES.get, key="gallery_class")
    outcome = middle.selectbox("Classified", list(OUTCOMES), format_func=OUTCOMES.get, key="gallery_outcome")
    opacity = right.slider("Heatmap opacity", 0.0, 1.0, classify.DEFAULT_OPACITY, 0.05, key="gallery_opacity")
    model = None
    if mode == ONE_MODEL:
        model = ui.choice("Model", shown.models, "gallery_model", shown.models[0], format_func=base.model_name)
    cells = shown.select(label=None if label == "both" else label,
                         correct=None if outcome == "both" else outcome == "right", model=model)
    judged = f"by {ui.code(base.model_name(model))}" if model else "by the ensemble (mean P(ALL))"
    if not cells:
        st.info(f"No cell of the gallery is {CLASSES[label]} and {OUTCOMES[outcome]} {judged}.")
        return
    st.image(classify.colour_bar(), caption=f"{method} colours")

    if mode == ONE_CELL:
        ids = [c["id"] for c in cells]
        cell_id = st.selectbox(f"Cell (right or wrong {judged})", ids, format_func=shown.option_label,
                               key="gallery_cell")
        st.caption(ui.code(shown.cell_caption(cell_id)))  # captions carry text from the study's index.json
        columns = st.columns(PER_ROW)
        picture(columns[0], shown.image(cell_id), "the cell")
        for i, key in enumerate(shown.models, start=1):
            picture(columns[i % PER_ROW], shown.overlay(cell_id, key, opacity), ui.code(shown.caption(cell_id, key)))
    else:
        st.caption(f"{len(cells)} cells; right or wrong {judged}.")
        for start in range(0, len(cells), PER_ROW):
            for column, cell in zip(st.columns(PER_ROW), cells[start:start + PER_ROW]):
                picture(column, shown.overlay(cell["id"], model, opacity),
                        ui.code(f"{shown.cell_caption(cell['id'])}. {shown.caption(cell['id'], model)}"))

    with st.expander("Sanity check: is the heat on the cell?"):
        st.caption("A model that looks at the cell puts more of its heat there than the cell's share of the frame. "
                   "Random-weight models (the synthetic demo) need not.")
        st.dataframe(shown.sanity_table(), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(c, format="percent")
                                    for c in ("Heat on the cell", "Cell's share of the frame")})


ui.run(page)
