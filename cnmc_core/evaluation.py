"""Metrics of one model on one split, with ALL (label 1) as the positive class.

Conventions (the same in metrics.json, the dashboard and the CLI):
- `confusion_matrix` is [[tn, fp], [fn, tp]]: rows are the true class (HEM, ALL), columns the
  predicted one. A true negative is a normal cell called normal.
- A cell is called ALL when P(ALL) >= threshold (0.5 by default).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from .stats import reliability


def classification_metrics(labels: np.ndarray, prob_all: np.ndarray, threshold: float = 0.5) -> dict:
    """accuracy, balanced_accuracy, precision, recall, f1, specificity, roc_auc, f1_weighted, brier,
    ece (10 equal-width bins) with its reliability bins, threshold, confusion_matrix, n."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(prob_all, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and probabilities must be 1-d and of one length; got {y.shape} and {p.shape}")
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-class splits: undefined metrics are reported as 0 / None
        out = {
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if len(set(y)) > 1 else None,
            "precision": float(skm.precision_score(y, pred, zero_division=0)),
            "recall": float(skm.recall_score(y, pred, zero_division=0)),
            "f1": float(skm.f1_score(y, pred, zero_division=0)),
            "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
            "roc_auc": float(skm.roc_auc_score(y, p)) if len(set(y)) > 1 else None,
            # The challenge ranked entries by F1 weighted over both classes.
            "f1_weighted": float(skm.f1_score(y, pred, average="weighted", zero_division=0)),
            "brier": float(skm.brier_score_loss(y, p, pos_label=1)) if len(y) else None,
        }
    out["ece"], out["reliability"] = reliability(y, p)
    out.update(
        {
            "threshold": float(threshold),
            "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
            "n": int(len(y)),
        }
    )
    return out
