"""The headline round trip (issue 13) on the shared tiny study, with the issue's goals as assertions.

A few validation cells are cut out of their black frames with their true masks, laid on SYNTHETIC smears with red
cells around them, stain-shifted and drawn at another microscope's scale (0.5-2 x C-NMC's), then prepared with no
stated scale and classified again by the study's models (cnmc_core/roundtrip.py; the full figures on the demo study
come from benchmarks/bench_roundtrip.py, docs/preparation.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from cnmc_core import roundtrip
from cnmc_core.predict import Predictor
from cnmc_core.store import StudyStore

CELLS = 8


@pytest.fixture(scope="module")
def trip(tiny_study):
    root, name = tiny_study
    store = StudyStore(root, name)
    data_root, cells = roundtrip.validation_cells(store, CELLS, seed=0)
    predictor = Predictor.load(store)
    return cells, roundtrip.run(predictor, data_root, cells, seed=0)


def test_the_crops_are_smears_not_frames(trip):
    """Before preparation the crop is unlike its frame (so the round trip can fail): no black background, red cells
    around the white one, another microscope's scale; the preparation does not pass it through."""
    cells, done = trip
    assert len(done) == len(cells) == CELLS and {c.label for c in done} == {0, 1}
    assert [c.subject for c in done] == cells["subject"].astype(str).tolist()  # each cell keeps its patient
    for cell in done:
        assert cell.crop_black < 0.01, f"{cell.path}: {cell.crop_black:.0%} of the crop is black"
        assert not cell.crop_is_frame
        assert cell.red_cells >= 2, f"{cell.path}: only {cell.red_cells} red cells measured"
    factors = [c.factor for c in done]
    assert min(factors) >= 0.5 and max(factors) <= 2.0 and max(factors) / min(factors) > 1.5


def test_the_scale_found_from_the_red_cells_is_within_10_percent(trip):
    _, done = trip
    errors = np.array([c.scale_error for c in done])
    share = np.mean(errors <= roundtrip.SCALE_TOLERANCE)
    assert share >= roundtrip.GOALS["scale_within"], f"scale within 10% for {share:.0%}; errors {np.round(errors, 3)}"


def test_one_cell_is_prepared_per_crop_and_its_frame_passes_the_image_check(trip):
    _, done = trip
    assert all(c.cells_found == 1 and c.prepared for c in done), [(c.path, c.cells_found, c.error) for c in done]
    assert set(roundtrip.figures(done)["p_all_within"]) == {"vgg16", "efficientnet_b0", "ensemble"}
    passing = np.mean([not c.image_reasons for c in done])
    assert passing >= roundtrip.GOALS["ood_image_pass"], [c.image_reasons for c in done]


# The goal, kept as it is. It is missed, and not by the preparation alone: these models (random-weight bases,
# trained heads) move P(ALL) by more than 0.1 for a third to a half of the cells when a frame is only mirrored, which
# they were trained to ignore, or rescaled by 3%; and a scale found from red cells is off by about 2% (median), from
# the red cells' own spread of sizes (docs/preparation.md, "Round trip"). Strict: when it passes, the marker must go.
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="the demo-style models' P(ALL) is not stable to a mirror flip or a 3% rescale")
def test_p_all_of_the_prepared_crop_is_the_original_frames(trip):
    """For >= 90% of cells, each model's P(ALL) and the ensemble's are within 0.1 of the original frame's."""
    _, done = trip
    result = roundtrip.figures(done)
    for key, share in result["p_all_within"].items():
        differences = [round(abs(c.prepared[key] - c.original[key]), 3) for c in done]
        assert share >= roundtrip.GOALS["p_all_within"], f"{key}: within 0.1 for {share:.0%}; {differences}"


def _cell(label: int, original: float, prepared: float, subject: str = "") -> roundtrip.RoundTripCell:
    cell = roundtrip.RoundTripCell("x.bmp", label, 1.0, "demo", "plain", 0.5, subject=subject)
    cell.original, cell.prepared = {"ensemble": original}, {"ensemble": prepared}
    return cell


def test_the_auc_difference_has_paired_intervals_by_cell_and_by_patient():
    """Known answers, no models: the interval is of prepared minus original, paired (the same draws for both)."""
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 40)
    scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 80), 0, 1)  # an AUC well inside (0.5, 1)
    subjects = [f"{'a' if y else 'h'}{i % 4}" for i, y in enumerate(labels)]  # 4 ALL and 4 HEM patients
    same = roundtrip.auc_difference_intervals([_cell(y, p, p, s) for y, p, s in zip(labels, scores, subjects)])
    assert same["cell"] == [0.0, 0.0] and same["subject"] == [0.0, 0.0]  # paired: no difference, no spread
    assert same["n_cells"] == 80 and same["n_subjects"] == 8 and same["replicates"] == 2000

    cells = [_cell(y, p, float(y), s) for y, p, s in zip(labels, scores, subjects)]
    perfect = roundtrip.auc_difference_intervals(cells)
    low, high = perfect["cell"]
    assert 0 < low < high < 0.5  # the prepared crops separate perfectly: better in every replicate
    assert perfect["subject"][0] > 0

    # Without each cell's patient there is no patient-level interval (never one made up from cells).
    anonymous = roundtrip.auc_difference_intervals([_cell(y, p, float(y)) for y, p in zip(labels, scores)])
    assert "subject" not in anonymous and "n_subjects" not in anonymous and anonymous["cell"] == perfect["cell"]
