"""Reading a heatmap: what every place that shows one says beside it (the gallery, the Classify page, `explain`),
so the words are the same everywhere (issue 14): the share of its heat on the cell against the cell's share of
the frame, flagged when mostly off the cell; a flat map (render.is_flat) as "no localisable evidence"; an
all-zero map as no location adding evidence. `read_heatmap` measures a map; `heat_reading` reads the facts a
gallery recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import DARK_LEVEL
from .render import flat_note, is_flat


def cell_focus(heatmap: np.ndarray, img: Image.Image) -> dict:
    """Share of the heatmap's mass on the cell (non-black pixels) and the cell's share of the frame.

    A model that looks at the cell puts more of its mass there than the cell's share of the area.
    `mass_on_cell` is None for an all-zero heatmap.
    """
    cell = np.asarray(img.convert("RGB")).max(axis=-1) >= DARK_LEVEL
    if cell.shape != heatmap.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the image's {cell.shape}")
    total = float(heatmap.sum())
    return {
        "mass_on_cell": round(float(heatmap[cell].sum()) / total, 4) if total > 0 else None,
        "cell_area": round(float(cell.mean()), 4),
    }


# --- reading a heatmap: the words the gallery, the Classify page and `explain` all show (issue 14) ---------------
# The off-cell rule: a map is flagged when less than half of its heat lies on the cell (as shown, in whole per
# cent), i.e. most of what it paints is black background. The cell's share of the frame is shown beside it: an
# evenly spread map puts exactly that share on the cell, so a share near it localises nothing.
OFF_CELL_SHARE = 0.5
OFF_CELL = "mostly off the cell"
WHOLE_FRAME = 0.95  # "cell" pixels (not black) over this share of the frame: no black background to find it by


@dataclass(frozen=True)
class HeatReading:
    """Where a heatmap puts its heat, in the words shown beside it everywhere (`text`).

    `kind`: "share" (its heat measured on the cell), "flat" (the same value everywhere: the score does not
    change with position), "empty" (all zero: no location adds evidence for the target), or "unmeasured"
    (no black background to tell the cell from, or no cell at all).
    """

    kind: str
    mass_on_cell: float | None = None  # share of the heat on the cell's pixels, 0-1 (kind "share" only)
    cell_area: float | None = None  # the cell's share of the frame, 0-1; None where not recorded (older galleries)
    p_all: float | None = None  # the model's P(ALL), named in the flat note
    target: str | None = None  # "ALL" or "HEM": whose evidence the map shows; None where not known

    @property
    def off_cell(self) -> bool:
        """Less than half of the heat on the cell, as the percentage shown (49.6% shows as 50%: not flagged)."""
        return self.kind == "share" and round(self.mass_on_cell * 100) < OFF_CELL_SHARE * 100

    @property
    def text(self) -> str:
        """'evidence for ALL: 31% of the heat on the cell (the cell is 22% of the frame); warning: mostly off the
        cell', or the flat note, or 'evidence for HEM: no location adds any (the heatmap is all zero)'."""
        if self.kind == "flat":  # no "evidence for": a flat map claims none
            return flat_note(self.p_all)
        if self.kind == "empty":
            heat = "no location adds any (the heatmap is all zero)"
        elif self.kind == "unmeasured":
            why = "no cell is visible" if self.cell_area == 0 else "the frame has no black background to find it by"
            heat = f"heat on the cell not measured ({why})"
        else:
            area = "" if self.cell_area is None else f" (the cell is {self.cell_area:.0%} of the frame)"
            heat = f"{self.mass_on_cell:.0%} of the heat on the cell{area}"
            heat += f"; warning: {OFF_CELL}" if self.off_cell else ""
        return f"evidence for {self.target}: {heat}" if self.target else heat


def heat_reading(
    empty: bool, flat: bool, mass_on_cell: float | None, cell_area: float | None,
    p_all: float | None = None, target: str | None = None,
) -> HeatReading:
    """The reading of a map from its facts (what `read_heatmap` measures, or what a gallery recorded)."""
    facts = {"cell_area": cell_area, "p_all": p_all, "target": target}
    if empty:
        return HeatReading("empty", **facts)
    if flat:
        return HeatReading("flat", **facts)
    if mass_on_cell is None or (cell_area is not None and not 0.0 < cell_area < WHOLE_FRAME):
        return HeatReading("unmeasured", **facts)
    return HeatReading("share", mass_on_cell=mass_on_cell, **facts)


def read_heatmap(
    heatmap: np.ndarray, img: Image.Image, p_all: float | None = None, target: str | None = None
) -> HeatReading:
    """float (H, W) heatmap in [0, 1] on the frame `img` (W x H, a cell on black) -> its HeatReading."""
    empty = not float(np.max(heatmap)) > 0.0
    focus = cell_focus(heatmap, img)
    return heat_reading(empty, is_flat(heatmap), focus["mass_on_cell"], focus["cell_area"], p_all, target)
