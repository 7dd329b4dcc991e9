"""The study's statistics as the dashboard shows them: intervals, model comparisons, calibration,
accuracy per subject, and two studies of the same data side by side.

Nothing here is estimated anew: `cnmc_core.analysis` saved it all when the study ended (or
`python -m cnmc_core stats` did): `ci95` in each metrics.json, models/ensemble/, subjects.csv and
comparison.csv. This module only arranges it for the pages. Two exceptions: the paired test between
two studies (exact McNemar per model, Holm-adjusted), which no single study can hold, and the
reliability bins of a study made before they were saved (the same `stats.reliability`, on its predictions).
A study made before statistics existed still shows everything else; `stats_note` says how to add them.

Pages reach these functions through `cnmc_core.results`, which re-exports them. The import of
`results` is deferred to call time because `results` imports this module.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .stats import holm, mcnemar_exact, reliability
from .store import ENSEMBLE, StudyStore

if TYPE_CHECKING:
    from .results import StudyData

ENSEMBLE_NAME = "Ensemble (mean)"  # the ensemble's row label, as analysis.py names it in its metrics.json
SIGNIFICANCE = 0.05  # a pair is marked as significantly different when its Holm-adjusted p is below this
PAIR_PARTS = ("p_holm", "p_value", "row_only", "column_only", "auc_diff", "auc_low", "auc_high")
PAIRED_P = "Paired p (Holm)"  # two studies: the same model's calls on the same cells, exact McNemar
COMPARISON_COLUMNS = ("model_a", "model_b", "n01", "n10", "p_value", "p_holm", "auc_diff", "auc_diff_low", "auc_diff_high")


def _name(key: str) -> str:
    from .results import model_name

    return model_name(key)


def stats_command(data: StudyData) -> str:
    return f"python -m cnmc_core stats --study {data.name} --artifacts {shlex.quote(str(data.root))}"


def stats_note(data: StudyData) -> str:
    """'' when the study's statistics are all there and current; else one line: what is missing and how to compute it."""
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
    members = set(data.metrics.get(ENSEMBLE, {}).get("members") or data.models)
    if several and not set(data.models) <= compared & members:  # a model shown that they leave out
        return ("The ensemble or the model comparisons were computed before the latest models finished. "
                f"Recompute them: `{stats_command(data)}`")
    return ""


# ---- intervals and calibration (Overview, Curves) --------------------------------------------------

def metric_intervals(data: StudyData) -> pd.DataFrame:
    """Model, Source, metric (key), value, low, high: each row's saved value and its 95% subject-bootstrap interval."""
    from .results import OURS

    rows = []
    for key in data.evaluated:
        m = data.metrics[key]
        for metric, (low, high) in (m.get("ci95") or {}).items():
            value = m.get(metric)
            if all(isinstance(x, (int, float)) for x in (value, low, high)):
                rows.append({"Model": _name(key), "Source": OURS, "metric": metric, "value": float(value),
                             "low": float(low), "high": float(high)})
    return pd.DataFrame(rows, columns=["Model", "Source", "metric", "value", "low", "high"])


def reliability_bins(data: StudyData, key: str) -> tuple[float, list[dict]]:
    """(ECE, its 10 bins: low, high, count, mean_prob, fraction_all) of one row: as saved in metrics.json,
    else computed by the same function from the saved predictions (studies made before it was saved)."""
    m = data.metrics[key]
    if isinstance(m.get("reliability"), list) and isinstance(m.get("ece"), (int, float)):
        return float(m["ece"]), m["reliability"]
    p = data.predictions[key]
    return reliability(p["label"].astype(int).to_numpy(), p["prob_all"].to_numpy(dtype=float))


