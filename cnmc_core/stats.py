"""Statistics that say whether a difference is real: subject bootstrap, subject-level tests, Holm, calibration.

Cells of one patient are not independent, so every interval here resamples *subjects* (with
replacement; a drawn subject brings all its cells), 2,000 times, seeded. A replicate is a weight
per cell (how many times its subject was drawn), so all metrics of all replicates are computed at
once with array operations, AUC included (a weighted Mann-Whitney statistic). In C-NMC every
subject has one class, so the class-stratified resampling (ALL subjects and HEM subjects drawn
separately) never produces a replicate without one class.

Two models are compared on the same cells by a paired sign-flip test whose unit is the subject
(`subject_sign_flip_test`; why this one: docs/statistics.md). The exact McNemar test on cells is kept
beside it, labelled as what it is: a test that assumes independent cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2

N_BOOT = 2000
N_PERMUTATIONS = 9999  # Monte Carlo sign patterns when exact enumeration is too big; p has a resolution of 1e-4
MAX_EXACT_SUBJECTS = 16  # enumerate all 2^k sign patterns up to k = 16 differing subjects (65,536 patterns)
CI_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "specificity", "roc_auc")


def bootstrap_weights(groups: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, unit: str = "subject",
                      strata: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n_cells) integer weights of a resampling by `unit` ('subject' or 'cell').

    `strata` (one value per cell, e.g. the label): draw the units of each stratum separately, as many as
    it has, so every replicate keeps every stratum. Each unit must lie in one stratum (in C-NMC each
    subject has one class). Without `strata` the draws are exactly those of earlier versions.
    """
    if unit not in ("subject", "cell"):
        raise ValueError(f"unit must be 'subject' or 'cell'; got {unit!r}")
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    if strata is None:
        if unit == "cell":
            return rng.multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_boot)
        uniq, index = np.unique(groups, return_inverse=True)
        counts = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot)
        return counts[:, index]
    strata = np.asarray(strata)
    if strata.shape != groups.shape:
        raise ValueError(f"strata must give one value per cell: {strata.shape} values for {groups.shape} cells")
    uniq, index = np.unique(np.arange(len(groups)) if unit == "cell" else groups, return_inverse=True)
    per_unit = pd.Series(strata).groupby(index).agg(["first", "nunique"])  # one row per unit, in `uniq` order
    if (per_unit["nunique"] > 1).any():
        bad = uniq[int(np.flatnonzero(per_unit["nunique"].to_numpy() > 1)[0])]
        raise ValueError(f"{unit} {bad!r} has cells in more than one stratum (class); class-stratified "
                         "resampling needs each subject in one class, as in C-NMC")
    unit_stratum = per_unit["first"].to_numpy()
    counts = np.zeros((n_boot, len(uniq)), dtype=np.int64)
    for stratum in np.unique(unit_stratum):  # sorted, so the draws are reproducible
        members = np.flatnonzero(unit_stratum == stratum)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=n_boot)
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


def weighted_metrics(labels: np.ndarray, prob: np.ndarray, weights: np.ndarray,
                     threshold: float = 0.5) -> dict[str, np.ndarray]:
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


def percentile_intervals(replicates: Mapping[str, np.ndarray]) -> tuple[dict[str, list], dict[str, int]]:
    """({name: [2.5th, 97.5th percentile]}, {name: replicates used}) over the finite replicates of each name."""
    cis, used = {}, {}
    for name, values in replicates.items():
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        used[name] = int(len(values))
        low_high = np.percentile(values, [2.5, 97.5]) if len(values) else [None, None]
        cis[name] = [None if v is None else float(v) for v in low_high]
    return cis, used


def metric_cis(labels, prob, subjects, threshold: float = 0.5, n_boot: int = N_BOOT, seed: int = 0,
               unit: str = "subject", stratify: bool = False) -> dict[str, list[float]]:
    """95% percentile intervals {metric: [low, high]} by resampling subjects (or cells).

    Replicates where a metric is undefined (a class missing) are dropped; `stratify=True` resamples
    within each class so none is (see `class_stratified_cis`, which also says how many were used).
    """
    strata = np.asarray(labels) if stratify else None
    w = bootstrap_weights(np.asarray(subjects), n_boot, seed, unit, strata)
    return percentile_intervals(weighted_metrics(labels, prob, w, threshold))[0]


