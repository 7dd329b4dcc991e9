"""Statistics that say whether a difference is real: subject bootstrap, McNemar, Holm, calibration.

Cells of one patient are not independent, so every interval here resamples *subjects* (with
replacement; a drawn subject brings all its cells), 2,000 times, seeded. A replicate is a weight
per cell (how many times its subject was drawn), so all metrics of all replicates are computed at
once with array operations, AUC included (a weighted Mann-Whitney statistic).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

N_BOOT = 2000
CI_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "specificity", "roc_auc")


def bootstrap_weights(groups: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, unit: str = "subject") -> np.ndarray:
    """(n_boot, n_cells) integer weights of a resampling by `unit` ('subject' or 'cell')."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    if unit == "cell":
        return rng.multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_boot)
    if unit != "subject":
        raise ValueError(f"unit must be 'subject' or 'cell'; got {unit!r}")
    uniq, index = np.unique(groups, return_inverse=True)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot)
    return counts[:, index]


def weighted_auc(labels: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of `weights` (n_boot, n): P(score of a positive > a negative), ties 1/2."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(prob, dtype=float)
    w = np.atleast_2d(weights).astype(float)
    values, group = np.unique(p, return_inverse=True)  # ascending score groups
    neg = np.zeros((w.shape[0], len(values)))
    np.add.at(neg.T, group[~y], w[:, ~y].T)
    neg_below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
    credit = neg_below[:, group[y]] + 0.5 * neg[:, group[y]]  # per positive cell
    w_pos, w_neg = w[:, y], w[:, ~y]
    denom = w_pos.sum(1) * w_neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (w_pos * credit).sum(1) / denom, np.nan)


def weighted_metrics(labels: np.ndarray, prob: np.ndarray, weights: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every metric of CI_METRICS for each row of `weights`; undefined values are NaN."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(prob) >= threshold
    w = np.atleast_2d(weights).astype(float)
    tp = w[:, y & pred].sum(1)
    fn = w[:, y & ~pred].sum(1)
    fp = w[:, ~y & pred].sum(1)
    tn = w[:, ~y & ~pred].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / (tp + fn)
        specificity = tn / (tn + fp)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        return {
            "accuracy": (tp + tn) / (tp + tn + fp + fn),
            "balanced_accuracy": (recall + specificity) / 2,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "specificity": specificity,
            "roc_auc": weighted_auc(y, prob, w),
        }


def metric_cis(labels, prob, subjects, threshold: float = 0.5, n_boot: int = N_BOOT, seed: int = 0, unit: str = "subject") -> dict[str, list[float]]:
    """95% percentile intervals {metric: [low, high]} by resampling subjects (or cells)."""
    w = bootstrap_weights(subjects, n_boot, seed, unit)
    out = {}
    for name, values in weighted_metrics(labels, prob, w, threshold).items():
        values = values[np.isfinite(values)]
        out[name] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else [None, None]
    return out


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(n01, n10, p): n01 = cells A got right and B wrong, n10 the reverse; exact two-sided p."""
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    n01 = int((a & ~b).sum())
    n10 = int((~a & b).sum())
    n = n01 + n10
    # Under H0 the discordant cells split 50/50: an exact binomial test (2 * smaller tail, capped at 1).
    p = 1.0 if n == 0 else float(binomtest(min(n01, n10), n, 0.5, alternative="two-sided").pvalue)
    return n01, n10, p


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def compare_models(predictions: dict[str, pd.DataFrame], threshold: float = 0.5, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """All pairs: McNemar on the same cells and the AUC difference with a subject-bootstrap interval.

    `predictions`: key -> frame with path, subject, label, prob_all (the same cells in each).
    Columns: model_a, model_b, n01, n10, p_value, p_holm, auc_diff, auc_diff_low, auc_diff_high.
    """
    keys = list(predictions)
    if len(keys) < 2:
        return pd.DataFrame(columns=["model_a", "model_b", "n01", "n10", "p_value", "p_holm", "auc_diff", "auc_diff_low", "auc_diff_high"])
    base = predictions[keys[0]][["path", "subject", "label"]]
    probs = {}
    for k in keys:
        merged = base.merge(predictions[k][["path", "prob_all"]], on="path", how="left", validate="one_to_one")
        if merged["prob_all"].isna().any():
            raise ValueError(f"{k} has no prediction for some validation cells; rerun the study")
        probs[k] = merged["prob_all"].to_numpy()
    y = base["label"].to_numpy().astype(int)
    w = bootstrap_weights(base["subject"].astype(str).to_numpy(), n_boot, seed)
    aucs = {k: weighted_auc(y, probs[k], w) for k in keys}
    full = {k: float(weighted_auc(y, probs[k], np.ones((1, len(y))))[0]) for k in keys}
    rows = []
    for a, b in combinations(keys, 2):
        n01, n10, p = mcnemar_exact((probs[a] >= threshold) == y, (probs[b] >= threshold) == y)
        diff = aucs[a] - aucs[b]
        diff = diff[np.isfinite(diff)]
        rows.append({
            "model_a": a, "model_b": b, "n01": n01, "n10": n10, "p_value": p,
            "auc_diff": full[a] - full[b],
            "auc_diff_low": float(np.percentile(diff, 2.5)) if len(diff) else np.nan,
            "auc_diff_high": float(np.percentile(diff, 97.5)) if len(diff) else np.nan,
        })
    frame = pd.DataFrame(rows)
    frame.insert(5, "p_holm", holm(frame["p_value"].to_numpy()))
    return frame


def reliability(labels, prob, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error over `bins` equal-width bins of P(ALL), and the bins themselves."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(prob, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        row = {"low": float(edges[b]), "high": float(edges[b + 1]), "count": n, "mean_prob": None, "fraction_all": None}
        if n:
            row["mean_prob"] = float(p[mask].mean())
            row["fraction_all"] = float(y[mask].mean())
            ece += n / len(p) * abs(row["mean_prob"] - row["fraction_all"])
        table.append(row)
    return float(ece), table


def per_subject(predictions: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Accuracy per validation subject: subject, label, cells, accuracy, mean_prob_all (hardest first)."""
    frame = predictions.assign(correct=((predictions["prob_all"] >= threshold).astype(int) == predictions["label"]))
    out = frame.groupby("subject", sort=False).agg(
        label=("label", "first"), cells=("label", "size"), accuracy=("correct", "mean"), mean_prob_all=("prob_all", "mean")
    ).reset_index()
    out["subject"] = out["subject"].astype(str)
    return out.sort_values(["accuracy", "subject"]).reset_index(drop=True)