def reliability_frame(data: StudyData, keys: list[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """(Model, low, high, n, predicted, observed for every non-empty bin; model name -> ECE)."""
    rows, ece = [], {}
    for key in keys:
        ece[_name(key)], bins = reliability_bins(data, key)
        rows += [{"Model": _name(key), "low": b["low"], "high": b["high"], "n": int(b["count"]),
                  "predicted": b["mean_prob"], "observed": b["fraction_all"]} for b in bins if b["count"]]
    return pd.DataFrame(rows, columns=["Model", "low", "high", "n", "predicted", "observed"]), ece


# ---- the Compare page ----------------------------------------------------------------------------

@dataclass
class CompareView:
    models: list[str]  # model names in the pair matrices, study order
    pair: dict[str, pd.DataFrame]  # PAIR_PARTS -> models x models, read from the row model's side (NaN on the diagonal):
    #   p_holm, p_value (exact McNemar), row_only / column_only (cells only the row / column model called right),
    #   auc_diff (row − column) with its 95% subject-bootstrap interval auc_low, auc_high
    significant: pd.DataFrame  # models x models, bool: p_holm < SIGNIFICANCE
    pairs: pd.DataFrame  # one row per pair for people, most significant first
    reliability: pd.DataFrame  # Model, low, high, n, predicted, observed (non-empty bins; the models, then the ensemble)
    ece: dict[str, float]  # model name -> expected calibration error
    subjects: pd.DataFrame  # Subject, Class, Cells, then accuracy per model name; hardest (lowest mean) first
    note: str  # stats_note


def compare(data: StudyData) -> CompareView:
    """Everything on the Compare page of one study."""
    names, pair, significant, pairs = _pair_tables(data)
    cal, ece = reliability_frame(data, data.evaluated)
    return CompareView(names, pair, significant, pairs, cal, ece, _subject_table(data), stats_note(data))


def _pair_tables(data: StudyData):
    c = data.comparison if data.comparison is not None else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    c = c[c["model_a"].isin(data.models) & c["model_b"].isin(data.models)]
    keys = [k for k in data.models if k in set(c["model_a"]) | set(c["model_b"])]
    names = [_name(k) for k in keys]
    pair = {part: pd.DataFrame(np.nan, index=names, columns=names) for part in PAIR_PARTS}
    for r in c.itertuples():
        a, b = _name(r.model_a), _name(r.model_b)
        for row, col, sign in ((a, b, 1.0), (b, a, -1.0)):
            interval = sorted((sign * r.auc_diff_low, sign * r.auc_diff_high))  # row − column, low to high
            for part, value in zip(PAIR_PARTS, (r.p_holm, r.p_value, r.n01 if sign > 0 else r.n10,
                                                r.n10 if sign > 0 else r.n01, sign * r.auc_diff, *interval)):
                pair[part].loc[row, col] = value
    significant = pair["p_holm"] < SIGNIFICANCE
    pairs = pd.DataFrame({
        "Model A": [_name(k) for k in c["model_a"]], "Model B": [_name(k) for k in c["model_b"]],
        "Only A right": c["n01"].astype(int).to_numpy(), "Only B right": c["n10"].astype(int).to_numpy(),
        "p (McNemar)": c["p_value"].astype(float).to_numpy(), "p (Holm)": c["p_holm"].astype(float).to_numpy(),
        "Significant": (c["p_holm"].astype(float) < SIGNIFICANCE).to_numpy(),
        "AUC A − B": c["auc_diff"].astype(float).to_numpy(),
        "95% low": c["auc_diff_low"].astype(float).to_numpy(), "95% high": c["auc_diff_high"].astype(float).to_numpy(),
    }).sort_values(["p (Holm)", "Model A", "Model B"], kind="stable").reset_index(drop=True)
    return names, pair, significant, pairs


def _subject_table(data: StudyData) -> pd.DataFrame:
    keys = [k for k in data.evaluated if k in data.subjects]
    if not keys:
        return pd.DataFrame(columns=["Subject", "Class", "Cells"])
    first = data.subjects[keys[0]]
    out = pd.DataFrame({"Subject": first["subject"].astype(str),
                        "Class": np.where(first["label"].astype(int) == 1, "ALL", "HEM"),
                        "Cells": first["cells"].astype(int)}).set_index("Subject", drop=False).rename_axis(None)
    for key in keys:
        out[_name(key)] = data.subjects[key].set_index(data.subjects[key]["subject"].astype(str))["accuracy"].astype(float)
    trained = [_name(k) for k in keys if k != ENSEMBLE] or [_name(k) for k in keys]
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
    `other_stamp` (`results.stamp(root, other)`) is not read: it only keys the dashboard's cache.
    """
    from .results import LOWER_IS_BETTER, METRICS, load_study

    labels = {**METRICS, **LOWER_IS_BETTER}
    if metric not in labels:
        raise ValueError(f"metric must be one of {', '.join(labels)}; got {metric!r}")
    if other == data.name:
        raise ValueError(f"choose a study other than {other!r} to compare it with")
    second = load_study(data.root, other)
    a, b, label = data.name, other, labels[metric]
    notes = []
    same_data = _fingerprint(data) is not None and _fingerprint(data) == _fingerprint(second)
    if not same_data:
        notes.append(f"`{a}` and `{b}` were not made from the same data (their data fingerprints differ or are unknown): "
                     "their numbers are not comparable cell for cell, and no paired test is made.")
    for study in (data, second):
        if study.models and any("ci95" not in study.metrics[k] for k in study.models):
            notes.append(f"`{study.name}` has no 95% intervals yet: `{stats_command(study)}`")
    keys = [k for k in data.models] + [k for k in second.models if k not in data.models]
    keys += [ENSEMBLE] if ENSEMBLE in data.metrics or ENSEMBLE in second.metrics else []
    rows, points, tested = [], [], {}
    for key in keys:
        row = {"Model": _name(key)}
        for study in (data, second):
            m = study.metrics.get(key)
            value = _number(m.get(metric)) if m else np.nan
            low, high = ((m or {}).get("ci95") or {}).get(metric) or (None, None)
            row |= {study.name: value, f"{study.name} 95% low": _number(low), f"{study.name} 95% high": _number(high)}
            if m:
                points.append({"Study": study.name, "Model": _name(key), "value": value, "low": _number(low), "high": _number(high)})
        row[f"{b} − {a}"] = row[b] - row[a]
        rows.append(row)
        if same_data and key in data.metrics and key in second.metrics:
            p = _paired_p(data, second, key)
            if p is not None:
                tested[_name(key)] = p
    table = pd.DataFrame(rows)
    table[PAIRED_P] = np.nan
    if tested:
        adjusted = holm(list(tested.values()))
        table[PAIRED_P] = table["Model"].map(dict(zip(tested, adjusted)))
    elif same_data:
        notes.append("The two studies did not evaluate the same validation cells, so no paired test is made.")
    return StudyComparison((a, b), label, table, pd.DataFrame(points, columns=["Study", "Model", "value", "low", "high"]),
                           _settings(data, second), notes)


def _fingerprint(data: StudyData) -> str | None:
    return data.info.get("data", {}).get("fingerprint")


def _number(x) -> float:
    return float(x) if isinstance(x, (int, float)) else np.nan


def _paired_p(first: StudyData, second: StudyData, key: str) -> float | None:
    """Exact McNemar p of one model's calls in two studies on the same cells (each at its saved threshold)."""
    pa, pb = first.predictions[key], second.predictions[key]
    if len(pa) != len(pb):
        return None
    both = pa[["path", "label", "prob_all"]].merge(pb[["path", "prob_all"]], on="path", suffixes=("_a", "_b"))
    if len(both) != len(pa):
        return None
    y = both["label"].astype(int).to_numpy()
    right = [(both[f"prob_all_{s}"].to_numpy() >= float(study.metrics[key].get("threshold", 0.5))).astype(int) == y
             for s, study in (("a", first), ("b", second))]
    return mcnemar_exact(*right)[2]


def _settings(first: StudyData, second: StudyData) -> pd.DataFrame:
    def facts(d: StudyData) -> dict[str, str]:
        cfg, info = d.info.get("config", {}), d.info
        fp = _fingerprint(d)
        return {
            "Preset": str(cfg.get("preset", "?")), "Weights": str(cfg.get("weights", "?")),
            "Input size": ", ".join(f"{s} px" for s in sorted(set((info.get("input_sizes") or {}).values()))) or "?",
            "Epochs (max) / batch": f"{cfg.get('epochs', '?')} / {cfg.get('batch_size', '?')}",
            "Seed": str(info.get("seed", cfg.get("seed", "?"))),
            "Models shown": ", ".join(_name(k) for k in d.evaluated) or "none",
            "Validation images": str(d.info.get("data", {}).get("summary", {}).get("val", {}).get("images", "?")),
            "Data fingerprint": fp[:12] if fp else "?",
            "Status / created": f"{info.get('status', '?')} / {str(info.get('created', '?'))[:19].replace('T', ' ')}",
        }

    fa, fb = facts(first), facts(second)
    return pd.DataFrame([{"Setting": k, first.name: fa[k], second.name: fb[k], "Differs": fa[k] != fb[k]} for k in fa])


def other_studies(data: StudyData) -> dict[str, str]:
    """The other readable studies under the root, those made from the same data first: name -> label."""
    from .results import studies

    found, _ = studies(data.root)
    mine, same = _fingerprint(data), {}
    for s in found:
        if s["name"] != data.name:
            try:
                same[s["name"]] = mine is not None and StudyStore(data.root, s["name"]).read_study().get("data", {}).get("fingerprint") == mine
            except (OSError, ValueError):
                continue
    order = sorted(same, key=lambda n: not same[n])  # stable: newest first within each group
    return {n: f"{n} ({'same data' if same[n] else 'other data'})" for n in order}
