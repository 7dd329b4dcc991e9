"""Feature space: a 2-D map of the validation cells' pooled features for every model, side by side (the same cells,
the same colours), with how well each map separates the classes and how much it groups cells by patient."""

import streamlit as st

from cnmc_core.dashboard import base, feature_space, thumbnails
from views import _ui as ui

PER_ROW = 3
SELECTED = "_fs_cell"  # the row of the cell last clicked in any map


def remember_click(chart_key: str) -> None:
    points = st.session_state[chart_key].selection.points
    if points and isinstance(points[0].get("customdata"), list) and points[0]["customdata"]:
        st.session_state[SELECTED] = int(points[0]["customdata"][0])


def compute_button(data: base.StudyData, unmapped: list[str]) -> None:
    names = ", ".join(ui.code(base.model_name(k)) for k in unmapped)
    st.info(f"No current feature-space maps for {names}: this study was made before they existed, or the model "
            f"was retrained since. They are computed once and saved with the study ({feature_space.COMPUTE_COST}); "
            "a rerun of the study's command makes them too.")
    if st.button("Compute the maps now", key="fs_compute", icon="🗺️"):
        with st.spinner("Computing the maps (features from the cache, then PCA, t-SNE and their scores)…"):
            try:
                problems = {k: why for k, why in feature_space.compute_maps(data).items() if why}
            except ValueError as e:  # the study is being written, or its folder cannot be written
                st.error(f"The maps could not be computed: {ui.code(str(e).splitlines()[0])}")
                return
        for key, why in problems.items():
            st.warning(f"{ui.code(base.model_name(key))}: {ui.code(why)}")
        if not problems:
            st.rerun()


def numbers(column, panel: feature_space.Panel) -> None:
    for score in feature_space.scores(panel):
        column.markdown(f"**{score.label}: {score.value}**  \n{score.caption}")
        column.caption(score.detail)


def page() -> None:
    data = ui.start("Feature space")
    left, right = st.columns(2)
    method = ui.choice("Map", list(feature_space.METHODS), "map", "tsne", container=left,
                       format_func=feature_space.METHODS.get)
    colour_by = ui.choice("Colour by", list(feature_space.COLOUR_BY), "colour", "class", container=right,
                          format_func=feature_space.COLOUR_BY.get)
    space = ui.view(feature_space.feature_space, data, method, feature_space.files_stamp(data))
    if space.unmapped:
        compute_button(data, space.unmapped)
    for key, why in space.missing.items():
        st.warning(f"{ui.code(base.model_name(key))}: {ui.code(why)}")
    if not space.panels:
        return

    st.caption(
        f"What each model's frozen base makes of the {space.n_cells:,} validation cells of {space.n_subjects} "
        f"patients: its pooled features flattened to two dimensions by {feature_space.METHODS[method]}, one panel "
        "per model. Every panel holds the same cells in the same colours, so differences are the architectures'. "
        + ("Distances between clumps on a t-SNE map mean little; who sits next to whom does."
           if method == "tsne" else "PCA keeps the two directions of largest variance, shown in the axis titles."))
    if method == "tsne" and space.subsample:
        st.info(f"t-SNE ran on a class-stratified subsample of {space.subsample:,} of the {space.n_cells:,} cells "
                f"(at most {feature_space.TSNE_CAP:,}, to keep the study's time in minutes), the same cells in every "
                "panel; its numbers are for those cells. PCA maps every cell.")
    if colour_by == "subject":
        st.caption("Each patient has its own colour, the same in every panel (colours repeat beyond 48 patients); "
                   "hover a cell for its patient.")
    elif colour_by in ("call", "correct"):
        st.caption(f"The call is each model's own, at its threshold ({feature_space.threshold_text(data)}).")

    keys = list(space.panels)
    for start in range(0, len(keys), PER_ROW):
        row = keys[start:start + PER_ROW]
        chart_key = f"fs_row_{start // PER_ROW}"
        st.plotly_chart(feature_space.row_figure(space, row, colour_by, PER_ROW), key=chart_key,
                        on_select=lambda k=chart_key: remember_click(k), selection_mode="points",
                        config={"displayModeBar": False})
        for column, key in zip(st.columns(PER_ROW), row):
            numbers(column, space.panels[key])

    st.header("One cell")
    row = st.session_state.get(SELECTED)
    if not isinstance(row, int) or not 0 <= row < space.n_cells:
        st.caption("Click a cell in any map to see it here, with every model's P(ALL).")
        return
    chosen = feature_space.cell(space, row)
    left, right = st.columns([1, 3])
    png = ui.thumbnail(data.stamp, chosen["image"]) if ui.view(thumbnails.image_source, data).available else None
    if png:
        left.image(png, width="stretch")
    else:
        left.caption("(the image is not shown: it is not in a data folder this machine trusts)")
    right.markdown(f"Patient {ui.code(chosen['subject'])} · file {ui.code(chosen['file'])} · true class "
                   f"**{chosen['label']}**")
    right.dataframe(chosen["models"], hide_index=True, column_config={
        "P(ALL)": st.column_config.NumberColumn(format="%.3f")})


ui.run(page)
