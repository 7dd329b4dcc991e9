"""Subject-level comparisons of models, and patient-level results: a hematologist diagnoses a patient, not a cell.

`compare_models_by_subject` compares every pair of models on the same cells with the subject-level
sign-flip test as the headline, each model called at its own threshold, cell-level McNemar beside it.

Patient-level results give each subject two scores from its cells: the share of cells called ALL (at
the model's own cell threshold) and the mean P(ALL). A patient is called ALL when its share reaches
a share threshold chosen on training-side patients, never on the patients it is scored on. Intervals
resample patients within each class (`stats.bootstrap_weights` with strata), so every replicate keeps
both classes, and every result says how many patients it rests on. Why: docs/statistics.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np
import pandas as pd

from .stats import (
    COMPARISON_COLUMNS,
    N_BOOT,
    N_PERMUTATIONS,
    align_predictions,
    bootstrap_weights,
    compare_models,
    holm,
    per_model_thresholds,
    percentile_intervals,
    subject_differences,
    subject_sign_flip_test,
    weighted_auc,
    weighted_metrics,
)

SUBJECT_COLUMNS = ("threshold_a", "threshold_b", "n_subjects", "n_cells", "subject_diff", "subject_diff_low",
                   "subject_diff_high", "subjects_a_better", "subjects_b_better", "p_subject", "p_subject_holm",
                   "subject_method")
PATIENT_COLUMNS = ("subject", "label", "cells", "share_all", "mean_prob_all")
PATIENT_SCORES = ("share_all", "mean_prob_all")
MAJORITY = 0.5  # the share threshold when none was chosen: a patient is ALL when half its cells are


# ---- pairs of models, tested by subject ---------------------------------------------------------------

def compare_models_by_subject(predictions: Mapping[str, pd.DataFrame], thresholds: Mapping[str, float],
                              n_boot: int = N_BOOT, seed: int = 0,
                              n_permutations: int = N_PERMUTATIONS) -> pd.DataFrame:
    """All pairs, each model called at its own threshold: the subject-level test first, McNemar beside it.

    `predictions`: key -> frame with path, subject, label, prob_all (the same cells in each); `thresholds`:
    key -> that model's threshold (required: a silent 0.5 is how the old comparison went wrong).
    Columns: model_a, model_b, then SUBJECT_COLUMNS: the thresholds; the N (subjects, cells);
    subject_diff = mean over subjects of (accuracy A − accuracy B) with its 95% class-stratified
    subject-bootstrap interval; on how many subjects each model was the more accurate; p_subject
    (`stats.subject_sign_flip_test`) and its Holm adjustment over all pairs; subject_method. Then the rest
    of `stats.COMPARISON_COLUMNS`: n01, n10, p_value, p_holm (exact McNemar, which assumes independent
    cells) and the AUC difference with its class-stratified subject-bootstrap interval.
    """
    keys = list(predictions)
    columns = ["model_a", "model_b", *SUBJECT_COLUMNS, *COMPARISON_COLUMNS[2:]]
    if len(keys) < 2:
        return pd.DataFrame(columns=columns)
    thresholds = per_model_thresholds(keys, thresholds)
    cells = compare_models(dict(predictions), thresholds, n_boot, seed, stratify=True)
    base, probs = align_predictions(predictions)
    y = base["label"].to_numpy().astype(int)
    subjects = base["subject"].astype(str).to_numpy()
    subject_class = pd.Series(y).groupby(subjects, sort=True).first()  # the order of subject_differences
    draws = bootstrap_weights(subject_class.index.to_numpy(), n_boot, seed, strata=subject_class.to_numpy())
    rows = []
    for a, b in combinations(keys, 2):
        correct_a, correct_b = (probs[a] >= thresholds[a]) == y, (probs[b] >= thresholds[b]) == y
        d = subject_differences(correct_a, correct_b, subjects).to_numpy()  # (n_subjects,)
        test = subject_sign_flip_test(correct_a, correct_b, subjects, n_permutations, seed)
        low, high = np.percentile(draws @ d / len(d), [2.5, 97.5])  # the mean difference in each replicate
        rows.append({"threshold_a": thresholds[a], "threshold_b": thresholds[b], "n_subjects": test.n_subjects,
                     "n_cells": test.n_cells, "subject_diff": test.statistic, "subject_diff_low": float(low),
                     "subject_diff_high": float(high), "subjects_a_better": int((d > 0).sum()),
                     "subjects_b_better": int((d < 0).sum()), "p_subject": test.p_value,
                     "subject_method": test.method})
    frame = pd.concat([cells, pd.DataFrame(rows)], axis=1)
    frame["p_subject_holm"] = holm(frame["p_subject"].to_numpy())
    return frame[columns]


# ---- patients ---------------------------------------------------------------------------------------------

def patient_table(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per subject (sorted): subject, label, cells, share_all (share of its cells with P(ALL) >=
    `threshold`), mean_prob_all. Every subject must have one class, as in C-NMC."""
    missing = [c for c in ("subject", "label", "prob_all") if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions need the columns subject, label, prob_all; missing {missing}")
    if len(predictions) == 0:
        raise ValueError("predictions hold no cells: there are no patients to score")
    frame = predictions.assign(subject=predictions["subject"].astype(str),
                               called_all=(predictions["prob_all"] >= threshold).astype(float))
    out = frame.groupby("subject", sort=True).agg(
        label=("label", "first"), classes=("label", "nunique"), cells=("label", "size"),
        share_all=("called_all", "mean"), mean_prob_all=("prob_all", "mean"),
    ).reset_index()
    mixed = out.loc[out["classes"] > 1, "subject"].tolist()
    if mixed:
        raise ValueError(f"subjects {mixed[:5]} have cells of both classes; patient-level results need one "
                         "diagnosis per subject")
    return out.astype({"label": int, "cells": int})[list(PATIENT_COLUMNS)]


def _score(patients: pd.DataFrame, score: str) -> np.ndarray:
    if score not in PATIENT_SCORES:
        raise ValueError(f"score must be one of {PATIENT_SCORES}; got {score!r}")
    return patients[score].to_numpy(dtype=float)


def patient_auc(patients: pd.DataFrame, score: str = "mean_prob_all") -> float | None:
    """Patient-level ROC AUC of `score` (a `patient_table` column); None when only one class is present."""
    y = patients["label"].to_numpy(dtype=int)
    if len(np.unique(y)) < 2:
        return None
    return float(weighted_auc(y, _score(patients, score), np.ones((1, len(y))))[0])


def choose_share_threshold(patients: pd.DataFrame, score: str = "share_all") -> float:
    """The threshold on `score` with the highest balanced accuracy on these (training-side) patients.

    Candidates: 0.5 and the midpoints between consecutive distinct scores; ties go to the one nearest 0.5,
    then the lower. A patient is called ALL when its score >= the threshold.
    """
    y = patients["label"].to_numpy(dtype=int)
    if len(np.unique(y)) < 2:
        raise ValueError("choosing a share threshold needs patients of both classes; got only "
                         f"{'ALL' if len(y) and y[0] == 1 else 'HEM'} ({len(y)} patients)")
    values = _score(patients, score)
    distinct = np.unique(values)
    candidates = np.unique(np.concatenate([[MAJORITY], (distinct[:-1] + distinct[1:]) / 2]))
    calls = values[None, :] >= candidates[:, None]  # (n_candidates, n_patients)
    balanced = (calls[:, y == 1].mean(1) + (~calls[:, y == 0]).mean(1)) / 2
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - MAJORITY))]])


