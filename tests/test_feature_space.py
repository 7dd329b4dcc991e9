"""Feature space: the study-end hook saves each model's maps, the page draws one panel per model with the saved
numbers, a study made before the maps gets them once on request, and hostile links change nothing."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnmc_core import palette
from cnmc_core.dashboard import feature_space
from cnmc_core.projection import build_projections, read_projection
from cnmc_core.store import PROJECTION_FILES, StudyStore

from .conftest import TINY_MODELS
from .helpers import open_app, texts

PAGE = "feature-space"


def _specs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def _panels(at) -> tuple[list[str], list[list[dict]]]:
    """(panel titles, each panel's traces) of the page's maps: rows of up to three panels, one figure per row."""
    titles, panels = [], []
    for spec in _specs(at):
        titles += [a["text"] for a in spec["layout"]["annotations"]]
        axes = sorted({t.get("xaxis", "x") for t in spec["data"]}, key=lambda a: int(a[1:] or 1))
        panels += [[t for t in spec["data"] if t.get("xaxis", "x") == axis] for axis in axes]
    return titles, panels


def _values(data) -> list:
    """A plotly array as a list: plotly sends numpy arrays as typed arrays ({"dtype", "bdata"})."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def _rows(trace) -> list[int]:
    """Rows of space.cells a trace draws: the first column of its customdata."""
    data = trace["customdata"]
    if isinstance(data, dict):
        return np.asarray(_values(data)).reshape(-1, 2)[:, 0].astype(int).tolist()
    return [int(r[0]) for r in data]


@pytest.fixture
def study(tiny_study, monkeypatch):
    root, name = tiny_study
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    return Path(root), name


@pytest.fixture
def copy_root(tiny_study, tmp_path, monkeypatch) -> Path:
    """A copy of the tiny study's artifacts root (study and feature cache), shown by the dashboard."""
    root, _ = tiny_study
    shutil.copytree(root, tmp_path / "root", symlinks=True)
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path / "root"))
    return tmp_path / "root"


# ---- the study-end hook ---------------------------------------------------------------------------------

def test_the_study_saves_current_maps_of_every_model(tiny_study):
    root, name = tiny_study
    store = StudyStore(root, name)
    for key in TINY_MODELS:
        metrics, predictions = store.read_metrics(key), store.read_predictions(key)
        projection = read_projection(store, key, metrics["config_hash"], predictions["path"].tolist())
        assert projection is not None, key
        n = len(predictions)
        assert projection.coordinates["pca"].shape == (n, 2) and np.isfinite(projection.coordinates["tsne"]).all()
        np.testing.assert_array_equal(projection.labels, predictions["label"].to_numpy())
        np.testing.assert_array_equal(projection.calls, predictions["prob_all"].to_numpy() >= metrics["threshold"])
        saved = json.loads(store.model_file(key, "projection.json").read_text())
        assert saved["config_hash"] == metrics["config_hash"]
        assert (store.feature_cache_root / saved["features"]).is_dir()  # keyed like the features it came from
        assert saved["scores"]["methods"]["tsne"]["n_cells"] == n
        # A map made for another model (config hash) or other cells is stale: never read.
        assert read_projection(store, key, "another config", predictions["path"].tolist()) is None
        assert read_projection(store, key, metrics["config_hash"], predictions["path"].tolist()[::-1]) is None


def test_current_maps_are_kept_and_stale_ones_computed_again(copy_root):
    store = StudyStore(copy_root, "tiny")
    files = [store.model_file("vgg16", name) for name in PROJECTION_FILES]
    before = [f.stat().st_mtime_ns for f in files]
    assert build_projections(store) == {}  # everything current: nothing computed, nothing written
    assert [f.stat().st_mtime_ns for f in files] == before
    info = json.loads(files[1].read_text())
    files[1].write_text(json.dumps({**info, "config_hash": "made for an earlier training"}))
    assert build_projections(store) == {"vgg16": ""}
    assert json.loads(files[1].read_text())["config_hash"] == store.read_metrics("vgg16")["config_hash"]


def test_features_not_cached_are_computed_from_the_images_or_the_reason_is_given(copy_root):
    store = StudyStore(copy_root, "tiny")
    saved = read_projection(store, "vgg16", store.read_metrics("vgg16")["config_hash"],
                            store.read_predictions("vgg16")["path"].tolist())
    shutil.rmtree(store.feature_cache_root)
    for name in PROJECTION_FILES:
        store.model_file("vgg16", name).unlink()
    problem = build_projections(store, keys=["vgg16"])["vgg16"]
    assert "not cached" in problem and not store.model_file("vgg16", "projection.json").exists()
    data_root = Path(store.read_study()["data"]["path"])
    assert build_projections(store, data_root=data_root, keys=["vgg16"]) == {"vgg16": ""}
    again = read_projection(store, "vgg16", store.read_metrics("vgg16")["config_hash"],
                            store.read_predictions("vgg16")["path"].tolist())
    np.testing.assert_allclose(again.coordinates["pca"], saved.coordinates["pca"], atol=1e-3)  # the same features


