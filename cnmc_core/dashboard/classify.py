"""The Classify page: the study's models loaded once, one upload through all of them, the tables and the
heatmap overlays the page shows. Uploads stay in memory; nothing is written.

With the preparation on (the default), each upload may be a smear crop or field: every white cell found is made
into a C-NMC-style frame and classified (predict.Predictor.classify_prepared); the page shows the upload with a
numbered outline on each cell, then one row per cell.

Loading the Predictor imports TensorFlow (10-20 s the first time): the page caches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from PIL import Image, ImageDraw

from .. import explain, predict, render
from ..images import ImageError, open_image
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


@dataclass
class UploadResult:
    """One upload on the page: the upload with the cells found outlined and numbered, and one result per cell."""

    cells: list[predict.Classification]  # one per white cell (or one for the upload as it is), at display size
    outlined: Image.Image | None = None  # the upload at display size, each cell's outline and number drawn on it
    notes: list[str] = field(default_factory=list)  # about the whole upload (cells found and shown, scale, ...)


def classify_upload(predictor: predict.Predictor, content: bytes, name: str, cam: str | None, max_side: int,
                    prepare: bool = True, um_per_px: float | None = None) -> UploadResult:
    """One upload: its white cells found and made into C-NMC-style frames (when `prepare`), each through every
    model (and the CAM `cam`). Images kept at most `max_side` px a side. A bad image or an upload without a white
    cell gives one result with an "error" line, never an exception; a bad `um_per_px` raises ValueError."""
    results = predictor.classify_prepared(content, name=name, prepare="auto" if prepare else "off",
                                          um_per_px=um_per_px, cam=cam)
    cells = [r.for_display(max_side) for r in results]
    first = results[0].result
    notes = [] if "error" in first or "found" not in first else [
        f"{first['found']} white cell(s) found, {len(cells)} shown"]
    if not any(r.cell is not None and r.cell.prepared for r in results):
        return UploadResult(cells, None, notes)
    try:
        upload = open_image(content)
    except (ImageError, OSError):  # it decoded a moment ago: nothing to outline if it no longer does
        return UploadResult(cells, None, notes)
    return UploadResult(cells, outline_cells(upload, [r.cell for r in results], max_side), notes)


def outline_cells(upload: Image.Image, cells: list, max_side: int) -> Image.Image:
    """The upload at most `max_side` px a side with each cell's outline (prepare.PreparedCell.outline, in the
    upload's pixels) and its number (cell 0, 1, ...) drawn on it."""
    shown = render.shrink(upload, None, max_side)[0].copy()
    scale = shown.width / upload.width
    draw = ImageDraw.Draw(shown)
    width = max(2, round(shown.width / 200))
    for cell in cells:
        points = [(float(x) * scale, float(y) * scale) for x, y in cell.outline()]
        if len(points) > 2:
            draw.line(points + points[:1], fill=(0, 200, 255), width=width)
        x0, y0 = cell.bbox[0] * scale, cell.bbox[1] * scale
        label = str(cell.index)
        box = draw.textbbox((x0, y0), label, font_size=max(12, shown.width // 25))
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
        draw.text((x0, y0), label, fill=(255, 255, 255), font_size=max(12, shown.width // 25))
    return shown


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
