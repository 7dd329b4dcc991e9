"""Classify a cell: drop one or many single-cell images; P(ALL) from every model of the study, the
ensemble, how many agree, how sure they are, whether the image looks like a training cell, and where
each model looked (Grad-CAM). Research use only. Uploads stay in memory; nothing is written; file names
are shown as literal text (a code span), never as Markdown or HTML."""

import streamlit as st

from cnmc_core.dashboard import base
from cnmc_core.dashboard import classify as classify_view
from views import _ui as ui

TYPES = ["bmp", "png", "jpg", "jpeg", "tif", "tiff", "gif"]
OFF = "off"
CAM_CHOICES = [*classify_view.CAM_METHODS, OFF]
DISPLAY_SIDE = 480  # pixels; what the page keeps of each image and heatmap


@st.cache_resource(show_spinner="Loading the study's models (the first time, TensorFlow starts: about 10-20 s) …",
                   max_entries=2)
def predictor(stamp: tuple):
    """Every model of the study, loaded once per process and per version of its files."""
    return classify_view.load_predictor(stamp[0], stamp[1])


@st.cache_data(show_spinner=False, max_entries=64)
def classify(stamp: tuple, content: bytes, name: str, cam: str | None, _predictor):
    """One upload through every model (and Grad-CAM), kept at display size: moving a slider redraws, never
    recomputes."""
    return classify_view.classify(_predictor, content, name, cam, DISPLAY_SIDE)


def show_one(upload_name: str, out, table, opacity: float) -> None:
    result = out.result
    st.subheader(ui.code(upload_name), divider="gray")  # the name as typed, never as Markdown or HTML
    if "error" in result:
        st.error(f"{ui.code(upload_name)} cannot be classified: {result['error']}")
        return
    if result["ood"]["warning"]:
        st.warning("**This image does not look like the cells the models were trained on; the prediction is "
                   "unreliable.** "
                   + " ".join(f"{r[0].upper()}{r[1:]}." for r in result["ood"]["reasons"]), icon=":material/warning:")
    image, answer = st.columns([1, 2])
    image.image(out.image, caption="as uploaded (converted to RGB)", width="stretch")
    answer.metric("Ensemble call (mean P(ALL) of the models)", result["label"], f"P(ALL) = {result['ensemble']:.3f}",
                  delta_color="off", delta_arrow="off")
    answer.markdown(f"**Agreement:** {result['agreement']}  \n**Uncertainty:** {result['uncertainty']}")
    answer.dataframe(table, hide_index=True, width="stretch",
                     column_config={"P(ALL)": st.column_config.ProgressColumn("P(ALL)", min_value=0.0, max_value=1.0,
                                                                              format="%.3f")})
    for reason in result.get("unavailable", {}).values():
        answer.warning(f"Not used: {ui.code(reason)}")
    if out.heatmaps:
        columns = st.columns(min(4, len(out.heatmaps)))
        for i, (key, e) in enumerate(out.heatmaps.items()):
            note = " (no location adds evidence for it)" if e.empty else ""
            columns[i % len(columns)].image(
                classify_view.heatmap_overlay(out.image, e.heatmap, opacity), width="stretch",
                caption=f"{base.model_name(key)}: evidence for {e.target}{note}",
            )


def page() -> None:
    data = ui.start("Classify a cell", notice=ui.RESEARCH_ONLY)
    uploads = st.file_uploader(
        "Single-cell images (C-NMC style frames: one stained cell centred on black); one or many", type=TYPES,
        accept_multiple_files=True, key="upload",
    )
    left, right = st.columns(2)
    cam = left.selectbox("Where each model looked", CAM_CHOICES, key="cam",
                         format_func=lambda m: "no heatmaps" if m == OFF else classify_view.CAM_METHODS[m],
                         help="Grad-CAM on each model's last convolutional block "
                              "(Score-CAM is slower: 64 masked passes per model).")
    opacity = right.slider("Heatmap opacity", 0.0, 1.0, classify_view.DEFAULT_OPACITY, 0.05, key="opacity",
                           disabled=cam == OFF)
    if not uploads:
        st.caption("Upload images to see P(ALL) from each model, their mean (the ensemble), how many agree, and "
                   "where each looked.")
        st.caption(ui.RESEARCH_ONLY)
        return
    try:
        models = predictor(data.stamp)
    except (FileNotFoundError, ValueError) as e:
        st.error(f"The models of study {ui.code(data.name)} cannot be loaded: {ui.code(str(e).splitlines()[0])}")
        return

    outcomes = []
    with st.spinner(f"Classifying {len(uploads)} image(s) …"):
        for upload in uploads:
            out = classify(data.stamp, upload.getvalue(), upload.name, None if cam == OFF else cam, models)
            outcomes.append((upload.name, out))
    if len(outcomes) > 1:
        frame = classify_view.results_frame([out.result for _, out in outcomes])
        st.subheader("All files")
        st.dataframe(frame, hide_index=True, width="stretch")
        st.download_button("Download this table (CSV)", ui.csv_safe(frame).to_csv(index=False), "cnmc_predictions.csv",
                           "text/csv",
                           icon=":material/download:")
    if cam != OFF:
        st.image(classify_view.colour_bar(),
                 caption=f"{classify_view.CAM_METHODS[cam]} colours: where the evidence for the class shown is "
                         "strongest")
    for name, out in outcomes:
        show_one(name, out, classify_view.model_table(models, out.result), opacity)
    st.caption(ui.RESEARCH_ONLY)


ui.run(page)
