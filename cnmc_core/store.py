"""The artifact store: the one module that knows the layout on disk. Every write is atomic.

    <root>/<study>/study.json                 resolved config, data fingerprint, versions, seed, time
    <root>/<study>/split.csv                  every file found: path,subject,label,split,reason,...
    <root>/<study>/progress.json              what a running study is doing (for the dashboard)
    <root>/<study>/models/<key>/metrics.json  written last: its presence marks the model complete
    <root>/<study>/models/<key>/predictions.csv, history.csv, model.keras, subjects.csv
    <root>/<study>/models/ensemble/metrics.json, predictions.csv, subjects.csv (mean of the models)
    <root>/<study>/comparison.csv             all model pairs: McNemar, AUC difference with CI
    <root>/.cache/features/...                features shared by all studies (features.py)

The root is the `--artifacts` argument, else $CNMC_ARTIFACTS, else ./artifacts.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
MODEL_FILES = ("metrics.json", "predictions.csv", "history.csv", "model.keras")
ENSEMBLE = "ensemble"  # models/ensemble/: mean P(ALL) of the study's models, no history or weights
ENSEMBLE_FILES = ("metrics.json", "predictions.csv")


class StoreError(ValueError):
    pass


def artifacts_root(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("CNMC_ARTIFACTS") or "artifacts").expanduser()


def check_study_name(name: str) -> str:
    if not isinstance(name, str) or not STUDY_NAME_RE.match(name) or ".." in name:
        raise StoreError(
            f"study name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 80 characters)"
        )
    return name


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=str))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    _atomic_write(path, lambda f: frame.to_csv(f, index=False))


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class StudyStore:
    """Paths and atomic reads/writes for one study under an artifacts root."""

    def __init__(self, root: str | Path | None, name: str):
        self.root = artifacts_root(root)
        self.name = check_study_name(name)
        self.dir = self.root / name

    # paths -----------------------------------------------------------------------------------
    @property
    def study_json(self) -> Path:
        return self.dir / "study.json"

    @property
    def split_csv(self) -> Path:
        return self.dir / "split.csv"

    @property
    def progress_json(self) -> Path:
        return self.dir / "progress.json"

    @property
    def feature_cache_root(self) -> Path:
        return self.root / ".cache" / "features"

    def model_dir(self, key: str) -> Path:
        return self.dir / "models" / key

    def model_file(self, key: str, name: str) -> Path:
        return self.model_dir(key) / name

    def subjects_csv(self, key: str) -> Path:
        return self.model_file(key, "subjects.csv")

    @property
    def comparison_csv(self) -> Path:
        return self.dir / "comparison.csv"

    # writing ---------------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Fail now, not after hours of training, if the study folder cannot be written."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(self.dir / ".write-check.json", {"ok": True})
            (self.dir / ".write-check.json").unlink()
        except OSError as e:
            raise StoreError(f"cannot write to {self.dir} ({e.strerror or e}); choose another --artifacts folder") from None

    def write_study(self, info: dict) -> None:
        write_json(self.study_json, info)

    def write_split(self, frame: pd.DataFrame) -> None:
        write_csv(self.split_csv, frame)

    def write_progress(self, info: dict) -> None:
        write_json(self.progress_json, info)

    def write_model(self, key: str, metrics: dict, predictions: pd.DataFrame, history: pd.DataFrame, save_model) -> None:
        """Save one model's results; metrics.json goes last, so its presence means complete.

        `save_model(path)` writes the classifier atomically to `path`.
        """
        self.model_file(key, "metrics.json").unlink(missing_ok=True)
        save_model(self.model_file(key, "model.keras"))
        write_csv(self.model_file(key, "predictions.csv"), predictions)
        write_csv(self.model_file(key, "history.csv"), history)
        write_json(self.model_file(key, "metrics.json"), metrics)

    # reading ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.study_json.is_file()

    def read_study(self) -> dict:
        return read_json(self.study_json)

    def read_split(self) -> pd.DataFrame:
        return pd.read_csv(self.split_csv, dtype={"subject": str}, keep_default_na=False)

    def read_metrics(self, key: str) -> dict:
        return read_json(self.model_file(key, "metrics.json"))

    def read_predictions(self, key: str) -> pd.DataFrame:
        return pd.read_csv(self.model_file(key, "predictions.csv"), dtype={"subject": str})

    def read_history(self, key: str) -> pd.DataFrame:
        return pd.read_csv(self.model_file(key, "history.csv"))

    def model_complete(self, key: str, config_hash: str | None = None) -> bool:
        """All of a model's files are there and its metrics parse (and match `config_hash` if given)."""
        if not all(self.model_file(key, f).is_file() for f in (ENSEMBLE_FILES if key == ENSEMBLE else MODEL_FILES)):
            return False
        try:
            metrics = self.read_metrics(key)
        except (OSError, ValueError):
            return False
        return config_hash is None or metrics.get("config_hash") == config_hash

    def update_metrics(self, key: str, extra: dict) -> None:
        write_json(self.model_file(key, "metrics.json"), {**self.read_metrics(key), **extra})

    def write_ensemble(self, metrics: dict, predictions: pd.DataFrame) -> None:
        self.model_file(ENSEMBLE, "metrics.json").unlink(missing_ok=True)
        write_csv(self.model_file(ENSEMBLE, "predictions.csv"), predictions)
        write_json(self.model_file(ENSEMBLE, "metrics.json"), metrics)

    def model_keys(self) -> list[str]:
        folder = self.dir / "models"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def list_studies(root: str | Path | None = None) -> list[dict]:
    """Every study under the root, newest first: name, created, models complete/expected, synthetic."""
    base = artifacts_root(root)
    out = []
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if not d.is_dir() or not STUDY_NAME_RE.match(d.name):
            continue
        store = StudyStore(base, d.name)
        entry = {"name": d.name, "created": "", "models": [], "expected": [], "complete": False, "problem": ""}
        try:
            info = store.read_study()
        except FileNotFoundError:
            entry["problem"] = "no study.json"
            out.append(entry)
            continue
        except (OSError, ValueError) as e:
            entry["problem"] = f"study.json unreadable ({type(e).__name__})"
            out.append(entry)
            continue
        entry["created"] = info.get("created", "")
        entry["synthetic"] = bool(info.get("data", {}).get("synthetic"))
        entry["expected"] = list(info.get("config", {}).get("models", []))
        entry["models"] = [k for k in entry["expected"] if store.model_complete(k)]
        entry["complete"] = bool(entry["expected"]) and entry["models"] == entry["expected"]
        out.append(entry)
    out.sort(key=lambda e: e["created"], reverse=True)
    return out
