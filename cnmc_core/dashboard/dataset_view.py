"""The Dataset page: class balance and subjects per split, sample cells of each class, excluded files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .base import CLASSES, StudyData

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


@dataclass
class DatasetView:
    balance: pd.DataFrame  # Split, Class, Images
    subjects: pd.DataFrame  # Split, ALL subjects, HEM subjects, Subjects
    samples: dict[str, pd.DataFrame]  # class -> image (its identity: the path as split.csv writes it), subject;
    #                                   one image per subject where possible (thumbnails.thumbnail draws one)
    excluded: pd.DataFrame  # path, reason


def dataset_view(data: StudyData, per_class: int = 8) -> DatasetView:
    s = data.split
    labelled = s[s["split"].isin(["train", "val"]) & s["label"].astype(str).isin(["0", "1"])].copy()
    labelled["Class"] = np.where(labelled["label"].astype(str) == "1", "ALL", "HEM")
    balance = labelled.groupby(["split", "Class"]).size().rename("Images").reset_index()
    unlabelled = s[s["split"] == "test"]
    if len(unlabelled):
        test = pd.DataFrame([{"split": "test", "Class": "unlabelled", "Images": len(unlabelled)}])
        balance = pd.concat([balance, test])
    balance = balance.rename(columns={"split": "Split"}).sort_values("Split", key=_in_split_order)
    balance = balance.reset_index(drop=True)
    known = s[(s["split"] != "excluded") & (s["subject"].astype(str) != "")]
    cls = known["label"].astype(str).map({"1": "ALL", "0": "HEM"}).fillna("unlabelled")
    subjects = known.assign(Class=cls).groupby(["split", "Class"])["subject"].nunique().unstack(fill_value=0)
    subjects = subjects.rename(columns=lambda c: f"{c} subjects").rename_axis(columns=None)
    subjects["Subjects"] = known.groupby("split")["subject"].nunique()
    subjects = subjects.reset_index().rename(columns={"split": "Split"}).sort_values("Split", key=_in_split_order)
    samples = {}
    for cls in CLASSES:
        part = labelled[labelled["Class"] == cls]
        firsts = part.drop_duplicates("subject")
        pick = pd.concat([firsts, part.drop(firsts.index)]).head(per_class)
        samples[cls] = pick[["path", "subject"]].rename(columns={"path": "image"}).astype(str).reset_index(drop=True)
    excluded = s.loc[s["split"] == "excluded", ["path", "reason"]].reset_index(drop=True)
    return DatasetView(balance, subjects.reset_index(drop=True), samples, excluded)


def _in_split_order(column: pd.Series) -> pd.Series:
    return column.map(SPLIT_ORDER)
