"""Subject-level cross-validation of the head on cached features (`train --split cv`).

The validation split scores the model trained on all training subjects, as without cv. Beside it,
the head is trained K more times, each time on the training subjects of K-1 folds, and predicts the
cells of the fold it did not see: an out-of-fold P(ALL) for every training cell (models/<key>/oof.csv,
with its `fold`). The base is frozen, so its features are cached already: cross-validation costs K head
trainings and no pass of the base. With a fine-tuning preset only the head is cross-validated (on the
frozen base's features); `scope` says so.

From the out-of-fold predictions: the decision threshold (with `threshold = "train"`), instead of the
head's in-sample predictions; the patient share threshold (analysis.py); and the `cv` block of
metrics.json: pooled metrics over all training subjects with class-stratified subject-bootstrap
intervals, and each fold's figures with their spread.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .artifacts import ArtifactError, check_predictions
from .config import StudyConfig
from .disk import write_csv
from .evaluation import classification_metrics
from .head import head_probabilities
from .splits import cv_folds, inner_slice
from .stats import N_BOOT, class_stratified_cis
from .store import StudyStore

OOF_FILE = "oof.csv"  # in models/<key>/: path, subject, label, prob_all, fold
OOF_COLUMNS = ("path", "subject", "label", "prob_all", "fold")
FOLD_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
POOLED_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "roc_auc")


def out_of_fold(train_feats: np.ndarray, labels: np.ndarray, subjects, folds: np.ndarray, config: StudyConfig,
                eval_views: int = 1) -> np.ndarray:
    """P(ALL) of every training cell from the head trained without its fold: (n,), the mean over `eval_views`.

    train_feats: (n, views, features) as `training.train_head` takes them. Each fold's head stops by the
    study's rule: with "inner", on an inner slice of that head's own training subjects; with "val" or
    "val_best", on the held-out fold (which then chose its epoch: `cv_record` says so).
    """
    from . import training  # (lazy: it imports Keras)

    labels, subjects, folds = np.asarray(labels).astype(int), np.asarray(subjects).astype(str), np.asarray(folds)
    oof = np.full(len(labels), np.nan)
    for fold in np.unique(folds):
        held, fit = folds == fold, folds != fold
        inner = inner_slice(subjects[fit], labels[fit], seed=config.seed) if config.stopping == "inner" else None
        head = training.train_head(train_feats[fit], labels[fit], train_feats[held][:, 0], labels[held], config, inner)
        oof[held] = head_probabilities(train_feats[held][:, :eval_views], head).mean(axis=1)
    return oof


def cv_record(config: StudyConfig, folds: np.ndarray, source: str) -> dict:
    """What metrics.json's `cv` block says about how the cross-validation was made (analysis adds the figures)."""
    return {
        "folds": int(len(np.unique(folds))),
        "fold_source": source,
        "scope": ("the head only, on the frozen base's cached features (the fine-tuned base is not cross-validated)"
                  if config.finetune else "the whole model (the base is frozen: the head is all that is trained)"),
        "stopping": ("an inner slice of each fold's training subjects" if config.stopping == "inner"
                     else "the held-out fold's loss (it chose its own epoch: optimistic)"),
    }


def cv_figures(oof: pd.DataFrame, threshold: float, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The figures of the `cv` block from oof.csv at the model's `threshold` (JSON-able).

    n_subjects, n_cells, n_all_subjects, n_hem_subjects; `pooled` {metric: value} over every training cell;
    `ci95` / `ci_replicates` / `ci_method` (class-stratified subject bootstrap); `per_fold`: one row per fold
    (fold, n_subjects, n_cells and FOLD_METRICS, None where undefined); `spread` {metric: {mean, sd, min, max}}
    over the folds.
    """
    y = oof["label"].to_numpy(dtype=int)
    p = oof["prob_all"].to_numpy(dtype=float)
    subjects = oof["subject"].astype(str).to_numpy()
    pooled = classification_metrics(y, p, threshold)
    cis = class_stratified_cis(y, p, subjects, threshold, n_boot, seed)
    per_fold = []
    for fold, part in oof.groupby("fold", sort=True):
        m = classification_metrics(part["label"].to_numpy(dtype=int), part["prob_all"].to_numpy(dtype=float),
                                   threshold)
        per_fold.append({"fold": int(fold), "n_subjects": int(part["subject"].nunique()), "n_cells": int(len(part)),
                         **{k: _number(m.get(k)) for k in FOLD_METRICS}})
    spread = {}
    for k in FOLD_METRICS:
        values = np.array([f[k] for f in per_fold if f[k] is not None], dtype=float)
        spread[k] = ({"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                      "min": float(values.min()), "max": float(values.max())} if len(values) else None)
    subject_class = oof.groupby(oof["subject"].astype(str))["label"].first()
    return {
        "n_subjects": int(len(subject_class)), "n_cells": int(len(oof)),
        "n_all_subjects": int((subject_class == 1).sum()), "n_hem_subjects": int((subject_class == 0).sum()),
        "threshold": float(threshold),
        "pooled": {k: _number(pooled.get(k)) for k in POOLED_METRICS},
        "ci95": cis["ci95"], "ci_replicates": cis["replicates"], "ci_method": cis["method"],
        "per_fold": per_fold, "spread": spread,
    }


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def run(store: StudyStore, key: str, train: pd.DataFrame, train_feats: np.ndarray, labels: np.ndarray,
        config: StudyConfig, eval_views: int = 1) -> tuple[pd.DataFrame, dict] | None:
    """With `config.split == "cv"`: (the oof.csv frame, the `cv` record) of model `key`, oof.csv saved; else
    None, and an oof.csv left by an earlier cross-validated run of the model removed.

    `train`: the training rows of split.csv (path, subject, group, …), in the order of `train_feats`.
    """
    if config.split != "cv":
        store.model_file(key, OOF_FILE).unlink(missing_ok=True)
        return None
    folds, source = cv_folds(train["subject"], labels, train["group"], seed=config.seed)
    views = min(eval_views, train_feats.shape[1])
    oof = out_of_fold(train_feats, labels, train["subject"], folds, config, views)
    frame = pd.DataFrame({"path": train["path"], "subject": train["subject"].astype(str), "label": labels,
                          "prob_all": oof, "fold": folds})
    write_csv(store.model_file(key, OOF_FILE), frame)
    return frame, cv_record(config, folds, source)


def read(store: StudyStore, key: str) -> pd.DataFrame | None:
    """models/<key>/oof.csv through the predictions' checks (and a fold per row), or None when there is none."""
    path = store.model_file(key, OOF_FILE)
    if not path.is_file():
        return None
    label = store.label(path)
    try:
        frame = pd.read_csv(path, dtype={"subject": str})
    except (ValueError, OSError) as e:
        raise ArtifactError(label, f"cannot be read ({str(e).splitlines()[0][:200] if str(e) else e})") from None
    frame = check_predictions(frame, label)
    if "fold" not in frame.columns or pd.to_numeric(frame["fold"], errors="coerce").isna().any():
        raise ArtifactError(label, "needs a whole-number fold in every row")
    return frame.astype({"fold": int})
