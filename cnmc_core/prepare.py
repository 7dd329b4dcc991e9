"""Smear crop -> C-NMC-style frames: one frame per white cell, at C-NMC's scale, centred, on black, stain-normalised.

What `prepare` does with an upload (an RGB PIL image), in order:
1. An upload that already looks like a C-NMC frame (mostly black, one centred cell) is returned unchanged
   (`passthrough`), so its predictions are the same with the preparation on or off.
2. Bounded: an upload of more than `max_pixels` pixels is downscaled to that before anything else.
3. The white cells are found (`segment.find_white_cells`: stain separation, thresholds, watershed, filters).
4. The scale: the user's stated micrometres per pixel; else the crop's red cells (median diameter 7.5 um); else
   none, and the crop is not rescaled (a note says so). The WHOLE crop is then rescaled to C-NMC's scale
   (`smears.CNMC_UM_PER_PX`): a cell is never resized on its own, because its size is evidence (blasts are larger).
5. Per cell, at most `max_cells`: it is centred in a square frame of `frame_size` pixels, on black: the glass's
   light is taken out of its soft edge too (cutout.py: its coverage from the stain's density), and everything
   beyond is black (`frame_before_norm`).
6. The stain is normalised to the study's colour reference (stain.py: Reinhard et al. 2001, in CIE Lab, on the
   cell's non-black pixels only): `frame`. One transform per upload, so the differences between its cells are kept.
Research use only, like everything here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import measure

from .cutout import coverage, on_black, resample
from .segment import CELL_UM, DARK_LEVEL, NUCLEUS_UM, Scale, Segmentation, find_white_cells
from .smears import CNMC_UM_PER_PX, RED_CELL_DIAMETER_UM
from .stain import NORMALISE_TOLERANCE, REFERENCE_KEYS, brightest, colour_reference, normalise, stain_distance
from .synthetic import SIDE

MAX_PIXELS = 4_000_000  # an upload is downscaled to at most this many pixels before segmentation
MAX_CELLS = 16  # at most this many cells are prepared (and classified) per upload
# A C-NMC frame: at least this share of the outer ring (10% of the side) is black, the cell's centroid lies within
# this share of the side from the centre, and the non-black part is one object covering 3-60% of the frame.
FRAME_BORDER_BLACK = 0.97
FRAME_CENTRE_OFFSET = 0.1
FRAME_COVER = (0.03, 0.6)


@dataclass(frozen=True)
class PrepareOptions:
    frame_size: int = SIDE  # side of the square frames made, in pixels (C-NMC: 450)
    um_per_px: float | None = None  # the user's stated scale of the upload; None: measured from its red cells
    max_pixels: int = MAX_PIXELS  # uploads above this are downscaled to it before segmentation
    max_cells: int = MAX_CELLS  # at most this many cells prepared per upload (the rest are counted in `found`)
    colour_reference: dict | None = None  # `colour_reference(training frames)`; None: the stain is not normalised

    def __post_init__(self):
        if not isinstance(self.frame_size, int) or self.frame_size < 32:
            raise ValueError(f"frame_size must be an integer of at least 32 pixels; got {self.frame_size!r}")
        if self.um_per_px is not None and not 0.005 <= self.um_per_px <= 5.0:
            raise ValueError(
                f"um_per_px must be between 0.005 and 5 micrometres per pixel (100x oil objective: about 0.02-0.1); "
                f"got {self.um_per_px!r}"
            )
        if self.max_pixels < 10_000 or self.max_cells < 1:
            raise ValueError(
                f"max_pixels must be >= 10,000 and max_cells >= 1; got {self.max_pixels}, {self.max_cells}")
        if self.colour_reference is not None and not REFERENCE_KEYS <= set(self.colour_reference):
            raise ValueError(
                f"colour_reference must come from prepare.colour_reference(): it needs {sorted(REFERENCE_KEYS)}")


@dataclass
class PreparedCell:
    """One white cell made into a C-NMC-style frame."""

    index: int  # 0, 1, ... in reading order (top to bottom, then left to right)
    bbox: tuple[int, int, int, int]  # [x0, y0, x1, y1] in the upload's pixels, x1/y1 exclusive
    mask: np.ndarray  # bool (y1 - y0, x1 - x0): the cell's pixels inside bbox, in the upload's pixels
    centre: tuple[float, float]  # (x, y) in the upload's pixels: where the frame's centre lies
    zoom: float  # frame pixels per upload pixel (the whole crop's rescaling to C-NMC's scale)
    frame_before_norm: Image.Image  # RGB, frame_size square: the cell on black, before stain normalisation
    frame: Image.Image  # RGB, frame_size square: what the models see
    scale: Scale  # micrometres per upload pixel, and how they were found
    diameter_um: float | None = None  # equivalent diameter, when the scale is known
    notes: list[str] = field(default_factory=list)
    prepared: bool = True  # False: the upload was already a C-NMC frame and is passed through as it is
    coverage: np.ndarray | None = None  # float32 (frame_size, frame_size), 0-1: the cell's share of each pixel

    def outline(self) -> np.ndarray:
        """The cell's outline as (n, 2) float (x, y) points in the upload's pixels, for drawing on it."""
        contours = measure.find_contours(np.pad(self.mask, 1).astype(np.float32), 0.5)
        points = max(contours, key=len) if contours else np.zeros((0, 2))
        return np.stack([points[:, 1] - 1 + self.bbox[0], points[:, 0] - 1 + self.bbox[1]], axis=1)

    def summary(self) -> dict:
        """The JSON-able facts of this cell (what `predict` prints beside the cell's predictions)."""
        return {
            "cell": self.index,
            "bbox": list(self.bbox),
            "prepared": self.prepared,
            "um_per_px": None if self.scale.um_per_px is None else round(self.scale.um_per_px, 5),
            "scale": self.scale.source,
            "diameter_um": None if self.diameter_um is None else round(self.diameter_um, 2),
            "notes": list(self.notes),
        }


@dataclass
class Preparation:
    """What `prepare` made of one upload."""

    cells: list[PreparedCell]
    found: int  # white cells found, before the max_cells cut
    passthrough: bool  # the upload already looked like a C-NMC frame: cells[0].frame IS the upload, unchanged
    scale: Scale
    error: str | None = None  # why no cell could be prepared ("no white cell found: ..."); cells is then empty
    notes: list[str] = field(default_factory=list)  # about the whole upload (downscaled, cells not shown, ...)


def prepare(img: Image.Image, options: PrepareOptions = PrepareOptions()) -> Preparation:
    """The C-NMC-style frames of every white cell in `img` (RGB). Never raises for a picture without cells:
    `error` then says what was looked for."""
    if not isinstance(img, Image.Image) or img.mode != "RGB":
        raise ValueError(f"prepare needs an RGB PIL image (images.open_image gives one); got {_describe(img)}")
    if looks_like_cnmc_frame(img):
        return _passthrough(img)
    notes = []
    bounded, bound = img, 1.0
    if img.width * img.height > options.max_pixels:
        bound = float(np.sqrt(options.max_pixels / (img.width * img.height)))
        size = (max(1, int(img.width * bound)), max(1, int(img.height * bound)))
        bounded = img.resize(size, Image.BILINEAR, reducing_gap=2.0)
        bound = size[0] / img.width
        notes.append(f"downscaled from {img.width}x{img.height} to {size[0]}x{size[1]} pixels (limit "
                     f"{options.max_pixels:,}) before finding cells")
    stated = options.um_per_px / bound if options.um_per_px else None  # of the bounded image's pixels
    pixels = np.asarray(bounded)
    seg = find_white_cells(pixels, stated)
    scale = _upload_scale(seg.scale, bound)
    if not seg.cells:
        return Preparation([], 0, False, scale, _no_cell_message(seg), notes)
    if len(seg.cells) > options.max_cells:
        notes.append(f"{len(seg.cells)} white cells found; the first {options.max_cells} (in reading order) "
                     "are prepared")
    zoom = (seg.scale.um_per_px / CNMC_UM_PER_PX) if seg.scale.um_per_px else 1.0  # frame px per bounded px
    if not seg.scale.um_per_px:
        notes.append("no scale: not rescaled (no scale was stated and no red cells could be measured); state the "
                     "micrometres per pixel to rescale it to C-NMC's scale")
    with ThreadPoolExecutor(2) as pool:  # the cells two at a time: their resampling and distance transforms
        # release the interpreter's lock (two cores)
        regions = seg.cells[: options.max_cells]
        make = partial(_make_frame, bounded, pixels.shape, seg, zoom=zoom, bound=bound, scale=scale,
                       frame_size=options.frame_size)
        cells = list(pool.map(make, regions, range(len(regions))))
    if options.colour_reference is None:
        for cell in cells:
            cell.frame = cell.frame_before_norm.copy()
        notes.append("no colour reference: the stain is not normalised")
    else:
        normalise_stain(cells, options.colour_reference)
    return Preparation(cells, len(seg.cells), False, scale, None, notes)


def _describe(img) -> str:
    return f"a {img.mode} PIL image" if isinstance(img, Image.Image) else type(img).__name__


def _upload_scale(scale: Scale, bound: float) -> Scale:
    """A scale of the bounded image's pixels as a scale of the upload's pixels."""
    return Scale(scale.um_per_px * bound if scale.um_per_px else None, scale.source, scale.red_cells)


def _no_cell_message(seg: Segmentation) -> str:
    if seg.dark:
        return ("no white cell found: the image is (almost) all dark; the preparation looks for stained cells on "
                "the light background of a brightfield smear")
    rejected = ", ".join(f"{n} {why}" for why, n in sorted(seg.rejected.items()))
    return (
        f"no white cell found: looked for stained nuclei (dark purple, {NUCLEUS_UM[0]:g}-{NUCLEUS_UM[1]:g} um) in "
        f"cells of {CELL_UM[0]:g}-{CELL_UM[1]:g} um, sizes judged {seg.sizes}"
        + (f"; candidates left out: {rejected}" if rejected else "")
    )


def _passthrough(img: Image.Image) -> Preparation:
    dark = brightest(np.asarray(img)) < DARK_LEVEL
    rows, cols = np.nonzero(~dark)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    cell = PreparedCell(
        0, (int(x0), int(y0), int(x1), int(y1)), ~dark[y0:y1, x0:x1], (img.width / 2, img.height / 2), 1.0,
        img, img, Scale(None, "none"), notes=["already a C-NMC-style frame: used as it is"], prepared=False,
    )
    return Preparation([cell], 1, True, cell.scale)


def looks_like_cnmc_frame(img: Image.Image) -> bool:
    """Mostly black with one centred cell: a C-NMC frame (or one made like it), which needs no preparation."""
    small = np.asarray(img.resize((96, 96), Image.BILINEAR) if img.size != (96, 96) else img)
    black = brightest(small) < DARK_LEVEL
    ring = np.ones_like(black)
    ring[10:-10, 10:-10] = False
    if black[ring].mean() < FRAME_BORDER_BLACK or not FRAME_COVER[0] <= (~black).mean() <= FRAME_COVER[1]:
        return False
    labels, n = ndimage.label(~black)
    if n == 0:
        return False
    sizes = ndimage.sum(~black, labels, index=np.arange(1, n + 1))
    if sizes.max() < 0.9 * sizes.sum():  # one object (a few stray pixels allowed)
        return False
    cy, cx = ndimage.center_of_mass(labels == 1 + int(np.argmax(sizes)))
    return bool(np.hypot(cy - 47.5, cx - 47.5) / 96 <= FRAME_CENTRE_OFFSET)


def _make_frame(bounded, shape, seg, region, index, zoom, bound, scale, frame_size) -> PreparedCell:
    """One cell's frame: the bounded image (PIL, `shape` (h, w, 3)) around the cell, rescaled by `zoom`, black
    outside the cell's mask."""
    ws = seg.work_scale
    cx, cy = (region.centroid[0] + 0.5) / ws, (region.centroid[1] + 0.5) / ws  # bounded px (pixel edges at 0)
    half = frame_size / zoom / 2
    box = (cx - half, cy - half, cx + half, cy + half)  # in bounded px
    rgb = np.asarray(resample(bounded, box, frame_size))
    cell_work = Image.fromarray((seg.labels == region.label).astype(np.float32), "F")
    work_box = tuple(v * ws for v in box)
    mask = np.asarray(resample(cell_work, work_box, frame_size)) >= 0.5
    others = ((seg.labels > 0) & (seg.labels != region.label)).astype(np.float32)
    others = np.asarray(resample(Image.fromarray(others, "F"), work_box, frame_size)) > 0.1
    alpha = coverage(rgb, mask, others, seg.glass)
    before = on_black(rgb, alpha, seg.glass)

    notes = []
    if region.touches_edge:
        notes.append("touches the edge of the upload: part of the cell may be missing")
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():  # the cell reaches the edge
        notes.append(f"larger than the {frame_size} px frame at C-NMC's scale: clipped")
    if scale.source == "none":
        notes.append("not rescaled: the scale is unknown")

    x0, y0, x1, y1 = region.bbox  # work px -> upload px, one work pixel of margin
    ux0, uy0 = max(0, int((x0 - 1) / ws / bound)), max(0, int((y0 - 1) / ws / bound))
    h, w = shape[:2]
    ux1, uy1 = min(int(np.ceil(w / bound)), int(np.ceil((x1 + 1) / ws / bound))), min(
        int(np.ceil(h / bound)), int(np.ceil((y1 + 1) / ws / bound)))
    upload_box = (ux0 * ws * bound, uy0 * ws * bound, ux1 * ws * bound, uy1 * ws * bound)  # in work px
    upload_mask = resample(cell_work, upload_box, (ux1 - ux0, uy1 - uy0))
    diameter = region.diameter_px / ws * seg.scale.um_per_px if seg.scale.um_per_px else None
    return PreparedCell(
        index, (ux0, uy0, ux1, uy1), np.asarray(upload_mask) >= 0.5, (cx / bound, cy / bound), zoom * bound,
        Image.fromarray(before, "RGB"), None, scale, diameter, notes, coverage=alpha,
    )


def normalise_stain(cells: list[PreparedCell], reference: dict) -> None:
    """Set each cell's `frame`: its `frame_before_norm` with the upload's stain moved to `reference` (in place;
    `stain.normalise`: one transform for all the cells of an upload, none when it is in the training family)."""
    moved = normalise([np.asarray(c.frame_before_norm) for c in cells], [c.coverage for c in cells], reference)
    for i, cell in enumerate(cells):
        cell.frame = cell.frame_before_norm.copy() if moved is None else Image.fromarray(moved[i], "RGB")


__all__ = [
    "CNMC_UM_PER_PX", "MAX_CELLS", "MAX_PIXELS", "NORMALISE_TOLERANCE", "RED_CELL_DIAMETER_UM", "PrepareOptions",
    "PreparedCell", "Preparation", "Scale", "colour_reference", "looks_like_cnmc_frame", "normalise_stain", "prepare",
    "stain_distance",
]
