"""The Grad-CAM gallery and Classify pages, headless (AppTest, uploads through `at.file_uploader`), on the
tiny study."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnmc_core.gallery import GALLERY_CELLS
from cnmc_core.predict import Predictor
from cnmc_core.store import StudyStore

from .helpers import a_cell_file, open_app, texts

pytestmark = pytest.mark.slow  # they share the trained tiny study


@pytest.fixture
def study(tiny_study, monkeypatch):
    root, name = tiny_study
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    return Path(root), name


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def captions(at) -> list[str]:
    """Image captions as read: a caption from the study's files is one code span; its backticks are dropped."""
    return [c.strip("`") for img in at.get("image") for c in img.captions]


def test_classify_page_takes_many_files_explains_each_and_reports_bad_ones(study):
    root, name = study
    cell_path = a_cell_file(root, name)
    cell = cell_path.read_bytes()
    smear = png(Image.fromarray(np.tile(np.asarray(Image.open(cell_path).convert("RGB"))[110:340, 110:340], (3, 3, 1))))

    at = open_app("classify")
    assert "Research use only" in texts(at.warning) and "not for diagnosis" in texts(at.warning)
    at.toggle(key="_w_prepare").set_value(False)  # each file as it is (the preparation: tests/test_prepare_predict.py)
    at.file_uploader(key="upload").set_value([
        (cell_path.name, cell, "image/bmp"), ("notes.png", b"not an image at all", "image/png"),
        ("smear.png", smear, "image/png"),
    ]).run()
    assert not at.exception, [e.value for e in at.exception]

    # The bad file: one line in an error box; the others are still classified.
    assert [e.value for e in at.error] == [
        "`notes.png` cannot be classified: not an image file this tool can open (use BMP, PNG, JPEG or TIFF)"]
    assert len(at.metric) == 2 and all(m.value in ("ALL", "HEM", "Inconclusive") for m in at.metric)
    # The smear field is flagged, and its prediction still shown.
    assert "does not look like the cells the models were trained on" in texts(at.warning)

    # One row per file, the same numbers as `predict`.
    summary = at.dataframe[0].value
    assert list(summary["file"]) == [cell_path.name, "notes.png", "smear.png"]
    assert summary.loc[1, "error"] and not summary.loc[0, "error"]
    expected = Predictor.load(StudyStore(root, name)).predict(cell, name=cell_path.name)
    assert summary.loc[0, "P(ALL) VGG16"] == pytest.approx(expected["predictions"]["vgg16"], abs=1e-6)
    assert summary.loc[0, "ensemble P(ALL)"] == pytest.approx(expected["ensemble"], abs=1e-6)
    assert at.get("download_button"), "the table can be downloaded as CSV"
    per_model = at.dataframe[1].value
    assert list(per_model["Model"]) == ["VGG16", "EfficientNetB0"]
    assert "of 2 models" in texts(at.markdown) and "Uncertainty" in texts(at.markdown)

    # Each model's Grad-CAM overlay for each classified image.
    overlays = [c for c in captions(at) if c.startswith(("VGG16: evidence for", "EfficientNetB0: evidence for"))]
    assert len(overlays) == 2 * 2

    # No heatmaps when switched off; the next upload works.
    at.selectbox(key="_w_cam").set_value("off").run()
    assert not any("evidence for" in c for c in captions(at))
    at.file_uploader(key="upload").set_value(("again.png", png(Image.open(cell_path)), "image/png")).run()
    assert not at.exception and not at.error and len(at.metric) == 1


