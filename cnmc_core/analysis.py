"""The study's statistics, computed from the saved predictions alone (so they can be recomputed).

For every complete model: 95% subject-bootstrap intervals of every metric (`ci95` in
metrics.json) and accuracy per validation subject (`subjects.csv`). Then the ensemble (mean
P(ALL) of the models, saved as models/ensemble/ like a model) and `comparison.csv` (all model
pairs: exact McNemar with Holm adjustment, AUC difference with a subject-bootstrap interval).
"""

from __future__ import annotations

import logging

import pandas as pd

from .evaluation import classification_metrics
from .stats import N_BOOT, compare_models, metric_cis, per_subject
from .store import ENSEMBLE, StudyStore, write_csv

log = logging.getLogger(__name__)


def analyse_study(store: StudyStore, n_boot: int = N_BOOT, seed: int | None = None) -> dict:
    """Compute and save the statistics; returns {"models": [...], "ensemble": bool, "pairs": n}."""
    info = store.read_study()
    seed = info.get("seed", 0) if seed is None else seed
    keys = [k for k in info.get("models", []) if store.model_complete(k)]
    predictions = {}
    for key in keys:
        preds = store.read_predictions(key)
        metrics = store.read_metrics(key)
        threshold = metrics.get("threshold", 0.5)
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
            ci95=metric_cis(ensemble["label"], ensemble["prob_all"], ensemble["subject"].astype(str), 0.5, n_boot, seed),
            ci_method=f"{n_boot} subject-bootstrap replicates, seed {seed}",
        )
        store.write_ensemble(metrics, ensemble)
        write_csv(store.subjects_csv(ENSEMBLE), per_subject(ensemble))
    comparison = compare_models(predictions, n_boot=n_boot, seed=seed)
    write_csv(store.comparison_csv, comparison)
    log.info("statistics: %d models, %d pairs compared%s", len(predictions), len(comparison), ", ensemble saved" if has_ensemble else "")
    return {"models": list(predictions), "ensemble": has_ensemble, "pairs": int(len(comparison))}


def _ensemble(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    keys = list(predictions)
    out = predictions[keys[0]][["path", "subject", "label"]].copy()
    probs = []
    for k in keys:
        merged = out[["path"]].merge(predictions[k][["path", "prob_all"]], on="path", how="left", validate="one_to_one")
        probs.append(merged["prob_all"].to_numpy())
    out["prob_all"] = sum(probs) / len(probs)
    return out
