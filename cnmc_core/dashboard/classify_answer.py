"""The Classify page's answer around the models' numbers: each model's track record on the study's validation cells,
what a score like this one has meant there, the reference cells nearest in a model's feature space, the summary of
several results, the CSV export, and the generated examples a first-time visitor can try.

Track record (docs/preparation.md). For each model (and the ensemble) of the study, on its validation cells
(predictions.csv, the unit is the cell; N cells of M patients): sensitivity (recall of ALL), specificity and ROC AUC
at the model's own threshold, as metrics.json holds them, with 95% intervals from a class-stratified subject
bootstrap (stats.class_stratified_cis: metrics.json's `ci95` when `stats` wrote it, else computed here the same way).
Beside an upload's P(ALL) p: among the validation cells the model scored within +-NEAR_SCORE of p (inclusive), how
many there are and the share that were ALL: an empirical calibration of that one score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np
import pandas as pd
from PIL import Image

from .. import answer, predict, smears
from ..stats import N_BOOT, class_stratified_cis
from ..store import ENSEMBLE
from .base import StudyData, model_name

INCONCLUSIVE = answer.INCONCLUSIVE  # the headline label when answer.py's rule holds
NEAR_SCORE = answer.NEAR_SCORE  # "a score near this one": validation cells scored within +-0.05 of it
RECORD_METRICS = {"sensitivity": "recall", "specificity": "specificity", "AUC": "roc_auc"}  # shown -> metrics key
EXAMPLE_PREFIX = "generated example"  # every example's name starts with this, wherever it is shown
EXAMPLE_THUMBNAIL = 160  # pixels, the longer side of an example's preview


@dataclass(frozen=True)
class TrackRecord:
    """One model's (or the ensemble's) results on the study's validation cells."""

    key: str
    n_cells: int  # labelled validation cells (the unit)
    n_subjects: int  # the patients they come from
    threshold: float
    values: dict  # "sensitivity" / "specificity" / "AUC" -> float or None
    intervals: dict  # same keys -> [low, high] (95%) or None
    method: str  # how the intervals were made, for people
    scores: np.ndarray  # float (n_cells,): P(ALL) of each validation cell
    labels: np.ndarray  # int (n_cells,): 1 ALL, 0 HEM
    subjects: np.ndarray  # str (n_cells,)

    def metric_text(self, name: str) -> str:
        """"0.83 [0.70, 0.92]" (the value and its 95% interval), or "n/a"."""
        value, interval = self.values.get(name), self.intervals.get(name)
        if value is None or not np.isfinite(value):
            return "n/a"
        if interval and interval[0] is not None:
            return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"
        return f"{value:.2f}"

    def near(self, p: float) -> tuple[int, int, int]:
        """(cells, of them ALL, patients) among the validation cells scored within +-NEAR_SCORE of `p`."""
        inside = np.abs(self.scores - p) <= NEAR_SCORE + 1e-12
        return int(inside.sum()), int(self.labels[inside].sum()), int(len(np.unique(self.subjects[inside])))

    def near_words(self, p: float) -> str:
        """What a score like `p` has meant, in words (the unit, cells, and how many)."""
        n, n_all, patients = self.near(p)
        low, high = max(0.0, p - NEAR_SCORE), min(1.0, p + NEAR_SCORE)
        if not n:
            return f"no validation cell scored {low:.2f}-{high:.2f}: no record for a score like this"
        return (f"{n_all / n:.0%} were ALL: {n_all} of the {n} validation cells (of {patients} patients) "
                f"scored {low:.2f}-{high:.2f}")


def track_records(data: StudyData) -> dict[str, TrackRecord]:
    """key -> TrackRecord for every model of the study with validation predictions, then the ensemble's."""
    out = {}
    for key in data.evaluated:
        preds = data.predictions.get(key)
        metrics = data.metrics.get(key) or {}
        if preds is None or preds.empty:
            continue
        labelled = preds[preds["label"].astype(str).isin(("0", "1", "0.0", "1.0"))]
        if labelled.empty:
            continue
        labels = pd.to_numeric(labelled["label"]).to_numpy(dtype=int)
        scores = labelled["prob_all"].to_numpy(dtype=float)
        subjects = labelled["subject"].astype(str).to_numpy()
        threshold = float(metrics.get("threshold", 0.5))
        stored = metrics.get("ci95") if isinstance(metrics.get("ci95"), dict) else None
        if stored is None and len(np.unique(labels)) == 2:
            computed = class_stratified_cis(labels, scores, subjects, threshold, N_BOOT, seed=0)
            stored, method = computed["ci95"], computed["method"]
        else:
            method = str(metrics.get("ci_method") or f"{N_BOOT} class-stratified subject-bootstrap replicates")
        out[key] = TrackRecord(
            key, len(labels), int(len(np.unique(subjects))), threshold,
            {name: _number(metrics.get(field)) for name, field in RECORD_METRICS.items()},
            {name: (stored or {}).get(field) for name, field in RECORD_METRICS.items()},
            method, scores, labels, subjects,
        )
    return out


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_note(records: dict[str, TrackRecord]) -> str:
    """The unit and N of the track-record columns, in one line."""
    if not records:
        return "This study has no validation predictions: no track record to show."
    first = next(iter(records.values()))
    return (f"Track record: sensitivity, specificity and AUC on the study's {first.n_cells} validation cells of "
            f"{first.n_subjects} patients (unit: cell), each at the model's own threshold, with 95% intervals "
            f"({first.method}). \"Near this score\": the validation cells that model scored within ±{NEAR_SCORE} "
            "of this cell's P(ALL), and the share of them that were ALL.")


