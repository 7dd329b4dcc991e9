"""`predict` and `explain` on smear crops (issue 13): one JSON line per white cell found (with the Inconclusive rule's
label and reasons, and the study, config hash, time and flags), C-NMC frames passing through with the same numbers, a
clear error for a field without white cells, the prepared frames written on request, the exit status a script reads,
and the Classify page's rows, summary and generated examples. All images here are SYNTHETIC (cnmc_core.smears and
the demo generator)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cnmc_core import smears

from .helpers import a_cell_file, cli, cli_here, open_app, texts


@pytest.fixture(scope="module")
def two_cell_field():
    return smears.smear_field(5, 1300, 1000, n_white=2, red_cover=0.4)


@pytest.fixture(scope="module")
def runs(tiny_study, two_cell_field, tmp_path_factory):
    """Two `predict` runs over the same inputs (a two-cell field, a C-NMC frame, a field of red cells only):
    with --prepare auto and --save-prepared, and with --prepare off."""
    root, study = tiny_study
    folder = tmp_path_factory.mktemp("smears")
    field = folder / "field.png"
    field.write_bytes(two_cell_field.png_bytes())
    red_only = folder / "red_only.png"
    red_only.write_bytes(smears.smear_field(6, 900, 700, n_white=0, red_cover=0.4).png_bytes())
    frame = a_cell_file(root, study)
    saved = folder / "prepared"
    common = ("predict", "--study", study, "--artifacts", root)
    auto = cli(*common, "--save-prepared", saved, field, frame, red_only)
    off = cli(*common, "--prepare", "off", frame)
    explained = folder / "explained"
    explain = cli("explain", "--study", study, "--artifacts", root, "--model", "vgg16", field,
                  "--out", explained / "field.png", "--npy", explained / "field.npy", "--save-prepared", explained)
    return {"auto": auto, "off": off, "saved": saved, "frame": frame, "explain": explain, "explained": explained}


def _lines(run) -> list[dict]:
    assert "Traceback" not in run.stderr, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_a_two_cell_field_gives_one_line_per_cell_with_boxes_around_the_true_cells(runs, two_cell_field):
    lines = [r for r in _lines(runs["auto"]) if r["file"].endswith("field.png")]
    assert [r["cell"] for r in lines] == [0, 1]
    assert all(r["prepared"] is True and r["call"] in ("ALL", "HEM") for r in lines)
    # The headline follows the rule: inconclusive exactly when there is a reason, else the ensemble's call.
    assert all(r["label"] == ("inconclusive" if r["reasons"] else r["call"]) for r in lines)
    assert all(set(r["predictions"]) == {"vgg16", "efficientnet_b0"} for r in lines)
    assert all(r["scale"]["source"] == "red cells" and r["found"] == 2 for r in lines)
    for truth in two_cell_field.white_cells:  # each true cell's centre lies in exactly one reported box
        x, y = truth.centre
        inside = [r for r in lines if r["bbox"][0] <= x < r["bbox"][2] and r["bbox"][1] <= y < r["bbox"][3]]
        assert len(inside) == 1, (truth.centre, [r["bbox"] for r in lines])


def test_every_line_says_where_it_came_from_and_several_get_a_summary(runs):
    lines = _lines(runs["auto"])
    for r in lines:
        assert r["study"] == "tiny" and len(r["config_hash"]) == 16 and r["research_use_only"] is True
        assert r["synthetic_data"] is True and r["time"].endswith("+00:00")
    assert len({r["config_hash"] for r in lines}) == 1
    cells = [r for r in lines if "error" not in r]
    summary = runs["auto"].stderr.strip().splitlines()[-1]
    called = sum(r["label"] == "ALL" for r in cells)
    assert summary.startswith(f"{called} of {len(cells)} cells called ALL, ")
    assert summary.endswith("; 1 upload(s) gave no result")  # the field of red cells only
    assert f"; 2 of {len(cells)} prepared;" in summary  # the field's two cells; the C-NMC frame passed through


def test_explain_prepares_a_field_and_writes_one_overlay_per_cell(runs):
    run, folder = runs["explain"], runs["explained"]
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["field_cell0.npy", "field_cell0.png", "field_cell1.npy", "field_cell1.png"], names
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("cell 0 at [") and "vgg16: P(ALL)" in lines[0]
    # The overlays are of the prepared 450 px frames (the frame itself saved beside them as field_cell<i>.png).
    heatmap = np.load(folder / "field_cell0.npy")
    assert heatmap.shape == (450, 450) and 0.0 <= heatmap.min() and heatmap.max() <= 1.0


def test_explain_on_a_field_without_white_cells_exits_1_with_one_line(tiny_study, tmp_path):
    root, study = tiny_study
    red_only = tmp_path / "red_only.png"
    red_only.write_bytes(smears.smear_field(6, 900, 700, n_white=0, red_cover=0.4).png_bytes())
    out = tmp_path / "o.png"
    common = ("explain", "--study", study, "--artifacts", root, "--model", "vgg16", red_only, "--out", out)
    r = cli(*common)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {red_only}: no white cell found: ")
    assert not out.exists()
    usage = cli(*common, "--um-per-px", "9")
    assert usage.returncode == 2 and usage.stderr.startswith("error: --um-per-px")


def test_a_cnmc_frame_passes_through_with_the_same_predictions_as_prepare_off(runs):
    frame = str(runs["frame"])
    auto = next(r for r in _lines(runs["auto"]) if r["file"] == frame)
    (off,) = _lines(runs["off"])
    assert runs["off"].returncode == 0, runs["off"].stderr
    assert auto["prepared"] is False and auto["cell"] == 0
    assert auto["predictions"] == off["predictions"]
    assert (auto["ensemble"], auto["label"], auto["ood"]) == (off["ensemble"], off["label"], off["ood"])
    assert "cell" not in off and "prepared" not in off  # off: the line is exactly today's


def test_a_field_of_red_cells_only_gives_an_error_line_and_exit_status_1(runs):
    errors = [r for r in _lines(runs["auto"]) if "error" in r]
    assert len(errors) == 1 and errors[0]["file"].endswith("red_only.png")
    assert errors[0]["error"].startswith("no white cell found: ") and "nuclei" in errors[0]["error"]
    assert runs["auto"].returncode == 1


def test_save_prepared_writes_each_cell_frame_as_the_models_saw_it(runs):
    names = sorted(p.name for p in runs["saved"].iterdir())
    assert names == sorted(["field_cell0.png", "field_cell1.png", f"{runs['frame'].stem}_cell0.png"])
    for name in ("field_cell0.png", "field_cell1.png"):
        with Image.open(runs["saved"] / name) as img:
            assert img.size == (450, 450) and img.mode == "RGB"
            assert img.getpixel((0, 0)) == (0, 0, 0)  # the cell on black, as in C-NMC


def test_usage_errors_exit_2_before_any_model_loads(tiny_study, tmp_path):
    root, study = tiny_study
    r = cli_here("predict", "--study", study, "--artifacts", root, "--um-per-px", "9", tmp_path / "x.png")
    assert r.returncode == 2 and r.stderr.startswith("error: --um-per-px")


def test_the_classify_page_outlines_each_cell_and_gives_a_row_per_cell(tiny_study, two_cell_field, monkeypatch):
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tiny_study[0]))
    at = open_app("classify")
    assert at.toggle(key="_w_prepare").value is True  # the preparation is on by default
    at.file_uploader(key="upload").set_value(("field.png", two_cell_field.png_bytes(), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    captions = [c for img in at.get("image") for c in img.captions]
    assert sum(c.startswith("as uploaded, with the white cells found") for c in captions) == 1
    assert sum(c.startswith("prepared frame, before stain normalisation") for c in captions) == 2
    assert len(at.metric) == 2 and all(m.value in ("ALL", "HEM", "Inconclusive") for m in at.metric)
    assert "**Cell 0**" in texts(at.markdown) and "**Cell 1**" in texts(at.markdown)
    summary = at.dataframe[0].value  # two cells: the table of all results comes first
    assert list(summary["cell"]) == [0, 1]
    called = list(summary["label"])
    assert f"**{called.count('ALL')} of 2 cells called ALL, {called.count('HEM')} HEM, " in texts(at.markdown)
    inconclusive = [m for m in at.metric if m.value == "Inconclusive"]
    assert len(inconclusive) == called.count("inconclusive")
    assert sum(w.value.startswith("**Inconclusive:**") for w in at.warning) == len(inconclusive)
    table = at.dataframe[1].value  # cell 0's models, each with its track record
    assert list(table.columns) == ["Model", "P(ALL)", "Call", "Sensitivity", "Specificity", "AUC",
                                   "Validation cells near this score"]
    assert table["Validation cells near this score"].str.contains("validation cell").all()

    at.toggle(key="_w_prepare").set_value(False).run()  # off: the field as it is, one result
    assert not at.exception and len(at.metric) == 1


def test_the_study_saves_the_stain_reference_its_uploads_are_normalised_to(tiny_study, two_cell_field):
    from cnmc_core.predict import Predictor
    from cnmc_core.store import StudyStore

    root, study = tiny_study
    store = StudyStore(root, study)
    reference = json.loads(store.colour_reference.read_text())
    assert reference["method"] == "reinhard-lab" and reference["frames"] >= 10
    assert len(reference["lab_mean"]) == 3 and 0 < reference["lab_mean"][0] < 100  # L* of stained cells
    predictor = Predictor.load(store)
    assert predictor.colour_reference == reference
    far = smears.smear_field(7, 1000, 800, n_white=1, red_cover=0.3, stain=smears.FAR_STAIN)
    (one,) = predictor.classify_prepared(far.png_bytes(), name="far.png")
    assert one.result["prepared"] is True
    assert not any("not normalised" in note for note in one.result.get("notes", [])), one.result.get("notes")


def test_a_generated_example_gives_the_same_result_as_uploading_it(tiny_study, monkeypatch):
    from cnmc_core.dashboard import classify_answer

    monkeypatch.setenv("CNMC_ARTIFACTS", str(tiny_study[0]))
    at = open_app("classify")
    names = classify_answer.example_names()
    assert len(names) >= 3 and all(n.startswith("generated example: synthetic") for n in names)
    assert [c for img in at.get("image") for c in img.captions][:len(names)] == names  # beside the uploader
    at.toggle(key="_w_prepare").set_value(True)
    at.selectbox(key="_w_cam").set_value("off")
    at.button(key="example_1").click().run()  # "two white cells"
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    clicked = at.dataframe[0].value
    assert list(clicked["cell"]) == [0, 1] and (clicked["file"] == f"{names[1]}.png").all()

    _, content = classify_answer.example_upload(names[1])
    fresh = open_app("classify")
    fresh.selectbox(key="_w_cam").set_value("off")
    fresh.file_uploader(key="upload").set_value(("same.png", content, "image/png")).run()
    uploaded = fresh.dataframe[0].value
    numbers = [c for c in clicked.columns if c.startswith("P(ALL)") or c in ("label", "ensemble P(ALL)", "cell")]
    pd.testing.assert_frame_equal(clicked[numbers], uploaded[numbers])
