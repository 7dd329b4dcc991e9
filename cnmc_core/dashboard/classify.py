"""The Classify page: the study's models loaded once, one upload through all of them, the tables and the
heatmap overlays the page shows. Uploads stay in memory; nothing is written.

Loading the Predictor imports TensorFlow (10-20 s the first time): the page caches it.
"""

from __future__ import annotations

import pandas as pd
from PIL import Image

from .. import explain, predict, render
from ..store import StudyStore

CAM_METHODS = dict(explain.METHODS)  # method key -> display name ("gradcam" -> "Grad-CAM")
DEFAULT_OPACITY = render.DEFAULT_OPACITY  # the heatmap's share of an overlay's colour


def load_predictor(base: str, name: str) -> predict.Predictor:
    """Every trained model of the study, loaded for prediction (imports TensorFlow: cache the result).

    Raises FileNotFoundError or ValueError, with one line for a person, when no model can be loaded.
    """
    return predict.Predictor.load(StudyStore(base, name))


def classify(predictor: predict.Predictor, content: bytes, name: str, cam: str | None,
             max_side: int) -> predict.Classification:
    """One upload through every model (and the CAM `cam`, when not None), kept at most `max_side` px a side.

    A file that is not a usable image gives a result with an "error" line, never an exception.
    """
    return predictor.classify(content, name=name, cam=cam).for_display(max_side)


def model_table(predictor: predict.Predictor, result: dict) -> pd.DataFrame:
    """Model, P(ALL), Call (at each model's own threshold) for one result."""
    return predictor.table(result)


def results_frame(results: list[dict]) -> pd.DataFrame:
    """One row per file: the table a page offers for download (see predict.results_frame)."""
    return predict.results_frame(results)


def heatmap_overlay(image: Image.Image, heatmap, opacity: float) -> Image.Image:
    """The heatmap (float (h, w) in [0, 1], the image's size) in colour over the image."""
    return render.overlay(image, heatmap, opacity, colour_scale=False)


def colour_bar() -> Image.Image:
    """The colour scale of every heatmap: cold (no evidence) to hot."""
    return render.colour_bar()
