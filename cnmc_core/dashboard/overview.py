"""The Overview page: what the study is, and the metrics of its models and their ensemble beside the
paper's Table I, with each metric's 95% subject-bootstrap interval (saved in metrics.json as `ci95`), the
patient-level results (`patient`), and the one verdict of the subject-level test (`analysis.verdict`): a
model is marked best only when that test says it beats every other model. With `--split cv`, a table of
their own ranks the rows by the cross-validated (out-of-fold) ROC AUC, with each row's spread over the folds
(`cv`), and the first screen's answer names the top of that ranking. What chose each model's stopping epoch
is in the run's facts, and a caveat says when it was the validation split."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis import cv_summary, patient_summary, stopping_of, verdict
from ..registry import PAPER_TABLE_I
from ..store import ENSEMBLE
from .base import (
    LOWER_IS_BETTER,
    METRICS,
    OURS,
    PAPER,
    StudyData,
    ensemble_members,
    input_sizes_text,
    model_name,
    number,
    section,
    stats_command,
    stats_note,
)


@dataclass
class Overview:
    facts: dict[str, str]  # label -> value, in display order (values come from study.json: show them literally)
    splits: pd.DataFrame  # split, images, ALL, HEM, subjects
    table: pd.DataFrame  # Model, Source, metric labels..., one row per model, the ensemble (+ paper rows)
    best: dict[str, list[str]]  # metric label -> [the winner's name]; empty unless the subject-level test names one
    verdict: str  # one sentence: who, if anyone, beats every other model (the Compare page says the same)
    patients: pd.DataFrame  # Model, Patients, ALL, HEM, Patient AUC, Patient accuracy (+ 95% intervals), threshold
    csv: str  # the table with each metric's 95% interval
    intervals: pd.DataFrame  # Model, Source, metric (key), value, low, high: see metric_intervals
    stats_note: str  # what statistics are missing and how to compute them ('' when all are there)
    members: list[str] = field(default_factory=list)  # model names the ensemble averages
    takeaway: str = ""  # the first screen's answer in words: the verdict, then the highest ROC AUC with its unit and N
    ours: pd.DataFrame = None  # this study's rows only (Model, the scores, Threshold): the table that fits the page
    paper: pd.DataFrame = None  # beside the paper: Model, then paper / this study / difference per Table I metric
    # one sentence when the validation split chose some model's stopping epoch (its figures are optimistic), else ''
    stopping_caveat: str = ""
    # cross-validated figures (train --split cv), best out-of-fold AUC first; empty without: CV_COLUMNS
    cv: pd.DataFrame = None
    cv_note: str = ""  # the cv table's unit and N (cells, patients, folds) and how it was made
    ensemble_rule: str = ""  # how the ensemble calls ALL: "calls ALL at 0.50 (…)"


INTRO = ("Seven ImageNet CNNs, each with a small trained head, tell **ALL** (leukemic lymphoblasts) from **normal "
         "B cells** (HEM) in single-cell images of the **C-NMC 2019** dataset, after Vijesh & Sikka's comparison of "
         "transfer learning on C-NMC.")


def overview(data: StudyData, with_paper: bool = True) -> Overview:
    table = metrics_table(data, with_paper)
    ours = table[table["Source"] == OURS]
    c = data.comparison
    said = verdict(None if c is None else c[c["model_a"].isin(data.models) & c["model_b"].isin(data.models)],
                   model_name)
    best = {}
    if said.winner is not None:  # colour only what the subject-level test supports, where the winner also leads
        winner = model_name(said.winner)
        for label in (*METRICS.values(), *LOWER_IS_BETTER.values()):
            col = pd.to_numeric(ours[label], errors="coerce")
            if col.notna().any():
                target = col.min() if label in LOWER_IS_BETTER.values() else col.max()
                if winner in list(ours.loc[np.isclose(col, target), "Model"]):
                    best[label] = [winner]
    sentence = said.sentence
    if not said.tested and len(data.models) >= 2:
        sentence = ("No model is marked best: this study has no subject-level test saved. Compute it with "
                    f"`{stats_command(data)}`")
    intervals = metric_intervals(data)
    wide = intervals.pivot_table(index=["Model", "Source"], columns="metric", values=["low", "high"], sort=False)
    wide = wide[[(side, m) for m in METRICS if m in set(intervals["metric"]) for side in ("low", "high")]]
    wide.columns = [f"{METRICS[m]} 95% {side}" for side, m in wide.columns]
    csv = table.merge(wide.reset_index(), on=["Model", "Source"], how="left").to_csv(index=False)
    members = [model_name(k) for k in ensemble_members(data)]
    cv, cv_note = cv_table(data)
    return Overview(_facts(data), _splits(data), table, best, sentence, _patients(data), csv, intervals,
                    stats_note(data), members, _takeaway(sentence, ours, cv), _ours(ours), paper_beside(data),
                    stopping_caveat(data), cv, cv_note, _ensemble_rule(data))


def _takeaway(verdict_sentence: str, ours: pd.DataFrame, cv: pd.DataFrame) -> str:
    """The verdict, then which row has the highest ROC AUC (a point estimate, with its unit and N): cross-validated
    over the training patients when the study was, else on the validation cells."""
    if len(cv) and cv["AUC (out-of-fold)"].notna().any():
        top = cv.iloc[0]  # ranked by out-of-fold AUC
        return (f"{verdict_sentence} Highest cross-validated ROC AUC: {top['Model']}, {top['AUC (out-of-fold)']:.3f} "
                f"(out-of-fold over {int(top['Patients'])} training patients in {int(top['Folds'])} folds; unit: "
                f"cell, N = {int(top['Cells'])} training cells).").strip()
    auc = pd.to_numeric(ours["ROC AUC"], errors="coerce")
    if not auc.notna().any():
        return verdict_sentence
    top = ours.loc[auc.idxmax()]
    n = top["Val. images"]
    unit = f"unit: cell, N = {int(n)} validation cells" if pd.notna(n) else "unit: cell"
    return (f"{verdict_sentence} Highest ROC AUC: {top['Model']}, {float(top['ROC AUC']):.3f} ({unit})."
            .strip())


def _ours(ours: pd.DataFrame) -> pd.DataFrame:
    """This study's rows with the columns a reader compares (the kept epoch is on the Training curves page)."""
    return ours.drop(columns=["Source", "Best epoch", "Val. images"]).reset_index(drop=True)


