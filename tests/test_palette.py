"""The dashboard's colours (cnmc_core/palette.py) stay apart for people with red-green colour
blindness, classes never look like models, and caption text is readable.

Colour-blind vision is simulated with colorspacious (Machado et al. 2009, severity 100: dichromacy); the
difference is CIEDE2000 (scikit-image) in CIELab. A difference of 10 is plainly visible side by side.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import tomllib
from colorspacious import cspace_convert
from skimage.color import deltaE_ciede2000

from cnmc_core import palette
from cnmc_core.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
VISIONS = {"normal": None, "deuteranopia": "deuteranomaly", "protanopia": "protanomaly"}
MIN_DELTA_E = 10.0


def lab(colour: str, cvd: str | None) -> np.ndarray:
    rgb = np.array([int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)]) / 255
    if cvd:
        rgb = np.clip(cspace_convert(rgb, {"name": "sRGB1+CVD", "cvd_type": cvd, "severity": 100}, "sRGB1"), 0, 1)
    return cspace_convert(rgb, "sRGB1", "CIELab")


def delta_e(a: str, b: str, cvd: str | None) -> float:
    return float(deltaE_ciede2000(lab(a, cvd), lab(b, cvd)))


@pytest.mark.parametrize("vision", list(VISIONS))
def test_every_pair_of_model_colours_stays_apart(vision):
    close = [(a, b, round(d, 1)) for a, b in itertools.combinations(palette.MODEL_COLORS, 2)
             if (d := delta_e(a, b, VISIONS[vision])) < MIN_DELTA_E]
    assert not close, f"model colours too alike under {vision} (CIEDE2000 < {MIN_DELTA_E}): {close}"


@pytest.mark.parametrize("vision", list(VISIONS))
def test_classes_ensemble_and_accent_never_look_like_a_model(vision):
    others = {"ALL": palette.CLASS_COLORS["ALL"], "HEM": palette.CLASS_COLORS["HEM"],
              "ensemble": palette.ENSEMBLE_STYLE_COLOR, "accent": palette.ACCENT}
    close = [(name, model, round(d, 1)) for (name, colour), model in itertools.product(others.items(),
                                                                                       palette.MODEL_COLORS)
             if (d := delta_e(colour, model, VISIONS[vision])) < MIN_DELTA_E]
    close += [(a, b, round(d, 1)) for (a, x), (b, y) in itertools.combinations(others.items(), 2)
              if (d := delta_e(x, y, VISIONS[vision])) < MIN_DELTA_E]
    assert not close, f"too alike under {vision}: {close}"


def test_every_registry_model_has_its_own_colour_marker_and_the_ensemble_its_own():
    assert len(MODELS) <= len(palette.MODEL_COLORS), "more models than colours: extend palette.MODEL_COLORS"
    styles = [palette.model_style(key) for key in MODELS]
    assert len({s.color for s in styles}) == len(styles) and len({s.symbol for s in styles}) == len(styles)
    assert [palette.model_style(spec.name) for spec in MODELS.values()] == styles  # by name as by key
    ensemble = palette.model_style("ensemble")
    assert ensemble.color not in {s.color for s in styles} and ensemble.symbol not in {s.symbol for s in styles}
    # room for the opt-in architectures: twelve models still get twelve different markers and colours
    assert len(set(palette.MODEL_SYMBOLS)) == len(set(palette.MODEL_COLORS)) == 12
    assert not palette.needs_second_cue(4) and palette.needs_second_cue(5)
    assert "star" not in palette.MODEL_SYMBOLS  # the training curves star the kept epoch


def test_every_marker_has_its_own_vega_shape_for_the_altair_charts():
    shapes = [palette.vega_shape(symbol) for symbol in palette.MODEL_SYMBOLS]
    assert len(set(shapes)) == len(shapes)  # no marker falls back to another's shape
    builtin = {"circle", "square", "cross", "diamond", "triangle-up", "triangle-down", "triangle-left"}  # Vega's
    for shape in shapes:  # Vega's own name, or a closed SVG path inside its unit square
        assert shape in builtin or (shape.startswith("M") and shape.endswith("Z") and all(
            -1 <= float(v) <= 1 for v in re.findall(r"-?[0-9.]+", shape))), shape
    assert palette.vega_shape(palette.model_style("ensemble").symbol) == "diamond"  # drawn open by the chart


def test_the_accent_is_the_streamlit_theme_colour_and_is_not_red():
    theme = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["theme"]
    assert theme["primaryColor"].upper() == palette.ACCENT.upper()
    r, g, b = (int(palette.ACCENT[i:i + 2], 16) for i in (1, 3, 5))
    assert not (r > g and r > b), "the accent must not be red: red is the ALL class"
    assert palette.contrast_ratio(palette.ACCENT) >= 4.5  # white text on a primary button


@pytest.mark.parametrize("background", ["#FFFFFF", "#F8F8F7", "#F1F0EE", "#FAFAFA"])  # page, widgets, sidebar, code
def test_caption_text_has_at_least_4_5_to_1_contrast(background):
    assert palette.contrast_ratio(palette.CAPTION_COLOR, background) >= 4.5
    assert palette.contrast_ratio("#828180") < 4.5  # Streamlit's own caption grey, which this replaces, did not


def test_contrast_ratio_matches_the_wcag_examples():
    assert palette.contrast_ratio("#000000") == pytest.approx(21.0)
    assert palette.contrast_ratio("#FFFFFF") == pytest.approx(1.0)
    assert palette.contrast_ratio("#767676") == pytest.approx(4.54, abs=0.01)  # the lightest grey passing AA


def smallest_differences(colours) -> dict[str, float]:
    """The smallest CIEDE2000 difference between two of `colours`, under each vision."""
    return {vision: min(delta_e(a, b, cvd) for a, b in itertools.combinations(colours, 2))
            for vision, cvd in VISIONS.items()}


if __name__ == "__main__":  # the figures of docs/dashboard.md: python -m tests.test_palette
    import plotly.express as px

    for name, colours in (("Plotly's default, first seven", px.colors.qualitative.Plotly[:7]),
                          ("this palette, twelve colours", palette.MODEL_COLORS)):
        print(name, {vision: round(d, 1) for vision, d in smallest_differences(colours).items()})
    print("caption contrast", round(palette.contrast_ratio(palette.CAPTION_COLOR), 2),
          "(Streamlit's own:", round(palette.contrast_ratio("#828180"), 2), ")")

