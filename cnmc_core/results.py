"""Read-only answers for the dashboard: every page asks this module, in one call, for what it shows.

Pages never see a path, a Keras object or a metric formula. They get plain values: dicts,
DataFrames and small dataclasses that pickle (so Streamlit can cache them). Paths are resolved
through `StudyStore` (the one module that knows the layout); metrics come from scikit-learn via
`evaluation.classification_metrics`, the same function that wrote metrics.json.

Conventions, as in metrics.json: ALL (label 1) is the positive class; a confusion matrix is
[[tn, fp], [fn, tp]] with rows = true class (HEM, ALL) and columns = predicted class (HEM, ALL).

The one thing here that is not read-only is `start_demo_build`, which starts the CLI's `demo`
command in its own process; a Streamlit script run never trains.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .evaluation import classification_metrics
from .registry import MODELS, PAPER_TABLE_I
from .results_stats import (  # the statistics views (Compare page, intervals, calibration), here for the pages
    COMPARISON_COLUMNS, ENSEMBLE_NAME, PAIRED_P, SIGNIFICANCE, CompareView, StudyComparison, compare, compare_studies,
    metric_intervals, other_studies, reliability_frame, stats_command, stats_note,
)
from .store import ENSEMBLE, StoreError, StudyStore, artifacts_root, check_study_name, list_studies

CLASSES = ("HEM", "ALL")  # index = label: 0 normal B cell, 1 malignant lymphoblast
METRICS = {  # metrics.json key -> column label (all: higher is better)
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "specificity": "Specificity",
    "roc_auc": "ROC AUC",
    "f1_weighted": "Weighted F1",  # F1 of each class weighted by its size: the C-NMC challenge's ranking
}
LOWER_IS_BETTER = {"ece": "ECE", "brier": "Brier"}  # calibration: expected calibration error (10 bins), Brier score
OURS, PAPER = "This study", "Paper, Table I"
CELLS = {  # (true, predicted) -> what a hematologist calls that cell of the matrix
    ("ALL", "HEM"): "false negatives: ALL called HEM (missed leukemia)",
    ("HEM", "ALL"): "false positives: HEM called ALL",
    ("ALL", "ALL"): "true positives: ALL called ALL",
    ("HEM", "HEM"): "true negatives: HEM called HEM",
}
DEMO_DIR = ".demo-build"  # under the artifacts root; not a study name (it starts with a dot)
_BUILDS: dict[str, subprocess.Popen] = {}  # demo builds started by this process, by root


def model_name(key: str) -> str:
    if key == ENSEMBLE:
        return ENSEMBLE_NAME
    return MODELS[key].name if key in MODELS else key


# ---- which studies there are ----------------------------------------------------------------------

def root() -> str:
    """The artifacts root the dashboard reads: $CNMC_ARTIFACTS, else ./artifacts."""
    return str(artifacts_root())


def studies(base: str | None = None) -> tuple[list[dict], dict[str, str]]:
    """(readable studies, newest first; {name: problem} of study folders that cannot be read).

    A study is a dict: name, created, synthetic, models (complete), expected, complete.
    A folder without study.json (nothing written yet) is neither.
    """
    found = list_studies(base)
    broken = {s["name"]: s["problem"] for s in found if s["problem"] and s["problem"] != "no study.json"}
    return [s for s in found if not s["problem"]], broken


def choose_study(names: list[str], requested: str | None) -> tuple[str | None, str]:
    """The study to show: `requested` (e.g. from a link) if valid and present, else the newest.

    Returns (name, note); the note says why a requested name was not used ("" when it was).
    """
    if not names:
        return None, ""
    if not requested:
        return names[0], ""
    try:
        check_study_name(requested)
    except StoreError:
        return names[0], f"The link asks for study {requested[:80]!r}, which is not a valid study name; showing {names[0]!r}."
    if requested not in names:
        return names[0], f"The link asks for study {requested!r}, which is not under this artifacts root; showing {names[0]!r}."
    return requested, ""


def stamp(base: str, name: str) -> tuple:
    """What the study's results depend on: (root, name, then path, mtime, size of each file).

    A cache keyed on this is invalidated by any rewrite (the store writes by rename).
    """
    store = StudyStore(base, name)
    files = [store.study_json, store.split_csv]
    for key in store.model_keys():
        files += [store.model_file(key, f) for f in ("metrics.json", "predictions.csv", "history.csv", "subjects.csv")]
    files.append(store.comparison_csv)
    out = [base, name]
    for f in files:
        try:
            info = f.stat()
            out.append((str(f.relative_to(store.dir)), info.st_mtime_ns, info.st_size))
        except OSError:
            out.append((f.name, None, None))
    return tuple(out)


# ---- one study, read once --------------------------------------------------------------------------

@dataclass
class StudyData:
    root: str
    name: str
    stamp: tuple
    info: dict  # study.json
    split: pd.DataFrame  # split.csv (empty if unreadable)
    models: list[str]  # usable models, in study order
    metrics: dict[str, dict] = field(default_factory=dict)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    history: dict[str, pd.DataFrame] = field(default_factory=dict)  # not for the ensemble: it is not trained
    missing: dict[str, str] = field(default_factory=dict)  # key -> why it is not shown
    notes: list[str] = field(default_factory=list)  # study-level problems, one line each
    subjects: dict[str, pd.DataFrame] = field(default_factory=dict)  # key -> subjects.csv (hardest subject first)
    comparison: pd.DataFrame | None = None  # comparison.csv (all model pairs); None before `stats` ran

    @property
    def evaluated(self) -> list[str]:
        """Every row of a results table: the models, then the ensemble when the study has one.

        `models` stays the trained models (weights, history, Grad-CAM); metrics and predictions hold both.
        """
        return self.models + ([ENSEMBLE] if ENSEMBLE in self.metrics else [])

    @property
    def synthetic(self) -> bool:
        return bool(self.info.get("data", {}).get("synthetic"))

    @property
    def data_path(self) -> str:
        return str(self.info.get("data", {}).get("path") or "")


def load_study(base: str, name: str) -> StudyData:
    """Everything the pages show about a study; a broken model is named in `missing`, never raised."""
    store = StudyStore(base, name)
    info = store.read_study()
    notes = []
    try:
        split = store.read_split()
    except (OSError, ValueError) as e:
        split = pd.DataFrame(columns=["path", "subject", "label", "split", "reason"])
        notes.append(f"split.csv cannot be read ({type(e).__name__}): the dataset page is empty")
    data = StudyData(base, name, stamp(base, name), info, split, [])
    expected = list(info.get("models") or info.get("config", {}).get("models", []))
    for key in expected:
        why = _load_model(store, key, data)
        if why:
            data.missing[key] = why
        else:
            data.models.append(key)
    if store.model_file(ENSEMBLE, "metrics.json").is_file():  # written by `stats` (analysis.py), like a model
        if why := _load_model(store, ENSEMBLE, data):
            data.missing[ENSEMBLE] = why
    _load_statistics(store, data)
    return data


def _load_statistics(store: StudyStore, data: StudyData) -> None:
    """subjects.csv of each row and comparison.csv; a study made before them simply has none."""
    for key in data.evaluated:
        try:
            data.subjects[key] = pd.read_csv(store.subjects_csv(key), dtype={"subject": str})
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            data.notes.append(f"subjects.csv of {model_name(key)} cannot be read ({type(e).__name__}): "
                              f"recompute the statistics with `{stats_command(data)}`")
    try:
        comparison = pd.read_csv(store.comparison_csv)
        if lacking := [c for c in COMPARISON_COLUMNS if c not in comparison]:
            raise ValueError(f"no column {lacking[0]}")
        data.comparison = comparison
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        data.notes.append(f"comparison.csv cannot be read ({type(e).__name__}: {e}): recompute it with `{stats_command(data)}`")


def _load_model(store: StudyStore, key: str, data: StudyData) -> str:
    """Read one model's files into `data`; return why it cannot be shown ('' when it can)."""
    rerun = f"recompute it: `{stats_command(data)}`" if key == ENSEMBLE else "rerun the study's command to finish it"
    if not store.model_file(key, "metrics.json").is_file():
        running = data.info.get("status") == "running"
        return "still training" if running else f"metrics.json is missing ({rerun})"
    try:
        metrics = store.read_metrics(key)
        if not isinstance(metrics, dict) or "confusion_matrix" not in metrics:
            raise ValueError("no confusion_matrix")
    except (OSError, ValueError) as e:
        return f"metrics.json is not valid ({type(e).__name__}; {rerun})"
    try:
        predictions = store.read_predictions(key)
        history = None if key == ENSEMBLE else store.read_history(key)
    except (OSError, ValueError) as e:
        return f"predictions.csv or history.csv cannot be read ({type(e).__name__}; {rerun})"
    data.metrics[key], data.predictions[key] = metrics, predictions
    if history is not None:
        data.history[key] = history
    return ""


