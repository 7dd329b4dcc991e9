"""Grad-CAM gallery (shell): the heatmaps come with the explain issue; the models and their layers are known now."""

import streamlit as st

from cnmc_core import results
from pages import _ui as ui


def page() -> None:
    data = ui.start("Grad-CAM gallery")
    st.info("Grad-CAM heatmaps (where in the cell each model looks) come with the `explain` feature, in the next issue. "
            "This page will show them for the images of each confusion-matrix cell.")
    st.caption("The layer each model's heatmap will be taken from (the last convolutional block):")
    st.dataframe(ui.view(results.gradcam_layers, data), hide_index=True)


ui.run(page)
