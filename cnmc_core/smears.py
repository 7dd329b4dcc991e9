"""Synthetic smear crops and fields with ground truth: what the preparation (`segment`, `prepare`) is tested on.

SYNTHETIC: nothing made here is an image of a patient, and everything made here says so (`Smear.synthetic`,
the PNG's text chunk, `SYNTHETIC_NOTE`).

A field is drawn as a brightfield smear looks: pale glass with slow illumination changes; red cells (median
`RED_CELL_DIAMETER_UM`, central pallor) added as optical density, so overlaps are darker; platelets and dark specks
of debris; white cells drawn by the demo's own `synthetic.draw_cell` for both classes (ALL larger), laid over the
rest with their soft edge, some touching (or overlapping); then a field-wide stain (optical-density gains), blur and
noise. Every white cell's truth (mask, class, centre) is kept. At `um_per_px` = `CNMC_UM_PER_PX` the white cells
are the demo frames' cells, pixel for pixel.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, PngImagePlugin
from scipy import ndimage

from .synthetic import _subject_style, draw_cell

# --- the physical scale: the one place it is defined (the preparation imports it from here) ---------------------
# C-NMC's micrometres per pixel are not published. The images were taken at 1000x (100x oil objective) on a Nikon
# Eclipse-200 with a 2560x1920 camera (TCIA C-NMC 2019 / SN-AM descriptions, SBILab IIIT-Delhi); the camera's pixel
# pitch and adapter are not given. A 5-megapixel sensor of that size has about 3.4 um pixels, 0.034 um/px through a
# 1x adapter; the ASSUMPTION below (0.04 um/px) is the value at which the demo's normal B cells (about 210 px
# across in a 450 px frame) measure 8.4 um, a small lymphocyte's diameter (7-10 um), and its blasts about 9.6 um.
# See docs/preparation.md. Change it here only, with a source.
CNMC_UM_PER_PX = 0.04
RED_CELL_DIAMETER_UM = 7.5  # median diameter of a normal red cell (textbook range 6.2-8.2 um)
SYNTHETIC_NOTE = "SYNTHETIC smear made by cnmc_core.smears: not an image of a patient; not for any medical use."

# Field-wide stains: per-channel gains on optical density (R, G, B). A larger gain on R absorbs more red (bluer).
STAINS = {"demo": (1.0, 1.0, 1.0), "pale": (0.75, 0.75, 0.78), "dark": (1.2, 1.2, 1.15), "bluer": (1.2, 1.0, 0.85),
          "magenta": (0.85, 1.1, 0.95)}  # "demo": the demo's own stain family
FAR_STAIN = (0.6, 1.3, 1.6)  # far from the demo's family (redder, less blue): for the stain-normalisation tests
BACKGROUNDS = {"grey": (232, 230, 233), "pink": (240, 224, 228), "blue": (224, 230, 240), "yellow": (240, 236, 222)}
RED_CELL_OD = np.array([0.16, 0.62, 0.55], np.float32)  # optical density of a red cell's rim (pink)
PLATELET_OD = np.array([0.55, 0.9, 0.35], np.float32)  # small purple granules
DEBRIS_OD = np.array([1.2, 1.3, 1.1], np.float32)  # dark specks


@dataclass
class WhiteCellTruth:
    """The ground truth of one white cell in a field (pixel coordinates of the field)."""

    is_all: bool  # ALL-like (blast) or HEM-like (normal B cell), drawn by synthetic.draw_cell
    bbox: tuple[int, int, int, int]  # [x0, y0, x1, y1) of the drawn cell in the field, x1/y1 exclusive
    mask: np.ndarray  # bool (y1 - y0, x1 - x0): where inside bbox the cell is visible (its drawn coverage >= 0.5)
    centre: tuple[float, float] = (0.0, 0.0)  # (x, y) in the field: the centroid of the visible cell
    overlapped: bool = False  # another white cell lies over part of it (the preparation may not split these)

    def field_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The mask as a bool (height, width) array over the whole field; size is the field's (width, height)."""
        out = np.zeros((size[1], size[0]), bool)
        x0, y0, x1, y1 = self.bbox
        out[y0:y1, x0:x1] = self.mask
        return out