# ---- overview ----------------------------------------------------------------------------------

@dataclass
class Overview:
    facts: dict[str, str]  # label -> value, in display order
    splits: pd.DataFrame  # split, images, ALL, HEM, subjects
    table: pd.DataFrame  # Model, Source, metric labels..., one row per model, the ensemble (+ paper rows)
    best: dict[str, list[str]]  # metric label -> model names with the best value (this study's rows)
    csv: str  # the table with each metric's 95% interval
    intervals: pd.DataFrame  # Model, Source, metric (key), value, low, high: see metric_intervals
    stats_note: str  # what statistics are missing and how to compute them ('' when all are there)
    members: list[str] = field(default_factory=list)  # model names the ensemble averages


def overview(data: StudyData, with_paper: bool = True) -> Overview:
    info, cfg, d = data.info, data.info.get("config", {}), data.info.get("data", {})
    sizes = sorted(set((info.get("input_sizes") or {}).values()))
    facts = {
        "Data": ("SYNTHETIC demo cells (not patients)" if data.synthetic else "C-NMC") + f" at {d.get('path', '?')}",
        "Layout / split": f"{d.get('layout', '?')} layout, {d.get('split_mode', '?')} split (by subject)",
        "Weights / preset": f"{cfg.get('weights', '?')} / {cfg.get('preset', '?')}",
        "Input size": ", ".join(f"{s} px" for s in sizes) or "?",
        "Epochs (max) / batch": f"{cfg.get('epochs', '?')} / {cfg.get('batch_size', '?')}",
        "Created / updated": f"{_when(info.get('created'))} / {_when(info.get('updated'))}",
        "Status": str(info.get("status", "?")),
        "Devices": ", ".join(info.get("devices", [])) or "?",
    }
    run = info.get("compute")  # studies before the speed options ran in float32 on one device
    if run:
        replicas = int(run.get("replicas", 1))
        facts["Compute"] = (f"{run.get('dtype_policy', 'float32')}, XLA {run.get('xla', 'auto')}"
                            + (f", {replicas} replicas (MirroredStrategy)" if replicas > 1 else ""))
    summary = d.get("summary", {})
    splits = pd.DataFrame(
        [{"Split": s if summary[s].get("ALL", 0) + summary[s].get("HEM", 0) else f"{s} (unlabelled)",
          **{c: summary[s].get(c, 0) for c in ("images", "ALL", "HEM", "subjects")}}
         for s in ("train", "val", "test") if isinstance(summary.get(s), dict)]
    )
    if summary.get("excluded"):
        facts["Excluded files"] = str(summary["excluded"])
    table = metrics_table(data, with_paper)
    ours = table[table["Source"] == OURS]
    best = {}
    for label in (*METRICS.values(), *LOWER_IS_BETTER.values()):
        col = pd.to_numeric(ours[label], errors="coerce")
        if col.notna().any():
            target = col.min() if label in LOWER_IS_BETTER.values() else col.max()
            best[label] = list(ours.loc[np.isclose(col, target), "Model"])
    intervals = metric_intervals(data)
    wide = intervals.pivot_table(index=["Model", "Source"], columns="metric", values=["low", "high"], sort=False)
    wide = wide[[(side, m) for m in METRICS if m in set(intervals["metric"]) for side in ("low", "high")]]
    wide.columns = [f"{METRICS[m]} 95% {side}" for side, m in wide.columns]
    csv = table.merge(wide.reset_index(), on=["Model", "Source"], how="left").to_csv(index=False)
    members = [model_name(k) for k in data.metrics.get(ENSEMBLE, {}).get("members", [])]
    return Overview(facts, splits, table, best, csv, intervals, stats_note(data), members)


