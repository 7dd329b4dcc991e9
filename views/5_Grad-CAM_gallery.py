"""Grad-CAM gallery: validation cells explained by every model when the study ran (cached, so it opens
at once). One cell across all models side by side, or one model across many cells; filter by true
class and by right or wrong."""

import streamlit as st

from cnmc_core.dashboard import base, classify, gallery_view
from views import _ui as ui

MODES = {"cell": "One cell, every model", "model": "One model, many cells"}  # link value -> label
CLASSES = {"both": "both classes", "ALL": "true ALL", "HEM": "true HEM"}
OUTCOMES = {"both": "right and wrong", "right": "right only", "wrong": "wrong only"}
PER_ROW = 4


@st.cache_resource(show_spinner=False, max_entries=4)
def gallery(stamp: tuple) -> gallery_view.GalleryView | None:
    return gallery_view.load_gallery(stamp[0], stamp[1])


def picture(column, image, caption: str, alt: str) -> None:
    """An image of the gallery, or one line where its file is missing, broken or refused."""
    if image is None:
        column.caption(f"{caption}: the gallery file is missing, broken, or not a plain file of the study")
    else:
        column.image(image, caption=caption, width="stretch", alt=alt)


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
    if untrained := gallery_view.untrained_note(data):
        st.info(untrained, icon="ℹ️")
    method = ui.code(shown.method)  # as the study's index.json names it
    st.caption(f"{len(shown.cells)} validation cells. Warm colours show where in the picture each model found the "
               "evidence for the class it called.")
    with st.expander("How the heatmaps are made"):
        st.caption(f"{method} on each model's last convolutional block, computed when the study ran.")

    mode = ui.choice("View", list(MODES), "gallery_mode", "cell", radio=True, horizontal=True, format_func=MODES.get)
    left, middle, right = st.columns(3)
    label = ui.choice("True class", list(CLASSES), "gallery_class", "both", container=left, format_func=CLASSES.get)
    outcome = ui.choice("Classified", list(OUTCOMES), "gallery_outcome", "both", container=middle,
                        format_func=OUTCOMES.get)
    opacity = ui.slider("Heatmap opacity", "gallery_opacity", 0.0, 1.0, classify.DEFAULT_OPACITY, 0.05,
                        container=right)
    model = None
    if mode == "model":
        model = ui.choice("Model", shown.models, "gallery_model", shown.models[0], format_func=base.model_name)
    cells = shown.select(label=None if label == "both" else label,
                         correct=None if outcome == "both" else outcome == "right", model=model)
    judged = f"by {ui.code(base.model_name(model))}" if model else "by the ensemble (mean P(ALL))"
    if not cells:
        st.info(f"No cell of the gallery is {CLASSES[label]} and {OUTCOMES[outcome]} {judged}.")
        return
    st.image(classify.colour_bar(), caption="heatmap colours: no evidence (left) to the strongest (right)",
             alt="Colour scale of the heatmaps, from no evidence on the left to the strongest on the right")
    st.caption(gallery_view.HEAT_RULE)

    if mode == "cell":
        ids = [c["id"] for c in cells]
        cell_id = ui.choice(f"Cell (right or wrong {judged})", ids, "gallery_cell", ids[0],
                            format_func=shown.option_label)
        st.caption(ui.code(shown.cell_caption(cell_id)))  # captions carry text from the study's index.json
        tiles = [(shown.image(cell_id), "the cell", f"The cell: {shown.cell_caption(cell_id)}")]
        tiles += [(shown.overlay(cell_id, key, opacity), ui.code(shown.caption(cell_id, key)),
                   f"{base.model_name(key)} heatmap over the cell: {shown.caption(cell_id, key)}")
                  for key in shown.models]
    else:
        st.caption(f"{len(cells)} cells; right or wrong {judged}.")
        tiles = [(shown.overlay(c["id"], model, opacity),
                  ui.code(f"{shown.cell_caption(c['id'])}. {shown.caption(c['id'], model)}"),
                  f"{base.model_name(model)} heatmap: {shown.cell_caption(c['id'])}. {shown.caption(c['id'], model)}")
                 for c in cells]
    for start in range(0, len(tiles), PER_ROW):  # one row of columns per row of pictures: the rows line up
        for column, (image, caption, alt) in zip(st.columns(PER_ROW), tiles[start:start + PER_ROW]):
            picture(column, image, caption, alt)

    with st.expander("Sanity check: is the heat on the cell?"):
        st.caption("A model that looks at the cell puts more of its heat there than the cell's share of the frame. "
                   "Random-weight models (the synthetic demo) need not.")
        st.dataframe(shown.sanity_table(), hide_index=True,
                     column_config={c: st.column_config.NumberColumn(c, format="percent")
                                    for c in ("Heat on the cell", "Cell's share of the frame")})


ui.run(page)
