"""The artifact store: the one module that knows the layout on disk. Every write is atomic (disk.py).

    <root>/<study>/study.json                 resolved config, data fingerprint, versions, seed, time
    <root>/<study>/split.csv                  every file found: path,subject,label,split,reason,...
    <root>/<study>/.lock                      while a writer runs: its pid and start time (`StudyLock`)
    <root>/<study>/models/<key>/metrics.json  written last: its presence marks the model complete
    <root>/<study>/models/<key>/predictions.csv, history.csv, model.keras, subjects.csv, PROJECTION_FILES
    <root>/<study>/models/ensemble/metrics.json, predictions.csv, subjects.csv (mean of the models)
    <root>/<study>/comparison.csv             all model pairs: McNemar, AUC difference with CI
    <root>/<study>/gallery/index.json         the Grad-CAM gallery: sampled validation cells, per-model results
    <root>/<study>/gallery/cells/<id>.png     each sampled cell at the gallery's side
    <root>/<study>/gallery/<key>/<id>.npy     its heatmap for model <key>, uint8 (side, side), 255 = hottest
    <root>/<study>/reference/images.json      image statistics of training cells (out-of-distribution check)
    <root>/<study>/reference/<key>.npz        pooled-feature mean, scale and distance threshold of model <key>
    <root>/.cache/features/...                features shared by all studies (features.py)
    <root>/.cache/scan/<folder key>.json      checksums of the last scan of each data folder (dataset.py)
    <root>/.local/data_roots.json             data folders this machine trained from (`trusted_data_roots`)
    <root>/.demo-build/                       the dashboard's demo build: pid, progress.json, build.log

The root is the `--artifacts` argument, else $CNMC_ARTIFACTS, else ./artifacts.

A study folder may come from someone else, so what it says is checked here, where it is read: model keys
are registry keys (or "ensemble"), every path stays inside the study folder (a symlink out is refused),
and each artifact passes its check in artifacts.py (`ArtifactError` names the file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from . import disk
from .artifacts import ArtifactError, check_history, check_metrics, check_predictions, check_split, check_study
from .disk import FolderBusy as FolderBusy  # re-exported: what other modules take from the store
from .disk import pid_alive as pid_alive
from .disk import read_npy as read_npy
from .disk import read_npz as read_npz
from .disk import write_bytes as write_bytes
from .registry import MODELS

STUDY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")  # used with fullmatch: a trailing newline fails
MODEL_FILES = ("metrics.json", "predictions.csv", "history.csv", "model.keras")
ENSEMBLE = "ensemble"  # models/ensemble/: mean P(ALL) of the study's models, no history or weights
ENSEMBLE_FILES = ("metrics.json", "predictions.csv")
PROJECTION_FILES = ("projection.npz", "projection.json")  # feature-space maps (projection.py), the JSON written last
DATA_ROOTS_ENV = "CNMC_DATA_ROOTS"  # folders of images the local user trusts, os.pathsep-separated
DEMO_BUILD_DIR = ".demo-build"  # under the artifacts root; not a study name (it starts with a dot)


class StoreError(ValueError):
    pass


class StudyNotFound(StoreError, FileNotFoundError):  # no study of that name (no study.json)
    pass


def artifacts_root(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("CNMC_ARTIFACTS") or "artifacts").expanduser()


def check_study_name(name: str) -> str:
    if not isinstance(name, str) or not STUDY_NAME_RE.fullmatch(name) or ".." in name:
        raise StoreError(
            f"study name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 80 characters)"
        )
    return name


def is_model_key(key: str) -> bool:
    """A registry key or the ensemble's: the only names a study's models/ folder may hold."""
    return isinstance(key, str) and (key in MODELS or key == ENSEMBLE)


def demo_build_dir(root: str | Path | None = None) -> Path:
    """<root>/.demo-build/: the dashboard's demo build writes its pid, progress.json and build.log here."""
    return artifacts_root(root) / DEMO_BUILD_DIR


# ---- trusted data folders (recorded outside every study) ---------------------------------------