def metrics_table(data: StudyData, with_paper: bool = True) -> pd.DataFrame:
    rows = []
    scores = {**METRICS, **LOWER_IS_BETTER}
    for key in data.evaluated:
        m = data.metrics[key]
        rows.append({
            "Model": model_name(key), "Source": OURS,
            **{label: _num(m.get(k)) for k, label in scores.items()},
            "Threshold": _num(m.get("threshold")), "Best epoch": m.get("best_epoch"),
            "Val. images": m.get("n_val", m.get("n")),
        })
        if with_paper and key in PAPER_TABLE_I:
            ref = PAPER_TABLE_I[key]
            rows.append({"Model": model_name(key), "Source": PAPER, **{METRICS[k]: v for k, v in ref.items()}})
    frame = pd.DataFrame(rows, columns=["Model", "Source", *scores.values(), "Threshold", "Best epoch", "Val. images"])
    return frame.astype({**{label: float for label in scores.values()}, "Best epoch": "Int64", "Val. images": "Int64"})


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) else float("nan")


def _when(stamp_text) -> str:
    return str(stamp_text or "?").replace("T", " ").replace("+00:00", " UTC")


# ---- confusion matrices ------------------------------------------------------------------------

@dataclass
class Matrix:
    key: str
    name: str
    counts: list[list[int]]  # [[tn, fp], [fn, tp]]: rows true (HEM, ALL), columns predicted
    rates: list[list[float]]  # each row divided by its sum (0 for an empty row)
    threshold: float


