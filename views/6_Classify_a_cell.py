"""Classify a cell: drop one or many single-cell images, smear crops or fields (each white cell found is made into
a C-NMC-style frame, unless the preparation is switched off), or try a generated example; P(ALL) from every model of
the study, the answer (ALL, HEM or Inconclusive, with the reasons), how many agree, each model's track record on the
validation cells, whether the image looks like a training cell, the nearest training cells, and where each model
looked (Grad-CAM); a summary line and a CSV of all results. Research use only. Uploads stay in memory; nothing is
written; file names are shown as literal text (a code span), never as Markdown or HTML."""

import re

import streamlit as st

from cnmc_core.dashboard import base, gallery_view
from cnmc_core.dashboard import classify as classify_view
from cnmc_core.dashboard import classify_answer as answer_view
from views import _ui as ui

TYPES = ["bmp", "png", "jpg", "jpeg", "tif", "tiff", "gif"]
OFF = "off"
CAM_CHOICES = [*classify_view.CAM_METHODS, OFF]
DISPLAY_SIDE = 480  # pixels; what the page keeps of each image and heatmap
NO_REFERENCES = "none"
PLAIN_ID = re.compile(r"[A-Za-z0-9_.-]{1,24}")  # a patient id shown in a caption; anything else is not shown


@st.cache_resource(show_spinner="Loading the study's models (the first time, TensorFlow starts: about 10-20 s) …",
                   max_entries=2)
def predictor(stamp: tuple):
    """Every model of the study, loaded once per process and per version of its files."""
    return classify_view.loaded_predictor(stamp)  # the background load's, if a page started it (ui.warm_models)


@st.cache_data(show_spinner=False, max_entries=64)
def classify(stamp: tuple, content: bytes, name: str, prepare: bool, um_per_px, _predictor):
    """One upload (each of its white cells) through every model, kept at display size: moving a slider redraws,
    never recomputes, and the heatmaps are cached apart (switching them off or changing the method keeps this)."""
    return classify_view.classify_upload(_predictor, content, name, None, DISPLAY_SIDE, prepare, um_per_px)


@st.cache_data(show_spinner=False, max_entries=64)
def heatmaps(stamp: tuple, content: bytes, name: str, prepare: bool, um_per_px, cam: str, _predictor, _upload):
    """Each cell's heatmaps for one upload already classified (the arguments before `cam` are `classify`'s key)."""
    return classify_view.explain_upload(_predictor, _upload, cam)


KEPT, SHOWING_KEPT = "kept_uploads", "showing_kept_uploads"


def dropped_files() -> list[tuple[str, bytes]]:
    """The files dropped on the uploader, kept for the session: Streamlit forgets an uploader's files when the user
    opens another page, so coming back shows the files dropped before (their results come from the cache)."""
    returning = "upload" not in st.session_state  # the uploader's state is gone: the user was on another page
    files = st.file_uploader(
        "Single-cell images (C-NMC style frames), smear crops or fields; one or many", type=TYPES,
        accept_multiple_files=True, key="upload",
    )
    if files:
        st.session_state[KEPT] = [(f.name, f.getvalue()) for f in files]
        st.session_state[SHOWING_KEPT] = False
        return list(st.session_state[KEPT])
    if returning and st.session_state.get(KEPT):
        st.session_state[SHOWING_KEPT] = True
    if st.session_state.get(SHOWING_KEPT) and st.session_state.get(KEPT):
        note, clear = st.columns([3, 1])
        note.info(f"Showing the {len(st.session_state[KEPT])} file(s) you dropped earlier in this session.")
        if clear.button("Clear them", key="clear_kept"):
            st.session_state[KEPT], st.session_state[SHOWING_KEPT] = [], False
            st.rerun()
        return list(st.session_state[KEPT])
    st.session_state[KEPT] = []
    return []


def show_upload(upload_name: str, upload, view: dict) -> list:
    """Draw one upload's results; returns one empty container per cell, where its heatmaps go once computed."""
    st.header(ui.code(upload_name), divider="gray")  # the name as typed, never as Markdown or HTML
    if upload.outlined is not None:
        numbers = ", ".join(str(c.result["cell"]) for c in upload.cells if "cell" in c.result)
        st.image(upload.outlined, caption=f"as uploaded, with the white cells found (numbered in reading order: "
                                          f"{numbers})", width="stretch",
                 alt=f"The uploaded image with an outline and a number on each white cell found ({numbers})")
    for note in upload.notes:
        st.caption(note)
    return [show_one(upload_name, out, view) for out in upload.cells]


