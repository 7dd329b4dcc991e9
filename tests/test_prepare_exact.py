"""The preparation's faster paths give exactly what the straightforward calls they replace give (issue 13's 150 ms).

`cnmc_core.masks` against the scikit-image and scipy calls it names, on random masks (edges included); the stain
normalisation, which converts each distinct colour once, against converting every pixel. Exact equality, not a
tolerance: the prepared frames must not change. No TensorFlow; about a second.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import color, morphology

from cnmc_core import masks, smears, stain
from cnmc_core.prepare import colour_reference, prepare


def random_masks(seed: int, n: int = 60):
    """Blobs of every density and size, from 1x1 to 70x70, many touching the edges, with holes and specks."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = rng.integers(1, 70, 2)
        yield ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.0, 3.0)) > rng.uniform(0.2, 0.8)


@pytest.mark.parametrize("seed", range(4))
def test_mask_operations_equal_the_library_calls(seed):
    for mask in random_masks(seed):
        assert np.array_equal(masks.open_cross(mask), morphology.opening(mask, morphology.disk(1)))
        assert np.array_equal(masks.fill_holes(mask), ndimage.binary_fill_holes(mask))
        assert np.array_equal(masks.distance_inside(mask), ndimage.distance_transform_edt(mask))
        labels, n = ndimage.label(mask)
        depth = ndimage.distance_transform_edt(mask)
        expected = np.asarray(ndimage.maximum(depth, labels, index=np.arange(n + 1)))
        assert np.array_equal(masks.label_maximum(depth, labels, n), expected)
        if mask.any():
            assert masks.bounding_box(mask) == ndimage.find_objects(mask.astype(np.uint8))[0]
        else:
            assert not mask[masks.bounding_box(mask)].size


def _moved_pixel_by_pixel(pixels, coverage, source, target):
    """The normalisation as first written: every non-black pixel converted to Lab, moved and back."""
    inside = stain.brightest(pixels) > 0
    out = np.zeros_like(pixels)
    lab = color.rgb2lab(pixels[inside][:, None, :])[:, 0, :]
    moved = (lab - source[:3]) / np.maximum(source[3:], 1e-3) * target[3:] + target[:3]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Conversion from CIE-LAB", UserWarning)
        rgb = color.lab2rgb(moved[:, None, :])[:, 0, :]
    floor = np.where((coverage < 0.5)[inside], 1, stain.BLACK_LEVEL + 1)[:, None]
    out[inside] = np.clip(np.round(rgb * 255), floor, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def far_cells():
    """The cells of a SYNTHETIC field in a stain far from the demo's, and the demo frames' colour reference."""
    field = smears.smear_field(4, 700, 560, n_white=2, red_cover=0.4, stain=smears.FAR_STAIN)
    cells = prepare(field.image).cells
    reference = colour_reference([Image.fromarray(smears._demo_cell(bool(i % 2), i)[0].astype(np.uint8))
                                  for i in range(8)])
    assert len(cells) == 2
    return cells, reference


def test_each_colour_moved_once_equals_every_pixel_moved(far_cells):
    cells, reference = far_cells
    source = np.concatenate(stain._lab_stats(np.asarray(cells[0].frame_before_norm)))
    target = source + np.array([8.0, -5.0, 6.0, 2.0, -1.0, 1.5])  # far enough to push colours out of the gamut
    for cell in cells:
        pixels = np.asarray(cell.frame_before_norm)
        table = stain._LabTable.of(pixels)
        assert len(table.lab) < (stain.brightest(pixels) > 0).sum() / 1.5  # the point: fewer conversions
        expected = _moved_pixel_by_pixel(pixels, cell.coverage, source, target)
        assert np.array_equal(stain._move_stain(table, cell.coverage, source, target), expected)
        assert all(np.array_equal(a, b) for a, b in zip(stain._lab_stats(pixels, table), stain._lab_stats(pixels)))


def test_a_far_stain_is_normalised_the_same_as_pixel_by_pixel_twice(far_cells):
    """The whole two-pass normalisation of `prepare`, against the straightforward one written out here."""
    cells, reference = far_cells
    frames = [np.asarray(c.frame_before_norm) for c in cells]
    stats = [stain._lab_stats(f) for f in frames]
    z = stain._stain_z(np.concatenate([np.mean([m for m, _ in stats], 0), np.mean([s for _, s in stats], 0)]),
                       reference)
    assert np.linalg.norm(z) > stain.NORMALISE_TOLERANCE  # it is moved
    centre, spread = stain._reference_vectors(reference)
    target = centre + z * (stain.NORMALISE_TOLERANCE / np.linalg.norm(z)) * spread
    expected = frames
    for _ in range(2):
        stats = [stain._lab_stats(f) for f in expected]
        source = np.concatenate([np.mean([m for m, _ in stats], 0), np.mean([s for _, s in stats], 0)])
        expected = [_moved_pixel_by_pixel(f, c.coverage, source, target) for f, c in zip(expected, cells)]
    moved = stain.normalise(frames, [c.coverage for c in cells], reference)
    assert all(np.array_equal(a, b) for a, b in zip(moved, expected))