def test_gallery_page_shows_one_cell_across_models_and_one_model_across_cells(study):
    at = open_app("gradcam")
    assert f"{GALLERY_CELLS} validation cells" in texts(at.caption)
    # One cell, every model: the cell and one overlay per model.
    shown = captions(at)
    assert "the cell" in shown
    assert sum(c.startswith(("VGG16:", "EfficientNetB0:")) for c in shown) == 2

    at.radio(key="_w_gallery_mode").set_value("model").run()
    assert not at.exception
    assert sum("P(ALL)" in c for c in captions(at)) == GALLERY_CELLS

    at.selectbox(key="_w_gallery_class").set_value("HEM").run()
    hem = [c for c in captions(at) if "P(ALL)" in c]
    assert hem and all(c.startswith("true HEM") for c in hem)
    at.selectbox(key="_w_gallery_outcome").set_value("wrong").run()
    wrong = [c for c in captions(at) if "P(ALL)" in c]
    index = json.loads((study[0] / study[1] / "gallery" / "index.json").read_text())
    model = at.selectbox(key="_w_gallery_model").value
    expected = [c for c in index["cells"] if c["label"] == "HEM" and not c["models"][model]["correct"]]
    assert len(wrong) == len(expected) and all("(wrong)" in c for c in wrong)
    assert ("No cell of the gallery" in texts(at.info)) == (not expected)
    assert len(at.dataframe[0].value) == 2  # the sanity table: one row per model


def test_gallery_page_without_a_gallery_says_how_to_make_one(tiny_study, tmp_path, monkeypatch):
    root, name = tiny_study
    shutil.copytree(Path(root) / name, tmp_path / name)
    shutil.rmtree(tmp_path / name / "gallery")
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    at = open_app("gradcam")
    assert "no Grad-CAM gallery yet" in texts(at.info)


def test_classify_keeps_uploads_across_pages_and_never_recomputes_a_prediction_for_heatmaps(study, monkeypatch):
    """Issue 15: the uploads and their results survive a visit to another page, the heatmap method lives in the
    link, and turning the heatmaps off or changing the method reuses the cached predictions."""
    from cnmc_core.dashboard import classify as classify_view

    calls = {"classify": 0, "explain": []}
    real_classify, real_explain = classify_view.classify_upload, classify_view.explain_upload

    def counting_classify(*args, **kwargs):
        calls["classify"] += 1
        return real_classify(*args, **kwargs)

    def counting_explain(predictor, upload, cam):
        calls["explain"].append(cam)
        return real_explain(predictor, upload, cam)

    monkeypatch.setattr(classify_view, "classify_upload", counting_classify)
    monkeypatch.setattr(classify_view, "explain_upload", counting_explain)
    root, name = study
    cell_path = a_cell_file(root, name)
    content = png(Image.open(cell_path).rotate(90))  # bytes no other test uploads: not in the page's cache yet

    at = open_app("classify", query={"cam": "gradcam++"})  # the method from a shared link
    assert at.selectbox(key="_w_cam").value == "gradcam++"
    at.file_uploader(key="upload").set_value(("kept.png", content, "image/png")).run()
    assert not at.exception and len(at.metric) == 1
    assert calls == {"classify": 1, "explain": ["gradcam++"]}
    assert sum(": evidence for" in c for c in captions(at)) == 2  # one heatmap per model

    at.selectbox(key="_w_cam").set_value("off").run()  # heatmaps off: nothing recomputed
    assert not any(": evidence for" in c for c in captions(at)) and len(at.metric) == 1
    at.selectbox(key="_w_cam").set_value("gradcam").run()  # another method: only its heatmaps are computed
    assert calls == {"classify": 1, "explain": ["gradcam++", "gradcam"]}

    at.switch_page("views/1_Overview.py").run()  # away and back: the upload and its result are still there
    at.switch_page("views/6_Classify_a_cell.py").run()
    assert not at.exception
    assert "Showing the 1 file(s) you dropped earlier" in texts(at.info)
    assert len(at.metric) == 1 and at.selectbox(key="_w_cam").value == "gradcam"
    assert calls["classify"] == 1  # from the cache

    next(b for b in at.button if b.label == "Clear them").click().run()
    assert not at.metric and not any("dropped earlier" in i for i in texts(at.info).splitlines())


def test_hostile_heatmap_method_in_the_link_falls_back_to_the_default(study):
    at = open_app("classify", query={"cam": "<script>alert(1)</script>", "opacity": "nan"})
    assert at.selectbox(key="_w_cam").value == "gradcam"
    assert at.slider(key="_w_opacity").value == pytest.approx(0.45)  # the default (render.DEFAULT_OPACITY)
