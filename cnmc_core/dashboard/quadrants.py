"""Confusion matrices, and the validation cells behind one quadrant of a model's matrix.

A quadrant is (true class, called class); its images are named by their path as split.csv writes it
(the row's identity), and `thumbnails.thumbnail(stamp, image)` draws one. `Matrix` is in base: the
threshold page draws one too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .base import CLASSES, Matrix, StudyData, matrix, threshold_of

QUADRANTS = {  # (true, called) -> what a hematologist calls that quadrant of the matrix
    ("ALL", "HEM"): "false negatives: ALL called HEM (missed leukemia)",
    ("HEM", "ALL"): "false positives: HEM called ALL",
    ("ALL", "ALL"): "true positives: ALL called ALL",
    ("HEM", "HEM"): "true negatives: HEM called HEM",
}
QUADRANT_CODES = {"fn": ("ALL", "HEM"), "fp": ("HEM", "ALL"), "tp": ("ALL", "ALL"), "tn": ("HEM", "HEM")}  # in links


def quadrant_code(true: str, called: str) -> str | None:
    """The link code of the quadrant (true class, called class), e.g. ("ALL", "HEM") -> "fn"; None for anything else."""
    return next((code for code, pair in QUADRANT_CODES.items() if pair == (true, called)), None)


def confusion(data: StudyData) -> dict[str, Matrix]:
    """The saved confusion matrix of each model (at its saved threshold), counts and row rates."""
    return {k: matrix(k, data.metrics[k]["confusion_matrix"], threshold_of(data.metrics[k])) for k in data.evaluated}


@dataclass
class QuadrantImages:
    total: int  # validation images in the quadrant
    rows: pd.DataFrame  # image (its identity: the path as split.csv writes it), subject, prob_all:
    #                     the first `limit`, most confidently called first (thumbnails.thumbnail draws one)


def quadrant_images(data: StudyData, key: str, true: str, predicted: str, limit: int = 24) -> QuadrantImages:
    """Validation images of one model's confusion-matrix quadrant (true class, called class)."""
    if true not in CLASSES or predicted not in CLASSES:
        raise ValueError(f"true and predicted must be one of {CLASSES}; got {true!r}, {predicted!r}")
    p = data.predictions[key]
    threshold = threshold_of(data.metrics[key])
    called = np.where(p["prob_all"].to_numpy() >= threshold, "ALL", "HEM")
    truth = np.where(p["label"].astype(int).to_numpy() == 1, "ALL", "HEM")
    rows = p[(truth == true) & (called == predicted)]
    rows = rows.sort_values("prob_all", ascending=predicted == "HEM")[["path", "subject", "prob_all"]]
    rows = rows.rename(columns={"path": "image"}).astype({"image": str, "subject": str})
    return QuadrantImages(len(rows), rows.head(limit).reset_index(drop=True))