def _matrix(key: str, counts, threshold: float) -> Matrix:
    c = np.asarray(counts, dtype=float)
    sums = c.sum(axis=1, keepdims=True)
    rates = np.divide(c, sums, out=np.zeros_like(c), where=sums > 0)
    return Matrix(key, model_name(key), np.asarray(counts, int).tolist(), rates.tolist(), float(threshold))


def confusion(data: StudyData) -> dict[str, Matrix]:
    """The saved confusion matrix of each model (at its saved threshold), counts and row rates."""
    return {k: _matrix(k, data.metrics[k]["confusion_matrix"], data.metrics[k].get("threshold", 0.5)) for k in data.evaluated}


@dataclass
class CellImages:
    total: int  # images in the cell
    rows: pd.DataFrame  # path, subject, prob_all: the first `limit`, most confidently called first
    data_path: str
    available: bool  # the dataset folder is there, so thumbnails can be read


def cell_images(data: StudyData, key: str, true: str, predicted: str, limit: int = 24) -> CellImages:
    """Validation images of one model's confusion-matrix cell (true class, predicted class)."""
    if true not in CLASSES or predicted not in CLASSES:
        raise ValueError(f"true and predicted must be one of {CLASSES}; got {true!r}, {predicted!r}")
    p = data.predictions[key]
    threshold = float(data.metrics[key].get("threshold", 0.5))
    called = np.where(p["prob_all"].to_numpy() >= threshold, "ALL", "HEM")
    truth = np.where(p["label"].astype(int).to_numpy() == 1, "ALL", "HEM")
    rows = p[(truth == true) & (called == predicted)]
    rows = rows.sort_values("prob_all", ascending=predicted == "HEM")[["path", "subject", "prob_all"]]
    return CellImages(len(rows), rows.head(limit).reset_index(drop=True), data.data_path, _dataset_there(data))


