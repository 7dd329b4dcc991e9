"""Dataset: class balance and subjects per split, sample cells of each class, excluded files and why."""

import altair as alt
import streamlit as st

from cnmc_core.dashboard import dataset_view, thumbnails
from views import _ui as ui

CLASS_COLORS = ui.palette.CLASS_COLORS  # the classes' own colours: never a model's, never the accent


def balance_chart(counts) -> alt.LayerChart:
    """Grouped bars (Split, Class, Images), each labelled with its count, in the classes' colours.

    Vega-Lite (Altair), not plotly, as on the Overview: plotly.js was most of a simple page's drawing time
    (docs/benchmarks.md section 5)."""
    classes = list(dict.fromkeys(counts["Class"]))
    shades = [CLASS_COLORS.get(c, CLASS_COLORS["unlabelled"]) for c in classes]  # (grey: not ALL or HEM)
    colour = alt.Color("Class:N", scale=alt.Scale(domain=classes, range=shades),
                       legend=alt.Legend(orient="top", title=None))
    bars = alt.Chart(counts).encode(x=alt.X("Split:N", sort=list(dict.fromkeys(counts["Split"])), title=None,
                                            axis=alt.Axis(labelAngle=0)),
                                    xOffset=alt.XOffset("Class:N", sort=classes), y=alt.Y("Images:Q"),
                                    tooltip=["Split:N", "Class:N", "Images:Q"])
    totals = counts.groupby("Class", sort=False)["Images"].sum()
    return alt.layer(bars.mark_bar().encode(color=colour), bars.mark_text(dy=-7, aria=False).encode(text="Images:Q")
                     ).properties(height=320, description="Images per class and split: " + "; ".join(
                         f"{r.Split} {r.Class} {int(r.Images)}" for r in counts.itertuples()) + ". In all: "
                         + ", ".join(f"{cls} {int(n)}" for cls, n in totals.items()))


def page() -> None:
    data = ui.start("Dataset")
    view = ui.view(dataset_view.dataset_view, data, 8)

    balance, subjects = st.columns(2)
    balance.markdown("**Images per class and split**")
    balance.altair_chart(balance_chart(view.balance), key="balance")
    subjects.markdown("**Subjects (people) per split**")
    subjects.dataframe(view.subjects, hide_index=True, width="stretch")
    subjects.caption("Every split is by subject: all cells of one person are in one split. "
                     "C-NMC's normal subjects carry an H (H11 is not subject 11). The final test set is unlabelled.")

    st.header("Sample cells")
    source = ui.view(thumbnails.image_source, data)
    if not source.available:
        ui.no_images(source, "sample cells")
    else:
        st.caption("One cell per subject where possible; the whole 450×450 frame, as the models see it "
                   "(never cropped).")
        for cls, rows in view.samples.items():
            st.markdown(f"**{cls}** ({'malignant lymphoblast' if cls == 'ALL' else 'normal B cell'})")
            for col, row in zip(st.columns(8), rows.itertuples()):
                png = ui.thumbnail(data.stamp, row.image)
                subject = ui.code(row.subject)  # from the study's split.csv
                if png:
                    col.image(png, caption=f"subject {subject}", width="stretch",
                              alt=f"A {cls} cell of subject {row.subject}")
                else:
                    col.caption(f"subject {subject}: unreadable, or outside the trusted data folders")

    st.header(f"Excluded files ({len(view.excluded)})")
    if len(view.excluded):
        excluded = view.excluded.rename(columns={"path": "File", "reason": "Why it was left out"})
        st.dataframe(excluded, hide_index=True, width="stretch")
    else:
        st.caption("No file was excluded.")


ui.run(page)
