"""Cutting a white cell out of a smear onto black: its coverage at its soft edge, and the glass's light removed.

A brightfield pixel on a cell's edge is partly cell and partly glass: pixel = (1 - a) x glass + a x cell, with `a`
the share of the pixel the cell covers (its coverage; the edge is soft where the cell thins out and where the
optics blur it). A C-NMC frame shows the cell on black, so the glass's light has to go from those pixels too, not
only from the glass around the cell: the frame's pixel is a x cell = pixel - (1 - a) x glass, the cell
"premultiplied" by its coverage as it would look composited over black (Porter & Duff 1984). Cutting at the mask
alone (a hard edge at half coverage, with the glass's light left in the rim) gives a frame whose edge no training
frame has, and the models answer differently to it.

The coverage comes from the purple stain's density (colour deconvolution, `segment.stain_densities`): in
transmission, 1 - T = a x (1 - T_cell), so a = (1 - exp(-purple)) / (1 - exp(-purple_cell)), with purple_cell the
cell's own density just inside its outline. It is measured only in a band along the outline (EDGE_BAND of the
cell's radius, each way): 1 deeper inside, 0 beyond; at least one half inside the mask (the half-coverage line) and
below one half, falling to 0 across the band, outside it; never on another white cell. Red cells absorb little
purple, so one touching the cell stays out. Hand-written: scikit-image has no matting, and this closed form for a
two-layer mix of known colours is a few lines.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .masks import bounding_box
from .segment import stain_densities

EDGE_BAND = 0.12  # the soft edge is measured within this share of the cell's radius of its outline (each way)
MIN_BAND_PX = 2.0  # and within at least this many pixels


def coverage(rgb: np.ndarray, mask: np.ndarray, others: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """The cell's coverage (float32 (h, w), 0-1) of each pixel of `rgb` (uint8 (h, w, 3), the cell's neighbourhood
    with the glass still in it); `mask` is the cell (bool, its half-coverage outline), `others` the pixels of any
    other white cell (bool), `glass` the blank glass's RGB colour."""
    alpha = mask.astype(np.float32)
    area = np.count_nonzero(mask)
    if area < 20:
        return alpha
    band = max(MIN_BAND_PX, EDGE_BAND * float(np.sqrt(area / np.pi)))
    pad = int(np.ceil(band)) + 2
    rows, cols = bounding_box(mask)
    box = (slice(max(0, rows.start - pad), rows.stop + pad), slice(max(0, cols.start - pad), cols.stop + pad))
    cell, near = mask[box], ~others[box]
    inside = ndimage.distance_transform_edt(cell)
    if not (inside > band).any():  # too thin to have a core: keep the hard mask
        return alpha
    # each pixel's nearest core pixel (its indices only: the distances are not needed)
    nearest = ndimage.distance_transform_edt(inside <= band, return_distances=False, return_indices=True)
    outside_mask = ndimage.distance_transform_edt(~cell)
    rim = cell & (inside <= band)
    halo = ~cell & (outside_mask <= band) & near
    measured = rim | halo | (cell & (inside <= band + 2))  # and the core's edge, where the cell's own share is read
    shares = np.zeros(cell.shape, np.float32)  # the share of light the purple stain absorbs
    shares[measured] = 1.0 - np.exp(-np.maximum(stain_densities(rgb[box][measured][:, None, :], glass)[0][:, 0], 0))
    # smoothed among the measured pixels only (normalised convolution), against the sensor's noise
    shares = ndimage.gaussian_filter(shares, 1.0) / np.maximum(ndimage.gaussian_filter(measured * 1.0, 1.0), 1e-3)
    # the cell's own share just inside the band, carried out to each pixel of the band from its nearest core pixel
    a = shares / np.maximum(shares[nearest[0], nearest[1]], 0.02)
    ramp = 0.5 * (1.0 - outside_mask / (band + 1.0))  # outside: below one half, falling to 0 across the band
    part = alpha[box]
    part[rim] = np.clip(a[rim], 0.5, 1.0)
    part[halo] = np.clip(np.minimum(a[halo], ramp[halo]), 0.0, 0.5)
    return alpha


def on_black(rgb: np.ndarray, alpha: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """The cell over black (uint8 (h, w, 3)): each pixel less the glass's light through the part the cell does not
    cover, pixel - (1 - alpha) x glass; black where alpha is 0."""
    out = np.zeros_like(rgb)
    cell = alpha > 0
    box = bounding_box(cell)  # less to compute
    light = rgb[box].astype(np.float32) - (1.0 - alpha[box])[..., None] * np.asarray(glass, np.float32)
    out[box] = np.where(cell[box][..., None], np.clip(np.round(light), 0, 255), 0).astype(np.uint8)
    return out


def resample(img: Image.Image, box: tuple, size) -> Image.Image:
    """The part of `img` inside `box` (x0, y0, x1, y1; floats, may reach outside: black there) resized to `size`
    (an int for a square, or (width, height)), bilinear, antialiased when shrinking."""
    size = (size, size) if isinstance(size, int) else size
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])) + 1, int(np.ceil(box[3])) + 1
    region = img.crop((x0, y0, x1, y1))  # PIL fills what lies outside the image with zeros
    inner = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    return region.resize(size, Image.BILINEAR, box=inner, reducing_gap=None)