FOLD_SOURCE = re.compile(r"C-NMC's \d+ training folds|\d+ subject-disjoint folds stratified by class \(seed \d+\)")
CV_COLUMNS = ("Model", "AUC (out-of-fold)", "AUC 95% low", "AUC 95% high", "Fold AUC min", "Fold AUC max",
              "Fold AUC SD", "Patients", "Folds", "Cells")


def cv_table(data: StudyData) -> tuple[pd.DataFrame, str]:
    """(CV_COLUMNS, one row per row of the study with cross-validated figures, best out-of-fold AUC first; the
    caption's unit, N and method). Empty, '' for a study trained without --split cv."""
    frame = cv_summary({k: data.metrics[k] for k in data.evaluated}, model_name)
    frame = frame.rename(columns={"Subjects": "Patients"})[list(CV_COLUMNS)]
    if frame.empty:
        return frame, ""
    key = next(k for k in data.evaluated if model_name(k) == frame["Model"].iloc[0])
    cv = section(data.metrics[key], "cv")
    per_fold = [f.get("n_subjects") for f in cv.get("per_fold", []) if isinstance(f, dict)]
    folds = _count(cv.get("folds")) or len(per_fold)
    each = (f"{min(per_fold)}" if min(per_fold) == max(per_fold) else f"{min(per_fold)}–{max(per_fold)}") \
        if per_fold and all(isinstance(n, int) for n in per_fold) else "?"
    n_all, n_hem = _count(cv.get("n_all_subjects")), _count(cv.get("n_hem_subjects"))
    classes = f" ({n_all} ALL, {n_hem} HEM)" if n_all is not None and n_hem is not None else ""
    source = cv.get("fold_source")  # crossval.cv_folds's wording, else not shown (a caption is Markdown)
    source = f" ({source})" if isinstance(source, str) and FOLD_SOURCE.fullmatch(source) else ""
    note = (f"Unit: cell, N = {_count(cv.get('n_cells')) or '?'} training cells of "
            f"{_count(cv.get('n_subjects')) or '?'} training patients{classes}, in {folds} folds of {each} "
            f"patients{source}. Each training "
            "cell's P(ALL) comes from the head trained without its fold (out-of-fold), so no cell is scored by a "
            "head that trained on its patient; the 95% interval resamples patients within each class. Fold AUC "
            f"min / max / SD: the AUC within each fold, spread over the {folds} folds. Ranked by out-of-fold AUC, "
            "which rests on more patients than validation does.")
    if "held-out fold" in str(cv.get("stopping", "")):  # crossval.cv_record: each fold chose its own epoch
        note += " Each fold's stopping epoch was chosen on that fold's own loss, so these figures are optimistic too."
    return frame, note