def answer_table(predictor: predict.Predictor, result: dict, records: dict[str, TrackRecord]) -> pd.DataFrame:
    """One row per model: Model, P(ALL), Call (at the model's own threshold), its sensitivity / specificity / AUC
    with their intervals, and what validation cells that model scored near this P(ALL) turned out to be."""
    rows = []
    for key, p in result.get("predictions", {}).items():
        call = "ALL" if p >= predictor.thresholds.get(key, 0.5) else "HEM"
        rows.append({"Model": model_name(key), "P(ALL)": p, "Call": call, **_record_columns(records.get(key), p)})
    return pd.DataFrame(rows)


def _record_columns(record: TrackRecord | None, p: float) -> dict:
    columns = {name if name == "AUC" else name.capitalize(): record.metric_text(name) if record else "n/a"
               for name in RECORD_METRICS}
    columns["Validation cells near this score"] = record.near_words(p) if record else "no validation results"
    return columns


def ensemble_record(result: dict, records: dict[str, TrackRecord]) -> str:
    """The ensemble's track record and what its P(ALL) has meant, in one line ("" when the study has none)."""
    record = records.get(ENSEMBLE)
    if record is None or "ensemble" not in result:
        return ""
    return (f"Ensemble on the validation cells: sensitivity {record.metric_text('sensitivity')}, specificity "
            f"{record.metric_text('specificity')}, AUC {record.metric_text('AUC')}; near this score: "
            f"{record.near_words(result['ensemble'])}.")


def best_model(records: dict[str, TrackRecord], keys: list[str]) -> str | None:
    """The model of `keys` with the highest validation AUC (the default feature space for reference cells)."""
    scored = [(records[k].values.get("AUC") or 0.0, k) for k in keys if k in records]
    return max(scored)[1] if scored else (keys[0] if keys else None)


def reference_cells(predictor: predict.Predictor, cell: predict.Classification, key: str) -> dict | str:
    """{"ALL": [Neighbour ...], "HEM": [...]} nearest to this cell in model `key`'s feature space, or one line
    saying why there are none (no cached training features here, no features for this result)."""
    if key not in cell.features:
        return "this result has no features of that model"
    return predictor.reference_cells(key, cell.features[key])


def batch_summary(results: list[dict]) -> str:
    """One line before the rows: how many cells were called ALL, HEM, inconclusive, prepared, unreliable."""
    return answer.batch_summary(results)


def export_frame(predictor: predict.Predictor, results: list[dict], when: datetime | None = None) -> pd.DataFrame:
    """All results, for the CSV download: one row per result, with the study, the models' config hash, the time
    (UTC, ISO 8601) and the research-use and synthetic-data flags (predict.results_frame's columns after those).
    The page quotes text a spreadsheet would run as a formula."""
    stamp = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds")
    return predict.results_frame(results, {**predictor.provenance(), "time": stamp})


@lru_cache(maxsize=1)
def _examples() -> dict[str, smears.Smear]:
    return {f"{EXAMPLE_PREFIX}: {name}": smear for name, smear in smears.examples().items()}


def example_names() -> list[str]:
    """The generated examples' names, each starting with "generated example" (they are made once per process)."""
    return list(_examples())


def example_preview(name: str) -> Image.Image:
    """A small picture of one example, for its button."""
    image = _examples()[name].image.copy()
    image.thumbnail((EXAMPLE_THUMBNAIL, EXAMPLE_THUMBNAIL))
    return image


def example_upload(name: str) -> tuple[str, bytes]:
    """(file name, PNG bytes) of one example: exactly what uploading that image would send."""
    if name not in _examples():
        raise ValueError(f"no generated example named {name!r}; choose one of {example_names()}")
    return f"{name}.png", _examples()[name].png_bytes()