@dataclass
class Smear:
    """A synthetic smear crop or field, with the truth of every white cell in it."""

    image: Image.Image  # RGB
    um_per_px: float  # the true scale the field was drawn at
    white_cells: list[WhiteCellTruth]
    red_cells: int  # how many red cells were drawn
    stain: str
    background: str
    blur_um: float  # Gaussian blur sigma, in micrometres
    synthetic: bool = True  # always: this is generated, not a patient's smear
    note: str = SYNTHETIC_NOTE
    details: dict = field(default_factory=dict)  # the generator's parameters

    def png_bytes(self) -> bytes:
        """The image as PNG, carrying the SYNTHETIC note in its text chunk."""
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", self.note)
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()


# --- the demo's white cells, with their soft edge --------------------------------------------------------------
def frame_alpha(frame: np.ndarray, dark_level: int = 10) -> np.ndarray:
    """The demo cell's coverage (0-1, float32) recovered from its frame (h, w, 3) uint8, black outside: draw_cell's
    soft edge rises linearly over the outer sixth of the radius, rebuilt here from the distance to the outline."""
    brightest = ndimage.gaussian_filter(frame.max(axis=-1).astype(np.float32), 1.0)  # (h, w), less sensor noise
    support = ndimage.binary_fill_holes(brightest > dark_level)
    if not support.any():
        return np.zeros(frame.shape[:2], np.float32)
    radius = np.sqrt(support.sum() / np.pi)
    depth = ndimage.distance_transform_edt(support)
    alpha = np.clip(depth * 6.0 / radius, 0.0, 1.0).astype(np.float32)
    return ndimage.gaussian_filter(alpha, 1.5)  # the outline's pixel steps, smoothed away