def _dataset_there(data: StudyData) -> bool:
    return bool(data.data_path) and Path(data.data_path).is_dir()


def thumbnail(data_path: str, rel_path: str, side: int = 128) -> bytes | None:
    """A PNG of one dataset image, `side` px square; None if it is missing, unreadable or outside the dataset."""
    from PIL import Image

    base = Path(data_path).resolve()
    path = (base / rel_path).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((side, side), Image.BILINEAR)
            out = io.BytesIO()
            img.save(out, format="PNG")
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


# ---- training curves ---------------------------------------------------------------------------

@dataclass
class Curves:
    frame: pd.DataFrame  # Model, epoch, metric (loss|accuracy), split (train|validation), value
    best: pd.DataFrame  # Model, epoch, loss, accuracy: the validation values at the kept (best) epoch


def training_curves(data: StudyData) -> Curves:
    parts, best = [], []
    for key in data.models:
        h, name = data.history[key], model_name(key)
        for metric in ("loss", "accuracy"):
            for split, col in (("train", metric), ("validation", f"val_{metric}")):
                if col in h:
                    parts.append(pd.DataFrame({"Model": name, "epoch": h["epoch"], "metric": metric, "split": split, "value": h[col]}))
        epoch = data.metrics[key].get("best_epoch")
        row = h[h["epoch"] == epoch]
        if len(row):
            best.append({"Model": name, "epoch": int(epoch), "loss": float(row["val_loss"].iloc[0]),
                         "accuracy": float(row["val_accuracy"].iloc[0])})
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["Model", "epoch", "metric", "split", "value"])
    return Curves(frame, pd.DataFrame(best, columns=["Model", "epoch", "loss", "accuracy"]))


# ---- ROC, precision-recall, calibration, threshold ----------------------------------------------

@dataclass
class RocPr:
    roc: pd.DataFrame  # Model, fpr, tpr
    pr: pd.DataFrame  # Model, recall, precision
    calibration: pd.DataFrame  # Model, low, high, n, predicted (mean P(ALL) in the bin), observed (share ALL)
    auc: dict[str, float]  # model name -> ROC AUC
    ap: dict[str, float]  # model name -> average precision (area under the PR curve)
    skipped: list[str]  # models whose validation set holds one class only
    ece: dict[str, float] = field(default_factory=dict)  # model name -> expected calibration error


def roc_pr(data: StudyData) -> RocPr:
    """ROC and PR curves of every row (the ensemble too); calibration is the reliability bins saved in
    metrics.json (10 equal-width bins of P(ALL)), so it matches the ECE in the tables."""
    from sklearn import metrics as skm

    roc, pr, auc, ap, skipped, shown = [], [], {}, {}, [], []
    for key in data.evaluated:
        name, p = model_name(key), data.predictions[key]
        y, s = p["label"].astype(int).to_numpy(), p["prob_all"].to_numpy(dtype=float)
        if len(set(y)) < 2:
            skipped.append(name)
            continue
        fpr, tpr, _ = skm.roc_curve(y, s)
        precision, recall, _ = skm.precision_recall_curve(y, s)
        auc[name], ap[name] = float(skm.roc_auc_score(y, s)), float(skm.average_precision_score(y, s))
        roc.append(pd.DataFrame({"Model": name, "fpr": fpr, "tpr": tpr}))
        pr.append(pd.DataFrame({"Model": name, "recall": recall, "precision": precision}))
        shown.append(key)

    def cat(parts, cols):
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)

    calibration, ece = reliability_frame(data, shown)
    return RocPr(cat(roc, ["Model", "fpr", "tpr"]), cat(pr, ["Model", "recall", "precision"]), calibration, auc, ap, skipped, ece)


