"""Classify a cell: drop one or many single-cell images, smear crops or fields (each white cell found is made into
a C-NMC-style frame, unless the preparation is switched off); P(ALL) from every model of the study, the
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
def classify(stamp: tuple, content: bytes, name: str, cam: str | None, prepare: bool, um_per_px, _predictor):
    """One upload (each of its white cells) through every model (and Grad-CAM), kept at display size: moving a
    slider redraws, never recomputes."""
    return classify_view.classify_upload(_predictor, content, name, cam, DISPLAY_SIDE, prepare, um_per_px)


def show_upload(upload_name: str, upload, models, opacity: float) -> None:
    st.subheader(ui.code(upload_name), divider="gray")  # the name as typed, never as Markdown or HTML
    if upload.outlined is not None:
        st.image(upload.outlined, caption="as uploaded, with the white cells found (numbered in reading order)",
                 width="stretch")
    for note in upload.notes:
        st.caption(note)
    for out in upload.cells:
        show_one(upload_name, out, classify_view.model_table(models, out.result), opacity)


def show_one(upload_name: str, out, table, opacity: float) -> None:
    result = out.result
    if "error" in result:
        st.error(f"{ui.code(upload_name)} cannot be classified: {result['error']}")
        return
    if result.get("prepared"):
        scale = result["scale"]
        size = f", {scale['diameter_um']:.1f} µm across" if scale.get("diameter_um") else ""
        st.markdown(f"**Cell {result['cell']}** (scale from {scale['source']}{size})")
    for note in result.get("notes", []):
        st.caption(note)
    if result["ood"]["warning"]:
        st.warning("**This image does not look like the cells the models were trained on; the prediction is "
                   "unreliable.** "
                   + " ".join(f"{r[0].upper()}{r[1:]}." for r in result["ood"]["reasons"]), icon="⚠️")
    if out.cell is not None and out.cell.prepared:
        before, image, answer = st.columns([1, 1, 2])
        before.image(out.cell.frame_before_norm, caption="prepared frame, before stain normalisation", width="stretch")
        image.image(out.image, caption="after normalisation: what the models see", width="stretch")
    else:
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
        "Single-cell images (C-NMC style frames), smear crops or fields; one or many", type=TYPES,
        accept_multiple_files=True, key="upload",
    )
    prep, scale = st.columns(2)
    prepare = prep.toggle("Prepare smear crops (find white cells)", value=True, key="prepare",
                          help="Find each white cell, rescale the crop to C-NMC's scale, black out the rest and "
                               "centre the cell; off: classify each image as it is. C-NMC frames pass through as "
                               "they are either way.")
    um_per_px = scale.number_input("Micrometres per pixel (optional)", min_value=0.005, max_value=5.0, value=None,
                                   step=0.001, format="%.4f", key="um_per_px", disabled=not prepare,
                                   help="The upload's scale; empty: measured from its red cells (7.5 µm each).")
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
            out = classify(data.stamp, upload.getvalue(), upload.name, None if cam == OFF else cam, prepare,
                           um_per_px if prepare else None, models)
            outcomes.append((upload.name, out))
    results = [cell.result for _, out in outcomes for cell in out.cells]
    if len(results) > 1:
        frame = classify_view.results_frame(results)
        st.subheader("All files")
        st.dataframe(frame, hide_index=True, width="stretch")
        st.download_button("Download this table (CSV)", ui.csv_safe(frame).to_csv(index=False), "cnmc_predictions.csv",
                           "text/csv",
                           icon="⬇️")
    if cam != OFF:
        st.image(classify_view.colour_bar(),
                 caption=f"{classify_view.CAM_METHODS[cam]} colours: where the evidence for the class shown is "
                         "strongest")
    for name, out in outcomes:
        show_upload(name, out, models, opacity)
    st.caption(ui.RESEARCH_ONLY)


ui.run(page)
