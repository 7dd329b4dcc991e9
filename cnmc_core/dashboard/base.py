"""What every page needs: which studies there are, one study read once (`StudyData`), its stamp (the
cache key), and the names and labels the pages share.

A study folder may come from someone else. Model keys it lists are read only when they are registry
keys; a file that cannot be read (or that the store's reader refuses) puts its model in `missing` with
the reason, and the other models are shown.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import disk, palette  # noqa: F401  (the pages' colours, markers and scales: base.palette)
from ..registry import MODELS
from ..stats import reliability
from ..store import ENSEMBLE, ArtifactError, StoreError, StudyStore, artifacts_root, check_study_name, list_studies

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
OURS, PAPER = "This study", "Paper, Table I"  # the Source column of the metrics table
ENSEMBLE_NAME = "Ensemble (mean)"  # the ensemble's row label, as analysis.py names it in its metrics.json
MODEL_KEYS = tuple(MODELS)  # every registry key, in the paper's order (pages give each one colour)
NO_STUDY = (
    "There is no study under the artifacts root `{root}` yet.\n\n"
    "Build the synthetic demo study with the button on the **Overview** page (about 2-3 minutes on a CPU), "
    "or from a terminal: `python -m cnmc_core demo --artifacts {root}`. On the real C-NMC data: "
    "`python -m cnmc_core train --data <C-NMC folder> --artifacts {root}`. "
    "Set `CNMC_ARTIFACTS` to show studies from another folder."
)
STAMPED_FILES = ("metrics.json", "predictions.csv", "history.csv", "subjects.csv")  # per model, in `stamp`
SUBJECT_COLUMNS = ("subject", "label", "cells", "accuracy")  # subjects.csv, as analysis.py writes it
RELIABILITY_FIELDS = {"low", "high", "count", "mean_prob", "fraction_all"}  # one bin in metrics.json "reliability"
COMPARISON_COLUMNS = (  # comparison.csv, as analysis.py writes it
    "model_a", "model_b", "n01", "n10", "p_value", "p_holm", "auc_diff", "auc_diff_low", "auc_diff_high")


def model_name(key: str) -> str:
    """The display name of a model key ("vgg16" -> "VGG16"); any other text comes back as it is."""
    if key == ENSEMBLE:
        return ENSEMBLE_NAME
    return MODELS[key].name if key in MODELS else str(key)


def number(x) -> float:
    """A metric value as a float; NaN for anything that is not a number (absent, None, text)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else float("nan")


def section(info: dict, *names: str) -> dict:
    """info[names[0]][names[1]]... when each is an object, else {} (study.json may come from anyone)."""
    for name in names:
        info = info.get(name) if isinstance(info, dict) else None
    return info if isinstance(info, dict) else {}


def input_sizes_text(info: dict) -> str:
    """'75 px' or '224 px, 299 px': the input sizes study.json records for its models."""
    sizes = sorted({s for s in section(info, "input_sizes").values() if isinstance(s, int) and not isinstance(s, bool)})
    return ", ".join(f"{s} px" for s in sizes) or "?"