# ---- the page ---------------------------------------------------------------------------------------------

def test_page_draws_one_panel_per_model_with_the_saved_numbers(study):
    root, name = study
    at = open_app(PAGE)
    assert not at.error, texts(at.error)
    assert at.title[0].value == "Feature space"
    titles, panels = _panels(at)
    store = StudyStore(root, name)
    assert titles == ["VGG16", "EfficientNetB0"] and len(_specs(at)) == 1  # one row of panels, one figure
    n = len(store.read_predictions("vgg16"))
    drawn = [sorted(r for trace in panel for r in _rows(trace)) for panel in panels]
    assert drawn[0] == drawn[1] == list(range(n))  # the same cells in every panel
    colours = [{t["name"]: t["marker"]["color"] for t in panel} for panel in panels]
    assert colours[0] == colours[1] == {c: palette.CLASS_COLORS[c] for c in ("ALL", "HEM")}  # in every panel
    markdown = texts(at.markdown)
    captions = texts(at.caption)
    for key in TINY_MODELS:
        scores = json.loads(store.model_file(key, "projection.json").read_text())["scores"]["methods"]["tsne"]
        assert f"**Class separability: {scores['knn_accuracy']:.2f}**" in markdown
        assert f"**Patient clustering: {scores['same_subject_share_map']:.2f}**" in markdown
        assert f"silhouette by class {scores['silhouette_class']:.2f}" in captions
        assert f"chance {scores['same_subject_chance']:.2f}" in captions
    assert captions.count(f"N = {n} cells of {scores['n_subjects']} patients") == 2 * len(TINY_MODELS)
    assert "subsample" not in texts(at.info)  # 48 cells: t-SNE mapped them all


def test_pca_by_subject_gives_each_patient_one_colour_everywhere(study):
    at = open_app(PAGE, {"map": "pca", "colour": "subject"})
    assert not at.error, texts(at.error)
    assert [s.value for s in at.selectbox][:2] == ["pca", "subject"]
    specs = _specs(at)
    _, panels = _panels(at)
    assert [len(panel) for panel in panels] == [1, 1]  # one trace per panel, a number per point
    markers = [panel[0]["marker"] for panel in panels]
    assert markers[0]["color"] == markers[1]["color"] and markers[0]["colorscale"] == markers[1]["colorscale"]
    n_subjects = len(set(_values(markers[0]["color"])))
    assert n_subjects == 6 and len({colour for _, colour in markers[0]["colorscale"]}) == n_subjects
    assert specs[0]["layout"]["xaxis"]["title"]["text"].startswith("PC 1 (")
    assert specs[0]["layout"]["xaxis2"]["title"]["text"].startswith("PC 1 (")
    assert not specs[0]["layout"]["showlegend"]


@pytest.mark.parametrize("query", [
    {"map": "../../etc/passwd", "colour": "<script>alert(1)</script>"},
    {"map": "x" * 5000, "colour": ""},
])
def test_hostile_link_values_are_ignored(study, query):
    at = open_app(PAGE, query)
    assert not at.error and not at.exception, texts(at.error)
    assert [s.value for s in at.selectbox][:2] == ["tsne", "class"]  # the defaults
    assert len(_panels(at)[1]) == len(TINY_MODELS)
    assert at.query_params["map"] == "tsne" and at.query_params["colour"] == "class"  # the link is corrected


def test_a_study_without_maps_gets_them_once_on_request(copy_root):
    for key in TINY_MODELS:
        for name in PROJECTION_FILES:
            (copy_root / "tiny" / "models" / key / name).unlink()
    at = open_app(PAGE)
    assert not at.get("plotly_chart") and "Compute the maps now" in [b.label for b in at.button]
    assert "made before they existed" in texts(at.info)
    at.button(key="fs_compute").click().run()
    assert not at.error, texts(at.error)
    assert len(_panels(at)[1]) == len(TINY_MODELS)
    for key in TINY_MODELS:
        assert (copy_root / "tiny" / "models" / key / "projection.json").is_file()


