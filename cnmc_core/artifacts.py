"""What a study's files must hold, checked once as they are read: a shared study is input from someone else.

Each `check_*` takes what was parsed from one artifact and the file's name for messages, and returns it
(cleaned where reading needs it) or raises `ArtifactError`, whose text is "<file>: <what is wrong>".
The store (store.py) reads every artifact through these checks; nothing else parses them.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

# metrics.json: values that are a number or null (a metric undefined on a one-class split is null).
METRIC_NUMBERS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "specificity", "roc_auc",
                  "f1_weighted", "brier", "ece", "threshold")
METRIC_REQUIRED = ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "threshold", "confusion_matrix")
PREDICTION_COLUMNS = ("path", "subject", "label", "prob_all")
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
SPLIT_COLUMNS = ("path", "subject", "label", "split", "reason")
SPLITS = ("train", "val", "test", "excluded")


class ArtifactError(ValueError):
    """A study file that does not hold what it should; str() is "<file>: <what is wrong>"."""

    def __init__(self, file: str, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file, self.problem = file, problem


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_study(info, file: str, is_model_key) -> dict:
    """study.json: an object; its model keys (`models`, `config.models`) pass `is_model_key`."""
    if not isinstance(info, dict):
        raise ArtifactError(file, f"expected a JSON object, found {type(info).__name__}")
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    for where, value in (("models", info.get("models", [])), ("config.models", config.get("models", []))):
        if not isinstance(value, list):
            raise ArtifactError(file, f"{where} must be a list of model keys; found {type(value).__name__}")
        bad = [k for k in value if not (isinstance(k, str) and is_model_key(k))]
        if bad:
            raise ArtifactError(file, f"{where} names {bad[0]!r}, which is not a model key of this tool")
    for where in ("config", "data"):
        if where in info and not isinstance(info[where], dict):
            raise ArtifactError(file, f"{where} must be an object; found {type(info[where]).__name__}")
    return info


def check_metrics(metrics, file: str) -> dict:
    """metrics.json: an object with finite metrics (or null) and a 2x2 confusion matrix of counts."""
    if not isinstance(metrics, dict):
        raise ArtifactError(file, f"expected a JSON object, found {type(metrics).__name__}")
    missing = [k for k in METRIC_REQUIRED if k not in metrics]
    if missing:
        raise ArtifactError(file, f"missing {', '.join(missing)}")
    for key in METRIC_NUMBERS:
        value = metrics.get(key)
        if value is not None and not _is_number(value):
            raise ArtifactError(file, f"{key} must be a finite number or null; found {value!r:.60}")
    if not _is_number(metrics["threshold"]) or not 0 <= metrics["threshold"] <= 1:
        raise ArtifactError(file, f"threshold must be a number in [0, 1]; found {metrics['threshold']!r:.60}")
    matrix = metrics["confusion_matrix"]
    if not (isinstance(matrix, list) and len(matrix) == 2
            and all(isinstance(row, list) and len(row) == 2 for row in matrix)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for row in matrix for v in row)):
        raise ArtifactError(file, f"confusion_matrix must be [[tn, fp], [fn, tp]] of counts; found {matrix!r:.60}")
    for name, interval in (metrics.get("ci95") or {}).items() if isinstance(metrics.get("ci95"), dict) else ():
        if not (isinstance(interval, list) and len(interval) == 2
                and all(v is None or _is_number(v) for v in interval)):
            raise ArtifactError(file, f"ci95.{name} must be [low, high]; found {interval!r:.60}")
    return metrics


def _check_columns(frame: pd.DataFrame, columns, file: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        present = ", ".join(map(str, frame.columns)) or "none"
        raise ArtifactError(file, f"missing column(s) {', '.join(missing)} (has {present})")


def _check_relative_paths(paths: pd.Series, file: str) -> None:
    """Image paths are relative to a data folder and never climb out of it."""
    for value in paths:
        parts = PurePosixPath(str(value).replace("\\", "/")).parts
        if not isinstance(value, str) or not value or value.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise ArtifactError(file, f"path {str(value)[:80]!r} is not a path relative to the data folder")


def _numbers(frame: pd.DataFrame, column: str, file: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        value = frame[column].iloc[bad[0]]
        raise ArtifactError(file, f"{column} in row {bad[0] + 1} is not a finite number ({value!r:.40})")
    return values


def check_predictions(frame: pd.DataFrame, file: str) -> pd.DataFrame:
    """predictions.csv: path,subject,label,prob_all; label 0 or 1; prob_all finite in [0, 1]; one row or more."""
    _check_columns(frame, PREDICTION_COLUMNS, file)
    if frame.empty:
        raise ArtifactError(file, "holds no predictions (a header only)")
    _check_relative_paths(frame["path"], file)
    twice = frame["path"].duplicated()
    if twice.any():
        raise ArtifactError(file, f"path {frame['path'][twice].iloc[0]!r:.80} appears more than once")
    labels = _numbers(frame, "label", file)
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise ArtifactError(file, f"label in row {bad[0] + 1} is {labels[bad[0]]:g}; labels are 0 (HEM) or 1 (ALL)")
    prob = _numbers(frame, "prob_all", file)
    bad = np.flatnonzero((prob < 0) | (prob > 1))
    if len(bad):
        raise ArtifactError(file, f"prob_all in row {bad[0] + 1} is {prob[bad[0]]:g}, outside [0, 1]")
    out = frame.copy()
    out["label"], out["prob_all"] = labels.astype(np.int64), prob
    return out


def check_history(frame: pd.DataFrame, file: str) -> pd.DataFrame:
    """history.csv: one row per epoch with numeric epoch, loss, accuracy, val_loss, val_accuracy."""
    _check_columns(frame, HISTORY_COLUMNS, file)
    for column in HISTORY_COLUMNS:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ArtifactError(file, f"{column} must hold numbers")
    return frame


def check_split(frame: pd.DataFrame, file: str) -> pd.DataFrame:
    """split.csv: path,subject,label,split,reason; split in train/val/test/excluded; label '', '0' or '1'."""
    _check_columns(frame, SPLIT_COLUMNS, file)
    _check_relative_paths(frame["path"], file)
    bad = ~frame["split"].isin(SPLITS)
    if bad.any():
        raise ArtifactError(file, f"split {frame['split'][bad].iloc[0]!r:.40} is not one of {', '.join(SPLITS)}")
    bad = ~frame["label"].astype(str).isin(("", "0", "1"))
    if bad.any():
        raise ArtifactError(file, f"label {frame['label'][bad].iloc[0]!r:.40} is not 0, 1 or empty")
    return frame