def stopping_caveat(data: StudyData) -> str:
    """One sentence naming the models whose stopping epoch the validation split chose ('' when it chose none)."""
    rules = {model_name(k): stopping_of(data.metrics[k]) for k in data.models}
    chose = {name: rule for name, rule in rules.items() if rule.validation_chose}
    if not chose:
        return ""
    kept = {s.kept for s in chose.values()}
    how = (" (the paper's rule: last epoch kept)" if kept == {"last"} else
           " (lowest validation loss restored)" if kept == {"lowest"} else "")
    ensemble = ", and the ensemble's," if ENSEMBLE in data.evaluated else ""
    return (f"The validation split chose the stopping epoch of {', '.join(chose)}{how}, so their validation "
            f"figures{ensemble} are optimistic.")


def _ensemble_rule(data: StudyData) -> str:
    """How the ensemble calls ALL, from its metrics.json: 'calls ALL at 0.50 (…)', '' without an ensemble."""
    if ENSEMBLE not in data.evaluated:
        return ""
    ensemble = data.metrics[ENSEMBLE]
    threshold = number(ensemble.get("threshold", 0.5))
    source = str(ensemble.get("threshold_source", ""))
    why = (" (chosen on its out-of-fold predictions of the training cells)" if "out-of-fold" in source
           else ", like its models" if source.startswith("fixed") else "")
    return f"calls ALL at {threshold:.2f}{why}"


def paper_beside(data: StudyData) -> pd.DataFrame:
    """Each model of the paper's Table I: its value, this study's, and the difference (this study − paper)."""
    rows = []
    for key in data.models:
        if key in PAPER_TABLE_I:
            row = {"Model": model_name(key)}
            for metric, paper_value in PAPER_TABLE_I[key].items():
                label, ours = METRICS[metric], number(data.metrics[key].get(metric))
                row |= {f"{label}, paper": paper_value, f"{label}, this study": ours,
                        f"{label} difference": ours - paper_value}
            rows.append(row)
    return pd.DataFrame(rows)


def _patients(data: StudyData) -> pd.DataFrame:
    """The patient-level block of each evaluated model, for people (empty before `stats` saved it)."""
    return patient_summary({k: data.metrics[k] for k in data.evaluated}, model_name)


