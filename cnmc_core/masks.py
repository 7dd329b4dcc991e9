"""Mask operations for the preparation: each gives exactly what the scikit-image or scipy call it names gives, faster.

Preparing a 1-megapixel field has a budget of 150 ms (issue 13); with these, finding its white cells takes 0.7 of
the time it took with the library calls (docs/preparation.md, "The speed-up"). `tests/test_prepare_exact.py` checks
each against its library call on random masks, edges included.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)  # 3x3 cross: skimage.morphology.disk(1), scipy's 4-connectivity


def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The smallest box (two slices) holding every True pixel of `mask` (h, w); an empty box when there is none.
    (`ndimage.find_objects(mask.astype(np.uint8))[0]`, 5x faster.)"""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def open_cross(mask: np.ndarray) -> np.ndarray:
    """`skimage.morphology.opening(mask, disk(1))` of a bool mask, by scipy's binary erosion and dilation (2x
    faster than skimage's grey-level opening). skimage's border mirrors the edge pixel, so that nothing erodes or
    dilates from outside the image: border_value 1 for the erosion, 0 for the dilation."""
    return ndimage.binary_dilation(ndimage.binary_erosion(mask, _CROSS, border_value=1), _CROSS)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.binary_fill_holes(mask)`: everything but the background 4-connected to the image's edge,
    found by one `ndimage.label` of the background instead of an iterated dilation (10x faster)."""
    background, n = ndimage.label(~mask)  # 4-connected, binary_fill_holes' default structure
    outside = np.zeros(n + 1, bool)
    outside[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = True
    return mask | ~outside[background]


def distance_inside(mask: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.distance_transform_edt(mask)`, one connected piece at a time, each in its bounding box grown
    by a pixel (3x faster on a sparse mask such as a smear's white cells). The same distances: a piece's nearest
    pixel outside it has a neighbour in the piece (one step towards any pixel of the piece is nearer), so it lies in
    that box, and it is background, or it would belong to the piece."""
    pieces, _ = ndimage.label(mask)
    depth = np.zeros(mask.shape)
    for index, box in enumerate(ndimage.find_objects(pieces), start=1):
        grown = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        piece = pieces[grown] == index
        depth[grown][piece] = ndimage.distance_transform_edt(piece)[piece]
    return depth


def label_maximum(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """`ndimage.maximum(values, labels, index=np.arange(n + 1))` for values >= 0, as an array (n + 1,), without
    its sort (15x faster on a work copy)."""
    out = np.zeros(n + 1, values.dtype)
    np.maximum.at(out, labels.ravel(), values.ravel())
    return out
