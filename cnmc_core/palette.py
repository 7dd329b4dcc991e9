"""The colours of every chart (the dashboard's pages and the study report): a colour-blind-safe colour per
model (with a marker and a dash as a second cue), two colours of the classes, the accent, and the scales of
the heatmaps.

Models 1-6 take six colours of Okabe & Ito's colour-universal palette (Okabe and Ito, "Color Universal
Design", 2008): all but its yellow (1.2:1 against the white page: a line in it cannot be seen) and its black
(the ensemble's). Models 7-12 and the class and accent colours were then chosen, one at a time, as the sRGB
colour farthest from all colours already taken, measured as the smallest CIEDE2000 difference under normal
vision, deuteranopia and protanopia (Machado et al. 2009 at severity 100, as the `colorspacious` package
simulates it). Every pair keeps a difference of 12 or more in all three (tests/test_palette.py checks >= 10).
Searched for rather than taken from a library: the library palettes checked (Tableau's colour-blind 10,
Plotly's default) have pairs at 8 and 0.7 under these simulations, and none of them has twelve colours.

Colour is never the only cue: where more than four models share a chart, each also has its own marker
(12 distinct symbols) and, where lines are not already dashed for another reason, its own dash.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import MODELS
from .store import ENSEMBLE

ENSEMBLE_NAME = "Ensemble (mean)"  # the ensemble's display name (dashboard.base.ENSEMBLE_NAME, analysis.py)

MODEL_COLORS = (  # by registry position: the seven paper models first, then up to five added ones
    "#0072B2",  # blue (Okabe-Ito)
    "#E69F00",  # orange (Okabe-Ito)
    "#009E73",  # bluish green (Okabe-Ito)
    "#CC79A7",  # reddish purple (Okabe-Ito)
    "#56B4E9",  # sky blue (Okabe-Ito)
    "#D55E00",  # vermillion (Okabe-Ito)
    "#5A2D2D",  # dark brown
    "#4B5A5A",  # slate
    "#1E00D2",  # ultramarine
    "#5A694B",  # olive grey
    "#FF96A5",  # pink
    "#000069",  # navy
)
MODEL_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "triangle-down", "pentagon", "hexagon",
                 "triangle-left", "hourglass", "bowtie")  # no star: a star marks the kept epoch
MODEL_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
# The same markers for Vega-Lite (Altair) charts: its own shape names where it has the marker, else the marker as an
# SVG path in Vega's unit square (-1..1); "-open" symbols are drawn unfilled by the chart itself.
VEGA_SHAPES = {
    "circle": "circle", "square": "square", "diamond": "diamond", "cross": "cross", "triangle-up": "triangle-up",
    "triangle-down": "triangle-down", "triangle-left": "triangle-left",
    "x": "M-1,-0.6L-0.6,-1L0,-0.4L0.6,-1L1,-0.6L0.4,0L1,0.6L0.6,1L0,0.4L-0.6,1L-1,0.6L-0.4,0Z",
    "pentagon": "M0,-1L0.951,-0.309L0.588,0.809L-0.588,0.809L-0.951,-0.309Z",
    "hexagon": "M0,-1L0.866,-0.5L0.866,0.5L0,1L-0.866,0.5L-0.866,-0.5Z",
    "hourglass": "M-1,-1L1,-1L-1,1L1,1Z",
    "bowtie": "M-1,-1L1,1L1,-1L-1,1Z",
}
ENSEMBLE_STYLE_COLOR = "#000000"  # the ensemble is made of the models: black, dashed, a diamond
CLASS_COLORS = {"ALL": "#960000", "HEM": "#3C87FF", "unlabelled": "#8C8C8C"}  # never a model's or the accent
ACCENT = "#2D4B78"  # Streamlit's primaryColor (.streamlit/config.toml): 8.8:1 on white, not red, not a model's
REFERENCE_GREY = "#6E6E6E"  # what is not a model: the paper's values, the chance diagonal
CAPTION_COLOR = "#5C5955"  # caption text: 7.0:1 on white, 6.1:1 on the sidebar (Streamlit's own grey is 3.9:1)
SECOND_CUE_FROM = 5  # from this many models on a chart, each also gets its own marker (and dash)
# Heatmap scales without a red-green contrast: cividis was made to read the same under colour blindness
# (Nunez et al. 2018); blue-orange is the diverging pair every dichromat still tells apart.
SEQUENTIAL = "cividis"
DIVERGING_UP, DIVERGING_DOWN = "blue", "orange"  # st.metric deltas: better, worse (with the arrow as a second cue)


@dataclass(frozen=True)
class ModelStyle:
    color: str
    symbol: str
    dash: str


def model_style(key_or_name: str) -> ModelStyle:
    """The colour, marker and dash of a model (its registry key or display name), the same on every page.

    Anything that is not a registry model (a name from an old study) gets the reference grey and a plain circle.
    """
    if key_or_name in (ENSEMBLE, ENSEMBLE_NAME):
        return ModelStyle(ENSEMBLE_STYLE_COLOR, "diamond-open", "dash")
    keys = list(MODELS)
    names = {spec.name: key for key, spec in MODELS.items()}
    key = key_or_name if key_or_name in MODELS else names.get(key_or_name)
    if key is None or keys.index(key) >= len(MODEL_COLORS):
        return ModelStyle(REFERENCE_GREY, "circle", "solid")
    i = keys.index(key)
    return ModelStyle(MODEL_COLORS[i], MODEL_SYMBOLS[i], MODEL_DASHES[i % len(MODEL_DASHES)])


def vega_shape(symbol: str) -> str:
    """A model's marker (`ModelStyle.symbol`, a plotly name) as a Vega-Lite shape; "-open" is the chart's to draw."""
    return VEGA_SHAPES.get(symbol.removesuffix("-open"), "circle")


def needs_second_cue(n_models: int) -> bool:
    """Whether a chart of `n_models` models must tell them apart by more than colour."""
    return n_models >= SECOND_CUE_FROM


def contrast_ratio(foreground: str, background: str = "#FFFFFF") -> float:
    """WCAG 2 contrast ratio of two '#RRGGBB' colours (1 to 21; text needs 4.5)."""
    def luminance(colour: str) -> float:
        channels = [int(colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)
