"""Feature-space maps: known answers for the separability and patient-clustering scores, seeded subsampling,
and the arrays the store writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from cnmc_core.projection import CAPTIONS, METHODS, Projection, from_arrays, project, to_arrays

D = 32  # features per cell: small, so each map takes a second or two


def _cells(n: int, n_subjects: int, seed: int, class_shift: float = 0.0, subject_shift: float = 0.0,
           one_class_per_subject: bool = False):
    """(features (n, D), labels, subjects): Gaussian noise + class_shift on every feature for ALL cells
    + a random per-subject offset of scale subject_shift."""
    rng = np.random.default_rng(seed)
    subject_index = np.arange(n) % n_subjects
    subjects = np.array([f"S{i}" for i in subject_index])
    if one_class_per_subject:  # as in C-NMC: a patient's cells are all ALL or all HEM
        labels = (subject_index % 2).astype(int)
    else:
        labels = rng.integers(0, 2, n)
    offsets = rng.normal(0, subject_shift, (n_subjects, D))
    features = rng.normal(0, 1, (n, D)) + class_shift * labels[:, None] + offsets[subject_index]
    return features.astype(np.float32), labels, subjects


def _project(features, labels, subjects, **kwargs) -> Projection:
    return project(features, labels, subjects, calls=labels, seed=0, **kwargs)


@pytest.fixture(scope="module")
def separated():
    return _project(*_cells(200, 10, seed=1, class_shift=3.0))


@pytest.fixture(scope="module")
def patient_offsets():
    # 30 patients of 16 cells (so all 15 neighbours can be the patient's own), each all ALL or all HEM; features =
    # a strong per-patient offset and no class signal at all: only the patient says the class, as in a study
    # whose model learned the patient instead of the disease.
    features, labels, subjects = _cells(480, 30, seed=2, subject_shift=3.0, one_class_per_subject=True)
    return _project(features, labels, subjects), labels


def test_well_separated_classes_score_near_one(separated):
    for method in METHODS:
        scores = separated.scores["methods"][method]
        assert scores["knn_accuracy"] > 0.95, (method, scores)
        assert scores["silhouette_class"] > 0.4, (method, scores)
        assert scores["n_cells"] == 200 and scores["n_subjects"] == 10


def test_identical_class_distributions_score_near_chance():
    projection = _project(*_cells(200, 10, seed=3))
    for method in METHODS:
        scores = projection.scores["methods"][method]
        assert abs(scores["knn_accuracy"] - 0.5) < 0.1, (method, scores)
        assert abs(scores["silhouette_class"]) < 0.1, (method, scores)


def test_patient_offsets_show_as_same_patient_neighbours_far_above_chance(patient_offsets):
    projection, _ = patient_offsets
    for method in METHODS:
        scores = projection.scores["methods"][method]
        assert scores["same_subject_chance"] == pytest.approx(15 / 479)  # 30 patients of 16 cells: (16-1)/(480-1)
        assert scores["same_subject_share_features"] > 0.9, (method, scores)
        assert scores["same_subject_share_map"] > 10 * scores["same_subject_chance"], (method, scores)
        assert scores["n_subjects"] == 30
    assert projection.scores["methods"]["tsne"]["silhouette_subject"] > 0.5


def test_knn_accuracy_is_cross_validated_by_patient(patient_offsets):
    projection, labels = patient_offsets
    for method in METHODS:
        scores = projection.scores["methods"][method]
        # patients unseen in training carry no class signal: chance, though the map groups each patient tightly
        assert abs(scores["knn_accuracy"] - 0.5) < 0.2, (method, scores)
        assert scores["cv_folds"] == 5 and scores["knn_k"] == 15
    # the same vote with cells shuffled into folds regardless of patient reads the patient, and looks excellent
    coords = projection.coordinates["tsne"]
    leaky = cross_val_predict(KNeighborsClassifier(15), coords, labels, cv=KFold(5, shuffle=True, random_state=0))
    assert balanced_accuracy_score(labels, leaky) > 0.9


def test_tsne_subsample_keeps_both_classes_in_their_shares_and_is_seeded():
    features, _, subjects = _cells(240, 12, seed=4, class_shift=1.0)
    labels = (np.arange(240) % 3 == 0).astype(int)  # one ALL cell for two HEM cells
    first = _project(features, labels, subjects, max_tsne=60)
    second = _project(features, labels, subjects, max_tsne=60)
    assert first.tsne_subsample == 60
    mapped = ~np.isnan(first.coordinates["tsne"]).any(axis=1)
    assert mapped.sum() == 60 and np.bincount(labels[mapped]).tolist() == [40, 20]
    assert first.scores["methods"]["tsne"]["n_cells"] == 60
    assert first.scores["methods"]["pca"]["n_cells"] == 240 and np.isfinite(first.coordinates["pca"]).all()
    for method in METHODS:
        np.testing.assert_array_equal(first.coordinates[method], second.coordinates[method])
    assert first.scores == second.scores
    other_seed = project(features, labels, subjects, calls=labels, seed=1, max_tsne=60)
    assert not np.array_equal(np.isnan(other_seed.coordinates["tsne"]), np.isnan(first.coordinates["tsne"]))


def test_no_subsample_when_cells_fit(separated):
    assert separated.tsne_subsample is None and separated.scores["tsne_subsample"] is None
    for method in METHODS:
        coords = separated.coordinates[method]
        assert coords.shape == (200, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()


def test_arrays_and_scores_survive_npz_and_json(separated, tmp_path):
    np.savez(tmp_path / "projection.npz", **to_arrays(separated))
    (tmp_path / "scores.json").write_text(json.dumps(separated.scores, allow_nan=False))
    with np.load(tmp_path / "projection.npz", allow_pickle=False) as arrays:
        loaded = from_arrays(arrays, json.loads((tmp_path / "scores.json").read_text()))
    for method in METHODS:
        np.testing.assert_array_equal(loaded.coordinates[method], separated.coordinates[method])
    np.testing.assert_array_equal(loaded.subjects, separated.subjects)
    np.testing.assert_array_equal(loaded.labels, separated.labels)
    np.testing.assert_array_equal(loaded.calls, separated.calls)
    assert loaded.scores == separated.scores


def test_from_arrays_names_what_is_wrong(separated):
    arrays = to_arrays(separated)
    with pytest.raises(ValueError, match="coords_tsne"):
        from_arrays({k: v for k, v in arrays.items() if k != "coords_tsne"}, separated.scores)
    with pytest.raises(ValueError, match="subjects"):
        from_arrays({**arrays, "subjects": arrays["subjects"][:-1]}, separated.scores)
    with pytest.raises(ValueError, match="methods"):
        from_arrays(arrays, {"seed": 0})


def test_project_names_bad_input():
    features, labels, subjects = _cells(30, 3, seed=5)
    with pytest.raises(ValueError, match="labels"):
        project(features, labels + 1, subjects, labels, seed=0)
    with pytest.raises(ValueError, match="calls"):
        project(features, labels, subjects, labels[:-1], seed=0)
    with pytest.raises(ValueError, match="subjects"):
        project(features, labels, subjects[:-1], labels, seed=0)
    bad = features.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        project(bad, labels, subjects, labels, seed=0)
    with pytest.raises(ValueError, match="at least 10 cells"):
        project(features[:5], labels[:5], subjects[:5], labels[:5], seed=0)


def test_every_score_has_a_one_line_caption(separated):
    scores = separated.scores["methods"]["pca"]
    captioned = {"knn_accuracy", "silhouette_class", "same_subject_share_map", "same_subject_share_features",
                 "same_subject_chance", "silhouette_subject"}
    assert captioned <= set(scores) and set(CAPTIONS) == captioned
    assert all("\n" not in caption and len(caption) < 200 for caption in CAPTIONS.values())


def test_one_class_only_warns_and_leaves_separability_undefined():
    features, _, subjects = _cells(40, 4, seed=6)
    ones = np.ones(40, int)
    with pytest.warns(UserWarning, match="same class"):
        projection = project(features, ones, subjects, ones, seed=0)
    scores = projection.scores["methods"]["pca"]
    assert scores["knn_accuracy"] is None and scores["silhouette_class"] is None
    assert scores["same_subject_share_features"] is not None
    json.dumps(projection.scores, allow_nan=False)