def class_stratified_cis(labels, prob, subjects, threshold: float = 0.5, n_boot: int = N_BOOT,
                         seed: int = 0) -> dict:
    """95% intervals by resampling ALL subjects and HEM subjects separately, with what they used.

    Returns {"ci95": {metric: [low, high]}, "replicates": {metric: replicates used}, "n_boot": n_boot,
    "method": a sentence for people}. Every subject must have one class (C-NMC's do).
    """
    labels = np.asarray(labels).astype(int)
    w = bootstrap_weights(np.asarray(subjects).astype(str), n_boot, seed, "subject", strata=labels)
    cis, used = percentile_intervals(weighted_metrics(labels, prob, w, threshold))
    fewest = min(used.values())
    kept = f"all {n_boot} used" if fewest == n_boot else f"at least {fewest} of {n_boot} used"
    return {"ci95": cis, "replicates": used, "n_boot": n_boot,
            "method": f"{n_boot} class-stratified subject-bootstrap replicates ({kept}), seed {seed}"}


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """(n01, n10, p): n01 = cells A got right and B wrong, n10 the reverse; exact two-sided p.

    Assumes independent cells: with several cells per patient its p-values are too small.
    """
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


@dataclass(frozen=True)
class SubjectTestResult:
    """A paired test of two models on the same cells whose unit is the subject (statsmodels-style)."""

    statistic: float  # sign-flip: mean over subjects of (accuracy of A − accuracy of B) on that subject's cells;
    #                   clustered McNemar: the chi-square statistic
    p_value: float  # two-sided
    method: str  # the test, and how its p was computed (exact, or Monte Carlo with its number of sign patterns)
    n_subjects: int  # the test's N: subjects, not cells
    n_cells: int


def subject_differences(correct_a, correct_b, subjects) -> pd.Series:
    """Per subject (index, sorted as str): accuracy of A − accuracy of B on that subject's cells."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    subjects = np.asarray(subjects).astype(str)
    if not (len(a) == len(b) == len(subjects)) or len(a) == 0:
        raise ValueError(f"correct_a, correct_b and subjects must have one value per cell and at least one cell; "
                         f"got {len(a)}, {len(b)} and {len(subjects)}")
    return pd.Series(a.astype(float) - b.astype(float)).groupby(subjects, sort=True).mean()


def subject_sign_flip_test(correct_a, correct_b, subjects, n_permutations: int = N_PERMUTATIONS, seed: int = 0,
                           max_exact_subjects: int = MAX_EXACT_SUBJECTS) -> SubjectTestResult:
    """Paired sign-flip (permutation) test of the mean per-subject accuracy difference, two-sided.

    Under H0 (the two models are exchangeable within each subject) each subject's difference d_s is as
    likely to be +d_s as -d_s, subjects being independent; cells of one subject may be correlated in any
    way. The p-value is the share of the 2^k sign patterns of the k subjects with d_s != 0 whose |sum| is
    at least the observed one: enumerated exactly when k <= `max_exact_subjects`, else `n_permutations`
    seeded random patterns with p = (1 + hits) / (1 + n_permutations) (Phipson & Smyth 2010).
    Each `correct_*` is per cell (the model's call at its own threshold == the label).
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1; got {n_permutations}")
    d = subject_differences(correct_a, correct_b, subjects).to_numpy()
    differ = d[d != 0]  # tied subjects add 0 to every signed sum
    k, observed = len(differ), abs(differ.sum())
    tolerance = 1e-9  # sums of fractions: equal sums may differ in the last bits
    result = dict(statistic=float(d.mean()), n_subjects=len(d), n_cells=len(np.asarray(correct_a)))
    if k == 0:
        return SubjectTestResult(p_value=1.0, method="subject sign-flip (no subject differs)", **result)
    if k <= max_exact_subjects:
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)  # (2^k, k), every pattern once
        p = float(np.mean(np.abs(signs @ differ) >= observed - tolerance))
        return SubjectTestResult(p_value=p, method=f"exact subject sign-flip ({2**k} sign patterns)", **result)
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < n_permutations:  # chunks of at most 10,000 patterns keep memory small
        size = min(10_000, n_permutations - done)
        signs = 1 - 2 * rng.integers(0, 2, size=(size, k))
        hits += int(np.sum(np.abs(signs @ differ) >= observed - tolerance))
        done += size
    return SubjectTestResult(p_value=(1 + hits) / (1 + n_permutations), **result,
                             method=f"Monte Carlo subject sign-flip ({n_permutations} sign patterns, seed {seed})")