def _facts(data: StudyData) -> dict[str, str]:
    info, cfg, d = data.info, section(data.info, "config"), section(data.info, "data")
    devices = info.get("devices") if isinstance(info.get("devices"), list) else []
    facts = {
        "Data": ("SYNTHETIC demo cells (not patients)" if data.synthetic else "C-NMC") + f" at {d.get('path', '?')}",
        "Layout / split": f"{d.get('layout', '?')} layout, {d.get('split_mode', '?')} split (by subject)",
        "Weights / preset": f"{cfg.get('weights', '?')} / {cfg.get('preset', '?')}",
        "Input size": input_sizes_text(info),
        "Epochs (max) / batch": f"{cfg.get('epochs', '?')} / {cfg.get('batch_size', '?')}",
        "Stopping epoch chosen on": _stopping_fact(data),
        "Created / updated": f"{_when(info.get('created'))} / {_when(info.get('updated'))}",
        "Status": str(info.get("status", "?")),
        "Devices": ", ".join(str(x) for x in devices) or "?",
    }
    run = section(info, "compute")  # studies before the speed options ran in float32 on one device
    if run:
        replicas = _count(run.get("replicas")) or 1
        facts["Compute"] = (f"{run.get('dtype_policy', 'float32')}, XLA {run.get('xla', 'auto')}"
                            + (f", {replicas} replicas (MirroredStrategy)" if replicas > 1 else ""))
    excluded = section(d, "summary").get("excluded")
    if excluded:
        facts["Excluded files"] = str(excluded)
    return facts


def _stopping_fact(data: StudyData) -> str:
    """The rule study.json records (config.stopping; none before issue 14: val_best), and what chose the epoch."""
    rule = section(data.info, "config").get("stopping") or "val_best (not recorded)"
    chosen = dict.fromkeys(stopping_of(data.metrics[k]).chosen_on for k in data.models)
    return f"{rule}: {'; '.join(chosen) or '?'}"


def _splits(data: StudyData) -> pd.DataFrame:
    summary = section(data.info, "data", "summary")
    rows = []
    for s in ("train", "val", "test"):
        part = summary.get(s)
        if isinstance(part, dict):
            labelled = number(part.get("ALL", 0)) + number(part.get("HEM", 0))
            rows.append({"Split": s if labelled else f"{s} (unlabelled)",
                         **{c: _count(part.get(c, 0)) for c in ("images", "ALL", "HEM", "subjects")}})
    return pd.DataFrame(rows)


def metrics_table(data: StudyData, with_paper: bool = True) -> pd.DataFrame:
    rows = []
    scores = {**METRICS, **LOWER_IS_BETTER}
    for key in data.evaluated:
        m = data.metrics[key]
        rows.append({
            "Model": model_name(key), "Source": OURS,
            **{label: number(m.get(k)) for k, label in scores.items()},
            "Threshold": number(m.get("threshold")), "Best epoch": _count(m.get("best_epoch")),
            "Val. images": _count(m.get("n_val", m.get("n"))),
        })
        if with_paper and key in PAPER_TABLE_I:
            ref = PAPER_TABLE_I[key]
            rows.append({"Model": model_name(key), "Source": PAPER, **{METRICS[k]: v for k, v in ref.items()}})
    frame = pd.DataFrame(rows, columns=["Model", "Source", *scores.values(), "Threshold", "Best epoch", "Val. images"])
    return frame.astype({**{label: float for label in scores.values()}, "Best epoch": "Int64", "Val. images": "Int64"})


def metric_intervals(data: StudyData) -> pd.DataFrame:
    """Model, Source, metric (key), value, low, high: each row's saved value and its 95% subject-bootstrap interval."""
    rows = []
    for key in data.evaluated:
        m = data.metrics[key]
        ci95 = m.get("ci95") if isinstance(m.get("ci95"), dict) else {}
        for metric, bounds in ci95.items():
            value = m.get(metric)
            if isinstance(bounds, list) and len(bounds) == 2 and all(
                    isinstance(x, (int, float)) for x in (value, *bounds)):
                rows.append({"Model": model_name(key), "Source": OURS, "metric": metric, "value": float(value),
                             "low": float(bounds[0]), "high": float(bounds[1])})
    return pd.DataFrame(rows, columns=["Model", "Source", "metric", "value", "low", "high"])


def _count(x) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _when(stamp_text) -> str:
    return str(stamp_text or "?").replace("T", " ").replace("+00:00", " UTC")
