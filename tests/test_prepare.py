"""The preparation (smear crop -> C-NMC-style frames) against generated smears with known answers. No TensorFlow.

Every field and crop here is SYNTHETIC (cnmc_core.smears): its truth is the mask, class and scale it was drawn with.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnmc_core import smears
from cnmc_core.prepare import (
    NORMALISE_TOLERANCE,
    PrepareOptions,
    colour_reference,
    looks_like_cnmc_frame,
    prepare,
    stain_distance,
)

FRAME = 450


def demo_frame(is_all: bool, seed: int) -> Image.Image:
    """A demo C-NMC-style frame (synthetic.draw_cell: one cell centred on black)."""
    return Image.fromarray(smears._demo_cell(is_all, seed)[0].astype(np.uint8))


def _upload_mask(cell, size) -> np.ndarray:
    out = np.zeros((size[1], size[0]), bool)
    x0, y0, x1, y1 = cell.bbox
    out[y0:y1, x0:x1] = cell.mask
    return out


def _score(field: smears.Smear, preparation) -> dict:
    """Match prepared cells to the truth by mask IoU (> 0.5): counts, IoUs and centring errors (in frame sides)."""
    truths = [t.field_mask(field.image.size) for t in field.white_cells]
    found, ious, centring, matched = 0, [], [], set()
    for cell in preparation.cells:
        mask = _upload_mask(cell, field.image.size)
        scores = [(mask & t).sum() / (mask | t).sum() for t in truths]
        best = int(np.argmax(scores)) if scores else -1
        if best >= 0 and scores[best] > 0.5:
            found += 1
            matched.add(best)
            ious.append(scores[best])
            tx, ty = field.white_cells[best].centre
            centring.append(np.hypot(tx - cell.centre[0], ty - cell.centre[1]) * cell.zoom / FRAME)
    return {"tp": found, "fp": len(preparation.cells) - found, "fn": len(truths) - len(matched),
            "ious": ious, "centring": centring}


@pytest.fixture(scope="module")
def detection() -> dict:
    """50 generated fields (every stain and background, 1-3 white cells, touching pairs, blur, scales 0.5-2 x
    C-NMC's) prepared with no stated scale, and the scores pooled over them."""
    fields = smears.detection_fields(50, seed=0)
    scores = [_score(f, prepare(f.image)) for f in fields]
    pooled = {k: sum(s[k] for s in scores) for k in ("tp", "fp", "fn")}
    pooled["ious"] = np.concatenate([s["ious"] for s in scores])
    pooled["centring"] = np.concatenate([s["centring"] for s in scores])
    pooled["cells"] = sum(len(f.white_cells) for f in fields)
    return pooled


def test_every_white_cell_is_found_and_nothing_else(detection):
    recall = detection["tp"] / (detection["tp"] + detection["fn"])
    precision = detection["tp"] / (detection["tp"] + detection["fp"])
    assert detection["cells"] >= 80  # enough cells for the rates to mean something
    assert recall >= 0.95, f"recall {recall:.3f}: {detection['fn']} of {detection['cells']} white cells missed"
    assert precision >= 0.95, f"precision {precision:.3f}: {detection['fp']} reported that are not white cells"


def test_masks_match_the_truth(detection):
    ious = detection["ious"]
    assert np.median(ious) >= 0.9, f"median mask IoU {np.median(ious):.3f}"
    assert np.mean(ious >= 0.85) >= 0.95, f"only {np.mean(ious >= 0.85):.0%} of masks have IoU >= 0.85"


def test_frames_are_centred_on_the_cell(detection):
    worst = float(np.max(detection["centring"]))
    assert worst < 0.03, f"a cell's true centre is {worst:.1%} of the frame side from the frame's centre"


def test_frames_are_square_black_outside_the_cell_and_in_the_upload():
    field = smears.smear_field(11, 900, 700, n_white=2)
    preparation = prepare(field.image)
    assert len(preparation.cells) == 2 and not preparation.passthrough and preparation.error is None
    for i, cell in enumerate(preparation.cells):
        assert cell.index == i
        assert cell.frame.size == (FRAME, FRAME) and cell.frame.mode == "RGB"
        pixels = np.asarray(cell.frame_before_norm)
        cover = pixels.max(axis=-1) > 0
        assert 0.05 < cover.mean() < 0.6  # one cell, black around it
        assert not cover[0].any() and not cover[-1].any() and not cover[:, 0].any() and not cover[:, -1].any()
        x0, y0, x1, y1 = cell.bbox
        assert 0 <= x0 < x1 <= field.image.width and 0 <= y0 < y1 <= field.image.height
        assert cell.mask.shape == (y1 - y0, x1 - x0) and cell.mask.mean() > 0.5
        assert len(cell.outline()) > 20
        summary = cell.summary()
        assert summary["cell"] == i and summary["bbox"] == [x0, y0, x1, y1] and summary["prepared"] is True


def test_the_scale_found_from_red_cells_is_within_10_percent():
    """Round-trip crops (a demo cell on a smear, 44 um a side) resized by known factors 0.5-2."""
    errors = []
    for i in range(30):
        factor = float(np.exp(np.random.default_rng([5, i]).uniform(np.log(0.5), np.log(2.0))))
        crop = smears.paste_cell(demo_frame(bool(i % 2), i % 12), seed=i, factor=factor,
                                 stain=sorted(smears.STAINS)[i % len(smears.STAINS)])
        preparation = prepare(crop.image)
        scale = preparation.scale
        errors.append(abs(scale.um_per_px / crop.um_per_px - 1) if scale.source == "red cells" else np.inf)
    within = np.mean(np.array(errors) < 0.1)
    assert within >= 0.9, f"scale within 10% for {within:.0%} of crops; errors {np.round(errors, 3)}"


def test_a_cell_keeps_its_size_whatever_the_microscope():
    """The whole crop is rescaled to C-NMC's scale: the same cell seen at 0.6x and 1.8x comes out the size it has
    in its demo frame (never resized on its own to a 'typical' size)."""
    frame = demo_frame(True, 3)
    original = (smears.frame_alpha(np.asarray(frame)) >= 0.5).sum()  # the cell's area, half its soft edge included
    for factor in (0.6, 1.8):
        crop = smears.paste_cell(frame, seed=7, factor=factor)
        cell = prepare(crop.image, PrepareOptions(um_per_px=crop.um_per_px)).cells[0]
        area = (cell.coverage >= 0.5).sum()  # the same measure: half its soft edge included (cutout.coverage)
        assert cell.scale.source == "stated" and cell.scale.um_per_px == pytest.approx(crop.um_per_px)
        assert area == pytest.approx(original, rel=0.1), f"x{factor}: {area} px in the frame, {original} in the demo"
        assert cell.diameter_um == pytest.approx(2 * np.sqrt(original / np.pi) * smears.CNMC_UM_PER_PX, rel=0.1)


def test_a_cnmc_frame_passes_through_unchanged():
    frame = demo_frame(False, 5)
    assert looks_like_cnmc_frame(frame)
    preparation = prepare(frame, PrepareOptions(colour_reference=colour_reference([demo_frame(True, 1)])))
    assert preparation.passthrough and preparation.found == 1 and len(preparation.cells) == 1
    cell = preparation.cells[0]
    assert cell.summary()["prepared"] is False
    assert np.array_equal(np.asarray(cell.frame), np.asarray(frame))
    assert np.array_equal(np.asarray(cell.frame_before_norm), np.asarray(frame))


def test_smear_crops_and_off_centre_cells_are_not_taken_for_cnmc_frames():
    assert not looks_like_cnmc_frame(smears.smear_field(2, 500, 500, n_white=1).image)
    shifted = np.zeros((FRAME, FRAME, 3), np.uint8)
    shifted[:, 120:] = np.asarray(demo_frame(True, 2))[:, :-120]  # the cell 27% of the side off-centre
    assert not looks_like_cnmc_frame(Image.fromarray(shifted))


@pytest.mark.parametrize(
    "name, image",
    [
        ("all white", Image.new("RGB", (600, 500), (255, 255, 255))),
        ("all dark", Image.new("RGB", (600, 500), (0, 0, 0))),
        ("red cells only", smears.smear_field(4, 900, 700, n_white=0, platelets=6).image),
    ],
)
def test_no_white_cell_is_an_error_saying_what_was_looked_for(name, image):
    preparation = prepare(image)
    assert preparation.cells == [] and preparation.found == 0 and not preparation.passthrough
    assert preparation.error.startswith("no white cell found: "), preparation.error
    assert ("nuclei" in preparation.error) or ("dark" in preparation.error)


def test_a_crowded_field_prepares_at_most_max_cells_and_counts_the_rest():
    field = smears.smear_field(3, 2000, 1600, um_per_px=0.1, n_white=200, red_cover=0.2, distinct_cells=6)
    assert len(field.white_cells) >= 180
    preparation = prepare(field.image, PrepareOptions(max_cells=16))
    assert len(preparation.cells) == 16
    assert preparation.found >= 150, f"found {preparation.found} of {len(field.white_cells)}"
    assert any(f"{preparation.found} white cells found" in note for note in preparation.notes)


def test_a_large_upload_is_downscaled_first_and_boxes_stay_in_its_pixels():
    field = smears.smear_field(8, 1400, 1000, n_white=2)
    preparation = prepare(field.image, PrepareOptions(max_pixels=300_000))
    assert any("downscaled from 1400x1000" in note for note in preparation.notes)
    score = _score(field, preparation)
    assert score["tp"] == 2 and score["fp"] == 0 and min(score["ious"]) > 0.8


def test_a_stated_scale_is_used_and_reported():
    field = smears.smear_field(9, 800, 600, um_per_px=0.05, n_white=1)
    preparation = prepare(field.image, PrepareOptions(um_per_px=0.05))
    cell = preparation.cells[0]
    assert preparation.scale.source == "stated" and cell.summary()["um_per_px"] == 0.05
    assert cell.zoom == pytest.approx(0.05 / smears.CNMC_UM_PER_PX)


@pytest.fixture(scope="module")
def reference() -> dict:
    return colour_reference([demo_frame(bool(i % 2), i) for i in range(24)])


def test_a_far_stain_is_moved_to_the_training_stain(reference):
    field = smears.smear_field(7, 700, 600, n_white=1, stain=smears.FAR_STAIN)
    cell = prepare(field.image, PrepareOptions(colour_reference=reference)).cells[0]
    before, after = stain_distance(cell.frame_before_norm, reference), stain_distance(cell.frame, reference)
    assert before > 1.5 * NORMALISE_TOLERANCE, f"the far stain is only {before:.1f} spreads from the reference"
    assert after <= NORMALISE_TOLERANCE + 0.3, f"normalised: still {after:.1f} spreads away (was {before:.1f})"
    outside = np.asarray(cell.frame_before_norm).max(axis=-1) == 0
    assert np.array_equal(np.asarray(cell.frame).max(axis=-1) == 0, outside)  # black stays black, the cell stays


def test_a_crop_in_the_training_stain_is_left_as_it_is(reference):
    field = smears.smear_field(12, 700, 600, n_white=1, stain="demo")
    cell = prepare(field.image, PrepareOptions(colour_reference=reference)).cells[0]
    assert stain_distance(cell.frame_before_norm, reference) <= NORMALISE_TOLERANCE
    assert np.array_equal(np.asarray(cell.frame), np.asarray(cell.frame_before_norm))


@pytest.mark.parametrize(
    "options, words",
    [
        ({"um_per_px": 0}, "um_per_px must be between"),
        ({"frame_size": 10}, "frame_size must be"),
        ({"max_cells": 0}, "max_cells"),
        ({"colour_reference": {"lab_mean": [50, 0, 0]}}, "colour_reference must come from"),
    ],
)
def test_options_say_what_is_wrong(options, words):
    with pytest.raises(ValueError, match=words):
        PrepareOptions(**options)


def test_prepare_wants_an_rgb_image():
    with pytest.raises(ValueError, match="RGB PIL image"):
        prepare(Image.new("L", (100, 100)))
