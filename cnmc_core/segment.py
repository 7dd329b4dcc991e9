"""Finding the white cells in a brightfield smear crop, and measuring its red cells: classical, with scikit-image.

The steps, each a named library call (after the scikit-image gallery's "Segment human cells" and "Watershed
segmentation"); check them by eye on an overlay (`PreparedCell.outline`):
1. a work copy of at most WORK_PIXELS (PIL, antialiased); the blank glass is the median colour of its brightest
   tenth, and a black surround counts as glass;
2. optical density against the glass, split by colour deconvolution (`skimage.color.separate_stains`, Ruifrok &
   Johnston 2001, with the stain vectors below) into purple (nuclei and white-cell cytoplasm: the azure of
   Giemsa-type stains) and pink (eosin: red cells);
3. white-cell pixels: purple above WHITE_CELL_OD and above half the pink (`skimage.morphology.opening`,
   `scipy.ndimage.binary_fill_holes`; masks.py has the same operations, faster);
4. one marker per cell: the white regions' maximal inscribed discs (`skimage.feature.peak_local_max` of the
   distance to their edge, as in the gallery's watershed example); `skimage.segmentation.watershed` on that
   distance splits touching cells. A cell is its nucleus plus its cytoplasm, never the red cells it touches;
5. per cell: its nucleus above its own Otsu threshold (`skimage.filters.threshold_otsu`); its outline where its
   purple falls to half its cytoplasm's level; a blob stuck to it (a platelet) cut off by an opening;
6. `skimage.measure.regionprops`: kept when its size in micrometres and its shape fit a white cell, so platelets,
   stain debris, red cells and the background are never reported;
7. red cells: pink discs with a central pallor, each found by its largest inscribed disc and measured along rays
   from its centre to its outline; their median diameter (RED_CELL_DIAMETER_UM) gives the crop's scale.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, feature, filters, measure, segmentation

from .masks import distance_inside, fill_holes, label_maximum, open_cross
from .smears import CNMC_UM_PER_PX, RED_CELL_DIAMETER_UM

WORK_PIXELS = 200_000  # segmentation runs on a copy of at most this many pixels (masks are scaled back)
DARK_LEVEL = 40  # a pixel whose brightest channel is below this is a black surround, treated as blank glass
# Stain vectors: optical density (R, G, B) of a nucleus (purple) and of a red cell (pink) in a Giemsa-type stain.
PURPLE_OD = np.array([0.99, 1.73, 0.60])
PINK_OD = np.array([0.16, 0.62, 0.55])
WHITE_CELL_OD = 0.1  # purple optical density above which a pixel may belong to a white cell (glass: ~0)
PURPLE_OVER_PINK = 0.5  # white-cell pixels: purple > this x pink (red cells: < 0.25 in every stain tried)
NUCLEUS_MIN_OD = 0.5  # the nucleus threshold is never below this: faint purple is cytoplasm, not chromatin
NUCLEUS_UM = (3.5, 20.0)  # equivalent diameter of a white cell's nucleus (a platelet is 2-3 um)
CELL_UM = (4.5, 30.0)  # equivalent diameter of a white cell (lymphocytes 7-10 um, blasts up to about 20 um)
MIN_SOLIDITY = 0.8  # area / convex hull area: a cell is compact, a clump of debris is not
MIN_NUCLEUS_SHARE = 0.15  # nucleus area / cell area
MIN_RED_CELLS = 2  # red cells measured (after dropping pieces) needed to trust a scale from them

_STAINS = np.array([PURPLE_OD / np.linalg.norm(PURPLE_OD), PINK_OD / np.linalg.norm(PINK_OD), np.zeros(3)])
_STAINS[2] = np.cross(_STAINS[0], _STAINS[1])  # the residual: what neither stain absorbs
_STAINS_FROM_RGB = np.linalg.inv(_STAINS)  # for skimage.color.separate_stains


@dataclass(frozen=True)
class Scale:
    """The crop's micrometres per pixel and how they were found."""

    um_per_px: float | None  # of the upload's pixels; None when unknown
    source: str  # "stated" (by the user), "red cells" (measured in the crop) or "none"
    red_cells: int = 0  # red cells measured (whole ones, bounded by their own outline)