@dataclass
class AtThreshold:
    matrix: Matrix
    metrics: dict[str, float | None]  # metric label -> value at this threshold
    saved: dict[str, float | None]  # metric label -> value at the saved threshold (metrics.json)


def at_threshold(data: StudyData, key: str, threshold: float) -> AtThreshold:
    """One model's confusion matrix and metrics if a cell were called ALL when P(ALL) >= threshold."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1; got {threshold}")
    p = data.predictions[key]
    m = classification_metrics(p["label"].astype(int).to_numpy(), p["prob_all"].to_numpy(dtype=float), float(threshold))
    saved = data.metrics[key]
    return AtThreshold(
        _matrix(key, m["confusion_matrix"], threshold),
        {label: m.get(k) for k, label in METRICS.items()},
        {label: saved.get(k) for k, label in METRICS.items()},
    )


# ---- dataset -------------------------------------------------------------------------------------

@dataclass
class DatasetView:
    balance: pd.DataFrame  # Split, Class, Images
    subjects: pd.DataFrame  # Split, ALL subjects, HEM subjects, Subjects
    samples: dict[str, pd.DataFrame]  # class -> path, subject (one image per subject where possible)
    excluded: pd.DataFrame  # path, reason
    data_path: str
    available: bool


def dataset_view(data: StudyData, per_class: int = 8) -> DatasetView:
    s = data.split
    labelled = s[s["split"].isin(["train", "val"]) & s["label"].astype(str).isin(["0", "1"])].copy()
    labelled["Class"] = np.where(labelled["label"].astype(str) == "1", "ALL", "HEM")
    order = {"train": 0, "val": 1, "test": 2}
    balance = labelled.groupby(["split", "Class"]).size().rename("Images").reset_index()
    unlabelled = s[s["split"] == "test"]
    if len(unlabelled):
        balance = pd.concat([balance, pd.DataFrame([{"split": "test", "Class": "unlabelled", "Images": len(unlabelled)}])])
    balance = balance.rename(columns={"split": "Split"}).sort_values("Split", key=lambda c: c.map(order)).reset_index(drop=True)
    known = s[(s["split"] != "excluded") & (s["subject"].astype(str) != "")]
    cls = known["label"].astype(str).map({"1": "ALL", "0": "HEM"}).fillna("unlabelled")
    subjects = known.assign(Class=cls).groupby(["split", "Class"])["subject"].nunique().unstack(fill_value=0)
    subjects = subjects.rename(columns=lambda c: f"{c} subjects").rename_axis(columns=None)
    subjects["Subjects"] = known.groupby("split")["subject"].nunique()
    subjects = subjects.reset_index().rename(columns={"split": "Split"}).sort_values("Split", key=lambda c: c.map(order))
    samples = {}
    for cls in CLASSES:
        part = labelled[labelled["Class"] == cls]
        firsts = part.drop_duplicates("subject")
        pick = pd.concat([firsts, part.drop(firsts.index)]).head(per_class)
        samples[cls] = pick[["path", "subject"]].reset_index(drop=True)
    excluded = s.loc[s["split"] == "excluded", ["path", "reason"]].reset_index(drop=True)
    return DatasetView(balance, subjects.reset_index(drop=True), samples, excluded, data.data_path, _dataset_there(data))


# ---- classify a cell ---------------------------------------------------------------------------

def load_predictor(base: str, name: str):
    """Every trained model of the study, loaded for prediction (imports TensorFlow: cache the result)."""
    from .predict import Predictor

    return Predictor.load(StudyStore(base, name))


def prediction_table(result: dict) -> pd.DataFrame:
    """Per-model rows of one `Predictor.predict` result: Model, P(ALL), Call."""
    preds = result.get("predictions", {})
    return pd.DataFrame(
        [{"Model": model_name(k), "P(ALL)": p, "Call": "ALL" if p >= 0.5 else "HEM"} for k, p in preds.items()],
        columns=["Model", "P(ALL)", "Call"],
    )


def registry_table(keys: list[str] | None = None) -> pd.DataFrame:
    """The registry rows (all, or `keys`): key, name, native input size, preprocess, Grad-CAM layer."""
    specs = [MODELS[k] for k in (keys or MODELS) if k in MODELS]
    return pd.DataFrame([
        {"Key": s.key, "Model": s.name, "Native input": s.input_size, "preprocess_input": s.preprocess, "Grad-CAM layer": s.gradcam_layer}
        for s in specs
    ])


def gradcam_layers(data: StudyData) -> pd.DataFrame:
    """The registry rows of the study's models (Grad-CAM reads the layer named here)."""
    return registry_table(data.models)