@lru_cache(maxsize=64)
def _demo_cell(is_all: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One demo cell at C-NMC scale: premultiplied RGB (450, 450, 3) float32 and its alpha (450, 450) float32."""
    style = _subject_style(np.random.default_rng([seed, 1]))
    pixels = draw_cell(is_all, style, np.random.default_rng([seed, 2]))
    return pixels.astype(np.float32), frame_alpha(pixels)


def _zoom(array: np.ndarray, zoom: float) -> np.ndarray:
    """Resize a float32 (h, w) or (h, w, 3) array by `zoom`, antialiased (PIL, per channel)."""
    if abs(zoom - 1.0) < 1e-6:
        return array
    h, w = array.shape[:2]
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[2])]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize(size, Image.BILINEAR)) for c in channels]
    return out[0] if array.ndim == 2 else np.stack(out, axis=-1)


def _trim(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(alpha > 0.01)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    return rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]


# --- the parts of a field ----------------------------------------------------------------------------------------
def _background(rng, shape, rgb) -> np.ndarray:
    h, w = shape
    light = np.asarray(Image.fromarray(rng.normal(0, 1, (4, 4)).astype(np.float32)).resize((w, h), Image.BILINEAR))
    light = 1.0 + 0.025 * light / (np.abs(light).max() + 1e-6)  # +-2.5% illumination, slowly varying
    return np.asarray(rgb, np.float32)[None, None, :] * light[..., None]


def _add_disc_od(od, rng, cx, cy, radius, colour_od, pallor=0.0, edge=1.0, aspect=1.0, grain=0.0) -> None:
    """Add one disc's optical density to `od` in place; its edge's half-density line is at `radius` (pixels)."""
    h, w = od.shape[:2]
    pad = int(radius / np.sqrt(min(aspect, 1.0)) + 2 * edge + 2)
    x0, x1 = max(0, int(cx) - pad), min(w, int(cx) + pad + 1)
    y0, y1 = max(0, int(cy) - pad), min(h, int(cy) + pad + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    # an ellipse of the disc's area: semi-axes radius / sqrt(aspect) and radius * sqrt(aspect)
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) * np.sqrt(aspect)
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / np.sqrt(aspect)
    r = np.hypot(u, v)
    cover = np.clip((radius - r) / (2 * edge) + 0.5, 0.0, 1.0)  # linear ramp, 0.5 at the radius
    profile = 1.0 - pallor * np.exp(-((r / (0.42 * radius)) ** 2))  # central pallor: paler centre
    if grain:
        profile = profile * (1.0 + grain * rng.standard_normal(r.shape).astype(np.float32))
    od[y0:y1, x0:x1] += (cover * profile)[..., None] * colour_od[None, None, :]


def _corner(x: float, y: float, mask: np.ndarray) -> tuple[int, int]:
    """Top-left pixel of a (h, w) cell image centred at (x, y), as the field is drawn."""
    return int(round(x - mask.shape[1] / 2)), int(round(y - mask.shape[0] / 2))


def _overlap(a: tuple, b: tuple) -> bool:
    """Whether two placed cells (x, y, mask) share a pixel."""
    (ax, ay), (bx, by) = _corner(*a), _corner(*b)
    ma, mb = a[2], b[2]
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + ma.shape[1], bx + mb.shape[1]), min(ay + ma.shape[0], by + mb.shape[0])
    if x0 >= x1 or y0 >= y1:
        return False
    return bool((ma[y0 - ay:y1 - ay, x0 - ax:x1 - ax] & mb[y0 - by:y1 - by, x0 - bx:x1 - bx]).any())


def _place_white(rng, placed: list, shape, mask: np.ndarray, partner=None, overlap: bool = False):
    """A centre (x, y) for a white cell of `mask` (its visible pixels): fully inside the field and apart from the
    cells `placed` (x, y, mask) - or, with a `partner`, touching it (1 px apart) or overlapping it by a fifth."""
    h, w = shape
    half = max(mask.shape) / 2 + 4
    for _ in range(200):
        if partner is not None:
            a = rng.uniform(0, 2 * np.pi)
            d = max(partner[2].shape) / 2 + half  # apart; then closer, a pixel at a time, until they touch
            while d > 0 and not _overlap(partner, (partner[0] + d * np.cos(a), partner[1] + d * np.sin(a), mask)):
                d -= 1.0
            d = d * 0.8 if overlap else d + 1.0
            x, y = partner[0] + d * np.cos(a), partner[1] + d * np.sin(a)
        else:
            x, y = rng.uniform(half, w - half), rng.uniform(half, h - half)
        inside = half <= x <= w - half and half <= y <= h - half
        others = [p for p in placed if p is not partner]
        apart = all(np.hypot(x - px, y - py) > (max(pm.shape) / 2 + half) * 1.1 for px, py, pm in others)
        if inside and apart:
            return x, y
    return None


def smear_field(
    seed: int, width: int = 900, height: int = 700, um_per_px: float = CNMC_UM_PER_PX, n_white: int = 2,
    all_share: float = 0.5, red_cover: float = 0.35, stain: str | tuple = "demo", background: str = "grey",
    blur_um: float = 0.0, touching: bool = False, overlapping: bool = False, platelets: int = 4,
    distinct_cells: int = 24,
) -> Smear:
    """One synthetic smear field with the truth of its white cells; the same for the same arguments.

    n_white white cells (each ALL-like with probability all_share) lie fully inside; with touching (overlapping)
    the second touches (overlaps) the first. red_cover: the share of the area red cells would cover side by side.
    White cells come from `distinct_cells` cached demo cells per class, so big fields stay quick to make."""
    if stain not in STAINS and not (isinstance(stain, tuple) and len(stain) == 3):
        raise ValueError(f"stain must be one of {sorted(STAINS)} or 3 optical-density gains; got {stain!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}; got {background!r}")
    if um_per_px <= 0:
        raise ValueError(f"um_per_px must be positive; got {um_per_px}")
    rng = np.random.default_rng([seed, 13])
    shape = (height, width)
    zoom = CNMC_UM_PER_PX / um_per_px  # field pixels per C-NMC pixel

    # White cells first (their places), so the red cells can be scattered over the whole field.
    cells, placed = [], []
    for i in range(n_white):
        is_all = bool(rng.random() < all_share)
        rgb, alpha = _demo_cell(is_all, int(rng.integers(distinct_cells)) + (10_000 if is_all else 0))
        rgb, alpha = _trim(_zoom(rgb, zoom), _zoom(alpha, zoom))
        k = int(rng.integers(4))
        rgb, alpha = np.rot90(rgb, k), np.rot90(alpha, k)
        partner = placed[0] if (touching or overlapping) and i == 1 and placed else None
        where = _place_white(rng, placed, shape, alpha >= 0.5, partner, overlapping)
        if where is None:
            continue
        placed.append((where[0], where[1], alpha >= 0.5))
        cells.append((is_all, rgb, alpha, where, partner is not None and overlapping))

    od = np.zeros(shape + (3,), np.float32)
    red_radius_px = RED_CELL_DIAMETER_UM / 2 / um_per_px
    n_red = int(red_cover * width * height / (np.pi * red_radius_px**2))
    for _ in range(n_red):
        d_um = float(np.clip(rng.normal(RED_CELL_DIAMETER_UM, 0.45), 6.2, 8.8))
        _add_disc_od(
            od, rng, rng.uniform(0, width), rng.uniform(0, height), d_um / 2 / um_per_px,
            RED_CELL_OD * rng.uniform(0.85, 1.15), pallor=rng.uniform(0.45, 0.7),
            edge=max(0.6, 0.15 / um_per_px), aspect=rng.uniform(0.9, 1.0),
        )
    for _ in range(platelets):  # a platelet (2-3 um) and a speck of debris each
        _add_disc_od(od, rng, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1.0, 1.5) / um_per_px,
                     PLATELET_OD, edge=max(0.6, 0.1 / um_per_px), aspect=rng.uniform(0.6, 1.0), grain=0.4)
        _add_disc_od(od, rng, rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.2, 0.5) / um_per_px,
                     DEBRIS_OD)
    image = _background(rng, shape, BACKGROUNDS[background]) * np.exp(-od)

    truths: list[WhiteCellTruth] = []
    for is_all, rgb, alpha, (x, y), overlapped in cells:
        h, w = alpha.shape
        x0, y0 = _corner(x, y, alpha)
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        image[region] = image[region] * (1.0 - alpha[..., None]) + rgb  # rgb is premultiplied by alpha
        cell = WhiteCellTruth(is_all, (x0, y0, x0 + w, y0 + h), alpha >= 0.5, overlapped=overlapped)
        for earlier in truths:  # this cell lies over the ones drawn before it
            ex0, ey0, ex1, ey1 = earlier.bbox
            ox0, oy0, ox1, oy1 = max(ex0, x0), max(ey0, y0), min(ex1, x0 + w), min(ey1, y0 + h)
            if ox0 < ox1 and oy0 < oy1:
                over = cell.mask[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
                mine = earlier.mask[oy0 - ey0:oy1 - ey0, ox0 - ex0:ox1 - ex0]
                if (mine & over).any():
                    mine &= ~over
                    earlier.overlapped = True
        truths.append(cell)
    for t in truths:
        rows, cols = np.nonzero(t.mask)
        t.centre = (float(cols.mean()) + t.bbox[0], float(rows.mean()) + t.bbox[1])

    image = _stain_and_finish(image, STAINS.get(stain, stain), blur_um / um_per_px, rng)
    name = stain if isinstance(stain, str) else "custom"
    details = {"seed": seed, "n_white": n_white, "red_cover": red_cover, "touching": touching,
               "overlapping": overlapping, "platelets": platelets}
    return Smear(image, um_per_px, truths, n_red, name, background, blur_um, details=details)


def _stain_and_finish(image: np.ndarray, gains, blur_px: float, rng) -> Image.Image:
    """Apply a field-wide stain (optical-density gains), Gaussian blur (sigma in pixels) and sensor noise."""
    gains = np.asarray(gains, np.float32)
    if not np.allclose(gains, 1.0):
        od = -np.log(np.clip(image, 1.0, 255.0) / 255.0)
        image = 255.0 * np.exp(-od * gains[None, None, :])
    if blur_px > 0.3:
        image = ndimage.gaussian_filter(image, (blur_px, blur_px, 0))
    image = image + 1.5 * rng.standard_normal(image.shape, dtype=np.float32)
    return Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8), "RGB")


# --- ready-made sets: the tests' fields, the round trip, the examples beside the uploader ----------------------
def detection_fields(n: int = 50, seed: int = 0, factors: tuple[float, float] = (0.5, 2.0)) -> list[Smear]:
    """n varied fields, 40-56 um wide: every stain and background, 1-3 white cells, touching pairs, light blur, at
    scales from `factors[0]` to `factors[1]` times the C-NMC scale (at 2, a cell is twice as many pixels across)."""
    out = []
    stains, grounds = sorted(STAINS), sorted(BACKGROUNDS)
    for i in range(n):
        rng = np.random.default_rng([seed, 29, i])
        factor = float(np.exp(rng.uniform(np.log(factors[0]), np.log(factors[1]))))
        um_per_px = CNMC_UM_PER_PX / factor
        width = int(rng.uniform(40, 56) / um_per_px)
        out.append(smear_field(
            seed=seed * 1000 + i, width=width, height=int(width * 0.75), um_per_px=um_per_px,
            n_white=int(rng.integers(1, 4)), stain=stains[i % len(stains)], background=grounds[i % len(grounds)],
            blur_um=float(rng.uniform(0.0, 0.05)), touching=bool(i % 4 == 1), red_cover=float(rng.uniform(0.3, 0.55)),
        ))
    return out


def paste_cell(
    frame: Image.Image | np.ndarray, seed: int, factor: float = 1.0, stain: str | tuple = "demo",
    background: str = "grey", mask: np.ndarray | None = None, crop_um: float = 44.0, red_cover: float = 0.4,
) -> Smear:
    """The round trip: a C-NMC-style frame's cell, cut with its mask, laid on a smear with red cells around it.

    The crop is `crop_um` micrometres a side, drawn at the C-NMC scale divided by `factor` (0.5-2: another
    microscope); the cell is resized by `factor` with the rest of the crop, never alone. The stain (a name of
    STAINS or three optical-density gains) is applied to the whole crop. `mask` (bool, the frame's shape) is the
    cell's true mask; without it, the cell's soft edge is recovered from the black surround (`frame_alpha`).
    The cell sits at the crop's centre; its truth (mask, centroid) is in the crop's pixels.
    """
    if not 0.25 <= factor <= 4.0:
        raise ValueError(f"factor must be between 0.25 and 4 (another microscope's scale); got {factor}")
    pixels = np.asarray(frame.convert("RGB") if isinstance(frame, Image.Image) else frame, dtype=np.uint8)
    alpha = frame_alpha(pixels) if mask is None else mask.astype(np.float32)
    rgb = pixels.astype(np.float32) * (alpha[..., None] if mask is not None else 1.0)
    rgb, alpha = _trim(rgb, alpha)
    um_per_px = CNMC_UM_PER_PX / factor
    side = int(round(crop_um / um_per_px))
    if max(rgb.shape[:2]) * factor > side - 8:
        raise ValueError(f"the cell ({max(rgb.shape[:2])} px at C-NMC scale) does not fit a {crop_um} um crop")
    field = smear_field(seed, side, side, um_per_px, n_white=0, red_cover=red_cover, stain="demo",
                        background=background, platelets=1)
    rgb, alpha = _zoom(rgb, factor), np.clip(_zoom(alpha, factor), 0.0, 1.0)
    h, w = alpha.shape
    x0, y0 = (side - w) // 2, (side - h) // 2
    canvas = np.asarray(field.image, np.float32).copy()
    region = (slice(y0, y0 + h), slice(x0, x0 + w))
    canvas[region] = canvas[region] * (1.0 - alpha[..., None]) + rgb
    rows, cols = np.nonzero(alpha >= 0.5)
    truth = WhiteCellTruth(False, (x0, y0, x0 + w, y0 + h), alpha >= 0.5,  # is_all: the caller knows the frame's
                           (float(cols.mean()) + x0, float(rows.mean()) + y0))
    image = _stain_and_finish(canvas, STAINS.get(stain, stain), 0.0, np.random.default_rng([seed, 31]))
    name, details = stain if isinstance(stain, str) else "custom", {"seed": seed, "factor": factor, "crop_um": crop_um}
    return Smear(image, um_per_px, [truth], field.red_cells, name, background, 0.0, details=details)


def examples(seed: int = 0) -> dict[str, Smear]:
    """A few labelled example crops and fields to try with one click (all SYNTHETIC), about 44 um a side, enough
    red cells around the white ones for the scale to be measured."""
    other = CNMC_UM_PER_PX / 0.6
    return {
        "synthetic crop: one white cell among red cells": smear_field(seed, 1100, 1100, n_white=1, red_cover=0.4),
        "synthetic field: two white cells": smear_field(seed + 1, 1300, 1000, n_white=2, red_cover=0.4),
        "synthetic field: two touching white cells": smear_field(seed + 2, 1300, 1000, n_white=2, touching=True,
                                                                 red_cover=0.45),
        "synthetic crop: another microscope (x0.6), paler stain": smear_field(
            seed + 3, 700, 700, um_per_px=other, n_white=1, red_cover=0.4, stain="pale", background="pink"),
    }
