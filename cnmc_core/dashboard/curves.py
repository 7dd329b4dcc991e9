"""Training curves, ROC and precision-recall curves, calibration (base.reliability_frame), and one
model at any threshold."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sklearn import metrics as skm

from ..evaluation import classification_metrics
from .base import METRICS, Matrix, StudyData, matrix, model_name, reliability_frame


@dataclass
class Curves:
    frame: pd.DataFrame  # Model, epoch, metric (loss|accuracy), split (train|validation), value
    best: pd.DataFrame  # Model, epoch, loss, accuracy: the validation values at the kept (best) epoch


def training_curves(data: StudyData) -> Curves:
    parts, best = [], []
    for key in data.models:
        h, name = data.history[key], model_name(key)
        for metric in ("loss", "accuracy"):
            for split, col in (("train", metric), ("validation", f"val_{metric}")):
                if col in h and "epoch" in h:
                    parts.append(pd.DataFrame({"Model": name, "epoch": h["epoch"], "metric": metric, "split": split,
                                               "value": h[col]}))
        epoch = data.metrics[key].get("best_epoch")
        row = h[h["epoch"] == epoch] if {"epoch", "val_loss", "val_accuracy"} <= set(h.columns) else h.iloc[:0]
        if len(row):
            best.append({"Model": name, "epoch": int(epoch), "loss": float(row["val_loss"].iloc[0]),
                         "accuracy": float(row["val_accuracy"].iloc[0])})
    frame = _concat(parts, ["Model", "epoch", "metric", "split", "value"])
    return Curves(frame, pd.DataFrame(best, columns=["Model", "epoch", "loss", "accuracy"]))


@dataclass
class RocPr:
    roc: pd.DataFrame  # Model, fpr, tpr
    pr: pd.DataFrame  # Model, recall, precision
    calibration: pd.DataFrame  # Model, low, high, n, predicted (mean P(ALL) in the bin), observed (share ALL)
    auc: dict[str, float]  # model name -> ROC AUC
    ap: dict[str, float]  # model name -> average precision (area under the PR curve)
    skipped: list[str]  # models whose validation set holds one class only
    ece: dict[str, float] = field(default_factory=dict)  # model name -> expected calibration error


def roc_pr(data: StudyData) -> RocPr:
    """ROC and PR curves of every row (the ensemble too), and their calibration."""
    roc, pr, auc, ap, skipped, shown = [], [], {}, {}, [], []
    for key in data.evaluated:
        name, p = model_name(key), data.predictions[key]
        y, s = p["label"].astype(int).to_numpy(), p["prob_all"].to_numpy(dtype=float)
        if len(set(y)) < 2:
            skipped.append(name)
            continue
        fpr, tpr, _ = skm.roc_curve(y, s)
        precision, recall, _ = skm.precision_recall_curve(y, s)
        auc[name], ap[name] = float(skm.roc_auc_score(y, s)), float(skm.average_precision_score(y, s))
        roc.append(pd.DataFrame({"Model": name, "fpr": fpr, "tpr": tpr}))
        pr.append(pd.DataFrame({"Model": name, "recall": recall, "precision": precision}))
        shown.append(key)
    calibration, ece = reliability_frame(data, shown)
    return RocPr(_concat(roc, ["Model", "fpr", "tpr"]), _concat(pr, ["Model", "recall", "precision"]),
                 calibration, auc, ap, skipped, ece)


@dataclass
class AtThreshold:
    matrix: Matrix
    metrics: dict[str, float | None]  # metric label -> value at this threshold
    saved: dict[str, float | None]  # metric label -> value at the saved threshold (metrics.json)


def at_threshold(data: StudyData, key: str, threshold: float) -> AtThreshold:
    """One model's confusion matrix and metrics if a cell were called ALL when P(ALL) >= threshold."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1; got {threshold}")
    p = data.predictions[key]
    m = classification_metrics(p["label"].astype(int).to_numpy(), p["prob_all"].to_numpy(dtype=float), float(threshold))
    saved = data.metrics[key]
    return AtThreshold(
        matrix(key, m["confusion_matrix"], threshold),
        {label: m.get(k) for k, label in METRICS.items()},
        {label: _number_or_none(saved.get(k)) for k, label in METRICS.items()},
    )


def _number_or_none(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
