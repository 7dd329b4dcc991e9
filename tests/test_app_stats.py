"""The study's statistics on the dashboard (headless AppTest), on copies of the tiny trained study:

- `tiny`: as the study wrote it (two models, the ensemble, intervals, comparison.csv, subjects.csv);
- `three`: a third model and a hand-written comparison.csv with known p-values, one pair significant;
- `other`: the same data with other numbers for VGG16, to compare two studies side by side;
- `old`: made "before statistics existed" (no intervals, ensemble, comparisons, per-subject accuracy,
  weighted F1, ECE or Brier): every page still renders and says how to compute them.

The assertions are what a reader takes from the pages: the ensemble's numbers, the interval of a
metric, which pairs are marked significant, the hardest subject, both studies' values.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cnmc_core.dashboard import base, comparison, overview
from cnmc_core.stats import reliability

from .helpers import PAGES, ROOT, texts, vega_layers

COMPARE = PAGES["compare"]
KEYS = ("vgg16", "efficientnet_b0", "ensemble")
# The hand-written comparison of study `three`: only the first pair has a Holm-adjusted p below 0.05
# (0.05 itself is not below it).
PAIRS = pd.DataFrame([
    ("vgg16", "efficientnet_b0", 12, 2, 0.004, 0.012, 0.050, 0.010, 0.090),
    ("vgg16", "resnet50", 0, 0, 1.0, 1.0, 0.0, 0.0, 0.0),
    ("efficientnet_b0", "resnet50", 2, 9, 0.025, 0.05, -0.040, -0.100, 0.020),
], columns=["model_a", "model_b", "n01", "n10", "p_value", "p_holm", "auc_diff", "auc_diff_low", "auc_diff_high"])


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def stats_root(tiny_study, tmp_path_factory) -> Path:
    root, name = tiny_study
    base = tmp_path_factory.mktemp("stats")
    for study in ("tiny", "three", "other", "old", "winner"):
        shutil.copytree(Path(root) / name, base / study, ignore=shutil.ignore_patterns("model.keras"))
        info = _json(base / study / "study.json")
        _write_json(base / study / "study.json", {**info, "name": study})

    three = base / "three"
    shutil.copytree(three / "models" / "vgg16", three / "models" / "resnet50")
    info = _json(three / "study.json")
    _write_json(three / "study.json", {**info, "models": [*info["models"], "resnet50"]})
    ensemble = _json(three / "models" / "ensemble" / "metrics.json")
    _write_json(three / "models" / "ensemble" / "metrics.json", {**ensemble, "members": [*info["models"], "resnet50"]})
    PAIRS.to_csv(three / "comparison.csv", index=False)

    winner = pd.read_csv(base / "winner" / "comparison.csv")  # as if VGG16 were better on nearly every patient
    winner.loc[0, ["p_subject", "p_subject_holm"]] = [0.004, 0.004]
    winner.loc[0, "subject_diff"] = 0.2 if winner.loc[0, "model_a"] == "vgg16" else -0.2
    winner.to_csv(base / "winner" / "comparison.csv", index=False)

    vgg = base / "other" / "models" / "vgg16" / "metrics.json"
    m = _json(vgg)
    _write_json(vgg, {**m, "roc_auc": 0.777, "ci95": {**m["ci95"], "roc_auc": [0.701, 0.843]}})

    old = base / "old"
    shutil.rmtree(old / "models" / "ensemble")
    (old / "comparison.csv").unlink()
    for key in ("vgg16", "efficientnet_b0"):
        (old / "models" / key / "subjects.csv").unlink()
        m = _json(old / "models" / key / "metrics.json")
        for field in ("ci95", "ci_method", "f1_weighted", "ece", "brier", "reliability"):
            m.pop(field, None)
        _write_json(old / "models" / key / "metrics.json", m)
    return base


@pytest.fixture
def root(stats_root, monkeypatch) -> Path:
    monkeypatch.setenv("CNMC_ARTIFACTS", str(stats_root))
    return stats_root


def open_page(page: str, study: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params["study"] = study
    at.run()
    if page != PAGES["overview"]:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at.error)
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def colour_bar_title(figure: dict) -> str | None:
    return figure["data"][0].get("colorbar", {}).get("title", {}).get("text")


def array(x) -> np.ndarray:
    """A plotly array (plain list, or a typed array {"dtype", "bdata", "shape"}) as numpy."""
    if isinstance(x, dict) and "bdata" in x:
        a = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"])
        return a.reshape([int(n) for n in str(x["shape"]).split(",")]) if "shape" in x else a
    return np.asarray(x, dtype=object)


def metrics_of(root: Path, study: str, key: str) -> dict:
    return _json(root / study / "models" / key / "metrics.json")


# ---- overview: the ensemble row, weighted F1 / ECE / Brier, intervals -------------------------------

def test_overview_shows_the_ensemble_row_and_the_new_metrics_as_saved(root):
    at = open_page(PAGES["overview"], "tiny")
    table = at.dataframe[0].value  # this study's rows only; the paper's are in a table of their own
    ours = table.set_index("Model")
    assert list(ours.index) == ["VGG16", "EfficientNetB0", base.ENSEMBLE_NAME]
    for key, name in zip(KEYS, ours.index):
        m = metrics_of(root, "tiny", key)
        for field, label in {**base.METRICS, **base.LOWER_IS_BETTER}.items():
            assert ours.loc[name, label] == pytest.approx(m[field]), (key, field)
    assert {"Weighted F1", "ECE", "Brier"} <= set(table.columns)
    assert "VGG16, EfficientNetB0" in texts(at.caption)  # what the ensemble averages
    assert not at.info  # statistics are all there: no note


def test_the_interval_of_a_metric_is_its_ci95(root):
    at = open_page(PAGES["overview"], "tiny")
    paper = overview.overview(base.load_study(str(root), "tiny")).table
    paper = paper[paper["Source"] == base.PAPER].set_index("Model")
    for metric in ("roc_auc", "accuracy"):
        if metric != "roc_auc":
            at.selectbox(key="_w_metric").set_value(metric).run()
            assert at.query_params["metric"] == metric
        layers = vega_layers(at)
        (line,) = [rows for layer, rows in layers if layer["mark"]["type"] == "rule"]
        markers = pd.concat([rows for layer, rows in layers if layer["mark"]["type"] == "point"
                             and layer["encoding"]["x"]["field"] == "value"])
        assert list(line["Model"]) == ["VGG16", "EfficientNetB0", base.ENSEMBLE_NAME]
        assert sorted(markers["Model"]) == sorted(line["Model"])  # a marker on every line (the ensemble's open)
        line, markers = line.set_index("Model"), markers.set_index("Model")
        for key, name in zip(KEYS, line.index):
            m = metrics_of(root, "tiny", key)
            low, high = m["ci95"][metric]
            assert markers.loc[name, "value"] == pytest.approx(m[metric])
            assert (line.loc[name, "low"], line.loc[name, "high"]) == pytest.approx((low, high))
        rings = [rows for layer, rows in layers if "paper" in rows]
        label = base.METRICS[metric]
        if metric == "roc_auc":  # the paper's Table I has no AUC: no ring, and the caption says none
            assert not rings and "grey ring" not in texts(at.caption)
        else:
            (ring,) = rings
            expected = paper.loc[paper.index.isin(line.index), label].dropna()
            assert len(expected) == 2 and dict(zip(ring["Model"], ring["paper"])) == pytest.approx(expected.to_dict())
            assert "grey ring: " + base.PAPER in texts(at.caption)
    csv = pd.read_csv(io.StringIO(overview.overview(base.load_study(str(root), "tiny")).csv))
    row = csv[(csv["Model"] == base.ENSEMBLE_NAME)].iloc[0]
    saved = metrics_of(root, "tiny", "ensemble")["ci95"]["roc_auc"]
    assert (row["ROC AUC 95% low"], row["ROC AUC 95% high"]) == pytest.approx(tuple(saved))


# ---- curves: the ensemble is drawn, calibration is the saved bins ------------------------------------

def test_curves_draw_the_ensemble_and_the_saved_reliability_bins(root):
    at = open_page(PAGES["curves"], "tiny")
    by_name = {t["name"]: t for f in figures(at) for t in f["data"] if "name" in t}
    auc = metrics_of(root, "tiny", "ensemble")["roc_auc"]
    assert f"{base.ENSEMBLE_NAME} (AUC {auc:.3f})" in by_name
    for key, name in zip(KEYS, ("VGG16", "EfficientNetB0", base.ENSEMBLE_NAME)):
        m = metrics_of(root, "tiny", key)
        trace = by_name[f"{name} (ECE {m['ece']:.3f})"]
        bins = [b for b in m["reliability"] if b["count"]]
        assert array(trace["x"]).astype(float) == pytest.approx([b["mean_prob"] for b in bins])
        assert array(trace["y"]).astype(float) == pytest.approx([b["fraction_all"] for b in bins])
        p = pd.read_csv(root / "tiny" / "models" / key / "predictions.csv")  # the same bins as the predictions give
        ece, again = reliability(p["label"], p["prob_all"])
        assert ece == pytest.approx(m["ece"]) and [b["count"] for b in again] == [b["count"] for b in m["reliability"]]

    at.selectbox(key="_w_model").set_value("ensemble").run()  # the threshold section offers the ensemble too
    shown = {x.label: x.value for x in at.metric}
    assert shown["Accuracy"] == f"{metrics_of(root, 'tiny', 'ensemble')['accuracy']:.3f}"


# ---- compare: the p-value matrix, reliability diagrams, hard subjects ---------------------------------

def test_compare_matrix_has_the_p_values_and_marks_the_significant_pairs(root):
    at = open_page(COMPARE, "three")
    assert at.title[0].value == "Compare"
    # Its comparison.csv predates the subject-level test: McNemar, labelled as such, and how to recompute.
    assert "python -m cnmc_core stats --study three" in texts(at.warning)
    (heatmap,) = [f["data"][0] for f in figures(at) if colour_bar_title(f) == "p (McNemar, Holm)"]
    names = list(heatmap["y"])
    assert names == ["VGG16", "EfficientNetB0", "ResNet50"] and list(heatmap["x"]) == names
    z, text = array(heatmap["z"]).astype(float), heatmap["text"]
    index = {"vgg16": 0, "efficientnet_b0": 1, "resnet50": 2}
    for pair in PAIRS.itertuples():
        for i, j in ((index[pair.model_a], index[pair.model_b]), (index[pair.model_b], index[pair.model_a])):
            assert z[i, j] == pytest.approx(pair.p_holm)
            assert ("✱" in text[i][j]) == (pair.p_holm < 0.05), (pair.model_a, pair.model_b, text[i][j])
    assert np.isnan(np.diag(z)).all()
    # Hover data is read from the row model's side: EfficientNetB0 − VGG16 is minus VGG16 − EfficientNetB0.
    hover = heatmap["customdata"]
    assert hover[0][1][1:] == [12, 2, 0.05, 0.01, 0.09]
    assert hover[1][0][1:] == pytest.approx([2, 12, -0.05, -0.09, -0.01])

    at.toggle(key="_w_pairs_table").set_value(True).run()
    table = at.dataframe[0].value
    assert table.loc[table["Significant"], ["Model A", "Model B"]].values.tolist() == [["VGG16", "EfficientNetB0"]]
    assert "✱" in texts(at.markdown) and "Holm" in texts(at.markdown)


def test_compare_opens_with_the_subject_level_verdict_and_colours_by_it(root):
    at = open_page(COMPARE, "tiny")
    saved = pd.read_csv(root / "tiny" / "comparison.csv")
    n, (p,) = int(saved["n_subjects"].iloc[0]), saved["p_subject_holm"]
    verdict = ("No model is significantly better than the others" if p >= 0.05 else "beats every other model")
    assert f"{verdict} (paired sign-flip test over {n} patients, Holm-adjusted over 1 pair)" in texts(at.markdown)
    (figure,) = [f for f in figures(at) if colour_bar_title(f) == "p (patients, Holm)"]
    z = array(figure["data"][0]["z"]).astype(float)
    assert z[0, 1] == z[1, 0] == pytest.approx(p)
    assert figure["layout"]["title"]["text"].startswith(f"Unit: patient · N = {n} patients")
    at.toggle(key="_w_pairs_table").set_value(True).run()
    table = next(d.value for d in at.dataframe if "Model A" in d.value)
    assert table["p (patients, Holm)"].iloc[0] == pytest.approx(p)
    assert any("assumes independent cells" in c for c in table.columns)  # McNemar stays, labelled
    patients = next(d.value for d in at.dataframe if "Patient AUC" in d.value)
    assert list(patients["Patients"]) == [n, n, n]  # both models and the ensemble, all validation patients
    assert "stats --study tiny" not in texts(at.warning)  # current statistics: no call to recompute


def test_overview_marks_a_best_model_only_when_the_subject_test_names_one(root):
    at = open_page(PAGES["overview"], "tiny")
    p = float(pd.read_csv(root / "tiny" / "comparison.csv")["p_subject_holm"].iloc[0])
    view = overview.overview(base.load_study(str(root), "tiny"))
    if p >= 0.05:  # nothing significant: no green, and the page says so
        assert view.best == {}
        assert "No model is significantly better than the others" in texts(at.markdown)
    patients = next(d.value for d in at.dataframe if "Patient AUC" in d.value)
    n = metrics_of(root, "tiny", "vgg16")["patient"]["n_patients"]
    assert list(patients["Model"]) == ["VGG16", "EfficientNetB0", base.ENSEMBLE_NAME]
    assert (patients["Patients"] == n).all()

    won = overview.overview(base.load_study(str(root), "winner"))
    assert won.verdict.startswith("VGG16 beats every other model")
    assert all(names == ["VGG16"] for names in won.best.values())
    legacy = overview.overview(base.load_study(str(root), "three"))  # McNemar only: no best, how to recompute
    assert legacy.best == {} and "python -m cnmc_core stats --study three" in legacy.verdict


def test_compare_shows_reliability_diagrams_and_the_hardest_subjects(root):
    at = open_page(COMPARE, "tiny")
    (grid,) = [f for f in figures(at) if any(t["type"] == "bar" for t in f["data"])]
    titles = [a["text"] for a in grid["layout"]["annotations"]]
    for key, name in zip(KEYS, ("VGG16", "EfficientNetB0", base.ENSEMBLE_NAME)):
        assert f"{name} · ECE {metrics_of(root, 'tiny', key)['ece']:.3f}" in titles
    vgg = next(t for t in grid["data"] if t["type"] == "bar" and t["name"] == "VGG16")
    bins = [b for b in metrics_of(root, "tiny", "vgg16")["reliability"] if b["count"]]
    assert array(vgg["y"]).astype(float) == pytest.approx([b["fraction_all"] for b in bins])

    (subjects,) = [f["data"][0] for f in figures(at) if colour_bar_title(f) == "called right"]
    assert list(subjects["x"]) == ["VGG16", "EfficientNetB0", base.ENSEMBLE_NAME]
    z = array(subjects["z"]).astype(float)
    saved = {k: pd.read_csv(root / "tiny" / "models" / k / "subjects.csv", dtype={"subject": str}).set_index("subject")
             for k in KEYS}
    shown = [label.split(" (")[0] for label in subjects["y"]]
    assert sorted(shown) == sorted(saved["vgg16"].index)
    for row, subject in enumerate(shown):
        assert z[row] == pytest.approx([saved[k].loc[subject, "accuracy"] for k in KEYS])
    means = z[:, :2].mean(axis=1)
    assert list(means) == sorted(means)  # hardest (lowest mean over the models) first


# ---- two studies of the same data ---------------------------------------------------------------

def test_two_studies_side_by_side_show_both_studies_numbers(root):
    at = open_page(COMPARE, "tiny")
    versus = at.selectbox(key="_w_versus")
    assert "other (same data)" in versus.options
    versus.set_value("other").run()
    assert at.query_params["versus"] == "other"
    table = next(d.value for d in at.dataframe if "Model" in d.value and "tiny" in d.value)
    vgg = table.set_index("Model").loc["VGG16"]
    mine = metrics_of(root, "tiny", "vgg16")
    assert vgg["tiny"] == pytest.approx(mine["roc_auc"]) and vgg["other"] == pytest.approx(0.777)
    assert (vgg["other 95% low"], vgg["other 95% high"]) == pytest.approx((0.701, 0.843))
    assert (vgg["tiny 95% low"], vgg["tiny 95% high"]) == pytest.approx(tuple(mine["ci95"]["roc_auc"]))
    assert vgg["other − tiny"] == pytest.approx(0.777 - mine["roc_auc"])
    assert vgg[comparison.PAIRED_P] == pytest.approx(1.0)  # the same calls on the same cells
    (chart,) = [f for f in figures(at) if f["layout"].get("legend", {}).get("title", {}).get("text") == "Study"]
    assert [t["name"] for t in chart["data"]] == ["tiny", "other"]
    assert array(chart["data"][1]["x"]).astype(float)[0] == pytest.approx(0.777)  # VGG16 in `other`

    at.selectbox(key="_w_versus_metric").set_value("ece").run()
    table = next(d.value for d in at.dataframe if "Model" in d.value and "tiny" in d.value)
    ece = metrics_of(root, "other", "ensemble")["ece"]
    assert table.set_index("Model").loc[base.ENSEMBLE_NAME, "other"] == pytest.approx(ece)


def test_statistics_older_than_a_model_ask_to_be_recomputed(root):
    data = base.load_study(str(root), "three")
    assert base.stats_note(data) == ""
    data.comparison = data.comparison[data.comparison["model_b"] != "resnet50"]  # as if ResNet50 finished later
    assert "computed before the latest models" in base.stats_note(data)
    assert "python -m cnmc_core stats --study three" in base.stats_note(data)


# ---- a study made before statistics existed --------------------------------------------------------

@pytest.mark.parametrize("page", list(PAGES.values()))
def test_a_study_without_statistics_renders_and_says_how_to_compute_them(root, page):
    at = open_page(page, "old")
    if page in (PAGES["overview"], COMPARE):
        assert f"python -m cnmc_core stats --study old --artifacts {root}" in texts(at.info)
    if page == PAGES["overview"]:
        ours = at.dataframe[0].value
        assert list(ours["Model"]) == ["VGG16", "EfficientNetB0"]  # no ensemble row
        assert ours["ECE"].isna().all() and ours["Accuracy"].notna().all()
    if page == PAGES["curves"]:  # calibration from the predictions, by the same function that saves the bins
        p = pd.read_csv(root / "old" / "models" / "vgg16" / "predictions.csv")
        ece, bins = reliability(p["label"], p["prob_all"])
        trace = next(t for f in figures(at) for t in f["data"] if t.get("name") == f"VGG16 (ECE {ece:.3f})")
        assert array(trace["y"]).astype(float) == pytest.approx([b["fraction_all"] for b in bins if b["count"]])
