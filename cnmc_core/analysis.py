"""The study's statistics, computed from the saved predictions alone (so they can be recomputed).

For every complete model, each at its own saved threshold: 95% class-stratified subject-bootstrap
intervals of every metric (`ci95`, with `ci_replicates` and `ci_method` saying how many replicates were
used), the patient-level results (`patient`: `patient_stats.patient_block`) in metrics.json, and
accuracy per validation subject (`subjects.csv`). Then the ensemble (mean P(ALL) of the models, saved
as models/ensemble/ like a model; with --split cv its out-of-fold P(ALL), the mean of its models' oof.csv,
gives it a `cv` block and an oof.csv like theirs) and `comparison.csv`: every pair of
models tested by subject (the paired sign-flip test, Holm-adjusted: the headline), with cell-level
McNemar beside it and the AUC difference (`patient_stats.compare_models_by_subject`). Why: docs/statistics.md.
With `--split cv`, each model's out-of-fold predictions (oof.csv) give the `cv` block of metrics.json
(`crossval.cv_figures`) and the training-side patients the patient share threshold is chosen on.

Every file is read through the store's checks: a damaged one stops the analysis with an
`ArtifactError` naming it, instead of silently leaving that model out of the ensemble.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import crossval
from .config import STOPPING
from .disk import write_csv
from .evaluation import classification_metrics
from .head import choose_threshold
from .patient_stats import SUBJECT_COLUMNS, compare_models_by_subject, patient_block
from .stats import N_BOOT, class_stratified_cis, per_subject
from .store import ENSEMBLE, StoreError, StudyLock, StudyStore

log = logging.getLogger(__name__)
MAX_BOOT = 100_000  # bootstrap replicates: more gains nothing visible and costs memory in proportion
ENSEMBLE_THRESHOLD = 0.5  # the ensemble's threshold when it has no out-of-fold predictions to choose one on


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
        predictions, thresholds, oofs, saved_metrics = {}, {}, {}, {}
        for key in keys:
            preds, oof = store.read_predictions(key), crossval.read(store, key)
            saved = store.read_metrics(key)
            threshold = float(saved.get("threshold", 0.5))
            extra = _statistics(preds, threshold, n_boot, seed, oof)
            if oof is not None:  # the cv block: how it was made (saved by the study), then its figures
                cv = saved.get("cv") if isinstance(saved.get("cv"), dict) else {}
                extra["cv"] = {**cv, **crossval.cv_figures(oof, threshold, n_boot, seed)}
                oofs[key] = oof
            store.update_metrics(key, extra)
            write_csv(store.subjects_csv(key), per_subject(preds, threshold))
            predictions[key], thresholds[key], saved_metrics[key] = preds, threshold, saved

        has_ensemble = len(predictions) >= 2
        ensemble_oof = store.model_file(ENSEMBLE, crossval.OOF_FILE)
        if has_ensemble:
            ensemble = _ensemble(predictions)
            # Cross-validated like its models when every one of them is: the mean of their out-of-fold P(ALL).
            oof = _ensemble(oofs, extra=("fold",)) if len(oofs) == len(predictions) else None
            threshold, source = _ensemble_threshold(store, saved_metrics, oof)
            metrics = classification_metrics(ensemble["label"].to_numpy(), ensemble["prob_all"].to_numpy(), threshold)
            metrics.update(model=ENSEMBLE, name="Ensemble (mean)", members=list(predictions),
                           threshold_source=source, **_statistics(ensemble, threshold, n_boot, seed, oof))
            if oof is not None:
                write_csv(ensemble_oof, oof)
                how = saved_metrics[keys[0]].get("cv") if isinstance(saved_metrics[keys[0]].get("cv"), dict) else {}
                metrics["cv"] = {**{k: how[k] for k in ("folds", "fold_source", "scope", "stopping") if k in how},
                                 **crossval.cv_figures(oof, threshold, n_boot, seed)}
            else:
                ensemble_oof.unlink(missing_ok=True)
            store.write_ensemble(metrics, ensemble)
            write_csv(store.subjects_csv(ENSEMBLE), per_subject(ensemble, threshold))
        else:  # fewer than two models: an ensemble left from an earlier run no longer holds
            store.model_file(ENSEMBLE, "metrics.json").unlink(missing_ok=True)
            ensemble_oof.unlink(missing_ok=True)
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


def _ensemble_threshold(store: StudyStore, members: Mapping[str, dict], oof: pd.DataFrame | None) -> tuple[float, str]:
    """(the ensemble's threshold, its `threshold_source`), by its models' rule (`members`: their metrics.json).

    When every model chose its threshold on its out-of-fold predictions ("train (out-of-fold)"), the ensemble
    chooses its own the same way, on its out-of-fold P(ALL) `oof` (Youden's J, `head.choose_threshold`). When
    every model used the fixed 0.5, so does the ensemble. Otherwise (no out-of-fold predictions to choose on):
    its earlier saved threshold (kept across recomputation), else ENSEMBLE_THRESHOLD.
    """
    sources = {str(m.get("threshold_source", "")) for m in members.values()}
    if oof is not None and sources == {"train (out-of-fold)"}:
        return choose_threshold(oof["label"].to_numpy(dtype=int), oof["prob_all"].to_numpy(dtype=float)), \
            "train (out-of-fold)"
    if sources == {"fixed"}:
        return ENSEMBLE_THRESHOLD, "fixed"
    if not store.model_file(ENSEMBLE, "metrics.json").is_file():
        return ENSEMBLE_THRESHOLD, "0.5, not tuned"
    saved = store.read_metrics(ENSEMBLE).get("threshold", ENSEMBLE_THRESHOLD)
    if isinstance(saved, (int, float)) and 0 < saved < 1 and saved != ENSEMBLE_THRESHOLD:
        return float(saved), "saved"
    return ENSEMBLE_THRESHOLD, "0.5, not tuned"


def _ensemble(predictions: dict[str, pd.DataFrame], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Mean P(ALL) over the models, per image; every model must have predicted the same images (and agree on
    the `extra` columns: an out-of-fold image's fold)."""
    keys = list(predictions)
    columns = ["path", "subject", "label", *extra]
    out = predictions[keys[0]][columns].copy()
    probs = []
    for k in keys:
        merged = out[["path", *extra]].merge(predictions[k][["path", *extra, "prob_all"]], on=["path", *extra],
                                             how="left", validate="one_to_one")
        if merged["prob_all"].isna().any():
            what = "out-of-fold predictions (oof.csv) lack images, or give them other folds," if extra else \
                "predictions.csv lacks images"
            raise StoreError(f"{k}'s {what} that {keys[0]} predicted; the ensemble needs the same images from "
                             "every model (rerun the study)")
        probs.append(merged["prob_all"].to_numpy())
    out["prob_all"] = sum(probs) / len(probs)
    return out[["path", "subject", "label", "prob_all", *extra]]


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


# ---- what chose the kept epoch, in words (the Training curves page and the Overview) ----------------------

@dataclass(frozen=True)
class Stopping:
    """What chose one model's kept epoch, from metrics.json's `stopping` block (splits.stopping_record).

    A study made before the block existed stopped on the validation loss with the best epoch restored
    (config's `val_best`)."""
    rule: str  # config.stopping: val (the paper: last epoch kept) | inner | val_best
    curve: str  # whose loss chose the kept epoch: "inner" (the inner slice's) or "validation"
    kept: str  # "lowest" (that loss's lowest epoch was restored) or "last" (the last epoch was kept)
    chosen_on: str  # in words, as saved: "an inner slice of 4 training subjects (100 cells), not trained on"

    @property
    def validation_chose(self) -> bool:
        return self.curve == "validation"


# splits.stopping_record's wordings: a saved `chosen_on` is shown only when it is one of them (a shared study is
# someone else's text, and pages render these sentences as Markdown)
CHOSEN_ON = re.compile(r"an inner slice of \d+ training subjects \(\d+ cells\), not trained on"
                       r"|the validation split, (last epoch kept|best epoch restored)")


def stopping_of(metrics: Mapping) -> Stopping:
    """What chose the kept epoch of one model, from its metrics.json (`metrics`), for people."""
    block = metrics.get("stopping") if isinstance(metrics.get("stopping"), dict) else {}
    rule = block.get("rule") if block.get("rule") in STOPPING else "val_best"
    validation = block.get("validation_chose", True) is not False
    kept = "last" if validation and rule == "val" else "lowest"
    chosen_on = block.get("chosen_on")
    if not (isinstance(chosen_on, str) and CHOSEN_ON.fullmatch(chosen_on)):
        chosen_on = ("an inner slice of the training subjects, not trained on" if not validation else
                     "the validation split, " + ("last epoch kept" if kept == "last" else "best epoch restored")
                     + ("" if block else " (before the rule was recorded)"))
    return Stopping(rule, "validation" if validation else "inner", kept, chosen_on)


def stopping_sentence(stopping: Stopping, patience: int | None = None) -> str:
    """One plain sentence: which data chose the kept epoch, and whether the validation figures are optimistic."""
    if not stopping.validation_chose:
        return (f"The kept epoch is the one with the lowest loss on {stopping.chosen_on}; the validation split "
                "chose nothing, so its figures are not made optimistic by the choice of epoch.")
    if stopping.kept == "last":
        wait = f"{patience} epochs" if patience else "a few epochs"
        return ("The kept epoch is the last one, as in the paper: training stopped once the validation loss had "
                f"not fallen for {wait} (or at the epoch limit), so the validation split chose it and the validation "
                "figures are optimistic.")
    return ("The kept epoch is the one with the lowest validation loss, restored by early stopping, so the "
            "validation split chose it and the validation figures are optimistic.")


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