@dataclass(frozen=True)
class Region:
    """One white cell found, in the work copy's pixels."""

    label: int  # its value in Segmentation.labels
    centroid: tuple[float, float]  # (x, y)
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends
    diameter_px: float  # equivalent diameter
    nucleus_share: float  # nucleus area / cell area
    touches_edge: bool  # part of the cell may lie outside the upload


@dataclass
class Segmentation:
    labels: np.ndarray  # int32 (h, w) at work resolution: 0 = not a white cell, r.label = that cell
    cells: list[Region]  # the white cells kept, in reading order (top to bottom, then left to right)
    work_scale: float  # work pixels per input pixel (<= 1)
    scale: Scale
    rejected: dict[str, int] = field(default_factory=dict)  # why candidates were left out -> how many
    dark: bool = False  # the image is (almost) all dark: no blank glass to measure against
    sizes: str = ""  # how sizes were judged in micrometres ("at the stated scale", ...), for messages
    glass: np.ndarray = field(default_factory=lambda: np.full(3, 255.0))  # the blank glass's RGB colour (0-255)


def work_copy(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The image downscaled to at most WORK_PIXELS (antialiased), and its scale (work px per input px)."""
    h, w = rgb.shape[:2]
    factor = min(1.0, float(np.sqrt(WORK_PIXELS / (h * w))))
    if factor >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=2.0)), size[0] / w


def stain_densities(rgb: np.ndarray, glass=None) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """Purple and pink optical densities (float32 (h, w) each) against the blank glass, whether the image is dark,
    and the glass's colour (3 floats; `glass`, when given, is used instead of measuring it).

    The blank glass is the median colour of the brightest tenth of the pixels; black surround counts as glass.
    """
    pixels = rgb.astype(np.float32)
    black = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) < DARK_LEVEL
    dark = bool(black.mean() > 0.98)
    if glass is None:
        brightness = pixels[..., 0] + pixels[..., 1] + pixels[..., 2]  # exact (integers); sum(axis=-1) is slower
        top = brightness >= np.percentile(brightness[~black] if not dark else brightness, 90)
        glass = np.median(pixels[top & ~black], axis=0) if (top & ~black).any() else np.full(3, 255.0)
    transmission = np.clip(pixels / np.maximum(glass, 1.0), 0.0, 1.0)
    transmission[black] = 1.0
    densities = color.separate_stains(transmission, _STAINS_FROM_RGB) * np.log(1e6)  # natural optical density
    return densities[..., 0].astype(np.float32), densities[..., 1].astype(np.float32), dark, np.asarray(glass)


def find_white_cells(rgb: np.ndarray, um_per_px: float | None = None) -> Segmentation:
    """The white cells of an RGB uint8 image (h, w, 3); `um_per_px` is the user's stated scale, if any."""
    work, work_scale = work_copy(rgb)
    purple, pink, dark, glass = stain_densities(work)
    empty = np.zeros(work.shape[:2], np.int32)
    scale = Scale(um_per_px, "stated") if um_per_px else Scale(None, "none")
    if dark:
        return Segmentation(empty, [], work_scale, scale, dark=True, glass=glass)

    # 3. white-cell pixels, cleaned
    white = (purple > WHITE_CELL_OD) & (purple > PURPLE_OVER_PINK * pink)
    white = fill_holes(open_cross(white))
    # 7. the red cells' diameters, on a second thread while the white cells are split (steps 4-5 need no scale).
    # scipy's distance transforms release the interpreter's lock: on 2 cores, a 1-megapixel field's cells are found
    # in a median 51-52 ms against 58-62 ms one after the other (benchmarks/bench_prepare.py's field)
    with ThreadPoolExecutor(1) as pool:
        red = pool.submit(red_cell_diameters, pink, purple, white)
        # 4-5. one marker per cell, watershed on the distance to the white region's edge; nuclei and outlines
        depth = distance_inside(white)
        markers = np.zeros(white.shape, np.int32)
        for i, (y, x, _) in enumerate(_cell_centres(depth, white), start=1):
            markers[y, x] = i
        labels = segmentation.watershed(-depth, markers, mask=white).astype(np.int32)
        nuclei = _cell_nuclei(purple, labels)
        _trim_to_half_maximum(labels, purple, nuclei)
        diameters, whole = red.result()
    # 7. the scale, from the red cells (before the size filter, which needs it)
    clean = _typical(diameters[whole])
    if um_per_px is None and len(clean) >= MIN_RED_CELLS:
        scale = Scale(RED_CELL_DIAMETER_UM / (float(np.median(clean)) / work_scale), "red cells", len(clean))
    # The size filter needs micrometres even without a scale: then red cells partly hidden by white cells give a
    # rough one (never used to rescale), and with no red cell at all the crop is taken to be at C-NMC's scale.
    rough = _typical(diameters)
    if scale.um_per_px:
        um_per_work_px, sizes = scale.um_per_px / work_scale, f"at the {scale.source} scale"
    elif len(rough):
        um_per_work_px, sizes = RED_CELL_DIAMETER_UM / float(np.median(rough)), "at the red cells' rough scale"
    else:
        um_per_work_px, sizes = CNMC_UM_PER_PX / work_scale, "taking the upload to be at C-NMC's scale"

    # 6. measure and filter
    cells, rejected = [], {}
    h, w = labels.shape
    for region in measure.regionprops(labels):
        nucleus_area = float(nuclei[region.slice][region.image].sum())
        reason = _reject_reason(region, nucleus_area, um_per_work_px, (h, w))
        if reason:
            rejected[reason] = rejected.get(reason, 0) + 1
            labels[region.slice][region.image] = 0
            continue
        y0, x0, y1, x1 = region.bbox
        cy, cx = region.centroid
        edge = y0 == 0 or x0 == 0 or y1 == h or x1 == w
        cells.append(Region(region.label, (cx, cy), (x0, y0, x1, y1), region.equivalent_diameter_area,
                            nucleus_area / region.area, edge))
    cells.sort(key=lambda c: (round(c.centroid[1] / (h / 8)), c.centroid[0]))  # reading order, in bands
    return Segmentation(labels, cells, work_scale, scale, rejected, sizes=sizes, glass=glass)


def _cell_centres(depth: np.ndarray, white: np.ndarray) -> list[tuple[int, int, float]]:
    """One centre per white cell: the maximal inscribed discs of each white region at least 0.2 x as wide as the
    region's widest (a smaller one lies in a bulge of an irregular cell), each outside the larger ones: a touching
    neighbour has its own, whatever its nucleus looks like (a pale one beside a dark one included)."""
    regions, n = ndimage.label(white)
    widest = label_maximum(depth, regions, n)
    return _maximal_discs(depth, lambda y, x, r: r >= 0.2 * widest[regions[y, x]])


def _maximal_discs(depth: np.ndarray, keep) -> list[tuple[int, int, float]]:
    """(y, x, radius) of the maximal inscribed discs of a mask, from its distance transform `depth`: the local
    maxima (`skimage.feature.peak_local_max`), largest first, each kept when `keep(y, x, r)` says so and when it
    lies outside every disc kept before it."""
    peaks = feature.peak_local_max(depth, min_distance=3, threshold_abs=3.0, exclude_border=False)
    kept: list[tuple[int, int, float]] = []
    for y, x in sorted(peaks.tolist(), key=lambda p: -depth[p[0], p[1]]):
        r = float(depth[y, x])
        if keep(y, x, r) and all(np.hypot(y - ky, x - kx) >= max(r, kr) for ky, kx, kr in kept):
            kept.append((y, x, r))
    return kept


def _cell_nuclei(purple: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each cell's nucleus: its pixels above the cell's own Otsu threshold on purple (never below NUCLEUS_MIN_OD)."""
    nuclei = np.zeros(labels.shape, bool)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        values = purple[box][inside]
        if values.size >= 20 and values.max() > NUCLEUS_MIN_OD:
            nuclei[box] |= inside & (purple[box] > max(NUCLEUS_MIN_OD, filters.threshold_otsu(values)))
    return fill_holes(nuclei)


def _trim_to_half_maximum(labels: np.ndarray, purple: np.ndarray, nuclei: np.ndarray) -> None:
    """Put each cell's outline where its purple falls to half its cytoplasm's level (in place).

    A stained cell's edge is soft; the half-maximum is where its coverage is one half, whatever the stain's
    strength. The cytoplasm's level is the upper quartile of the cell's pixels outside its nucleus.
    """
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        cytoplasm = purple[box][inside & ~nuclei[box]]
        if cytoplasm.size < 20:
            continue
        keep = _largest(fill_holes(inside & (purple[box] > 0.5 * np.percentile(cytoplasm, 75))))
        labels[box][inside & ~_without_attachments(keep)] = 0


def _largest(mask: np.ndarray) -> np.ndarray:
    pieces, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return pieces == 1 + int(np.argmax(ndimage.sum(mask, pieces, index=np.arange(1, n + 1))))


def _without_attachments(cell: np.ndarray) -> np.ndarray:
    """The cell without blobs stuck to its outline (a platelet lying against it): what an opening with a disc of
    0.5 x the cell's inscribed radius cuts off, when the piece cut off is a blob (0.15 x that radius thick), not a
    sliver of the outline."""
    depth = ndimage.distance_transform_edt(np.pad(cell, 1))[1:-1, 1:-1]
    radius = float(depth.max())
    if radius < 6:
        return cell
    # an opening by a disc of radius rho, from distances (much faster than a large structuring element)
    rho = 0.5 * radius
    main = _largest(ndimage.distance_transform_edt(~(depth > rho)) <= rho)
    pieces, n = ndimage.label(cell & ~main)
    if n == 0:
        return cell
    thickness = label_maximum(ndimage.distance_transform_edt(pieces > 0), pieces, n)[1:]
    blobs = np.isin(pieces, 1 + np.flatnonzero(thickness >= 0.15 * radius))
    return _largest(cell & ~blobs)


def _reject_reason(region, nucleus_area: float, um_per_px: float, shape) -> str | None:
    """Why a candidate is not a white cell (None: it is one); sizes in micrometres at `um_per_px`."""
    diameter = region.equivalent_diameter_area * um_per_px
    nucleus_diameter = 2.0 * np.sqrt(nucleus_area / np.pi) * um_per_px
    if nucleus_diameter < NUCLEUS_UM[0] or diameter < CELL_UM[0]:
        return "too small"
    if nucleus_diameter > NUCLEUS_UM[1] or diameter > CELL_UM[1] or region.area > 0.8 * shape[0] * shape[1]:
        return "too large"
    if region.solidity < MIN_SOLIDITY:
        return "not compact"
    if nucleus_area / region.area < MIN_NUCLEUS_SHARE:
        return "no nucleus"
    return None


def _typical(diameters: np.ndarray) -> np.ndarray:
    """Red-cell diameters without the pieces: a red cell half hidden under others measures small, never large, so
    those under 80% of the upper quartile are dropped."""
    return diameters[diameters >= 0.8 * np.percentile(diameters, 75)] if len(diameters) else diameters


def red_cell_diameters(pink: np.ndarray, purple: np.ndarray, white: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diameters (work px) of the red cells, pink discs with a paler centre (the central pallor), and whether each
    is whole (bounded by its own outline, not by a white cell lying over it).

    A red cell's outline is the half-maximum of the pink density (half way between the glass and a rim). Red cells
    touch and overlap, so each one is measured by its largest inscribed disc: a local maximum of the distance to
    the outline (`scipy.ndimage.distance_transform_edt`, `skimage.feature.peak_local_max`), which stays at a
    disc's radius however many others overlap it, as long as part of its own outline shows. Its diameter is then
    measured along rays from the disc's centre (`_outline_radius`): the inscribed disc of a slightly oval cell is
    its short axis, which made every scale about 2% too coarse.
    """
    none = (np.zeros(0), np.zeros(0, bool))
    near_white = ndimage.binary_dilation(white, iterations=3)
    if (pink > 0.05).sum() < 50:
        return none
    candidates = (pink > filters.threshold_otsu(pink)) & ~near_white
    if candidates.sum() < 50:
        return none
    # A red cell's rim density: the commonest density of red-cell pixels (overlaps are denser, pallors paler).
    counts, edges = np.histogram(pink[candidates], bins=64)
    peak = int(np.argmax(ndimage.uniform_filter1d(counts.astype(float), 5)))
    rim = float((edges[peak] + edges[peak + 1]) / 2)
    # Colour deconvolution is linear in optical density: a platelet lying on a red cell adds purple, not pink,
    # so the red cell's outline stays whole under it.
    discs = open_cross(fill_holes(pink > rim / 2))
    depth = ndimage.distance_transform_edt(discs)
    kept = _maximal_discs(depth, lambda y, x, r: r >= 4 and _ring(near_white, y, x, r) is not None)
    kept = [(y, x, r) for y, x, r in kept if _has_pallor(pink, discs, y, x, r)]
    diameters = np.asarray([2 * _outline_radius(pink, rim / 2, y, x, r) for y, x, r in kept])
    return diameters, np.asarray([not _ring(near_white, y, x, r).any() for y, x, r in kept], bool)


def _outline_radius(pink: np.ndarray, level: float, y: int, x: int, r: float) -> float:
    """A red cell's radius: the median distance from the centre of its inscribed disc (radius r) to where its pink
    density falls below `level`, along 36 rays (sub-pixel, on the bilinear density). The inscribed disc alone
    measures a slightly oval cell by its short axis; rays that run into an overlapping neighbour (denser, so never
    falling below the level within 1.6 r) are left out. r + 0.5 when fewer than half the rays cross."""
    steps = np.arange(0.5 * r, 1.6 * r, 0.25)
    angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    ys, xs = y + np.sin(angles)[:, None] * steps, x + np.cos(angles)[:, None] * steps  # (rays, steps)
    density = ndimage.map_coordinates(pink, [ys.ravel(), xs.ravel()], order=1, mode="nearest").reshape(ys.shape)
    below = density < level
    crossed = below.any(axis=1)
    if crossed.sum() < len(angles) / 2:
        return r + 0.5
    first = np.argmax(below[crossed], axis=1)  # the first step below the level, > 0 (the disc is above it)
    before, after = density[crossed, first - 1], density[crossed, first]
    between = (before - level) / np.maximum(before - after, 1e-6)  # where the density crosses, 0-1 of a step
    return float(np.median(steps[first - 1] + between * 0.25))


def _ring(near_white: np.ndarray, y: int, x: int, r: float) -> np.ndarray | None:
    """`near_white` on a circle just outside the inscribed disc of radius r at (y, x); None when the circle runs
    off the image (the red cell is cut by the image's edge). Any True: a white cell bounds the disc."""
    h, w = near_white.shape
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    ys, xs = np.round(y + (r + 1.5) * np.sin(angles)).astype(int), np.round(x + (r + 1.5) * np.cos(angles)).astype(int)
    if ys.min() < 0 or xs.min() < 0 or ys.max() >= h or xs.max() >= w:
        return None
    return near_white[ys, xs]


def _has_pallor(pink: np.ndarray, discs: np.ndarray, y: int, x: int, r: float) -> bool:
    """A red cell's centre is paler than its rim (the biconcave disc's central pallor)."""
    h, w = pink.shape
    y0, y1, x0, x1 = max(0, int(y - r)), min(h, int(y + r + 1)), max(0, int(x - r)), min(w, int(x + r + 1))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dist = np.hypot(yy - y, xx - x) / r
    inside = discs[y0:y1, x0:x1]
    density = pink[y0:y1, x0:x1]
    centre, ring = inside & (dist < 0.3), inside & (dist > 0.55) & (dist < 0.85)
    return bool(centre.any() and ring.any() and density[centre].mean() < 0.85 * density[ring].mean())
