"""Stain normalisation (Reinhard, Adhikhmin, Gooch & Shirley 2001, "Color transfer between images"), in CIE Lab.

A frame's stain is summed up by 6 numbers: the Lab mean and standard deviation of its cell's interior (its non-black
pixels, less the outer eighth of its radius, where a C-NMC cell meets black and a smear cell meets glass).
`colour_reference` averages them over the training frames and keeps how much frames differ from one another;
`stain_distance` says how far a frame is from them, in those spreads; `normalise` moves an upload's frames (the cells
of one upload, on black) to the nearest edge of the training family, with one transform for all of them, so the
differences between its cells are kept. Frames already in the family are left exactly as they are.

Each distinct colour of a frame is converted to Lab and back once (`_LabTable`): a cell has 2-3 pixels a colour,
and the colour conversions are the costly part. The frames are the same as converting every pixel.
Research use only, like everything here.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color

from .masks import bounding_box

# Stain normalisation moves an upload's Lab statistics (6 numbers: mean and std of L, a, b) only as far as needed to
# bring their z-score length, in units of the training frames' spread from frame to frame, down to this (about the
# 95th percentile of a chi distribution with 6 degrees of freedom): a crop already in the training stain family is
# left exactly as it is, so the differences between cells (how much nucleus, how dark) are kept.
NORMALISE_TOLERANCE = 3.5
STATS_PIXELS = 8000  # Lab statistics of a cell are taken on about this many of its pixels (an even sample)
BLACK_LEVEL = 10  # C-NMC's black background is 0-10: a pixel brighter than this in some channel is part of the cell
REFERENCE_KEYS = {"lab_mean", "lab_std", "lab_mean_spread", "lab_std_spread"}  # what a colour reference must hold


def brightest(pixels: np.ndarray) -> np.ndarray:
    """The brightest channel of (h, w, 3) pixels (np.maximum of the channels: much faster than .max(axis=-1))."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def colour_reference(frames: list[Image.Image]) -> dict:
    """The colour reference of training frames: the average, over frames, of the Lab mean and standard deviation
    of each frame's cell interior. Give it to PrepareOptions(colour_reference=...)."""
    stats = [s for s in (_lab_stats(np.asarray(f.convert("RGB"))) for f in frames) if s is not None]
    if not stats:
        raise ValueError("colour_reference needs frames with a cell in them (non-black pixels); none had one")
    means, stds = np.array([m for m, _ in stats]), np.array([s for _, s in stats])  # (frames, 3) each
    return {
        "method": "reinhard-lab",
        "lab_mean": [round(float(v), 3) for v in means.mean(axis=0)],
        "lab_std": [round(float(v), 3) for v in stds.mean(axis=0)],
        # how much training frames differ from one another: stains within NORMALISE_TOLERANCE x this are left alone
        "lab_mean_spread": [round(float(v), 3) for v in means.std(axis=0)],
        "lab_std_spread": [round(float(v), 3) for v in stds.std(axis=0)],
        "frames": len(stats),
    }


def stain_distance(frame: Image.Image, reference: dict) -> float:
    """How far a frame's stain is from the training frames': the length of the z-scores of its cell interior's Lab
    mean and standard deviation (6 numbers), each in units of the training frames' spread. Training frames
    themselves are mostly under NORMALISE_TOLERANCE (with 6 numbers, a typical frame is near 2.4)."""
    stats = _lab_stats(np.asarray(frame.convert("RGB")))
    if stats is None:
        raise ValueError("stain_distance needs a frame with a cell in it (non-black pixels)")
    return float(np.linalg.norm(_stain_z(np.concatenate(stats), reference)))


def normalise(frames: list[np.ndarray], coverages: list, reference: dict) -> list[np.ndarray] | None:
    """An upload's frames (uint8 (h, w, 3), each a cell on black; `coverages` their float (h, w) soft edges or
    None) with its stain moved to `reference`; None when it is already in the training family (leave them as they
    are). The upload's statistics are the average of its cells', and one transform applies to all of them."""
    with ThreadPoolExecutor(2) as pool:  # frame by frame, two at a time (the distance transforms and the Lab
        # conversions release the interpreter's lock: two cores)
        stats = [s for s in pool.map(_lab_stats, frames) if s is not None]
        z = np.zeros(6)  # how far the upload's stain is, in training frames' spreads (no cell interior: nowhere)
        if stats:
            z = _stain_z(np.concatenate([np.mean([m for m, _ in stats], 0), np.mean([s for _, s in stats], 0)]),
                         reference)
        if np.linalg.norm(z) <= NORMALISE_TOLERANCE:
            return None
        centre, spread = _reference_vectors(reference)
        target = centre + z * (NORMALISE_TOLERANCE / np.linalg.norm(z)) * spread  # the family's nearest edge
        for step in range(2):  # a second pass takes up what clipping to the sRGB gamut (and to non-black) left over
            tables = list(pool.map(_LabTable.of, frames))
            if step:  # the statistics of the first pass's frames, from the same conversion to Lab
                stats = [s for s in pool.map(_lab_stats, frames, tables) if s is not None]
            source = np.concatenate([np.mean([m for m, _ in stats], axis=0), np.mean([s for _, s in stats], axis=0)])
            frames = list(pool.map(_move_stain, tables, coverages, repeat(source), repeat(target)))
    return frames