def show_one(upload_name: str, out, view: dict):
    result = out.result
    if "error" in result:
        st.error(f"{ui.code(upload_name)} cannot be classified: {result['error']}")
        return st.container()
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
        before.image(out.cell.frame_before_norm, caption="prepared frame, before stain normalisation", width="stretch",
                     alt="The cell cut out and centred on black, in the upload's own colours")
        image.image(out.image, caption="after normalisation: what the models see", width="stretch",
                    alt="The prepared cell in the training cells' stain colours, as the models see it")
    else:
        image, answer = st.columns([1, 2])
        image.image(out.image, caption="as uploaded", width="stretch",
                    alt="The uploaded cell image, as the models see it")
    inconclusive = result["label"] == answer_view.INCONCLUSIVE
    answer.metric("Ensemble call (mean P(ALL) of the models)", "Inconclusive" if inconclusive else result["label"],
                  f"P(ALL) = {result['ensemble']:.3f}", delta_color="off", delta_arrow="off")
    if inconclusive:
        answer.warning("**Inconclusive:** " + "; ".join(result["reasons"]) + f". The ensemble alone would say "
                       f"{result['call']}; every model's P(ALL) is below.", icon="❔")
    answer.markdown(f"**Agreement:** {result['agreement']}  \n**Uncertainty:** {result['uncertainty']}")
    answer.dataframe(answer_view.answer_table(view["models"], result, view["records"]), hide_index=True,
                     width="stretch", column_config={"P(ALL)": st.column_config.ProgressColumn(
                         "P(ALL)", min_value=0.0, max_value=1.0, format="%.3f")})
    if line := answer_view.ensemble_record(result, view["records"]):
        answer.caption(line)
    for reason in result.get("unavailable", {}).values():
        answer.warning(f"Not used: {ui.code(reason)}")
    show_references(out, view)
    return st.container()


def show_heatmaps(out, maps: dict, view: dict) -> None:
    """Each model's heatmap over the cell, its reading beneath it (the share of its heat on the cell, or why none)."""
    if maps:
        columns = st.columns(min(4, len(maps)))
        for i, (key, e) in enumerate(maps.items()):
            reading = e.reading(out.image).text  # the frame the map was computed on
            columns[i % len(columns)].image(
                classify_view.heatmap_overlay(out.image, e.heatmap, opacity=view["opacity"]), width="stretch",
                caption=f"{base.model_name(key)}: {reading}",
                alt=f"Heatmap of where {base.model_name(key)} found evidence for {e.target}, over the cell: {reading}",
            )


def show_references(out, view: dict) -> None:
    """The nearest training cells of each class in the chosen model's feature space, as thumbnails."""
    key = view["reference_model"]
    if key == NO_REFERENCES:
        return
    found = answer_view.reference_cells(view["models"], out, key)
    if isinstance(found, str):
        st.info(f"No reference cells for {base.model_name(key)}: {found}")
        return
    st.markdown(f"**Reference cells:** the training cells nearest to this one in {base.model_name(key)}'s feature "
                "space, per class (the distance is in standardised feature units)")
    shown = [(cls, n) for cls in ("ALL", "HEM") for n in found[cls]]
    for column, (cls, n) in zip(st.columns(max(1, len(shown))), shown):
        patient = n.subject if PLAIN_ID.fullmatch(n.subject) else "?"
        caption = f"{cls} (training), patient {patient}, distance {n.distance:.1f}"
        picture = ui.thumbnail(view["stamp"], n.path)
        if picture is None:
            column.caption(f"{caption}: the image is not available here")
        else:
            column.image(picture, caption=caption, width="stretch", alt=f"Reference training cell: {caption}")


def examples_row() -> None:
    """The generated examples a first-time visitor can try with one click (chosen one stays until cleared)."""
    names = answer_view.example_names()
    st.caption("No file at hand? Try a generated example (synthetic smears drawn by this program, not patients):")
    for i, (column, name) in enumerate(zip(st.columns(len(names)), names)):
        column.image(answer_view.example_preview(name), caption=name, width="stretch",
                     alt=f"Preview of the {name}: a synthetic smear crop drawn by this program")
        if column.button("Try this generated example", key=f"example_{i}", width="stretch"):
            st.session_state["example"] = name
    if st.session_state.get("example") in names:
        chosen, clear = st.columns([3, 1])
        chosen.info(f"Showing {st.session_state['example']} (synthetic).")
        if clear.button("Clear the example", key="clear_example"):
            st.session_state["example"] = None