def clustered_mcnemar(correct_a, correct_b, subjects) -> SubjectTestResult:
    """Durkalski et al. (2003) McNemar for clustered pairs: X = (sum_s n01_s − n10_s)^2 / sum_s (n01_s − n10_s)^2.

    Asymptotically chi-square with 1 df as the number of subjects grows; kept to compare with the sign-flip test.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    per_subject_diff = subject_differences(a, b, subjects)  # validates the inputs
    counts = pd.Series((a & ~b).astype(int) - (~a & b).astype(int)).groupby(np.asarray(subjects).astype(str)).sum()
    denominator = float((counts**2).sum())
    statistic = float(counts.sum()) ** 2 / denominator if denominator else 0.0
    return SubjectTestResult(statistic=statistic, p_value=float(chi2.sf(statistic, 1)) if denominator else 1.0,
                             method="clustered McNemar (Durkalski 2003, chi-square 1 df)",
                             n_subjects=len(per_subject_diff), n_cells=len(a))


def align_predictions(predictions: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(the first model's cells: path, subject, label; key -> P(ALL) of those cells in that order), matched by path."""
    keys = list(predictions)
    base = predictions[keys[0]][["path", "subject", "label"]]
    probs = {}
    for k in keys:
        merged = base.merge(predictions[k][["path", "prob_all"]], on="path", how="left", validate="one_to_one")
        if merged["prob_all"].isna().any():
            raise ValueError(f"{k} has no prediction for some validation cells; rerun the study")
        probs[k] = merged["prob_all"].to_numpy()
    return base, probs


def per_model_thresholds(keys, threshold: float | Mapping[str, float]) -> dict[str, float]:
    """key -> threshold: `threshold` for every key, or the mapping's value for each (all keys required)."""
    if not isinstance(threshold, Mapping):
        return {k: float(threshold) for k in keys}
    missing = [k for k in keys if k not in threshold]
    if missing:
        raise ValueError(f"thresholds must give one per model; missing {missing} (got {sorted(threshold)})")
    return {k: float(threshold[k]) for k in keys}


COMPARISON_COLUMNS = ("model_a", "model_b", "n01", "n10", "p_value", "p_holm", "auc_diff", "auc_diff_low",
                      "auc_diff_high")


def compare_models(predictions: dict[str, pd.DataFrame], threshold: float | Mapping[str, float] = 0.5,
                   n_boot: int = N_BOOT, seed: int = 0, stratify: bool = False) -> pd.DataFrame:
    """All pairs: cell-level exact McNemar and the AUC difference with a subject-bootstrap interval.

    `predictions`: key -> frame with path, subject, label, prob_all (the same cells in each).
    `threshold`: one for all models, or key -> that model's own threshold. `stratify`: resample the
    subjects of each class separately. Columns: COMPARISON_COLUMNS (p_value / p_holm: McNemar, which
    assumes independent cells; `compare_models_by_subject` adds the subject-level test).
    """
    keys = list(predictions)
    if len(keys) < 2:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    thresholds = per_model_thresholds(keys, threshold)
    base, probs = align_predictions(predictions)
    y = base["label"].to_numpy().astype(int)
    w = bootstrap_weights(base["subject"].astype(str).to_numpy(), n_boot, seed, strata=y if stratify else None)
    aucs = {k: weighted_auc(y, probs[k], w) for k in keys}
    full = {k: float(weighted_auc(y, probs[k], np.ones((1, len(y))))[0]) for k in keys}
    rows = []
    for a, b in combinations(keys, 2):
        n01, n10, p = mcnemar_exact((probs[a] >= thresholds[a]) == y, (probs[b] >= thresholds[b]) == y)
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
        label=("label", "first"), cells=("label", "size"), accuracy=("correct", "mean"),
        mean_prob_all=("prob_all", "mean"),
    ).reset_index()
    out["subject"] = out["subject"].astype(str)
    return out.sort_values(["accuracy", "subject"]).reset_index(drop=True)
