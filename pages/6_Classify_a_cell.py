"""Classify a cell: P(ALL) from every model of the study for one uploaded image. Research use only."""

import streamlit as st

from cnmc_core import results
from pages import _ui as ui

TYPES = ["bmp", "png", "jpg", "jpeg", "tif", "tiff"]


@st.cache_resource(show_spinner="Loading the study's models (the first time, TensorFlow starts: about 10-20 s) …", max_entries=2)
def predictor(stamp: tuple):
    """Every model of the study, loaded once per process and per version of its files."""
    return results.load_predictor(stamp[0], stamp[1])


def page() -> None:
    data = ui.start("Classify a cell", notice=ui.RESEARCH_ONLY)
    st.info("Grad-CAM heatmaps of the uploaded cell come with the `explain` feature, in the next issue.")
    upload = st.file_uploader("A single-cell image (a C-NMC style frame: one cell centred on black)", type=TYPES, key="upload")
    if upload is None:
        st.caption("Upload an image to see P(ALL) from each model, their mean (the ensemble) and how many agree.")
        return
    try:
        models = predictor(data.stamp)
    except (FileNotFoundError, ValueError) as e:
        st.error(f"The models of study `{data.name}` cannot be loaded: {str(e).splitlines()[0]}")
        return
    result = models.predict(upload.getvalue(), name=upload.name)
    if "error" in result:
        st.error(f"`{upload.name}` cannot be classified: {result['error']}")
        return

    image, answer = st.columns([1, 2])
    image.image(upload.getvalue(), caption=upload.name, width="stretch")
    answer.metric("Ensemble call (mean P(ALL) of the models)", result["label"], f"P(ALL) = {result['ensemble']:.3f}",
                  delta_color="off", delta_arrow="off")
    answer.markdown(f"**Agreement:** {result['agreement']}")
    answer.dataframe(results.prediction_table(result), hide_index=True, width="stretch",
                     column_config={"P(ALL)": st.column_config.ProgressColumn("P(ALL)", min_value=0.0, max_value=1.0, format="%.3f")})
    for reason in result.get("unavailable", {}).values():
        answer.warning(f"Not used: {reason}")
    st.caption(ui.RESEARCH_ONLY)


ui.run(page)
