"""The study's statistics, computed from the saved predictions alone (so they can be recomputed).

For every complete model, each at its own saved threshold: 95% class-stratified subject-bootstrap
intervals of every metric (`ci95`, with `ci_replicates` and `ci_method` saying how many replicates were
used), the patient-level results (`patient`: `patient_stats.patient_block`) in metrics.json, and
accuracy per validation subject (`subjects.csv`). Then the ensemble (mean P(ALL) of the models, saved
as models/ensemble/ like a model, at its own saved threshold) and `comparison.csv`: every pair of
models tested by subject (the paired sign-flip test, Holm-adjusted: the headline), with cell-level
McNemar beside it and the AUC difference (`patient_stats.compare_models_by_subject`). Why: docs/statistics.md.
With `--split cv`, each model's out-of-fold predictions (oof.csv) give the `cv` block of metrics.json
(`crossval.cv_figures`) and the training-side patients the patient share threshold is chosen on.

Every file is read through the store's checks: a damaged one stops the analysis with an
`ArtifactError` naming it, instead of silently leaving that model out of the ensemble.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import crossval
from .disk import write_csv
from .evaluation import classification_metrics
from .patient_stats import SUBJECT_COLUMNS, compare_models_by_subject, patient_block
from .stats import N_BOOT, class_stratified_cis, per_subject
from .store import ENSEMBLE, StoreError, StudyLock, StudyStore

log = logging.getLogger(__name__)
MAX_BOOT = 100_000  # bootstrap replicates: more gains nothing visible and costs memory in proportion
ENSEMBLE_THRESHOLD = 0.5  # the ensemble has no training-side predictions to choose a threshold on


def analyse_study(
    store: StudyStore, n_boot: int = N_BOOT, seed: int | None = None, partial_ensemble: bool = False
) -> dict:
    """Compute and save the statistics; returns {"models": [...], "ensemble": bool, "pairs": n, "verdict":
    the one sentence of `verdict` ('' with fewer than two models)}.

    The ensemble is the mean of every model of the study. When some model is not complete it is
    not built (a StoreError names the missing ones), unless `partial_ensemble` asks for the mean of
    the complete models. Holds the study's lock.
    """
    if not 1 <= n_boot <= MAX_BOOT:
        raise ValueError(f"bootstrap replicates must be from 1 to {MAX_BOOT:,}; got {n_boot}")
    with StudyLock(store):
        info = store.read_study()
        seed = info.get("seed", 0) if seed is None else seed
        expected = list(info.get("models", []))
        # A model is there when its metrics.json is; a damaged file is an ArtifactError below, never a silent gap.
        keys = [k for k in expected if store.model_file(k, "metrics.json").is_file()]
        missing = [k for k in expected if k not in keys]
        if missing and len(expected) >= 2 and not partial_ensemble:
            raise StoreError(
                f"study {store.name!r}: {', '.join(missing)} not complete (no metrics.json), so the ensemble of "
                f"its {len(expected)} models cannot be built; finish the study, or pass --partial-ensemble to use "
                f"the {len(keys)} complete one(s)"
            )
        predictions, thresholds = {}, {}
        for key in keys:
            preds, oof = store.read_predictions(key), crossval.read(store, key)
            saved = store.read_metrics(key)
            threshold = float(saved.get("threshold", 0.5))
            extra = _statistics(preds, threshold, n_boot, seed, oof)
            if oof is not None:  # the cv block: how it was made (saved by the study), then its figures
                cv = saved.get("cv") if isinstance(saved.get("cv"), dict) else {}
                extra["cv"] = {**cv, **crossval.cv_figures(oof, threshold, n_boot, seed)}
            store.update_metrics(key, extra)
            write_csv(store.subjects_csv(key), per_subject(preds, threshold))
            predictions[key], thresholds[key] = preds, threshold

        has_ensemble = len(predictions) >= 2
        if has_ensemble:
            ensemble = _ensemble(predictions)
            threshold = _ensemble_threshold(store)
            metrics = classification_metrics(ensemble["label"].to_numpy(), ensemble["prob_all"].to_numpy(), threshold)
            metrics.update(model=ENSEMBLE, name="Ensemble (mean)", members=list(predictions),
                           threshold_source="saved" if threshold != ENSEMBLE_THRESHOLD else "0.5, not tuned",
                           **_statistics(ensemble, threshold, n_boot, seed))
            store.write_ensemble(metrics, ensemble)
            write_csv(store.subjects_csv(ENSEMBLE), per_subject(ensemble, threshold))
        else:  # fewer than two models: an ensemble left from an earlier run no longer holds
            store.model_file(ENSEMBLE, "metrics.json").unlink(missing_ok=True)
        # Each model at its own saved threshold (a shared 0.5 was issue 14, point 3); the ensemble is not a
        # pair member: it is made of these models.
        comparison = compare_models_by_subject(predictions, thresholds, n_boot=n_boot, seed=seed)
        write_csv(store.comparison_csv, comparison)
    log.info("statistics: %d models, %d pairs compared%s", len(predictions), len(comparison),
             ", ensemble saved" if has_ensemble else "")
    return {"models": list(predictions), "ensemble": has_ensemble, "pairs": int(len(comparison)),
            "verdict": verdict(comparison).sentence}


def _statistics(predictions: pd.DataFrame, threshold: float, n_boot: int, seed: int,
                training: pd.DataFrame | None = None) -> dict:
    """metrics.json keys from one model's predictions at its threshold: ci95, ci_replicates, ci_n_boot,
    ci_method (class-stratified subject bootstrap) and the `patient` block, its share threshold chosen on
    `training` (out-of-fold predictions of the training cells, with --split cv) when given."""
    cis = class_stratified_cis(predictions["label"], predictions["prob_all"], predictions["subject"].astype(str),
                               threshold, n_boot, seed)
    # Without out-of-fold predictions the patient share threshold is the untuned 0.5 (patient_block says so in
    # share_threshold_source): in-sample training predictions would flatter it.
    patient = patient_block(predictions, threshold, training=training, n_boot=n_boot, seed=seed)
    return {"ci95": cis["ci95"], "ci_replicates": cis["replicates"], "ci_n_boot": cis["n_boot"],
            "ci_method": cis["method"], "patient": patient}


def _ensemble_threshold(store: StudyStore) -> float:
    """The ensemble's saved threshold (kept across recomputation), else ENSEMBLE_THRESHOLD."""
    if not store.model_file(ENSEMBLE, "metrics.json").is_file():
        return ENSEMBLE_THRESHOLD
    saved = store.read_metrics(ENSEMBLE).get("threshold", ENSEMBLE_THRESHOLD)
    return float(saved) if isinstance(saved, (int, float)) and 0 < saved < 1 else ENSEMBLE_THRESHOLD