def patient_accuracy(patients: pd.DataFrame, share_threshold: float, score: str = "share_all") -> dict:
    """Patients called ALL when `score` >= `share_threshold`: n_patients, accuracy, balanced_accuracy,
    sensitivity, specificity (None where undefined), confusion_matrix [[tn, fp], [fn, tp]]."""
    y = patients["label"].to_numpy(dtype=int)
    values = _score(patients, score)
    m = weighted_metrics(y, values, np.ones((1, len(y))), share_threshold)
    called = values >= share_threshold
    tn, fp = int(((y == 0) & ~called).sum()), int(((y == 0) & called).sum())
    fn, tp = int(((y == 1) & ~called).sum()), int(((y == 1) & called).sum())
    out = {"n_patients": int(len(y))}
    for name, key in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced_accuracy"),
                      ("sensitivity", "recall"), ("specificity", "specificity")):
        out[name] = _json_float(m[key][0])
    out["confusion_matrix"] = [[tn, fp], [fn, tp]]
    return out


def patient_block(predictions: pd.DataFrame, cell_threshold: float, share_threshold: float | None = None,
                  training: pd.DataFrame | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The `patient` block of metrics.json (JSON-able): patient-level results with their N and intervals.

    The share threshold is `share_threshold` if given, else chosen on `training` (training-side cells of
    the same model, e.g. out-of-fold predictions) by `choose_share_threshold`, else 0.5 (majority of
    cells); `share_threshold_source` says which. Keys: n_patients, n_all, n_hem, cell_threshold,
    share_threshold, share_threshold_source, roc_auc_mean_prob, roc_auc_share, accuracy, balanced_accuracy,
    sensitivity, specificity, confusion_matrix, ci95 {metric: [low, high]}, ci_replicates {metric: used},
    ci_method.
    """
    if share_threshold is not None and training is not None:
        raise ValueError("pass share_threshold or training (to choose it on), not both")
    patients = patient_table(predictions, cell_threshold)
    if share_threshold is not None:
        source = "given"
    elif training is not None:
        chosen_on = patient_table(training, cell_threshold)
        share_threshold = choose_share_threshold(chosen_on)
        source = f"chosen on {len(chosen_on)} training-side patients (highest balanced accuracy)"
    else:
        share_threshold, source = MAJORITY, "majority of cells (0.5, not tuned)"
    y = patients["label"].to_numpy(dtype=int)
    share, mean_prob = _score(patients, "share_all"), _score(patients, "mean_prob_all")
    block = {"n_patients": int(len(y)), "n_all": int((y == 1).sum()), "n_hem": int((y == 0).sum()),
             "cell_threshold": float(cell_threshold), "share_threshold": float(share_threshold),
             "share_threshold_source": source,
             "roc_auc_mean_prob": patient_auc(patients, "mean_prob_all"),
             "roc_auc_share": patient_auc(patients, "share_all")}
    block.update({k: v for k, v in patient_accuracy(patients, share_threshold).items() if k != "n_patients"})

    # One weight per patient and replicate: (n_boot, n_patients), ALL and HEM patients drawn separately.
    w = bootstrap_weights(patients["subject"].to_numpy(), n_boot, seed, strata=y)
    at_share = weighted_metrics(y, share, w, share_threshold)
    replicates = {"roc_auc_mean_prob": weighted_auc(y, mean_prob, w), "roc_auc_share": weighted_auc(y, share, w),
                  "accuracy": at_share["accuracy"], "balanced_accuracy": at_share["balanced_accuracy"],
                  "sensitivity": at_share["recall"], "specificity": at_share["specificity"]}
    block["ci95"], block["ci_replicates"] = percentile_intervals(replicates)
    block["ci_method"] = (f"{n_boot} class-stratified patient-bootstrap replicates, seed {seed}; "
                          "the share threshold is held fixed")
    return block


def _json_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