def test_forged_maps_of_a_shared_study_are_named_not_drawn(copy_root):
    """A shared study's projection.json can claim to be current; arrays that disagree with its predictions are
    refused with one line, and the other models are still drawn."""
    from cnmc_core.disk import read_npz, write_npz

    arrays_file = copy_root / "tiny" / "models" / "vgg16" / "projection.npz"
    arrays = read_npz(arrays_file)
    write_npz(arrays_file, **{name: values[:-1] for name, values in arrays.items()})  # one cell short
    at = open_app(PAGE)
    assert not at.error and not at.exception, texts(at.error)
    assert "do not match its predictions" in texts(at.warning)
    assert _panels(at)[0] == ["EfficientNetB0"]


# ---- the figures, without a study (fast) ------------------------------------------------------------------

def _space(n: int = 30, subsample: int | None = None) -> feature_space.FeatureSpace:
    rng = np.random.default_rng(0)
    cells = feature_space._cells(pd.DataFrame({
        "path": [f"f/{i}.bmp" for i in range(n)], "subject": [["<b>7</b>", "H3", "12"][i % 3] for i in range(n)],
        "label": [int(i % 3 != 1) for i in range(n)], "prob_all": 0.5}))
    scores = {"knn_accuracy": 0.8123, "silhouette_class": 0.2, "same_subject_share_map": 0.55,
              "same_subject_chance": 0.31, "same_subject_share_features": 0.7, "silhouette_subject": None,
              "n_cells": n, "n_subjects": 3, "knn_k": 15, "cv_folds": 3, "neighbours": 15}
    panels = {}
    for key, name in (("vgg16", "VGG16"), ("resnet50", "ResNet50")):
        coords = rng.normal(size=(n, 2)).astype(np.float32)
        coords[: n - (subsample or n)] = np.nan
        panels[key] = feature_space.Panel(key, name, coords, (rng.random(n) < 0.5).astype(np.int8), rng.random(n),
                                          scores, ("", ""))
    return feature_space.FeatureSpace("tsne", cells, panels, subsample=subsample)


def test_figure_escapes_study_text_and_leaves_out_unmapped_cells():
    space = _space(30, subsample=20)
    fig = feature_space.figure(space, "vgg16", "subject")
    assert len(fig.data) == 1 and len(fig.data[0].x) == 20  # the 10 cells outside t-SNE's subsample are not drawn
    texts_ = list(fig.data[0].text)
    assert all("<b>7</b>" not in t for t in texts_) and sum("patient &lt;b&gt;7&lt;/b&gt; · " in t for t in texts_)
    by_class = feature_space.figure(space, "vgg16", "class")
    assert {t.name for t in by_class.data} == {"ALL", "HEM"} and sum(len(t.x) for t in by_class.data) == 20
    assert fig.layout.title.subtitle.text == "class separability 0.81 · same-patient neighbours 0.55 (chance 0.31)"


def test_call_and_right_or_wrong_follow_each_models_own_calls():
    space = _space()
    for key, panel in space.panels.items():
        fig = feature_space.figure(space, key, "correct")
        wrong = next(t for t in fig.data if t.name == "wrong")
        rows = np.asarray(wrong.customdata)[:, 0].astype(int)
        truth = space.cells["label"].to_numpy()[rows] == "ALL"
        assert np.all((panel.calls[rows] == 1) != truth)
        np.testing.assert_allclose(np.asarray(wrong.customdata)[:, 1], panel.prob_all[rows], rtol=1e-6)


def test_scores_state_unit_n_and_undefined_values():
    separability, clustering = feature_space.scores(_space().panels["vgg16"])
    assert separability.value == "0.81" and "N = 30 cells of 3 patients" in separability.detail
    assert clustering.value == "0.55" and "chance 0.31" in clustering.detail
    assert "silhouette by patient n/a" in clustering.detail  # None (undefined) says so, never "nan"
    assert "\n" not in separability.caption and not separability.caption.startswith("Class separability")


def test_a_row_puts_each_models_map_in_its_own_panel_with_one_legend():
    space = _space()
    fig = feature_space.row_figure(space, ["vgg16", "resnet50"], "class", columns=3)
    assert [a.text for a in fig.layout.annotations] == ["VGG16", "ResNet50"]
    assert [(t.name, t.xaxis, t.showlegend) for t in fig.data] == [
        ("ALL", "x", True), ("HEM", "x", True), ("ALL", "x2", False), ("HEM", "x2", False)]
    assert fig.layout.xaxis3.visible is False  # the empty third panel keeps the others' width
    with pytest.raises(ValueError, match="1 to 3 models"):
        feature_space.row_figure(space, [], "class")


def test_bad_settings_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="colour_by must be one of"):
        feature_space.figure(_space(), "vgg16", "shape")
    with pytest.raises(ValueError, match="row must be from 0 to 29"):
        feature_space.cell(_space(), 30)
    chosen = feature_space.cell(_space(), 4)
    assert chosen["file"] == "4.bmp" and list(chosen["models"]["Model"]) == ["VGG16", "ResNet50"]