@dataclass
class _LabTable:
    """A frame's non-black pixels in CIE Lab, each distinct colour once."""

    box: tuple[slice, slice]  # the bounding box of the non-black pixels (everything outside it is black)
    where: np.ndarray  # int (h, w) of the whole frame: each pixel's row in `lab`; -1 on black
    lab: np.ndarray  # float64 (k, 3): the Lab of each distinct colour

    @classmethod
    def of(cls, pixels: np.ndarray) -> _LabTable:
        nonblack = brightest(pixels) > 0
        box = bounding_box(nonblack)
        part = pixels[box]
        # one int per colour, 0xRRGGBB; flat indices rather than boolean masks of (h, w, 3): 2x faster
        keys = (part[..., 0].astype(np.int32) << 16) | (part[..., 1].astype(np.int32) << 8) | part[..., 2]
        inside = np.flatnonzero(nonblack[box])
        where, rows = np.full(pixels.shape[:2], -1, np.intp), np.full(keys.shape, -1, np.intp)
        distinct, rows.ravel()[inside] = np.unique(keys.ravel()[inside], return_inverse=True)
        where[box] = rows
        distinct = np.stack([distinct >> 16, (distinct >> 8) & 255, distinct & 255], axis=1).astype(np.uint8)
        return cls(box, where, color.rgb2lab(distinct[:, None, :])[:, 0, :])


def _lab_stats(pixels: np.ndarray, table: _LabTable | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Lab mean and std (3 each) of a frame's cell interior: its non-black pixels, less the outer eighth of its
    radius, where the cell meets black (C-NMC) or the glass (a smear) and the two kinds of frame differ.
    `table`, when given, is the frame's `_LabTable`: its Lab values are used instead of converting again."""
    cell = brightest(pixels) > BLACK_LEVEL
    if np.count_nonzero(cell) < 20:
        return None
    box = bounding_box(cell)  # the cell's bounding box: less to measure
    cell = cell[box]
    interior = ndimage.distance_transform_edt(cell) > np.sqrt(np.count_nonzero(cell) / np.pi) / 8
    chosen = interior if np.count_nonzero(interior) >= 20 else cell
    step = max(1, int(np.count_nonzero(chosen)) // STATS_PIXELS)  # an even sample is enough for a mean and a std
    if table is None:
        lab = color.rgb2lab(pixels[box][chosen][::step][:, None, :])[:, 0, :]  # (n, 3)
    else:
        lab = table.lab[table.where[box][chosen][::step]]
    return lab.mean(axis=0), lab.std(axis=0)


def _move_stain(table: _LabTable, coverage: np.ndarray | None, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A frame's non-black pixels (its `_LabTable`), soft edge included (premultiplied, as the statistics are
    taken), moved from the `source` Lab mean and std (6,) to the `target`'s: uint8 (h, w, 3); black stays black."""
    moved = (table.lab - source[:3]) / np.maximum(source[3:], 1e-3) * target[3:] + target[:3]
    with warnings.catch_warnings():  # colours moved out of the sRGB gamut are clipped to it: as wanted
        warnings.filterwarnings("ignore", "Conversion from CIE-LAB", UserWarning)
        levels = np.round(color.lab2rgb(moved[:, None, :])[:, 0, :] * 255)  # (k, 3), 0-255
    # Each colour moved once, and floored twice: the cell stays a cell (above BLACK_LEVEL), its faint edge (coverage
    # under 1/2) faint but not black. Rows: the colours floored for the cell, the same for its edge, then black.
    levels = np.concatenate([np.clip(levels, BLACK_LEVEL + 1, 255), np.clip(levels, 1, 255), np.zeros((1, 3))])
    where = table.where[table.box]
    edge = coverage[table.box] < 0.5 if coverage is not None else False
    rows = np.where(where >= 0, where + len(table.lab) * edge, len(levels) - 1)
    out = np.zeros(table.where.shape + (3,), np.uint8)
    out[table.box] = np.take(levels.astype(np.uint8), rows, axis=0)  # np.take: 4x faster than levels[rows]
    return out


def _reference_vectors(reference: dict) -> tuple[np.ndarray, np.ndarray]:
    """(6,) centre (Lab mean, Lab std) and (6,) spread of a colour reference."""
    centre = np.concatenate([reference["lab_mean"], reference["lab_std"]]).astype(float)
    spread = np.concatenate([reference["lab_mean_spread"], reference["lab_std_spread"]]).astype(float)
    return centre, np.maximum(spread, 0.5)  # a spread of (almost) 0 would make any difference infinite


def _stain_z(stats: np.ndarray, reference: dict) -> np.ndarray:
    centre, spread = _reference_vectors(reference)
    return (stats - centre) / spread
