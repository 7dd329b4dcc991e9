"""Heatmap drawing (issue 14, point 9): an even single-hue colour map, and flat maps never painted solid."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnmc_core import render


def _cell(side: int = 160) -> Image.Image:
    yy, xx = np.mgrid[:side, :side]
    img = np.zeros((side, side, 3), np.uint8)
    img[(yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 3) ** 2] = (150, 90, 200)
    return Image.fromarray(img)


def test_the_colour_map_is_magma_and_rises_evenly_in_lightness():
    lut = render.MAGMA
    assert lut.shape == (256, 3)
    assert tuple(lut[0]) == (0, 0, 4) and tuple(lut[-1]) == (252, 253, 191)  # matplotlib's magma ends
    lightness = lut @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(lightness) > 0)  # no rainbow: every step is lighter than the last


def test_a_flat_map_is_not_painted_as_one_colour():
    cell = _cell()
    for value in (1.0, 0.0, 0.37):
        flat = np.full((160, 160), value, np.float32)
        assert render.is_flat(flat)
        shown = np.asarray(render.overlay(cell, flat, opacity=0.8, colour_scale=False))
        top = slice(0, 120)  # above the note along the bottom: the cell itself, untinted
        np.testing.assert_array_equal(shown[top], np.asarray(cell)[top])
        assert (shown[150:] == 255).any()  # the note's white strip
    assert "P(ALL) 0.000" in render.flat_note(0.0) and render.flat_note().startswith("no localisable evidence")


def test_an_overlay_tints_in_proportion_to_the_evidence():
    cell = _cell()
    heat = np.zeros((160, 160), np.float32)
    heat[60:100, 60:100] = 1.0
    assert not render.is_flat(heat)
    shown = np.asarray(render.overlay(cell, heat, opacity=0.5, colour_scale=False)).astype(int)
    np.testing.assert_array_equal(shown[:40, :40], np.asarray(cell)[:40, :40])  # no evidence: the cell as it is
    expected = np.round(0.5 * np.asarray(cell)[80, 80] + 0.5 * render.MAGMA[255]).astype(int)
    np.testing.assert_array_equal(shown[80, 80], expected)
    assert np.array_equal(np.asarray(render.overlay(cell, heat, opacity=0.0, colour_scale=False)), np.asarray(cell))