def registry_table(keys: list[str] | None = None) -> pd.DataFrame:
    """The registry rows (all, or `keys`): key, name, native input size, preprocess, Grad-CAM layer."""
    specs = [MODELS[k] for k in (keys or MODELS) if k in MODELS]
    return pd.DataFrame([
        {"Key": s.key, "Model": s.name, "Native input": s.input_size, "preprocess_input": s.preprocess,
         "Grad-CAM layer": s.gradcam_layer}
        for s in specs
    ])


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

    Returns (name, why the requested name was not used: "" when it was, or when none was asked for).
    The reason never repeats the requested text: the page shows that text itself, as literal text.
    """
    if not names:
        return None, ""
    if not requested:
        return names[0], ""
    try:
        check_study_name(requested)
    except StoreError:
        return names[0], "is not a valid study name"
    if requested not in names:
        return names[0], "is not under this artifacts root"
    return requested, ""


def stamp(base: str, name: str) -> tuple:
    """What the study's results depend on: (root, name, then path, mtime, size of each file).

    A cache keyed on this is invalidated by any rewrite (the store writes by rename).
    """
    store = StudyStore(base, name)
    files = [lambda: store.study_json, lambda: store.split_csv, lambda: store.comparison_csv]
    for key in store.model_keys():  # registry keys and the ensemble's only
        files += [lambda key=key, f=f: store.model_file(key, f) for f in STAMPED_FILES]
    out = [base, name]
    for where in files:
        try:
            path = where()
            info = path.stat()
            out.append((str(path.relative_to(store.dir)), info.st_mtime_ns, info.st_size))
        except (OSError, StoreError) as e:  # absent, or a symlink out of the study (which is never read)
            out.append((type(e).__name__, None, None))
    return tuple(out)


# ---- one study, read once --------------------------------------------------------------------------

@dataclass
class StudyData:
    root: str
    name: str
    stamp: tuple
    info: dict  # study.json
    split: pd.DataFrame  # split.csv (empty if unreadable)
    models: list[str]  # usable models (registry keys), in study order
    metrics: dict[str, dict] = field(default_factory=dict)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    history: dict[str, pd.DataFrame] = field(default_factory=dict)  # not for the ensemble: it is not trained
    missing: dict[str, str] = field(default_factory=dict)  # key (as the study wrote it) -> why it is not shown
    notes: list[str] = field(default_factory=list)  # study-level problems, one line each (plain text)
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
        return bool(section(self.info, "data").get("synthetic"))

    @property
    def status(self) -> str:
        return str(self.info.get("status", "?"))


def load_study(base: str, name: str) -> StudyData:
    """Everything the pages show about a study; a broken model is named in `missing`, never raised."""
    store = StudyStore(base, name)
    info = store.read_study()
    if not isinstance(info, dict):
        raise ValueError(f"study.json of {name} holds a {type(info).__name__}, not an object")
    try:
        split, split_note = store.read_split(), ""
    except (OSError, ValueError) as e:
        split = pd.DataFrame(columns=["path", "subject", "label", "split", "reason"])
        split_note = f"{_problem('split.csv', e)}: the dataset page is empty"
    data = StudyData(base, name, stamp(base, name), info, split, [], notes=[split_note] if split_note else [])
    for key in expected_models(info):
        if key not in MODELS:
            data.missing[str(key)] = "not a model key of this version (or a path): it is not read"
        elif why := _load_model(store, key, data):
            data.missing[key] = why
        else:
            data.models.append(key)
    if ENSEMBLE in store.model_keys():  # written by `stats` (analysis.py), like a model
        if why := _load_model(store, ENSEMBLE, data):
            data.missing[ENSEMBLE] = why
    _load_statistics(store, data)
    return data


def expected_models(info: dict) -> list:
    """The model keys study.json lists, as written (unchecked: the caller checks them)."""
    listed = info.get("models") or section(info, "config").get("models") or []
    return list(dict.fromkeys(map(str, listed))) if isinstance(listed, list) else [str(listed)]


def _problem(file: str, error: Exception) -> str:
    """One line naming the file and what is wrong with it (the store's readers already name the file)."""
    text = (str(error).splitlines() or [""])[0][:200]
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    if isinstance(error, ArtifactError):  # the store's check: "<file>: <what is wrong>"
        return text
    return f"{file} is not valid ({type(error).__name__}{': ' + text if text else ''})"


def _load_model(store: StudyStore, key: str, data: StudyData) -> str:
    """Read one model's files into `data`; return why it cannot be shown ('' when it can)."""
    rerun = (f"recompute it with {stats_command(data)}" if key == ENSEMBLE
             else "rerun the study's command to finish it")
    try:
        if not store.model_file(key, "metrics.json").is_file():
            return "still training" if data.info.get("status") == "running" else f"metrics.json is missing ({rerun})"
    except StoreError as e:  # its folder leads out of the study
        return str(e)
    parts = {}
    for file, read in (("metrics.json", store.read_metrics), ("predictions.csv", store.read_predictions),
                       ("history.csv", None if key == ENSEMBLE else store.read_history)):
        if read is None:
            continue
        try:
            parts[file] = read(key)
        except (OSError, ValueError) as e:
            return f"{_problem(file, e)}; {rerun}"
    data.metrics[key], data.predictions[key] = parts["metrics.json"], parts["predictions.csv"]
    if "history.csv" in parts:
        data.history[key] = parts["history.csv"]
    return ""


def _load_statistics(store: StudyStore, data: StudyData) -> None:
    """subjects.csv of each row and comparison.csv; a study made before them simply has none."""
    for key in data.evaluated:
        try:
            subjects = pd.read_csv(disk.check_size(store.subjects_csv(key)), dtype={"subject": str})
            _require_numbers("subjects.csv", subjects, SUBJECT_COLUMNS[1:], also=("subject",))
            data.subjects[key] = subjects
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            data.notes.append(f"{_problem('subjects.csv', e)} ({model_name(key)}): recompute the statistics "
                              f"with {stats_command(data)}")
    try:
        comparison = pd.read_csv(disk.check_size(store.comparison_csv))
        _require_numbers("comparison.csv", comparison, COMPARISON_COLUMNS[2:], also=COMPARISON_COLUMNS[:2])
        data.comparison = comparison
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        data.notes.append(f"{_problem('comparison.csv', e)}: recompute it with {stats_command(data)}")


def _require_numbers(file: str, frame: pd.DataFrame, numeric: tuple[str, ...], also: tuple[str, ...] = ()) -> None:
    for column in (*also, *numeric):
        if column not in frame:
            raise ValueError(f"{file}: no column {column}")
        if column in numeric and not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{file}: column {column} holds text")


# ---- what several pages derive from a study ------------------------------------------------------

def threshold_of(metrics: dict) -> float:
    """A model's saved decision threshold on P(ALL) (0.5 when metrics.json has none)."""
    return float(metrics.get("threshold", 0.5))  # the store's check: a number in [0, 1]


@dataclass
class Matrix:
    key: str
    name: str
    counts: list[list[int]]  # [[tn, fp], [fn, tp]]: rows true (HEM, ALL), columns predicted
    rates: list[list[float]]  # each row divided by its sum (0 for an empty row)
    threshold: float


def matrix(key: str, counts, threshold: float) -> Matrix:
    """A 2 x 2 confusion matrix of counts with its row rates."""
    c = np.asarray(counts, dtype=float)
    sums = c.sum(axis=1, keepdims=True)
    rates = np.divide(c, sums, out=np.zeros_like(c), where=sums > 0)
    return Matrix(key, model_name(key), np.asarray(counts, int).tolist(), rates.tolist(), float(threshold))


def reliability_frame(data: StudyData, keys: list[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """(Model, low, high, n, predicted, observed for every non-empty bin; model name -> ECE) of the rows `keys`.

    The bins are those saved in metrics.json (10 equal-width bins of P(ALL)), so they match the ECE of
    the tables; a study made before they were saved gets them from its predictions, by the same function.
    """
    rows, ece = [], {}
    for key in keys:
        ece[model_name(key)], bins = _reliability_bins(data, key)
        rows += [{"Model": model_name(key), "low": b["low"], "high": b["high"], "n": int(b["count"]),
                  "predicted": b["mean_prob"], "observed": b["fraction_all"]} for b in bins if b["count"]]
    return pd.DataFrame(rows, columns=["Model", "low", "high", "n", "predicted", "observed"]), ece


def _reliability_bins(data: StudyData, key: str) -> tuple[float, list[dict]]:
    """(ECE, its bins: low, high, count, mean_prob, fraction_all) of one row."""
    m = data.metrics[key]
    saved = m.get("reliability")
    if (isinstance(saved, list) and isinstance(m.get("ece"), (int, float))
            and all(isinstance(b, dict) and RELIABILITY_FIELDS <= set(b) for b in saved)):
        return float(m["ece"]), saved
    p = data.predictions[key]
    return reliability(p["label"].astype(int).to_numpy(), p["prob_all"].to_numpy(dtype=float))


def stats_command(data: StudyData) -> str:
    """The command that (re)computes a study's statistics from its saved predictions."""
    return f"python -m cnmc_core stats --study {data.name} --artifacts {shlex.quote(str(data.root))}"


def ensemble_members(data: StudyData) -> list[str]:
    """The model keys the ensemble averages, as its metrics.json lists them (registry keys only)."""
    members = data.metrics.get(ENSEMBLE, {}).get("members")
    return [k for k in members if isinstance(k, str) and k in MODELS] if isinstance(members, list) else []


def stats_note(data: StudyData) -> str:
    """'' when the study's statistics are all there and current; else one line: what is missing and how to
    compute it. Markdown: its only values are the study's (checked) name and this machine's artifacts root."""
    if not data.models:
        return ""
    several = len(data.models) >= 2
    missing = [what for what, absent in (
        ("95% intervals", any("ci95" not in data.metrics[k] for k in data.models)),
        ("ensemble", several and ENSEMBLE not in data.metrics),
        ("model comparisons", several and data.comparison is None),
        ("accuracy per subject", any(k not in data.subjects for k in data.models)),
    ) if absent]
    if missing and data.info.get("status") == "running":
        return (f"The statistics of this study ({', '.join(missing)}) are computed when its last model finishes; "
                "they appear here then.")
    if missing:
        return (f"This study has no {', '.join(missing)} yet: it was made before they existed, or they were removed. "
                f"Compute them from its saved predictions (seconds, nothing is retrained): `{stats_command(data)}`")
    compared = set() if data.comparison is None else set(data.comparison["model_a"]) | set(data.comparison["model_b"])
    members = set(ensemble_members(data) or data.models)
    if several and not set(data.models) <= compared & members:  # a model shown that they leave out
        return ("The ensemble or the model comparisons were computed before the latest models finished. "
                f"Recompute them: `{stats_command(data)}`")
    return ""
