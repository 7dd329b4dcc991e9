"""Reading a heatmap (issue 14, points 9 and 11): one set of words for the gallery, the Classify page and `explain`.

The share of heat on the cell against the cell's share of the frame, flagged when mostly off the cell; flat and
all-zero maps said plainly; random weights named. The unit tests need no TensorFlow; the ones on the trained tiny
study (the `explain` command, the two pages) are slow.
"""

from __future__ import annotations

import io
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cnmc_core import cell_commands, render
from cnmc_core.dashboard import gallery_view
from cnmc_core.dashboard.base import StudyData
from cnmc_core.explain import Explanation
from cnmc_core.heat import read_heatmap
from cnmc_core.store import StudyStore

from .helpers import a_cell_file, cli, open_app, texts


def cell_frame(side: int = 100, radius: int = 20) -> tuple[Image.Image, np.ndarray]:
    """A purple disc (the cell) centred on black, and its mask: (RGB image, bool (side, side))."""
    yy, xx = np.mgrid[:side, :side]
    mask = (xx - side / 2) ** 2 + (yy - side / 2) ** 2 < radius**2
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[mask] = (150, 90, 200)
    return Image.fromarray(pixels), mask


def test_a_map_on_the_cell_gives_its_share_beside_the_cells_share_of_the_frame():
    img, mask = cell_frame()
    heat = np.where(mask, 1.0, 0.0).astype(np.float32)
    heat[0, 0] = 0.5  # a little heat off the cell
    reading = read_heatmap(heat, img, p_all=0.9, target="ALL")
    assert reading.kind == "share" and not reading.off_cell
    area = mask.mean()  # 12.6% of the frame
    assert reading.cell_area == pytest.approx(area, abs=1e-4)
    assert reading.text == f"evidence for ALL: 100% of the heat on the cell (the cell is {area:.0%} of the frame)"


def test_a_map_mostly_off_the_cell_is_flagged():
    img, mask = cell_frame()
    heat = np.zeros(mask.shape, np.float32)
    heat[:20, :20] = 1.0  # a corner of black background
    heat[mask] = 0.1  # and a little on the cell
    reading = read_heatmap(heat, img, p_all=0.2, target="HEM")
    share = heat[mask].sum() / heat.sum()
    assert reading.kind == "share" and reading.off_cell and share < 0.5
    assert reading.text == (f"evidence for HEM: {share:.0%} of the heat on the cell (the cell is {mask.mean():.0%} "
                            "of the frame); warning: mostly off the cell")


@pytest.mark.parametrize("share, flagged", [(0.494, True), (0.496, False), (0.5, False), (0.9, False)])
def test_the_off_cell_rule_is_under_half_as_the_percentage_shown(share, flagged):
    """Flagged below half of the heat on the cell; 49.6% shows as 50% and is not flagged (no '50% … mostly off')."""
    img, mask = cell_frame()
    heat = np.zeros(mask.shape, np.float32)
    heat[mask] = share / mask.sum()
    heat[~mask] = (1 - share) / (~mask).sum()
    heat /= heat.max()
    reading = read_heatmap(heat, img)
    assert reading.off_cell == flagged and ("mostly off the cell" in reading.text) == flagged
    assert reading.text.startswith(f"{share:.0%} of the heat on the cell")  # no target given: no "evidence for"


def test_a_flat_map_says_it_localises_nothing_and_claims_no_evidence():
    """Point 9: the demo's InceptionV3 on a saturated cell gives exactly 1.0 everywhere."""
    img, _ = cell_frame()
    reading = read_heatmap(np.ones((100, 100), np.float32), img, p_all=0.0004, target="HEM")
    assert reading.kind == "flat" and not reading.off_cell
    assert reading.text == "no localisable evidence: the score does not change with position (P(ALL) 0.000)"
    assert reading.text == render.flat_note(0.0004)  # the note the overlay's flat picture goes with
    assert "evidence for" not in reading.text
    nearly = np.full((100, 100), 0.7, np.float32) + np.random.default_rng(0).normal(0, 1e-5, (100, 100))
    assert read_heatmap(nearly.astype(np.float32), img).kind == "flat"


def test_an_all_zero_map_says_no_location_adds_evidence():
    img, _ = cell_frame()
    reading = read_heatmap(np.zeros((100, 100), np.float32), img, p_all=0.3, target="HEM")
    assert reading.kind == "empty" and not reading.off_cell
    assert reading.text == "evidence for HEM: no location adds any (the heatmap is all zero)"