def _ensemble(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean P(ALL) over the models, per image; every model must have predicted the same images."""
    keys = list(predictions)
    out = predictions[keys[0]][["path", "subject", "label"]].copy()
    probs = []
    for k in keys:
        merged = out[["path"]].merge(predictions[k][["path", "prob_all"]], on="path", how="left", validate="one_to_one")
        if merged["prob_all"].isna().any():
            raise StoreError(f"{k}'s predictions.csv lacks images that {keys[0]} predicted; the ensemble needs "
                             "the same images from every model (rerun the study)")
        probs.append(merged["prob_all"].to_numpy())
    out["prob_all"] = sum(probs) / len(probs)
    return out


# ---- one verdict, the same on every page ------------------------------------------------------------

ALPHA = 0.05  # a pair differs significantly when its Holm-adjusted subject-level p is below this


@dataclass(frozen=True)
class Verdict:
    """What the subject-level test says about the models of one comparison.csv."""
    tested: bool  # the file has the subject-level columns (older ones hold cell-level McNemar only)
    winner: str | None  # the model key that beats every other model significantly, else None
    n_subjects: int | None  # the test's N (patients)
    n_pairs: int  # the Holm adjustment's K
    significant_pairs: int  # pairs with p_subject_holm < ALPHA
    sentence: str  # one sentence for people ('' when not tested)


def verdict(comparison: pd.DataFrame | None, name: Callable[[str], str] = str) -> Verdict:
    """The headline: which model, if any, beats every other by the paired sign-flip test over subjects
    (`p_subject_holm` < ALPHA against each of them, and more accurate on average). `name`: key -> display name."""
    if comparison is None or not set(SUBJECT_COLUMNS) <= set(comparison.columns) or comparison.empty:
        return Verdict(False, None, None, 0 if comparison is None else len(comparison), 0, "")
    c = comparison
    p = pd.to_numeric(c["p_subject_holm"], errors="coerce")
    diff = pd.to_numeric(c["subject_diff"], errors="coerce")
    keys = list(dict.fromkeys([*c["model_a"], *c["model_b"]]))
    wins = {k: 0 for k in keys}
    for a, b, pk, d in zip(c["model_a"], c["model_b"], p, diff):
        if pk < ALPHA and d != 0:
            wins[a if d > 0 else b] += 1
    winners = [k for k in keys if wins[k] == len(keys) - 1]
    n = pd.to_numeric(c["n_subjects"], errors="coerce").max()
    n_subjects = int(n) if n == n else None
    how = f"(paired sign-flip test over {n_subjects} patients, Holm-adjusted over {len(c)} pair{'s' * (len(c) != 1)})"
    significant = int((p < ALPHA).sum())
    if len(winners) == 1:
        sentence = f"{name(winners[0])} beats every other model {how}."
    else:
        others = f"; {significant} of {len(c)} pairs differ" if significant else ""
        sentence = f"No model is significantly better than the others {how}{others}."
    return Verdict(True, winners[0] if len(winners) == 1 else None, n_subjects, len(c), significant, sentence)


PATIENT_SUMMARY = ("Model", "Patients", "ALL", "HEM", "Patient AUC", "AUC 95% low", "AUC 95% high",
                   "Patient accuracy", "Acc. 95% low", "Acc. 95% high", "Share threshold", "Share threshold from")


def patient_summary(metrics: Mapping[str, dict], name: Callable[[str], str] = str) -> pd.DataFrame:
    """One row per model key whose metrics.json has a `patient` block, for people: PATIENT_SUMMARY (patient AUC
    of the mean P(ALL) and accuracy at the share threshold, each with its 95% class-stratified patient
    interval). `name`: key -> display name."""
    rows = []
    for key, m in metrics.items():
        block = m.get("patient") if isinstance(m, dict) else None
        if not isinstance(block, dict):
            continue
        ci = block.get("ci95") if isinstance(block.get("ci95"), dict) else {}
        rows.append([name(key), block.get("n_patients"), block.get("n_all"), block.get("n_hem"),
                     _number(block.get("roc_auc_mean_prob")), *_bounds(ci.get("roc_auc_mean_prob")),
                     _number(block.get("accuracy")), *_bounds(ci.get("accuracy")),
                     _number(block.get("share_threshold")),
                     str(block.get("share_threshold_source", "?"))])
    return pd.DataFrame(rows, columns=list(PATIENT_SUMMARY))


CV_SUMMARY = ("Model", "Subjects", "Cells", "Folds", "AUC (out-of-fold)", "AUC 95% low", "AUC 95% high",
              "Bal. acc. (out-of-fold)", "Bal. acc. 95% low", "Bal. acc. 95% high", "Fold AUC min", "Fold AUC max",
              "Fold AUC SD", "Folds from")


def cv_summary(metrics: Mapping[str, dict], name: Callable[[str], str] = str) -> pd.DataFrame:
    """One row per model key whose metrics.json has a `cv` block with figures (train --split cv), for people:
    CV_SUMMARY, the out-of-fold figures over every training subject with their 95% class-stratified subject
    intervals and the spread over the folds; ranked by out-of-fold AUC (it rests on more patients than
    validation does). `name`: key -> display name."""
    rows = []
    for key, m in metrics.items():
        cv = m.get("cv") if isinstance(m, dict) else None
        if not isinstance(cv, dict) or not isinstance(cv.get("pooled"), dict):
            continue
        ci = cv.get("ci95") if isinstance(cv.get("ci95"), dict) else {}
        spread = (cv.get("spread") or {}).get("roc_auc") if isinstance(cv.get("spread"), dict) else None
        spread = spread if isinstance(spread, dict) else {}
        rows.append([name(key), cv.get("n_subjects"), cv.get("n_cells"), cv.get("folds"),
                     _number(cv["pooled"].get("roc_auc")), *_bounds(ci.get("roc_auc")),
                     _number(cv["pooled"].get("balanced_accuracy")), *_bounds(ci.get("balanced_accuracy")),
                     _number(spread.get("min")), _number(spread.get("max")), _number(spread.get("sd")),
                     str(cv.get("fold_source", "?"))])
    frame = pd.DataFrame(rows, columns=list(CV_SUMMARY))
    return frame.sort_values(["AUC (out-of-fold)", "Model"], ascending=[False, True], kind="stable",
                             na_position="last").reset_index(drop=True)


def _bounds(interval) -> list[float]:
    return [_number(x) for x in interval] if isinstance(interval, list) and len(interval) == 2 else [np.nan, np.nan]


def _number(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else np.nan
