"""The synthetic smear generator: its truth is what the preparation's known-answer tests stand on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from cnmc_core import smears


def test_a_field_is_the_same_for_the_same_seed_and_differs_for_another():
    a, b = smears.smear_field(1, 500, 400), smears.smear_field(1, 500, 400)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(smears.smear_field(2, 500, 400).image))


def test_everything_generated_is_labelled_synthetic():
    field = smears.smear_field(1, 300, 300, n_white=1)
    assert field.synthetic and "SYNTHETIC" in field.note
    assert "SYNTHETIC" in Image.open(io.BytesIO(field.png_bytes())).text["Comment"]
    assert all(name.startswith("synthetic ") and s.synthetic for name, s in smears.examples().items())


def test_white_cells_lie_inside_the_field_and_their_truth_is_where_they_are_drawn():
    field = smears.smear_field(3, 900, 700, n_white=3)
    pixels = np.asarray(field.image).astype(float)
    for cell in field.white_cells:
        x0, y0, x1, y1 = cell.bbox
        assert 0 <= x0 < x1 <= 900 and 0 <= y0 < y1 <= 700
        inside = pixels[y0:y1, x0:x1][cell.mask]
        # a white cell is purple-blue: blue above green, where the glass is near grey and red cells are pink
        assert np.median(inside[:, 2] - inside[:, 1]) > 20
        assert cell.field_mask(field.image.size).sum() == cell.mask.sum()


def test_touching_cells_touch_and_overlapping_ones_are_flagged():
    touching = smears.smear_field(5, 900, 700, n_white=2, touching=True)
    first, second = (c.field_mask(touching.image.size) for c in touching.white_cells)
    gap = ndimage.distance_transform_edt(~first)[second].min()  # pixels between the two cells
    assert gap < 12 and not (first & second).any(), f"{gap:.0f} px apart"
    overlapping = smears.smear_field(5, 900, 700, n_white=2, overlapping=True)
    assert overlapping.white_cells[0].overlapped


def test_the_round_trip_crop_resizes_the_cell_with_the_crop():
    frame = Image.fromarray(smears._demo_cell(True, 4)[0].astype(np.uint8))
    area = (smears.frame_alpha(np.asarray(frame)) >= 0.5).sum()
    for factor in (0.5, 2.0):
        crop = smears.paste_cell(frame, seed=1, factor=factor)
        assert crop.um_per_px == pytest.approx(smears.CNMC_UM_PER_PX / factor)
        assert crop.white_cells[0].mask.sum() == pytest.approx(area * factor**2, rel=0.05)


@pytest.mark.parametrize(
    "arguments, words", [({"stain": "green"}, "stain must be"), ({"background": "x"}, "background must be")]
)
def test_bad_arguments_say_what_is_allowed(arguments, words):
    with pytest.raises(ValueError, match=words):
        smears.smear_field(0, 100, 100, **arguments)