def test_a_frame_without_black_background_is_not_measured():
    """An upload classified as it is (preparation off) may have no black around the cell: no share is claimed."""
    bright = Image.new("RGB", (50, 50), (200, 180, 210))
    heat = np.zeros((50, 50), np.float32)
    heat[:10] = 1.0
    reading = read_heatmap(heat, bright, target="ALL")
    assert reading.kind == "unmeasured" and not reading.off_cell
    assert "not measured" in reading.text and "%" not in reading.text
    black = Image.new("RGB", (50, 50))
    assert "no cell is visible" in read_heatmap(heat, black).text


def test_an_explanation_reads_itself_on_its_frame():
    img, mask = cell_frame()
    e = Explanation(np.where(mask, 1.0, 0.0).astype(np.float32), 0.8, "ALL", "gradcam", "block5_conv3")
    assert e.reading(img) == read_heatmap(e.heatmap, img, 0.8, "ALL")
    with pytest.raises(ValueError, match="does not match"):
        e.reading(img.resize((50, 50)))


def test_the_explain_line_carries_the_reading(tmp_path, capsys):
    """The line `python -m cnmc_core explain` prints, written without a trained model (its end-to-end run: below)."""
    img, mask = cell_frame()
    args = Namespace(opacity=0.45, model="vgg16")
    heat = np.zeros(mask.shape, np.float32)
    heat[:20, :20] = 1.0
    off = Explanation(heat, 0.91, "ALL", "gradcam", "block5_conv3")
    cell_commands._write_explanation(args, img, off, tmp_path / "off.png", None, "")
    line = capsys.readouterr().out.strip()
    assert line == (f"vgg16: P(ALL) 0.910; Grad-CAM on block5_conv3, evidence for ALL: 0% of the heat on the cell "
                    f"(the cell is {mask.mean():.0%} of the frame); warning: mostly off the cell; wrote "
                    f"{tmp_path / 'off.png'}")

    flat = Explanation(np.ones(mask.shape, np.float32), 0.0, "HEM", "gradcam", "mixed10")
    cell_commands._write_explanation(args, img, flat, tmp_path / "flat.png", None, "cell 0 at [1, 2, 3, 4]: ")
    line = capsys.readouterr().out.strip()
    assert line == ("cell 0 at [1, 2, 3, 4]: vgg16: P(ALL) 0.000; Grad-CAM on mixed10, no localisable evidence: the "
                    f"score does not change with position (P(ALL) 0.000); wrote {tmp_path / 'flat.png'}")
    with Image.open(tmp_path / "flat.png") as png:  # the cell alone, never one solid colour
        assert np.asarray(png.convert("RGB"))[50, 50].tolist() == [150, 90, 200]


def old_gallery(root: Path, heatmaps: dict[str, np.ndarray]) -> StudyStore:
    """A gallery as made before issue 14: one cell, no `cell_area`, no `flat`."""
    store = StudyStore(root, "old")
    img, mask = cell_frame()
    models = {key: {"p_all": 0.2, "predicted": "HEM", "correct": True, "target": "HEM", "empty": False,
                    "mass_on_cell": round(float(h[mask].sum() / h.sum()), 4)} for key, h in heatmaps.items()}
    index = {"version": 1, "method": "gradcam", "target": "predicted", "side": 100, "mean_cell_area": None,
             "models": {key: {"name": key, "layer": "x", "threshold": 0.5, "config_hash": "h",
                              "mean_mass_on_cell": None} for key in heatmaps},
             "cells": [{"id": "c00", "path": "a.bmp", "subject": "1", "label": "HEM", "ensemble": 0.2,
                        "correct": True, "models": models}]}
    store.write_gallery(index, {"c00": render.png_bytes(img)},
                        {(key, "c00"): (h * 255).round().astype(np.uint8) for key, h in heatmaps.items()})
    return store


