"""The Compare page: which differences between the models are real, how well each is calibrated,
which subjects are hard, and this study beside another study of the same data.

Nothing here is estimated anew: `cnmc_core.analysis` saved it all when the study ended (or
`python -m cnmc_core stats` did): `ci95` and `patient` in each metrics.json, models/ensemble/,
subjects.csv and comparison.csv. This module only arranges it. The headline is the subject-level test
(`p_subject_holm`, the paired sign-flip test over patients); cell-level McNemar stays beside it, labelled
as assuming independent cells. A comparison.csv older than the subject-level test falls back to
McNemar, with a note saying how to recompute it. Two exceptions: the paired test between two studies
(exact McNemar per model, Holm-adjusted), which no single study can hold, and the reliability bins of
a study made before they were saved (see base.reliability_frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis import Verdict, cv_summary, patient_summary, verdict
from ..patient_stats import SUBJECT_COLUMNS
from ..stats import holm, mcnemar_exact
from ..store import ENSEMBLE, StudyStore
from .base import (
    COMPARISON_COLUMNS,
    LOWER_IS_BETTER,
    METRICS,
    StudyData,
    input_sizes_text,
    load_study,
    model_name,
    number,
    reliability_frame,
    section,
    stats_command,
    stats_note,
    studies,
    threshold_of,
)

SIGNIFICANCE = 0.05  # a pair is marked as significantly different when its Holm-adjusted p is below this
PAIR_PARTS = ("p_holm", "p_value", "row_only", "column_only", "auc_diff", "auc_low", "auc_high")
SUBJECT_PARTS = ("p_subject_holm", "p_subject", "subject_diff", "subject_low", "subject_high", "row_better",
                 "column_better")
# Beside every calibration plot (issue 14, point 8): what P(ALL) is, and what ECE measures.
P_ALL_DEFINITION = (
    "What P(ALL) is: the paper's head has two independent sigmoid outputs, s_HEM and s_ALL, and P(ALL) = "
    "s_ALL / (s_HEM + s_ALL). It keeps the head's decision (P(ALL) ≥ 0.5 exactly when s_ALL ≥ s_HEM) but not its "
    "confidence: two low scores, 0.01 and 0.02, give 0.67. ECE, Brier score and AUC are all computed on it. "
    "ECE (unit: cell; N: the validation cells) is the cell-weighted mean gap, over 10 equal-width bins of P(ALL), "
    "between a bin's mean P(ALL) and its share of ALL cells: 0 is perfect, 0.1 means off by 10 points on average.")
MCNEMAR = "assumes independent cells"  # the label cell-level McNemar carries wherever it is shown
PAIRED_P = "Paired p (Holm)"  # two studies: the same model's calls on the same cells, exact McNemar


# ---- the Compare page ----------------------------------------------------------------------------

@dataclass
class CompareView:
    models: list[str]  # model names in the pair matrices, study order
    # PAIR_PARTS (+ SUBJECT_PARTS when tested) -> models x models, read from the row model's side (NaN on the diagonal):
    pair: dict[str, pd.DataFrame]
    #   p_holm, p_value (exact McNemar), row_only / column_only (cells only the row / column model called right),
    #   auc_diff (row − column) with its 95% subject-bootstrap interval auc_low, auc_high;
    #   p_subject_holm, p_subject (sign-flip over patients), subject_diff (mean per-patient accuracy, row − column)
    #   with subject_low, subject_high, and on how many patients the row / column model was better
    headline: str  # the part that colours the matrix: "p_subject_holm", or "p_holm" for an old comparison.csv
    significant: pd.DataFrame  # models x models, bool: headline < SIGNIFICANCE
    pairs: pd.DataFrame  # one row per pair for people, most significant first
    verdict: Verdict  # the one-sentence answer (analysis.verdict); .tested False for an old comparison.csv
    recompute: str  # '' or how to recompute an old comparison.csv
    patients: pd.DataFrame  # Model, Patients, ALL, HEM, patient AUC / accuracy with 95% intervals (patient blocks)
    n_cells: int  # validation cells behind the calibration diagrams
    reliability: pd.DataFrame  # Model, low, high, n, predicted, observed (non-empty bins; models, then the ensemble)
    ece: dict[str, float]  # model name -> expected calibration error
    subjects: pd.DataFrame  # Subject, Class, Cells, then accuracy per model name; hardest (lowest mean) first
    note: str  # stats_note
    # each model's mean per-patient accuracy minus the top model's (Model, difference, low, high, p_holm,
    # significant; the top model first, at 0), from the subject-level columns; empty for an old comparison.csv
    from_top: pd.DataFrame = None
    top: str = ""  # the top model's name (the highest mean per-patient accuracy), '' when not tested
    cv: pd.DataFrame = None  # cross-validated figures per model (cv_frame), best out-of-fold AUC first; empty without
    stopping: str = ""  # what chose each model's stopping epoch, when the validation split did ('' when it chose none)


FROM_TOP_COLUMNS = ("Model", "difference", "low", "high", "p_holm", "significant")


def from_top(models: list[str], pair: dict[str, pd.DataFrame]) -> tuple[str, pd.DataFrame]:
    """(the top model, each model's difference from it). The per-patient accuracy difference of a pair is the
    difference of the two models' mean per-patient accuracies, so the pairs order the models; the top one has
    the highest mean. Each row: row model − top, its 95% class-stratified patient-bootstrap interval and the
    pair's Holm-adjusted sign-flip p; most different last."""
    if "subject_diff" not in pair or len(models) < 2:
        return "", pd.DataFrame(columns=list(FROM_TOP_COLUMNS))
    diff = pair["subject_diff"]
    top = max(models, key=lambda m: (round(float(np.nansum(diff.loc[m].to_numpy())), 12), -models.index(m)))
    rows = [{"Model": top, "difference": 0.0, "low": np.nan, "high": np.nan, "p_holm": np.nan, "significant": False}]
    for m in models:
        if m != top:
            p = float(pair["p_subject_holm"].loc[m, top])
            low, high = float(pair["subject_low"].loc[m, top]), float(pair["subject_high"].loc[m, top])
            rows.append({"Model": m, "difference": float(diff.loc[m, top]), "low": low, "high": high, "p_holm": p,
                         "significant": p < SIGNIFICANCE})
    frame = pd.DataFrame(rows, columns=list(FROM_TOP_COLUMNS))
    rest = frame.iloc[1:].sort_values(["difference", "Model"], ascending=[False, True])
    return top, pd.concat([frame.iloc[:1], rest], ignore_index=True)


def compare(data: StudyData) -> CompareView:
    """Everything on the Compare page of one study."""
    names, pair, headline, significant, pairs = _pair_tables(data)
    c = data.comparison
    said = verdict(None if c is None else c[c["model_a"].isin(data.models) & c["model_b"].isin(data.models)],
                   model_name)
    recompute = "" if said.tested or c is None or len(names) < 2 else (
        "This study's comparison.csv was saved before the subject-level test: the matrix falls back to cell-level "
        f"McNemar, which {MCNEMAR}. Recompute with `python -m cnmc_core stats --study {data.name}` "
        f"(full command: `{stats_command(data)}`).")
    cal, ece = reliability_frame(data, data.evaluated)
    n_cells = max((int(number(data.metrics[k].get("n"))) for k in data.evaluated
                   if number(data.metrics[k].get("n")) == number(data.metrics[k].get("n"))), default=0)
    top, distance = from_top(names, pair)
    return CompareView(names, pair, headline, significant, pairs, said, recompute, patient_frame(data), n_cells,
                       cal, ece, _subject_table(data), stats_note(data), distance, top, cv_frame(data),
                       stopping_note(data))


def stopping_note(data: StudyData) -> str:
    """One sentence naming the models whose stopping epoch the validation split chose (metrics.json `stopping`;
    a study made before it was recorded restored the best validation epoch), '' when validation chose nothing."""
    chose = [model_name(k) for k in data.evaluated if k != ENSEMBLE
             and section(data.metrics[k], "stopping").get("validation_chose", True) is not False]
    if not chose:
        return ""
    return (f"The stopping epoch of {', '.join(chose)} was chosen on the validation split (the paper's rule, or a "
            "study made before the rule was recorded): their validation figures are optimistic. Presets paper_std "
            "and finetune stop on an inner slice of the training patients instead.")


def cv_frame(data: StudyData) -> pd.DataFrame:
    """The cross-validated figures of each evaluated model (analysis.cv_summary), best out-of-fold AUC first."""
    return cv_summary({k: data.metrics[k] for k in data.evaluated}, model_name)


def patient_frame(data: StudyData) -> pd.DataFrame:
    """The patient-level block of each evaluated model, for people (empty before `stats` saved it)."""
    return patient_summary({k: data.metrics[k] for k in data.evaluated}, model_name)


def _pair_tables(data: StudyData):
    c = data.comparison if data.comparison is not None else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    c = c[c["model_a"].isin(data.models) & c["model_b"].isin(data.models)]
    tested = set(SUBJECT_COLUMNS) <= set(c.columns)
    keys = [k for k in data.models if k in set(c["model_a"]) | set(c["model_b"])]
    names = [model_name(k) for k in keys]
    parts = PAIR_PARTS + (SUBJECT_PARTS if tested else ())
    pair = {part: pd.DataFrame(np.nan, index=names, columns=names) for part in parts}
    for r in c.to_dict("records"):
        a, b = model_name(r["model_a"]), model_name(r["model_b"])
        for row, col, sign in ((a, b, 1.0), (b, a, -1.0)):
            first = sign > 0
            values = [r["p_holm"], r["p_value"], r["n01" if first else "n10"], r["n10" if first else "n01"],
                      sign * r["auc_diff"], *sorted((sign * r["auc_diff_low"], sign * r["auc_diff_high"]))]
            if tested:
                values += [r["p_subject_holm"], r["p_subject"], sign * r["subject_diff"],
                           *sorted((sign * r["subject_diff_low"], sign * r["subject_diff_high"])),
                           r["subjects_a_better" if first else "subjects_b_better"],
                           r["subjects_b_better" if first else "subjects_a_better"]]
            for part, value in zip(parts, values):
                pair[part].loc[row, col] = value
    headline = "p_subject_holm" if tested else "p_holm"
    significant = pair[headline] < SIGNIFICANCE
    mcnemar = {
        "Only A right (cells)": c["n01"].astype(int).to_numpy(),
        "Only B right (cells)": c["n10"].astype(int).to_numpy(),
        f"p McNemar ({MCNEMAR})": c["p_value"].astype(float).to_numpy(),
        f"p McNemar, Holm ({MCNEMAR})": c["p_holm"].astype(float).to_numpy(),
    }
    subject = {} if not tested else {
        "Patients": c["n_subjects"].astype(int).to_numpy(),
        "Accuracy A − B (per patient)": c["subject_diff"].astype(float).to_numpy(),
        "95% low": c["subject_diff_low"].astype(float).to_numpy(),
        "95% high": c["subject_diff_high"].astype(float).to_numpy(),
        "Patients A better": c["subjects_a_better"].astype(int).to_numpy(),
        "Patients B better": c["subjects_b_better"].astype(int).to_numpy(),
        "p (patients)": c["p_subject"].astype(float).to_numpy(),
        "p (patients, Holm)": c["p_subject_holm"].astype(float).to_numpy(),
    }
    pairs = pd.DataFrame({
        "Model A": [model_name(k) for k in c["model_a"]], "Model B": [model_name(k) for k in c["model_b"]],
        **subject, "Significant": (c[headline].astype(float) < SIGNIFICANCE).to_numpy(), **mcnemar,
        "AUC A − B": c["auc_diff"].astype(float).to_numpy(),
        "AUC 95% low": c["auc_diff_low"].astype(float).to_numpy(),
        "AUC 95% high": c["auc_diff_high"].astype(float).to_numpy(),
    })
    order = "p (patients, Holm)" if tested else f"p McNemar, Holm ({MCNEMAR})"
    pairs = pairs.sort_values([order, "Model A", "Model B"], kind="stable").reset_index(drop=True)
    return names, pair, headline, significant, pairs


def _subject_table(data: StudyData) -> pd.DataFrame:
    keys = [k for k in data.evaluated if k in data.subjects]
    if not keys:
        return pd.DataFrame(columns=["Subject", "Class", "Cells"])
    first = data.subjects[keys[0]]
    out = pd.DataFrame({"Subject": first["subject"].astype(str),
                        "Class": np.where(first["label"].astype(int) == 1, "ALL", "HEM"),
                        "Cells": first["cells"].astype(int)}).set_index("Subject", drop=False).rename_axis(None)
    for key in keys:
        saved = data.subjects[key]
        out[model_name(key)] = saved.set_index(saved["subject"].astype(str))["accuracy"].astype(float)
    trained = [model_name(k) for k in keys if k != ENSEMBLE] or [model_name(k) for k in keys]
    order = out[trained].mean(axis=1).rename("mean")
    out = out.assign(_mean=order).sort_values(["_mean", "Subject"]).drop(columns="_mean")
    return out.reset_index(drop=True)


# ---- two studies of the same data -------------------------------------------------------------------

@dataclass
class StudyComparison:
    names: tuple[str, str]  # (this study, the other)
    metric: str  # the metric's column label
    table: pd.DataFrame  # Model, then value / 95% low / 95% high per study, difference (other − this), PAIRED_P
    points: pd.DataFrame  # Study, Model, value, low, high (one row per model per study)
    settings: pd.DataFrame  # Setting, this study, the other, Differs
    notes: list[str]  # why a number is missing, or a caution (different data)


def compare_studies(data: StudyData, other: str, metric: str = "roc_auc", other_stamp: tuple = ()) -> StudyComparison:
    """`data` and study `other` (under the same root) side by side for one metric, model by model.

    Where both studies evaluated the same validation cells, each model's calls are compared pairwise
    (exact McNemar on the cells only one of the two called right, Holm-adjusted over the models).
    `other_stamp` (`base.stamp(root, other)`) is not read: it only keys the dashboard's cache.
    """
    labels = {**METRICS, **LOWER_IS_BETTER}
    if metric not in labels:
        raise ValueError(f"metric must be one of {', '.join(labels)}; got {metric!r}")
    if other == data.name:
        raise ValueError(f"choose a study other than {other!r} to compare it with")
    second = load_study(data.root, other)
    a, b, label = data.name, other, labels[metric]
    notes = []
    same_data = _fingerprint(data.info) is not None and _fingerprint(data.info) == _fingerprint(second.info)
    if not same_data:
        notes.append(f"`{a}` and `{b}` were not made from the same data (their data fingerprints differ or are "
                     "unknown): "
                     "their numbers are not comparable cell for cell, and no paired test is made.")
    for study in (data, second):
        if study.models and any("ci95" not in study.metrics[k] for k in study.models):
            notes.append(f"`{study.name}` has no 95% intervals yet: `{stats_command(study)}`")
    keys = [k for k in data.models] + [k for k in second.models if k not in data.models]
    keys += [ENSEMBLE] if ENSEMBLE in data.metrics or ENSEMBLE in second.metrics else []
    rows, points, tested = [], [], {}
    for key in keys:
        row = {"Model": model_name(key)}
        for study in (data, second):
            m = study.metrics.get(key)
            value = number(m.get(metric)) if m else np.nan
            low, high = _interval(m, metric)
            row |= {study.name: value, f"{study.name} 95% low": low, f"{study.name} 95% high": high}
            if m:
                points.append({"Study": study.name, "Model": model_name(key), "value": value, "low": low, "high": high})
        row[f"{b} − {a}"] = row[b] - row[a]
        rows.append(row)
        if same_data and key in data.metrics and key in second.metrics:
            p = _paired_p(data, second, key)
            if p is not None:
                tested[model_name(key)] = p
    table = pd.DataFrame(rows)
    table[PAIRED_P] = np.nan
    if tested:
        adjusted = holm(list(tested.values()))
        table[PAIRED_P] = table["Model"].map(dict(zip(tested, adjusted)))
    elif same_data:
        notes.append("The two studies did not evaluate the same validation cells, so no paired test is made.")
    points = pd.DataFrame(points, columns=["Study", "Model", "value", "low", "high"])
    return StudyComparison((a, b), label, table, points, _settings(data, second), notes)


def _fingerprint(info: dict) -> str | None:
    fingerprint = section(info, "data").get("fingerprint")
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


def _interval(metrics: dict | None, metric: str) -> tuple[float, float]:
    """The saved 95% interval of one metric (NaN, NaN when there is none)."""
    bounds = section(metrics or {}, "ci95").get(metric)
    return (number(bounds[0]), number(bounds[1])) if isinstance(bounds, list) and len(bounds) == 2 else (np.nan, np.nan)


def _paired_p(first: StudyData, second: StudyData, key: str) -> float | None:
    """Exact McNemar p of one model's calls in two studies on the same cells (each at its saved threshold)."""
    pa, pb = first.predictions[key], second.predictions[key]
    if len(pa) != len(pb):
        return None
    both = pa[["path", "label", "prob_all"]].merge(pb[["path", "prob_all"]], on="path", suffixes=("_a", "_b"))
    if len(both) != len(pa):
        return None
    y = both["label"].astype(int).to_numpy()
    right = [(both[f"prob_all_{s}"].to_numpy() >= threshold_of(study.metrics[key])).astype(int) == y
             for s, study in (("a", first), ("b", second))]
    return mcnemar_exact(*right)[2]


def _settings(first: StudyData, second: StudyData) -> pd.DataFrame:
    def facts(d: StudyData) -> dict[str, str]:
        cfg, info = section(d.info, "config"), d.info
        fp = _fingerprint(d.info)
        return {
            "Preset": str(cfg.get("preset", "?")), "Weights": str(cfg.get("weights", "?")),
            "Input size": input_sizes_text(info),
            "Epochs (max) / batch": f"{cfg.get('epochs', '?')} / {cfg.get('batch_size', '?')}",
            "Seed": str(info.get("seed", cfg.get("seed", "?"))),
            "Models shown": ", ".join(model_name(k) for k in d.evaluated) or "none",
            "Validation images": str(section(info, "data", "summary", "val").get("images", "?")),
            "Data fingerprint": fp[:12] if fp else "?",
            "Status / created": f"{info.get('status', '?')} / {str(info.get('created', '?'))[:19].replace('T', ' ')}",
        }

    fa, fb = facts(first), facts(second)
    return pd.DataFrame([{"Setting": k, first.name: fa[k], second.name: fb[k], "Differs": fa[k] != fb[k]} for k in fa])


def other_studies(data: StudyData) -> dict[str, str]:
    """The other readable studies under the root, those made from the same data first: name -> label."""
    found, _ = studies(data.root)
    mine, same = _fingerprint(data.info), {}
    for s in found:
        if s["name"] != data.name:
            try:
                theirs = _fingerprint(StudyStore(data.root, s["name"]).read_study())
            except (OSError, ValueError):
                continue
            same[s["name"]] = mine is not None and theirs == mine
    order = sorted(same, key=lambda n: not same[n])  # stable: newest first within each group
    return {n: f"{n} ({'same data' if same[n] else 'other data'})" for n in order}
