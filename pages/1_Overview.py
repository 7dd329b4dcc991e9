"""Overview: what the study is, and the metrics of all its models beside the paper's Table I."""

import pandas as pd
import streamlit as st

from cnmc_core import results
from pages import _ui as ui


def best_style(table: pd.DataFrame, best: dict[str, list[str]]):
    """Green and bold for the best of this study's models in each metric column."""

    def column(col: pd.Series) -> list[str]:
        winners = best.get(col.name, [])
        ours = table["Source"] == results.OURS
        return ["background-color: rgba(33, 195, 84, 0.25); font-weight: bold"
                if o and m in winners else "" for o, m in zip(ours, table["Model"])]

    numbers = {label: "{:.3f}" for label in results.METRICS.values()} | {"Threshold": "{:.2f}"}
    return table.style.apply(column, subset=list(best)).format(numbers, na_rep="—")


def page() -> None:
    data = ui.start("Overview", home=True)
    with_paper = ui.toggle("Show the paper's Table I as reference rows", "paper", True)
    view = ui.view(results.overview, data, with_paper)

    st.subheader(f"Study `{data.name}`")
    facts, splits = st.columns([3, 2])
    facts.markdown("\n".join(f"- **{k}:** {v}" for k, v in view.facts.items()))
    splits.dataframe(view.splits, hide_index=True, width="stretch")
    splits.caption(f"Images and subjects per split ({int(view.splits['images'].sum())} images). "
                   "Splits are by subject: no person is in two splits.")

    st.subheader("Metrics on the validation split")
    st.dataframe(best_style(view.table, view.best), hide_index=True, width="stretch", placeholder="—",
                 height=35 * (len(view.table) + 1) + 3)  # every row visible, no inner scrolling
    st.caption(
        "ALL (leukemic lymphoblast) is the positive class; recall is sensitivity for ALL. Green: the best of this "
        "study's models per column. Click a column header to sort. "
        + ("The paper's rows report only accuracy, precision and recall (its Table I)." if with_paper else "")
    )
    st.download_button("Download the table as CSV", view.csv, file_name=f"{data.name}_metrics.csv", mime="text/csv", icon=":material/download:")


ui.run(page)
