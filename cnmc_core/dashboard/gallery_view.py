"""The Grad-CAM gallery page: the validation cells each model explained when the study ran.

The gallery's files are the study's own (gallery/cells/<id>.png, gallery/<key>/<id>.npy). A study may
come from someone else, so a file is read only when it is a plain file inside the study folder: a
symlink anywhere on its way (pointing at an image elsewhere on the disk) is refused, and the cell
image is decoded by `images.open_image`, the bounded decoder used for uploads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import gallery, heat, render
from ..images import ImageError, open_image
from ..store import StoreError, StudyStore, read_npy
from .base import StudyData, registry_table, section

# What the gallery and the Classify page say about their heatmaps (each map's own reading: heat.HeatReading).
HEAT_RULE = ("Under each map: the share of its heat that lies on the cell, beside the cell's share of the frame (what "
             f"an evenly spread map would put there). \"{heat.OFF_CELL}\" marks a map with less than half of its "
             "heat on the cell. A flat map (the same everywhere) localises nothing: it is not painted.")
UNTRAINED = ("**These networks have random weights:** the heatmaps show what an untrained network responds to, not "
             "evidence it learned.")


class GalleryView:
    """A study's gallery for the page: `gallery.Gallery`'s cells, filters and captions, with its files
    read only from inside the study folder. `image` and `overlay` give None for a refused or broken file.

    Captions and option labels carry text from the gallery's index.json (subjects, labels): show them
    literally.
    """

    def __init__(self, shown: gallery.Gallery, store: StudyStore):
        self._gallery = shown
        self._store = store
        self.models, self.cells, self.method = shown.models, shown.cells, shown.method
        self.stale, self.select, self.sanity_table = shown.stale, shown.select, shown.sanity_table
        self.cell_caption, self.option_label = shown.cell_caption, shown.option_label

    def caption(self, cell_id: str, key: str) -> str:
        """Model `key` on the cell: its call and its heatmap's reading. A gallery made before issue 14 does not
        record whether a map is flat: then its heatmap file says so (a missing one counts as not flat)."""
        flat = None
        if "flat" not in self._gallery.cell(cell_id)["models"][key]:
            heatmap = self._heatmap(cell_id, key)
            flat = heatmap is not None and render.is_flat(heatmap)
        return self._gallery.caption(cell_id, key, flat)

    def image(self, cell_id: str) -> Image.Image | None:
        """The cell as the gallery saved it (RGB, the gallery's side)."""
        path = self._study_file(lambda: self._store.gallery_cell(cell_id))
        if path is None:
            return None
        try:
            return open_image(path)
        except (ImageError, OSError):
            return None

    def overlay(self, cell_id: str, key: str, opacity: float = render.DEFAULT_OPACITY) -> Image.Image | None:
        """Model `key`'s heatmap of the cell in colour over it."""
        image, heatmap = self.image(cell_id), self._heatmap(cell_id, key)
        if image is None or heatmap is None:
            return None
        try:
            return render.overlay(image, heatmap, opacity, colour_scale=False)
        except ValueError:  # a heatmap of another size than its cell
            return None

    def _heatmap(self, cell_id: str, key: str) -> np.ndarray | None:
        """float32 (side, side) in [0, 1], or None for a refused or broken file."""
        path = self._study_file(lambda: self._store.gallery_heatmap(key, cell_id))
        if path is None:
            return None
        try:
            return read_npy(path).astype(np.float32) / 255.0  # uint8 (side, side), 255 = hottest
        except (OSError, ValueError):
            return None

    def _study_file(self, where) -> Path | None:
        """The path `where()` names when it is a plain file reached without a symlink inside the study folder."""
        try:
            path = where()
        except StoreError:  # an id or key from index.json that is not one the store makes
            return None
        folder = self._store.dir.resolve()
        literal = folder / path.relative_to(self._store.dir)
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        return real if real == literal and real.is_file() else None


def load_gallery(base: str, name: str) -> GalleryView | None:
    """The gallery of study `name`, or None when the study has none yet."""
    shown = gallery.load_gallery(base, name)
    return None if shown is None else GalleryView(shown, StudyStore(base, name))


def untrained_note(data: StudyData) -> str | None:
    """UNTRAINED when the study's networks have random weights (config weights "none", as the demo's; or, where
    study.json records no weights, synthetic data), for the gallery and the Classify page to say once."""
    weights = section(data.info, "config").get("weights")
    return UNTRAINED if weights == "none" or (weights is None and data.synthetic) else None


def gradcam_layers(data: StudyData) -> pd.DataFrame:
    """The registry rows of the study's models (Grad-CAM reads the layer named here)."""
    return registry_table(data.models)