def page() -> None:
    data = ui.start("Classify a cell", notice=ui.RESEARCH_ONLY)
    line = st.empty()  # "k of n models ready", filled once the page knows whether it has anything to classify
    inputs = dropped_files()
    examples_row()
    prep, scale = st.columns(2)
    with prep:
        prepare = ui.toggle("Prepare smear crops (find white cells)", "prepare", True,
                            help="Find each white cell, rescale the crop to C-NMC's scale, black out the rest and "
                                 "centre the cell; off: classify each image as it is. C-NMC frames pass through as "
                                 "they are either way.")
    um_per_px = scale.number_input("Micrometres per pixel (optional)", min_value=0.005, max_value=5.0, value=None,
                                   step=0.001, format="%.4f", key="um_per_px", disabled=not prepare,
                                   help="The upload's scale; empty: measured from its red cells (7.5 µm each).")
    left, right = st.columns(2)
    cam = ui.choice("Where each model looked", CAM_CHOICES, "cam", CAM_CHOICES[0], container=left,
                    format_func=lambda m: "no heatmaps" if m == OFF else classify_view.CAM_METHODS[m],
                    help="Grad-CAM on each model's last convolutional block "
                         "(Score-CAM is slower: 64 masked passes per model).")
    opacity = ui.slider("Heatmap opacity", "opacity", 0.0, 1.0, classify_view.DEFAULT_OPACITY, 0.05, container=right,
                        disabled=cam == OFF)
    keys = list(data.models)
    records = ui.view(answer_view.track_records, data)
    best = answer_view.best_model(records, keys)
    reference_model = st.selectbox(
        "Reference cells from the feature space of", [*keys, NO_REFERENCES], key="reference_model",
        index=keys.index(best) if best in keys else len(keys),
        format_func=lambda k: "no reference cells" if k == NO_REFERENCES else base.model_name(k),
        help="The nearest training cells of each class, as that model sees them (default: the best validation AUC)")
    if st.session_state.get("example") in answer_view.example_names():
        inputs.append(answer_view.example_upload(st.session_state["example"]))
    # live while the models load in the background; drawn once when there are files: the page then waits for the
    # models, and redraws the line when it has them
    ui.models_ready(data, line, live=not inputs)
    if not inputs:
        st.caption("Upload images to see P(ALL) from each model, their mean (the ensemble), how many agree, and "
                   "where each looked.")
        st.caption(ui.RESEARCH_ONLY)
        return
    try:
        models = predictor(data.stamp)
    except (FileNotFoundError, ValueError) as e:
        st.error(f"The models of study {ui.code(data.name)} cannot be loaded: {ui.code(str(e).splitlines()[0])}")
        return
    ui.redraw_models_line(line, data)

    summary = st.container()  # filled once every file is done: the batch summary, the table, the download
    st.caption(answer_view.record_note(records))
    if cam != OFF and (seconds := classify_view.heatmap_estimate(cam, len(inputs), len(models.models))):
        st.warning(f"{classify_view.CAM_METHODS[cam]} on {len(inputs)} file(s) and {len(models.models)} models "
                   f"takes about {seconds:.0f} s or more on a 2-core machine (measured); each file's result is shown "
                   "first, its heatmaps after. Grad-CAM takes a fraction of that.", icon="⏱️")
    if cam != OFF:
        st.image(classify_view.colour_bar(),
                 caption=f"{classify_view.CAM_METHODS[cam]} colours: where the evidence for the class shown is "
                         "strongest", alt="Colour scale of the heatmaps, from no evidence to the strongest")
        st.caption(gallery_view.HEAT_RULE)
        if untrained := gallery_view.untrained_note(data):
            st.info(untrained, icon="ℹ️")
    view = {"models": models, "records": records, "reference_model": reference_model, "stamp": data.stamp,
            "opacity": opacity}
    results = []
    progress = st.progress(0.0, text=f"Classifying {len(inputs)} file(s) …")
    for i, (name, content) in enumerate(inputs):  # each file's result is drawn as soon as it is ready
        progress.progress(i / len(inputs), text=f"Classifying file {i + 1} of {len(inputs)} …")
        key = (data.stamp, content, name, prepare, um_per_px if prepare else None)
        out = classify(*key, models)
        results += [cell.result for cell in out.cells]
        areas = show_upload(name, out, view)
        if cam != OFF:
            progress.progress((i + 0.5) / len(inputs), text=f"Heatmaps of file {i + 1} of {len(inputs)} …")
            for area, cell, maps in zip(areas, out.cells, heatmaps(*key, cam, models, out)):
                with area:
                    show_heatmaps(cell, maps, view)
    progress.empty()
    with summary:
        if len(results) > 1:
            st.header("All files")  # every result of every upload (tests name this heading)
            st.markdown(f"**{answer_view.batch_summary(results)}**")
            st.dataframe(classify_view.results_frame(results), hide_index=True, width="stretch")
        export = ui.csv_safe(answer_view.export_frame(models, results))
        st.download_button("Download the results (CSV: study, config hash, time, research-use and synthetic flags)",
                           export.to_csv(index=False), "cnmc_predictions.csv", "text/csv", icon="⬇️", key="export")
    st.caption(ui.RESEARCH_ONLY)


ui.run(page)