# ---- building the demo study in another process -----------------------------------------------

@dataclass
class BuildStatus:
    state: str  # none | running | done | failed
    fraction: float = 0.0  # 0..1
    text: str = ""  # one line for a person
    log: str = ""  # where the build's whole output is, when it failed


def start_demo_build(base: str | None = None, extra_args: tuple[str, ...] = ()) -> BuildStatus:
    """Start `python -m cnmc_core demo --artifacts <root> --progress-file …` in its own session."""
    base_path = artifacts_root(base)
    status = demo_build_status(str(base_path))
    if status.state == "running":
        return status
    folder = base_path / DEMO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "progress.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "cnmc_core", "demo", "--artifacts", str(base_path),
           "--progress-file", str(folder / "progress.json"), *extra_args]
    with open(folder / "build.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path(__file__).resolve().parents[1])
    _BUILDS[str(base_path)] = proc
    (folder / "pid").write_text(str(proc.pid))
    return BuildStatus("running", 0.0, "starting …")


def demo_build_status(base: str | None = None) -> BuildStatus:
    """Where a demo build under this root stands, from its progress file and process."""
    base_path = artifacts_root(base)
    folder = base_path / DEMO_DIR
    if not (folder / "pid").is_file():
        return BuildStatus("none")
    try:
        event = json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        event = None
    fraction, text = describe_progress(event)
    if event and event.get("stage") == "done":
        return BuildStatus("done", 1.0, text)
    if _alive(str(base_path), folder):
        return BuildStatus("running", fraction, text)
    try:
        lines = (folder / "build.log").read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        lines = []
    last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
    return BuildStatus("failed", fraction, f"it stopped before it finished ({last[:300]})", str(folder / "build.log"))


def _alive(base: str, folder: Path) -> bool:
    proc = _BUILDS.get(base)
    if proc is not None:
        return proc.poll() is None
    try:
        pid = int((folder / "pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def describe_progress(event: dict | None) -> tuple[float, str]:
    """(fraction done, one line) from the CLI's latest progress event."""
    if not event:
        return 0.0, "writing the synthetic cell images …"
    stage = event.get("stage")
    if stage == "done":
        return 1.0, "done"
    if stage == "scan":
        return 0.0, "scanning the images …"
    count, index = max(1, int(event.get("count") or 1)), int(event.get("index") or 0)
    within = {"model": 0.0, "head": 0.9, "save": 0.97, "skip": 1.0}.get(stage, 0.0)
    what = {"model": "building", "head": "training the head", "save": "saving", "skip": "already complete"}.get(stage, stage)
    if stage == "features":
        done, total = int(event.get("done") or 0), max(1, int(event.get("total") or 1))
        train = event.get("split") == "train"
        within = (0.75 * done / total) if train else 0.75 + 0.15 * done / total
        what = f"features of the {'training' if train else 'validation'} images {done}/{total}"
    fraction = min(1.0, (index + within) / count)
    return fraction, f"model {index + 1} of {count}: {model_name(str(event.get('model', '?')))} — {what}"