def record_data_root(root: str | Path | None, data_dir: str | Path) -> None:
    """Remember that the local user trained from `data_dir`: the dashboard may show its images."""
    disk.remember_folder(artifacts_root(root) / ".local" / "data_roots.json", data_dir)


def trusted_data_roots(root: str | Path | None = None) -> list[Path]:
    """Folders whose images may be shown: those this machine trained from, then those in $CNMC_DATA_ROOTS.

    A study's own `data.path` is a hint, never a permission: a shared study could name any folder.
    """
    env = [Path(p).expanduser().resolve() for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    recorded = disk.remembered_folders(artifacts_root(root) / ".local" / "data_roots.json")
    return list(dict.fromkeys(recorded + env))


# ---- one writer per study ---------------------------------------------------------------------------

class StudyLock(disk.FolderLock):
    """Held by every writer of a study (train, demo, stats, ablate): `disk.FolderLock` on `<study>/.lock`.

    A second writer gets `FolderBusy` (a ValueError) naming the process that writes and since when.
    Readers (pages, predict, explain) never take it: atomic writes already give them whole files.
    """

    def __init__(self, store: StudyStore):
        super().__init__(store.dir, f"study {store.name} is being written by process {{pid}} since {{since}}; "
                                    "wait for it or use another --study")
        self.store = store

    def __enter__(self) -> StudyLock:
        try:
            super().__enter__()
        except OSError as e:  # the folder or its lock file cannot be made
            problem = f"cannot write to {self.store.dir} ({e.strerror or e}); choose another --artifacts folder"
            raise StoreError(problem) from None
        return self


def lock_holder(store: StudyStore) -> dict | None:
    """{"pid", "since"} of the process writing `store` now, or None (a page can tell a live run from a dead one)."""
    return disk.lock_holder(store.dir)


# ---- one study ------------------------------------------------------------------------------------

class StudyStore:
    """Paths, validated reads and atomic writes for one study under an artifacts root."""

    def __init__(self, root: str | Path | None, name: str):
        self.root = artifacts_root(root)
        self.name = check_study_name(name)
        self.dir = self.root / name
        if self.dir.exists() and not self.dir.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"study {name!r} points outside the artifacts root {self.root}; refusing to use it")

    def require(self) -> StudyStore:
        """This store, when the study exists; `StudyNotFound` saying how to list the studies otherwise."""
        if not self.exists():
            raise StudyNotFound(f"no study {self.name!r} under {self.root} (see `python -m cnmc_core studies`)")
        return self

    def label(self, path: Path) -> str:
        """`path` as messages name it: relative to the artifacts root ("demo/models/vgg16/metrics.json")."""
        return Path(path).relative_to(self.root).as_posix() if Path(path).is_relative_to(self.root) else str(path)

    def inside(self, path: Path) -> Path:
        """`path` when it resolves inside the study folder (symlinks followed); a StoreError otherwise."""
        if not Path(path).resolve().is_relative_to(self.dir.resolve()):
            raise StoreError(f"{self.label(path)} leads outside study {self.name!r} (a symlink?); refusing to use it")
        return Path(path)

    # paths -----------------------------------------------------------------------------------
    @property
    def study_json(self) -> Path:
        return self.inside(self.dir / "study.json")

    @property
    def split_csv(self) -> Path:
        return self.inside(self.dir / "split.csv")

    @property
    def feature_cache_root(self) -> Path:
        return self.root / ".cache" / "features"

    @property
    def scan_cache_root(self) -> Path:
        return self.root / ".cache" / "scan"

    def model_dir(self, key: str) -> Path:
        """models/<key>/ for a registry key or "ensemble"; anything else (a path, a typo) is a StoreError."""
        if not is_model_key(key):
            raise StoreError(f"{str(key)[:80]!r} is not a model key ({', '.join(MODELS)} or {ENSEMBLE})")
        return self.inside(self.dir / "models" / key)

    def model_file(self, key: str, name: str) -> Path:
        return self.inside(self.model_dir(key) / _safe_file(name))

    def subjects_csv(self, key: str) -> Path:
        return self.model_file(key, "subjects.csv")

    @property
    def comparison_csv(self) -> Path:
        return self.inside(self.dir / "comparison.csv")

    # the Grad-CAM gallery and the out-of-distribution reference ----------------------------------
    @property
    def gallery_index(self) -> Path:
        return self.inside(self.dir / "gallery" / "index.json")

    def gallery_cell(self, cell_id: str) -> Path:
        return self.inside(self.dir / "gallery" / "cells" / f"{_safe_part(cell_id)}.png")

    def gallery_heatmap(self, key: str, cell_id: str) -> Path:
        return self.inside(self.dir / "gallery" / _safe_part(key) / f"{_safe_part(cell_id)}.npy")

    @property
    def image_reference(self) -> Path:
        return self.inside(self.dir / "reference" / "images.json")

    def feature_reference(self, key: str) -> Path:
        return self.inside(self.dir / "reference" / f"{_safe_part(key)}.npz")

    colour_reference = property(lambda self: self.inside(self.dir / "reference" / "colour.json"))  # prepare.py

    # writing (under a StudyLock, which also proves the folder writable before hours of training) --
    def write_study(self, info: dict) -> None:
        disk.write_json(self.study_json, info)

    def write_split(self, frame: pd.DataFrame) -> None:
        disk.write_csv(self.split_csv, frame)

    def write_model(self, key: str, metrics: dict, predictions: pd.DataFrame, history: pd.DataFrame,
                    save_model: Callable[[Path], None]) -> None:
        """One model's results, metrics.json last (its presence means complete); `save_model(path)` writes the model."""
        self.model_file(key, "metrics.json").unlink(missing_ok=True)
        save_model(self.model_file(key, "model.keras"))
        disk.write_csv(self.model_file(key, "predictions.csv"), predictions)
        disk.write_csv(self.model_file(key, "history.csv"), history)
        disk.write_json(self.model_file(key, "metrics.json"), metrics)

    def update_metrics(self, key: str, extra: dict) -> None:
        disk.write_json(self.model_file(key, "metrics.json"), {**self.read_metrics(key), **extra})

    def write_ensemble(self, metrics: dict, predictions: pd.DataFrame) -> None:
        self.model_file(ENSEMBLE, "metrics.json").unlink(missing_ok=True)
        disk.write_csv(self.model_file(ENSEMBLE, "predictions.csv"), predictions)
        disk.write_json(self.model_file(ENSEMBLE, "metrics.json"), metrics)

    def write_gallery(self, index: dict, cells: dict[str, bytes], heatmaps: dict[tuple[str, str], np.ndarray]) -> None:
        """Replace the gallery: cell PNGs and heatmaps first, index.json last (its presence marks it complete)."""
        self.gallery_index.unlink(missing_ok=True)
        for cell_id, png in cells.items():
            write_bytes(self.gallery_cell(cell_id), png)
        for (key, cell_id), heatmap in heatmaps.items():
            disk.write_npy(self.gallery_heatmap(key, cell_id), heatmap)
        disk.write_json(self.gallery_index, index)

    def write_references(self, images: dict, features: dict[str, dict[str, np.ndarray]]) -> None:
        for key, arrays in features.items():
            disk.write_npz(self.feature_reference(key), **arrays)
        disk.write_json(self.image_reference, images)

    # reading: each artifact through its check (artifacts.py); a missing file is FileNotFoundError --
    def _read(self, path: Path, parse, check):
        label = self.label(path)
        try:
            parsed = parse(disk.check_size(path))
        except FileNotFoundError:
            raise
        except (ValueError, OSError) as e:  # bad JSON or CSV, bad encoding, a folder where a file should be
            text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ArtifactError(label, f"cannot be read ({text})") from None
        return check(parsed, label)

    def exists(self) -> bool:
        return self.study_json.is_file()

    def read_study(self) -> dict:
        return self._read(self.study_json, disk.read_json, lambda info, label: check_study(info, label, is_model_key))

    def read_split(self) -> pd.DataFrame:
        parse = lambda p: pd.read_csv(p, dtype={"subject": str, "sha1": str}, keep_default_na=False)
        return self._read(self.split_csv, parse, check_split)

    def read_metrics(self, key: str) -> dict:
        return self._read(self.model_file(key, "metrics.json"), disk.read_json, check_metrics)

    def read_predictions(self, key: str) -> pd.DataFrame:
        return self._read(self.model_file(key, "predictions.csv"), lambda p: pd.read_csv(p, dtype={"subject": str}),
                          check_predictions)

    def read_history(self, key: str) -> pd.DataFrame:
        return self._read(self.model_file(key, "history.csv"), pd.read_csv, check_history)

    def model_complete(self, key: str, config_hash: str | None = None) -> bool:
        """All of a model's files are there and its metrics pass their check (and match `config_hash` if given)."""
        try:
            if not all(self.model_file(key, f).is_file() for f in (ENSEMBLE_FILES if key == ENSEMBLE else MODEL_FILES)):
                return False
            metrics = self.read_metrics(key)
        except (OSError, ValueError):
            return False
        return config_hash is None or metrics.get("config_hash") == config_hash

    def model_keys(self) -> list[str]:
        """The model folders present: registry keys and the ensemble's only (nothing else is looked at)."""
        folder = self.inside(self.dir / "models")
        names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        return sorted(name for name in names if is_model_key(name))

    def read_gallery_index(self) -> dict | None:
        return _optional(lambda: disk.read_json(self.gallery_index), dict)

    def read_image_reference(self, colour: bool = False) -> dict | None:  # colour: the stain reference
        return _optional(lambda: disk.read_json(self.colour_reference if colour else self.image_reference), dict)

    def read_feature_reference(self, key: str) -> dict[str, np.ndarray] | None:
        return _optional(lambda: disk.read_npz(self.feature_reference(key)), dict)


