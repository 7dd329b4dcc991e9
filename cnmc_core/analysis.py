"""The study's statistics, computed from the saved predictions alone (so they can be recomputed).

For every complete model: 95% subject-bootstrap intervals of every metric (`ci95` in
metrics.json) and accuracy per validation subject (`subjects.csv`). Then the ensemble (mean
P(ALL) of the models, saved as models/ensemble/ like a model) and `comparison.csv` (all model
pairs: exact McNemar with Holm adjustment, AUC difference with a subject-bootstrap interval).

Every file is read through the store's checks: a damaged one stops the analysis with an
`ArtifactError` naming it, instead of silently leaving that model out of the ensemble.
"""

from __future__ import annotations

import logging

import pandas as pd

from .disk import write_csv
from .evaluation import classification_metrics
from .stats import N_BOOT, compare_models, metric_cis, per_subject
from .store import ENSEMBLE, StoreError, StudyLock, StudyStore

log = logging.getLogger(__name__)
MAX_BOOT = 100_000  # bootstrap replicates: more gains nothing visible and costs memory in proportion


def analyse_study(
    store: StudyStore, n_boot: int = N_BOOT, seed: int | None = None, partial_ensemble: bool = False
) -> dict:
    """Compute and save the statistics; returns {"models": [...], "ensemble": bool, "pairs": n}.

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
        predictions = {}
        for key in keys:
            preds = store.read_predictions(key)
            threshold = store.read_metrics(key).get("threshold", 0.5)
            cis = metric_cis(preds["label"], preds["prob_all"], preds["subject"].astype(str), threshold, n_boot, seed)
            store.update_metrics(key, {"ci95": cis, "ci_method": f"{n_boot} subject-bootstrap replicates, seed {seed}"})
            write_csv(store.subjects_csv(key), per_subject(preds, threshold))
            predictions[key] = preds

        has_ensemble = len(predictions) >= 2
        if has_ensemble:
            ensemble = _ensemble(predictions)
            metrics = classification_metrics(ensemble["label"].to_numpy(), ensemble["prob_all"].to_numpy())
            metrics.update(
                model=ENSEMBLE, name="Ensemble (mean)", members=list(predictions),
                ci95=metric_cis(ensemble["label"], ensemble["prob_all"], ensemble["subject"].astype(str), 0.5, n_boot,
                                seed),
                ci_method=f"{n_boot} subject-bootstrap replicates, seed {seed}",
            )
            store.write_ensemble(metrics, ensemble)
            write_csv(store.subjects_csv(ENSEMBLE), per_subject(ensemble))
        else:  # fewer than two models: an ensemble left from an earlier run no longer holds
            store.model_file(ENSEMBLE, "metrics.json").unlink(missing_ok=True)
        comparison = compare_models(predictions, n_boot=n_boot, seed=seed)
        write_csv(store.comparison_csv, comparison)
    log.info("statistics: %d models, %d pairs compared%s", len(predictions), len(comparison),
             ", ensemble saved" if has_ensemble else "")
    return {"models": list(predictions), "ensemble": has_ensemble, "pairs": int(len(comparison))}


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