def test_an_older_gallery_without_cell_area_or_flat_is_still_read_right(tmp_path):
    _, mask = cell_frame()
    off = np.zeros(mask.shape, np.float32)
    off[:20, :20], off[mask] = 1.0, 0.1
    gallery = gallery_view.load_gallery(str(tmp_path), old_gallery(tmp_path, {
        "vgg16": off, "inception_v3": np.ones(mask.shape, np.float32)}).name)
    share = off[mask].sum() / off.sum()
    assert gallery.caption("c00", "vgg16") == (f"VGG16: P(ALL) 0.20, calls HEM (right); evidence for HEM: {share:.0%} "
                                               "of the heat on the cell; warning: mostly off the cell")
    assert gallery.caption("c00", "inception_v3") == (
        "InceptionV3: P(ALL) 0.20, calls HEM (right); no localisable evidence: the score does not change with "
        "position (P(ALL) 0.200)")  # flat, found from its heatmap file


def study_data(info: dict) -> StudyData:
    return StudyData("root", "s", ("root", "s"), info, pd.DataFrame(), [])


@pytest.mark.parametrize("info, untrained", [
    ({"config": {"weights": "none"}, "data": {"synthetic": True}}, True),  # the demo
    ({"config": {"weights": "none"}, "data": {"synthetic": False}}, True),
    ({"config": {"weights": "imagenet"}, "data": {"synthetic": False}}, False),
    ({"config": {"weights": "/opt/weights"}, "data": {}}, False),
    ({"data": {"synthetic": True}}, True),  # no weights recorded: synthetic data says random weights
    ({"config": "garbage", "data": None}, False),
])
def test_the_pages_say_when_the_networks_are_untrained(info, untrained):
    note = gallery_view.untrained_note(study_data(info))
    assert (note == gallery_view.UNTRAINED) == untrained and (note is None) != untrained
    assert "what an untrained network responds to" in gallery_view.UNTRAINED


# --- on the trained tiny study (random weights): `explain` and the two pages ---------------------------------------

def captions(at) -> list[str]:
    return [c.strip("`") for img in at.get("image") for c in img.captions]


def has_reading(caption: str) -> bool:
    return any(words in caption for words in ("of the heat on the cell", "no localisable evidence",
                                              "no location adds any", "heat on the cell not measured"))


@pytest.mark.slow
def test_the_explain_command_prints_the_share_of_heat_on_the_cell(tiny_study, tmp_path):
    root, name = tiny_study
    cell = a_cell_file(root, name)
    r = cli("explain", "--study", name, "--artifacts", root, "--model", "vgg16", cell, "--out", tmp_path / "o.png",
            "--prepare", "off")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("vgg16: P(ALL) ") and has_reading(line), line
    assert "the cell is " in line or "no localisable evidence" in line or "no location adds any" in line
    assert "what an untrained network responds to" in r.stderr  # the shared study has random weights


@pytest.mark.slow
def test_the_gallery_page_shows_each_maps_reading_and_that_the_weights_are_random(tiny_study, monkeypatch):
    root, name = tiny_study
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    at = open_app("gradcam")
    assert "what an untrained network responds to" in texts(at.info)
    assert "mostly off the cell" in texts(at.caption)  # the rule, stated once beside the maps
    maps = [c for c in captions(at) if c.startswith(("VGG16:", "EfficientNetB0:"))]
    assert len(maps) == 2 and all(has_reading(c) for c in maps), maps
    index = json.loads((Path(root) / name / "gallery" / "index.json").read_text())
    cell = index["cells"][0]
    entry = cell["models"]["vgg16"]
    if not (entry["empty"] or entry["flat"]):
        assert f"{entry['mass_on_cell']:.0%} of the heat on the cell (the cell is {cell['cell_area']:.0%} of the " \
               "frame)" in maps[0]
    at.radio(key="_w_gallery_mode").set_value("model").run()
    assert sum(has_reading(c) for c in captions(at)) == len(index["cells"])


@pytest.mark.slow
def test_the_classify_page_shows_each_maps_reading_under_it(tiny_study, monkeypatch):
    root, name = tiny_study
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    buf = io.BytesIO()
    Image.open(a_cell_file(root, name)).transpose(Image.FLIP_TOP_BOTTOM).save(buf, format="PNG")  # not cached yet
    at = open_app("classify")
    at.file_uploader(key="upload").set_value(("heat.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "what an untrained network responds to" in texts(at.info)
    maps = [c for c in captions(at) if c.startswith(("VGG16:", "EfficientNetB0:"))]
    assert len(maps) == 2 and all(has_reading(c) for c in maps), maps
    assert any("(the cell is " in c for c in maps) or all("no localisable" in c or "all zero" in c for c in maps)

