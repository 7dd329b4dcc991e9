"""Training curves, ROC and precision-recall curves, calibration (base.reliability_frame), and one
model at any threshold."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sklearn import metrics as skm

from ..analysis import stopping_of, stopping_sentence
from ..evaluation import classification_metrics
from .base import METRICS, Matrix, StudyData, matrix, model_name, reliability_frame, section

INNER = "inner slice"  # the split label of the held-out training patients that chose the epoch (stopping "inner")
CHOOSERS = {"inner": INNER, "validation": "validation"}  # analysis.Stopping.curve -> split label


@dataclass
class Curves:
    frame: pd.DataFrame  # Model, epoch, metric (loss|accuracy), split (train|INNER|validation), value
    # Model, epoch (kept), chosen_on (INNER|validation), loss, accuracy (of the curve that chose, at the kept
    # epoch), val_loss, val_accuracy (validation's at the kept epoch)
    best: pd.DataFrame
    sentence: str = ""  # which data chose the kept epochs, and whether the validation figures are optimistic
    # (one sentence per rule, with the models' names when the models of the study differ)


CURVE_COLUMNS = {"train": "{}", INNER: "inner_{}", "validation": "val_{}"}  # split -> history.csv column


def training_curves(data: StudyData) -> Curves:
    """Each model's curves per epoch, and its kept epoch (metrics.json `best_epoch`) on the curve whose loss chose
    it (analysis.stopping_of): the inner slice's with `inner`, else validation's."""
    parts, best, rules = [], [], {}
    patience = section(data.info, "config").get("patience")
    for key in data.models:
        h, name, stopping = data.history[key], model_name(key), stopping_of(data.metrics[key])
        rules.setdefault(stopping_sentence(stopping, patience if isinstance(patience, int) else None), []).append(name)
        for metric in ("loss", "accuracy"):
            for split, col in CURVE_COLUMNS.items():
                if col.format(metric) in h and "epoch" in h:
                    parts.append(pd.DataFrame({"Model": name, "epoch": h["epoch"], "metric": metric, "split": split,
                                               "value": h[col.format(metric)]}))
        epoch = data.metrics[key].get("best_epoch")
        chooser = CURVE_COLUMNS[CHOOSERS[stopping.curve]]
        needed = {"epoch", chooser.format("loss"), chooser.format("accuracy"), "val_loss", "val_accuracy"}
        row = h[h["epoch"] == epoch] if needed <= set(h.columns) else h.iloc[:0]
        if len(row):
            at = row.iloc[0]
            best.append({"Model": name, "epoch": int(epoch), "chosen_on": CHOOSERS[stopping.curve],
                         "loss": float(at[chooser.format("loss")]), "accuracy": float(at[chooser.format("accuracy")]),
                         "val_loss": float(at["val_loss"]), "val_accuracy": float(at["val_accuracy"])})
    frame = _concat(parts, ["Model", "epoch", "metric", "split", "value"])
    sentence = " ".join(text if len(rules) == 1 else f"{', '.join(names)}: {text}" for text, names in rules.items())
    if any("stage" in data.history[k] and (data.history[k]["stage"] == "finetune").any() for k in data.models):
        sentence += " The same loss decided whether the fine-tuning epochs were kept or the head alone was."
    return Curves(frame, pd.DataFrame(best, columns=["Model", "epoch", "chosen_on", "loss", "accuracy", "val_loss",
                                                     "val_accuracy"]), sentence)


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
