"""The artifact store: the one module that knows the layout on disk. Every write is atomic.

    <root>/<study>/study.json                 resolved config, data fingerprint, versions, seed, time
    <root>/<study>/split.csv                  every file found: path,subject,label,split,reason,...
    <root>/<study>/progress.json              what a running study is doing (for the dashboard)
    <root>/<study>/models/<key>/metrics.json  written last: its presence marks the model complete
    <root>/<study>/models/<key>/predictions.csv, history.csv, model.keras, subjects.csv
    <root>/<study>/models/ensemble/metrics.json, predictions.csv, subjects.csv (mean of the models)
    <root>/<study>/comparison.csv             all model pairs: McNemar, AUC difference with CI
    <root>/<study>/gallery/index.json         the Grad-CAM gallery: sampled validation cells, per-model results
    <root>/<study>/gallery/cells/<id>.png     each sampled cell at the gallery's side
    <root>/<study>/gallery/<key>/<id>.npy     its heatmap for model <key>, uint8 (side, side), 255 = hottest
    <root>/<study>/reference/images.json      image statistics of training cells (out-of-distribution check)
    <root>/<study>/reference/<key>.npz        pooled-feature mean, scale and distance threshold of model <key>
    <root>/.cache/features/...                features shared by all studies (features.py)
    <root>/.cache/scan/<folder key>.json      checksums of the last scan of each data folder (dataset.py)

The root is the `--artifacts` argument, else $CNMC_ARTIFACTS, else ./artifacts.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files (`.<name>.<pid>.<...>.tmp*`) left by processes that no longer run."""
    removed = 0
    for p in folder.rglob(".*.tmp*") if folder.is_dir() else []:
        parts = p.name.split(".")
        pid = next((int(x) for x in parts[2:] if x.isdigit()), None)
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


class StudyStore:
    """Paths and atomic reads/writes for one study under an artifacts root."""

    def __init__(self, root: str | Path | None, name: str):
        self.root = artifacts_root(root)
        self.name = check_study_name(name)
        self.dir = self.root / name
        if self.dir.exists() and not self.dir.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"study {name!r} points outside the artifacts root {self.root}; refusing to use it")

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

    @property
    def scan_cache_root(self) -> Path:
        return self.root / ".cache" / "scan"

    def model_dir(self, key: str) -> Path:
        return self.dir / "models" / key

    def model_file(self, key: str, name: str) -> Path:
        return self.model_dir(key) / name

    def subjects_csv(self, key: str) -> Path:
        return self.model_file(key, "subjects.csv")

    @property
    def comparison_csv(self) -> Path:
        return self.dir / "comparison.csv"

    # the Grad-CAM gallery and the out-of-distribution reference (explain.py, predict.py) --------
    @property
    def gallery_dir(self) -> Path:
        return self.dir / "gallery"

    @property
    def gallery_index(self) -> Path:
        return self.gallery_dir / "index.json"

    def gallery_cell(self, cell_id: str) -> Path:
        return self.gallery_dir / "cells" / f"{_safe_part(cell_id)}.png"

    def gallery_heatmap(self, key: str, cell_id: str) -> Path:
        return self.gallery_dir / _safe_part(key) / f"{_safe_part(cell_id)}.npy"

    @property
    def image_reference(self) -> Path:
        return self.dir / "reference" / "images.json"

    def feature_reference(self, key: str) -> Path:
        return self.dir / "reference" / f"{_safe_part(key)}.npz"

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
        return pd.read_csv(self.split_csv, dtype={"subject": str, "sha1": str}, keep_default_na=False)

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

    def write_gallery(self, index: dict, cells: dict[str, bytes], heatmaps: dict[tuple[str, str], np.ndarray]) -> None:
        """Replace the gallery: cell PNGs and heatmaps first, index.json last (its presence marks it complete)."""
        self.gallery_index.unlink(missing_ok=True)
        for cell_id, png in cells.items():
            write_bytes(self.gallery_cell(cell_id), png)
        for (key, cell_id), heatmap in heatmaps.items():
            write_npy(self.gallery_heatmap(key, cell_id), heatmap)
        write_json(self.gallery_index, index)

    def read_gallery_index(self) -> dict | None:
        try:
            return read_json(self.gallery_index)
        except (OSError, ValueError):
            return None

    def write_references(self, images: dict, features: dict[str, dict[str, np.ndarray]]) -> None:
        for key, arrays in features.items():
            write_npz(self.feature_reference(key), **arrays)
        write_json(self.image_reference, images)

    def read_image_reference(self) -> dict | None:
        try:
            return read_json(self.image_reference)
        except (OSError, ValueError):
            return None

    def read_feature_reference(self, key: str) -> dict[str, np.ndarray] | None:
        try:
            return read_npz(self.feature_reference(key))
        except (OSError, ValueError):
            return None


def _safe_part(name: str) -> str:
    """A path component made by this code (model key, cell id); anything else is refused."""
    if not re.fullmatch(r"[a-z0-9_]{1,40}", name):
        raise StoreError(f"{name!r} is not a valid model key or gallery cell id")
    return name


def list_studies(root: str | Path | None = None) -> list[dict]:
    """Every study under the root, newest first: name, created, models complete/expected, synthetic."""
    base = artifacts_root(root)
    out = []
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if not d.is_dir() or not STUDY_NAME_RE.match(d.name):
            continue
        entry = {"name": d.name, "created": "", "models": [], "expected": [], "complete": False, "problem": ""}
        try:
            store = StudyStore(base, d.name)
        except StoreError as e:
            entry["problem"] = str(e)
            out.append(entry)
            continue
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