def _optional(read: Callable[[], object], kind: type):
    """read() when it works and gives a `kind`, else None: for optional files (a symlink out counts as none)."""
    try:
        value = read()
    except (OSError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def _safe_part(name: str) -> str:
    """A path component made by this code (model key, cell id); anything else is refused."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,40}", name):
        raise StoreError(f"{str(name)[:80]!r} is not a valid model key or gallery cell id")
    return name


def _safe_file(name: str) -> str:  # a file name within a model's folder
    if not re.fullmatch(r"[a-z_]{1,40}\.[a-z]{1,8}", name):
        raise StoreError(f"{name!r} is not a study file name")
    return name


def list_studies(root: str | Path | None = None) -> list[dict]:
    """Every study under the root, newest first: name, created, models complete/expected, synthetic."""
    base = artifacts_root(root)
    out = []
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if not d.is_dir() or not STUDY_NAME_RE.fullmatch(d.name):
            continue
        entry = {"name": d.name, "created": "", "models": [], "expected": [], "complete": False, "problem": ""}
        try:
            store = StudyStore(base, d.name)
            info = store.read_study()
        except FileNotFoundError:
            entry["problem"] = "no study.json"
        except ArtifactError as e:
            entry["problem"] = f"study.json unreadable ({e.problem})"
        except (OSError, ValueError) as e:  # StoreError: the study folder leads outside the root
            entry["problem"] = str(e) if isinstance(e, StoreError) else f"study.json unreadable ({type(e).__name__})"
        if entry["problem"]:
            out.append(entry)
            continue
        entry["created"] = str(info.get("created", ""))
        entry["synthetic"] = bool((info.get("data") or {}).get("synthetic"))
        entry["expected"] = list((info.get("config") or {}).get("models", []))
        entry["models"] = [k for k in entry["expected"] if store.model_complete(k)]
        entry["complete"] = bool(entry["expected"]) and entry["models"] == entry["expected"]
        out.append(entry)
    out.sort(key=lambda e: e["created"], reverse=True)
    return out
