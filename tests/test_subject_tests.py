"""Tests whose unit is the patient: the subject-level paired test, class-stratified resampling, patient-level results.

The simulation repeats the one of issue 14: two models with no true difference, where which of them is
right on the cells they disagree on varies by patient (as in C-NMC). Cell-level McNemar treats the cells
as independent and calls that a difference in about half of the studies; the subject-level test must not.
The figures are printed (`pytest tests/test_subject_tests.py -s -k simulated`) and quoted in docs/statistics.md.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import chi2

from cnmc_core.patient_stats import (
    SUBJECT_COLUMNS,
    choose_share_threshold,
    compare_models_by_subject,
    patient_accuracy,
    patient_auc,
    patient_block,
    patient_table,
)
from cnmc_core.stats import (
    bootstrap_weights,
    class_stratified_cis,
    clustered_mcnemar,
    mcnemar_exact,
    metric_cis,
    subject_differences,
    subject_sign_flip_test,
)

ALPHA = 0.05
# Monte Carlo sign patterns per simulated study. 999 instead of the default 9,999 keeps the simulation fast:
# with the +1 correction the Monte Carlo p-value is a valid p-value for any number of patterns (it never
# rejects more often than alpha under H0), fewer patterns only blur p near 0.05 (standard error 0.007).
SIM_PERMUTATIONS = 999


def _simulated_study(rng: np.random.Generator, effect: float = 0.0, n_subjects: int = 28, spread: float = 1.5):
    """Per-cell correctness of two models on one simulated validation split, and each cell's subject.

    Like C-NMC's preliminary test set (28 subjects, 1,867 cells): 30 to 104 cells per subject; the share of
    cells the models disagree on varies by subject (Beta(2, 6), mean 0.25); on those cells model A is the
    right one with a probability that varies by subject, logit ~ Normal(effect, spread^2). With effect 0 the
    models are exchangeable within every subject (no true difference), but each patient favours one of them.
    """
    cells = rng.integers(30, 105, n_subjects)
    disagree = rng.beta(2, 6, n_subjects)
    a_right_when_they_disagree = expit(effect + rng.normal(0, spread, n_subjects))
    subject = np.repeat(np.arange(n_subjects), cells)  # (n_cells,)
    disagreeing = rng.random(len(subject)) < disagree[subject]
    a_right = rng.random(len(subject)) < a_right_when_they_disagree[subject]
    both_right = rng.random(len(subject)) < 0.8  # where they agree, both are right or both wrong
    return np.where(disagreeing, a_right, both_right), np.where(disagreeing, ~a_right, both_right), subject


def _rejection_rates(effect: float, n_studies: int, n_subjects: int = 28, seed: int = 14) -> dict[str, float]:
    """Share of simulated studies each approach calls a difference at ALPHA (printed for docs/statistics.md).

    "subject bootstrap CI" (not a test we ship as the headline): the 95% subject-bootstrap interval of the
    mean per-subject difference excludes 0.
    """
    rng = np.random.default_rng(seed)
    rejected = {"subject sign-flip": 0, "cell McNemar": 0, "clustered McNemar": 0, "subject bootstrap CI": 0}
    differences = []
    for study in range(n_studies):
        correct_a, correct_b, subject = _simulated_study(rng, effect, n_subjects)
        test = subject_sign_flip_test(correct_a, correct_b, subject, n_permutations=SIM_PERMUTATIONS, seed=study)
        differences.append(test.statistic)
        rejected["subject sign-flip"] += test.p_value < ALPHA
        rejected["cell McNemar"] += mcnemar_exact(correct_a, correct_b)[2] < ALPHA
        rejected["clustered McNemar"] += clustered_mcnemar(correct_a, correct_b, subject).p_value < ALPHA
        d = subject_differences(correct_a, correct_b, subject).to_numpy()  # (n_subjects,)
        resampled = d[rng.integers(0, len(d), size=(1000, len(d)))].mean(1)  # 1,000 subject-bootstrap means
        low, high = np.percentile(resampled, [2.5, 97.5])
        rejected["subject bootstrap CI"] += bool(low > 0 or high < 0)
    rates = {name: count / n_studies for name, count in rejected.items()}
    print(f"\n{n_subjects} subjects, effect {effect} (logit), {n_studies} simulated studies, mean per-subject "
          f"accuracy difference {np.mean(differences):+.3f}; rejection rates at alpha {ALPHA}: {rates}")
    return rates


# ---- the simulation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_subjects", [28, 8])  # C-NMC's preliminary test set; the demo's validation split
def test_simulated_null_subject_test_holds_its_level_where_cell_mcnemar_does_not(n_subjects):
    rates = _rejection_rates(effect=0.0, n_studies=1000, n_subjects=n_subjects)  # 1,000 (>= 200): 0.07 is 3 SE off
    assert rates["subject sign-flip"] <= 0.07
    assert rates["cell McNemar"] > 0.2  # measured 0.48 (28 subjects) and 0.47 (8): it calls noise a difference


def test_simulated_real_difference_is_found_by_the_subject_test():
    # effect 1.0: on disagreeing cells A is right in 73% of them for a typical patient; mean accuracy gain ~0.085
    rates = _rejection_rates(effect=1.0, n_studies=400)
    assert rates["subject sign-flip"] > 0.5  # measured 0.77 (clustered McNemar 0.73, cell McNemar 0.98)


# ---- the sign-flip test, known answers ------------------------------------------------------------------

def _cells(per_subject: dict[str, tuple[list[int], list[int]]]):
    """{subject: (A correct per cell, B correct per cell)} -> (correct_a, correct_b, subjects) arrays."""
    a = np.concatenate([np.array(v[0], bool) for v in per_subject.values()])
    b = np.concatenate([np.array(v[1], bool) for v in per_subject.values()])
    subjects = np.concatenate([[s] * len(v[0]) for s, v in per_subject.items()])
    return a, b, subjects


def test_identical_models_give_p_one():
    a = np.array([1, 0, 1, 1, 0, 1], bool)
    test = subject_sign_flip_test(a, a, ["1", "1", "2", "2", "H3", "H3"])
    assert test.p_value == 1.0 and test.statistic == 0.0
    assert (test.n_subjects, test.n_cells) == (3, 6)


def test_exact_p_by_hand():
    # Per-subject differences (A − B accuracy): s1 +1/2, s2 +1/4, s3 −1/4, s4 0 (tied, adds 0 to every sum).
    # Observed |sum| = 1/2. The 2^3 sign patterns of (1/2, 1/4, 1/4) give |sums| 1, 1/2, 1/2, 0 (each twice):
    # 6 of 8 are >= 1/2, so p = 0.75. The statistic is the mean over all 4 subjects: (1/2) / 4.
    a, b, subjects = _cells({"s1": ([1, 1], [1, 0]), "s2": ([1, 0, 0, 0], [0, 0, 0, 0]),
                             "s3": ([0, 1, 1, 1], [1, 1, 1, 1]), "s4": ([1, 0], [1, 0])})
    test = subject_sign_flip_test(a, b, subjects)
    assert test.p_value == pytest.approx(0.75)
    assert test.statistic == pytest.approx(0.125)
    assert test.n_subjects == 4 and test.method.startswith("exact")
    # A better on all 4 subjects: only the all-plus and all-minus patterns reach it, p = 2 / 16.
    a, b, subjects = _cells({s: ([1, 1, 0], [1, 0, 0]) for s in "abcd"})
    assert subject_sign_flip_test(a, b, subjects).p_value == pytest.approx(0.125)


def test_monte_carlo_p_is_seeded_and_never_zero():
    # 20 subjects, A better on every one: exact p = 2 / 2^20, far below what 999 patterns can resolve, so
    # the +1 correction gives p = 1 / (1 + 999), never 0.
    a, b, subjects = _cells({f"s{i}": ([1, 1], [1, 0]) for i in range(20)})
    test = subject_sign_flip_test(a, b, subjects, n_permutations=999, seed=3)
    assert test.p_value == pytest.approx(1 / 1000)
    assert "Monte Carlo" in test.method and "999" in test.method
    assert test == subject_sign_flip_test(a, b, subjects, n_permutations=999, seed=3)


def test_monte_carlo_agrees_with_exact_enumeration():
    correct_a, correct_b, subject = _simulated_study(np.random.default_rng(7), n_subjects=12)
    exact = subject_sign_flip_test(correct_a, correct_b, subject)
    sampled = subject_sign_flip_test(correct_a, correct_b, subject, n_permutations=20_000, max_exact_subjects=0)
    assert exact.method.startswith("exact") and sampled.method.startswith("Monte Carlo")
    assert sampled.p_value == pytest.approx(exact.p_value, abs=0.01)


def test_clustered_mcnemar_by_hand():
    # Per subject n01 − n10: +2, +1, −1 -> X = (2)^2 / (4 + 1 + 1).
    a, b, subjects = _cells({"s1": ([1, 1, 0], [0, 0, 0]), "s2": ([1, 1], [0, 1]), "s3": ([0, 1], [1, 1])})
    test = clustered_mcnemar(a, b, subjects)
    assert test.statistic == pytest.approx(4 / 6)
    assert test.p_value == pytest.approx(chi2.sf(4 / 6, 1))


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one value per cell"):
        subject_sign_flip_test([True, False], [True], ["a", "a"])


# ---- comparing every pair, each model at its own threshold ------------------------------------------------

def _frames(n_subjects: int = 8, cells: int = 6):
    subjects = np.repeat([f"{i}" if i % 2 else f"H{i}" for i in range(n_subjects)], cells)
    y = np.array([0 if s.startswith("H") else 1 for s in subjects])
    base = pd.DataFrame({"path": [f"c{i}.bmp" for i in range(len(y))], "subject": subjects, "label": y})
    return base, y


def test_pairs_use_each_models_own_threshold():
    base, y = _frames()
    sharp = base.assign(prob_all=np.where(y == 1, 0.9, 0.1))
    shy = base.assign(prob_all=np.where(y == 1, 0.3, 0.1)).iloc[::-1]  # perfect at 0.2, calls no ALL at 0.5
    own = compare_models_by_subject({"a": sharp, "b": shy}, {"a": 0.5, "b": 0.2}, n_boot=200).iloc[0]
    assert (own["n01"], own["n10"], own["p_subject"], own["p_value"]) == (0, 0, 1.0, 1.0)
    assert (own["threshold_a"], own["threshold_b"]) == (0.5, 0.2)
    at_half = compare_models_by_subject({"a": sharp, "b": shy}, {"a": 0.5, "b": 0.5}, n_boot=200).iloc[0]
    # At 0.5 b misses every ALL cell: 4 ALL subjects favour a, p = 2 / 2^4 by exact enumeration.
    assert (at_half["n01"], at_half["subjects_a_better"], at_half["subjects_b_better"]) == (24, 4, 0)
    assert at_half["p_subject"] == pytest.approx(0.125)
    assert at_half["subject_diff"] == pytest.approx(0.5)  # 4 of 8 subjects gain 1.0
    assert at_half["p_value"] < 1e-6  # cell-level McNemar on 24 cells is far more confident
    with pytest.raises(ValueError, match="missing"):
        compare_models_by_subject({"a": sharp, "b": shy}, {"a": 0.5})


def test_all_pairs_with_holm_and_intervals():
    base, y = _frames(n_subjects=10)
    rng = np.random.default_rng(0)
    keys = ["vgg16", "vgg19", "inception_v3", "xception", "efficientnet_b0", "resnet50", "resnet101"]
    frames = {k: base.assign(prob_all=np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.35, len(y)), 0, 1))
              for k in keys}
    frame = compare_models_by_subject(frames, {k: 0.5 for k in keys}, n_boot=300)
    assert len(frame) == 21 and set(SUBJECT_COLUMNS) <= set(frame.columns)
    assert (frame["p_subject_holm"] >= frame["p_subject"] - 1e-12).all()
    assert (frame["p_holm"] >= frame["p_value"] - 1e-12).all()
    assert (frame["subject_diff_low"] <= frame["subject_diff"] + 1e-12).all()
    assert (frame["subject_diff"] <= frame["subject_diff_high"] + 1e-12).all()
    assert (frame["n_subjects"] == 10).all() and (frame["n_cells"] == len(y)).all()
    assert compare_models_by_subject({"a": frames["vgg16"]}, {"a": 0.5}).empty


# ---- class-stratified resampling ----------------------------------------------------------------------------

def test_stratified_bootstrap_never_loses_a_class():
    # 9 ALL subjects and 1 HEM subject: plain subject resampling misses the HEM subject in (9/10)^10 = 35%.
    subjects = np.repeat([f"{i}" for i in range(9)] + ["H9"], 5)
    y = (np.char.find(subjects.astype(str), "H") < 0).astype(int)
    plain = bootstrap_weights(subjects, n_boot=500, seed=0)
    stratified = bootstrap_weights(subjects, n_boot=500, seed=0, strata=y)
    assert (plain[:, y == 0].sum(1) == 0).sum() > 100  # the test can fail: plain resampling does lose it
    assert (stratified[:, y == 0].sum(1) > 0).all() and (stratified[:, y == 1].sum(1) > 0).all()
    assert (stratified[:, y == 0].sum(1) == 5).all() and (stratified[:, y == 1].sum(1) == 45).all()
    for row in stratified[:20]:  # still whole subjects: all cells of a subject share its draw count
        assert all(len(set(row[subjects == s])) == 1 for s in set(subjects))

    p = np.linspace(0.05, 0.95, len(y))
    cis = class_stratified_cis(y, p, subjects, n_boot=500)
    assert cis["replicates"]["roc_auc"] == 500 and "all 500 used" in cis["method"]
    assert cis["ci95"] == metric_cis(y, p, subjects, n_boot=500, stratify=True)
    assert metric_cis(y, p, subjects, n_boot=500) != cis["ci95"]  # the old default still drops replicates


def test_stratified_bootstrap_refuses_a_subject_of_two_classes():
    with pytest.raises(ValueError, match="more than one stratum"):
        bootstrap_weights(np.array(["a", "a", "b"]), n_boot=5, strata=np.array([0, 1, 1]))


# ---- patients --------------------------------------------------------------------------------------------------

def _patients_frame():
    # ALL patients "1" (P(ALL) 0.9, 0.7 -> mean 0.8) and "2" (0.6, 0.2 -> 0.4); HEM "H3" (0.5, 0.5) and "H4" (0.1, 0.1).
    return pd.DataFrame({"path": [f"{i}.bmp" for i in range(8)],
                         "subject": ["1", "1", "2", "2", "H3", "H3", "H4", "H4"],
                         "label": [1, 1, 1, 1, 0, 0, 0, 0], "prob_all": [0.9, 0.7, 0.6, 0.2, 0.5, 0.5, 0.1, 0.1]})


def test_patient_table_and_auc_by_hand():
    patients = patient_table(_patients_frame(), threshold=0.5)
    assert patients["subject"].tolist() == ["1", "2", "H3", "H4"]
    assert patients["share_all"].tolist() == [1.0, 0.5, 1.0, 0.0]
    np.testing.assert_allclose(patients["mean_prob_all"], [0.8, 0.4, 0.5, 0.1])
    # Mean P(ALL): ALL (0.8, 0.4) against HEM (0.5, 0.1): 3 of the 4 pairs ordered right.
    assert patient_auc(patients) == pytest.approx(0.75)
    # Share: ALL (1.0, 0.5) against HEM (1.0, 0.0): 1/2 (tie) + 1 + 0 + 1 = 2.5 of 4.
    assert patient_auc(patients, "share_all") == pytest.approx(0.625)
    assert patient_auc(patients[patients["label"] == 1]) is None
    mixed = _patients_frame().assign(label=[1, 0, 1, 1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="both classes"):
        patient_table(mixed, 0.5)


def test_share_threshold_is_chosen_on_training_patients_and_applied():
    training = pd.DataFrame({"subject": ["1", "2", "H3", "H4"], "label": [1, 1, 0, 0],
                             "share_all": [0.35, 0.9, 0.1, 0.2], "mean_prob_all": [0.4, 0.8, 0.2, 0.3]})
    # Candidates 0.5, 0.15, 0.275, 0.625: only 0.275 separates the classes (balanced accuracy 1).
    assert choose_share_threshold(training) == pytest.approx(0.275)
    result = patient_accuracy(training, 0.5)
    assert result == {"n_patients": 4, "accuracy": 0.75, "balanced_accuracy": 0.75, "sensitivity": 0.5,
                      "specificity": 1.0, "confusion_matrix": [[2, 0], [1, 1]]}
    with pytest.raises(ValueError, match="both classes"):
        choose_share_threshold(training[training["label"] == 1])


def test_patient_block_is_json_with_its_n_and_intervals():
    rng = np.random.default_rng(2)
    subjects = np.repeat([f"{i}" if i % 3 else f"H{i}" for i in range(12)], 10)
    y = np.array([0 if s.startswith("H") else 1 for s in subjects])
    frame = pd.DataFrame({"path": range(len(y)), "subject": subjects, "label": y,
                          "prob_all": np.clip(0.5 + (y - 0.5) * 0.5 + rng.normal(0, 0.3, len(y)), 0, 1)})
    training = frame.assign(subject="T" + frame["subject"])
    block = patient_block(frame, cell_threshold=0.5, training=training, n_boot=300)
    json.dumps(block)  # JSON-able as it is: no numpy numbers, no NaN
    assert (block["n_patients"], block["n_all"], block["n_hem"]) == (12, 8, 4)
    assert block["share_threshold_source"].startswith("chosen on 12 training-side patients")
    assert block["confusion_matrix"][1][1] + block["confusion_matrix"][1][0] == 8
    for metric, (low, high) in block["ci95"].items():
        assert low <= block[metric] <= high, metric
        assert block["ci_replicates"][metric] == 300  # stratified: no replicate lost a class
    assert patient_block(frame, 0.5, n_boot=50)["share_threshold"] == 0.5
    with pytest.raises(ValueError, match="not both"):
        patient_block(frame, 0.5, share_threshold=0.4, training=training)


def test_difference_from_the_top_model_orders_models_by_mean_per_patient_accuracy():
    """The Compare page's chart: each model minus the top one, with the pair's interval and Holm p, read the
    right way round whichever side of the pair the top model was saved on."""
    from cnmc_core.dashboard.comparison import from_top

    accuracy = {"A": 0.70, "B": 0.80, "C": 0.75}  # mean per-patient accuracy: B is the top
    names = list(accuracy)
    pair = {part: pd.DataFrame(np.nan, index=names, columns=names)
            for part in ("subject_diff", "subject_low", "subject_high", "p_subject_holm")}
    for r in names:
        for c in names:
            if r != c:
                d = accuracy[r] - accuracy[c]
                pair["subject_diff"].loc[r, c] = d
                pair["subject_low"].loc[r, c], pair["subject_high"].loc[r, c] = d - 0.04, d + 0.04
                pair["p_subject_holm"].loc[r, c] = 0.01 if {r, c} == {"A", "B"} else 0.6
    top, frame = from_top(names, pair)
    assert top == "B"
    assert list(frame["Model"]) == ["B", "C", "A"]  # the top first, then nearest to farthest
    row = frame.set_index("Model").loc["A"]
    assert row["difference"] == pytest.approx(-0.10) and row["low"] == pytest.approx(-0.14)
    assert row["high"] == pytest.approx(-0.06) and bool(row["significant"])
    assert not frame.set_index("Model").loc["C", "significant"]
    assert from_top(names, {"p_holm": pair["p_subject_holm"]})[1].empty  # an old comparison.csv: no chart
