"""Statistics against hand-computed and scipy/scikit-learn values; the study's statistics files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss, roc_auc_score

from cnmc_core.evaluation import classification_metrics
from cnmc_core.stats import (
    bootstrap_weights,
    compare_models,
    holm,
    mcnemar_exact,
    metric_cis,
    per_subject,
    reliability,
    weighted_auc,
    weighted_metrics,
)


def test_mcnemar_exact_by_hand_and_against_scipy():
    a = np.array([1] * 8 + [0] * 2 + [1] * 30, bool)  # 8 cells only A gets right, 2 only B
    b = np.array([0] * 8 + [1] * 2 + [1] * 30, bool)
    n01, n10, p = mcnemar_exact(a, b)
    assert (n01, n10) == (8, 2)
    assert p == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 2 * P(X <= 2), X ~ Bin(10, 1/2)
    assert p == pytest.approx(binomtest(2, 10, 0.5).pvalue)
    assert mcnemar_exact(a, a) == (0, 0, 1.0)


def test_holm_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_weighted_auc_equals_sklearn_on_repeated_cells():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.round(rng.random(60), 1)  # many ties
    assert weighted_auc(y, p, np.ones(60))[0] == pytest.approx(roc_auc_score(y, p))
    w = rng.integers(0, 4, 60)
    assert weighted_auc(y, p, w)[0] == pytest.approx(roc_auc_score(np.repeat(y, w), np.repeat(p, w)))


def test_weighted_metrics_equal_plain_metrics_on_repeated_cells():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    w = rng.integers(0, 3, 50)
    ours = {k: v[0] for k, v in weighted_metrics(y, p, w[None]).items()}
    plain = classification_metrics(np.repeat(y, w), np.repeat(p, w))
    for name, value in ours.items():
        assert value == pytest.approx(plain[name]), name


def test_bootstrap_resamples_subjects_not_cells():
    subjects = np.repeat([f"s{i}" for i in range(10)], 20)
    w = bootstrap_weights(subjects, n_boot=50, seed=0)
    for row in w:  # all cells of a subject share its draw count
        assert all(len(set(row[subjects == s])) == 1 for s in set(subjects))
    # Each subject's cells are all right or all wrong: cells are not independent. Resampling
    # subjects sees only 10 independent units and gives a much wider interval than cells would.
    y = np.ones(200, int)
    p = np.where(np.repeat(np.arange(10) < 7, 20), 0.9, 0.1)  # 7 subjects right, 3 wrong
    by_subject = metric_cis(y, p, subjects, unit="subject")["accuracy"]
    by_cell = metric_cis(y, p, subjects, unit="cell")["accuracy"]
    assert by_subject[0] <= 0.7 <= by_subject[1]
    assert (by_subject[1] - by_subject[0]) > 2 * (by_cell[1] - by_cell[0])


def test_bootstrap_is_seeded():
    subjects = np.repeat(list("abcdef"), 5)
    y = np.tile([0, 1], 15)
    p = np.linspace(0, 1, 30)
    assert metric_cis(y, p, subjects, seed=3) == metric_cis(y, p, subjects, seed=3)
    assert metric_cis(y, p, subjects, seed=3) != metric_cis(y, p, subjects, seed=4)


def test_ece_and_brier_by_hand():
    y = np.array([1, 0, 0, 0])
    p = np.array([0.9, 0.9, 0.1, 0.1])
    ece, bins = reliability(y, p)
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert sum(b["count"] for b in bins) == 4 and len(bins) == 10
    m = classification_metrics(y, p)
    assert m["ece"] == pytest.approx(0.25)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    # HEM (3 cells): precision 2/2, recall 2/3 -> F1 0.8; ALL (1 cell): precision 1/2, recall 1 -> 2/3.
    assert m["f1_weighted"] == pytest.approx(0.75 * 0.8 + 0.25 * (2 / 3))


def test_weighted_f1_is_the_challenges():
    from sklearn.metrics import f1_score

    y = np.array([1, 1, 1, 0, 0, 1])
    p = np.array([0.9, 0.2, 0.7, 0.6, 0.1, 0.8])
    assert classification_metrics(y, p)["f1_weighted"] == pytest.approx(f1_score(y, p >= 0.5, average="weighted"))


def _fake_predictions(keys, n_subjects=8, cells=6, seed=0):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"{i}" if i % 2 else f"H{i}" for i in range(n_subjects)], cells)
    y = np.array([0 if s.startswith("H") else 1 for s in subjects])
    base = pd.DataFrame({"path": [f"c{i}.bmp" for i in range(len(y))], "subject": subjects, "label": y})
    out = {}
    for j, k in enumerate(keys):
        noise = rng.normal(0, 0.3 + 0.05 * j, len(y))
        out[k] = base.assign(prob_all=np.clip(0.5 + (y - 0.5) * 0.6 + noise, 0, 1)).sample(frac=1, random_state=j)
    return out


def test_comparison_covers_all_21_pairs_with_holm():
    keys = ["vgg16", "vgg19", "inception_v3", "xception", "efficientnet_b0", "resnet50", "resnet101"]
    frame = compare_models(_fake_predictions(keys), n_boot=200)
    assert list(frame.columns) == [
        "model_a",
        "model_b",
        "n01",
        "n10",
        "p_value",
        "p_holm",
        "auc_diff",
        "auc_diff_low",
        "auc_diff_high",
    ]
    assert len(frame) == 21
    assert (frame["p_holm"] >= frame["p_value"] - 1e-12).all()
    assert (frame["auc_diff_low"] <= frame["auc_diff_high"]).all()
    # Rows are aligned by path even though each model's file lists the cells in another order.
    preds = _fake_predictions(["a", "b"])
    row = compare_models(preds, n_boot=100).iloc[0]
    a = preds["a"].sort_values("path")
    b = preds["b"].sort_values("path")
    assert row["auc_diff"] == pytest.approx(
        roc_auc_score(a["label"], a["prob_all"]) - roc_auc_score(b["label"], b["prob_all"])
    )


def test_per_subject_accuracy():
    preds = pd.DataFrame(
        {
            "path": list("abcd"),
            "subject": ["1", "1", "H2", "H2"],
            "label": [1, 1, 0, 0],
            "prob_all": [0.9, 0.4, 0.2, 0.1],
        }
    )
    table = per_subject(preds)
    assert table.iloc[0].to_dict() == {
        "subject": "1",
        "label": 1,
        "cells": 2,
        "accuracy": 0.5,
        "mean_prob_all": pytest.approx(0.65),
    }


def test_study_writes_intervals_ensemble_and_comparison(tiny_study):
    from cnmc_core.store import StudyStore

    root, name = tiny_study
    store = StudyStore(root, name)
    for key in ("vgg16", "efficientnet_b0", "ensemble"):
        m = store.read_metrics(key)
        lo, hi = m["ci95"]["accuracy"]
        assert lo <= m["accuracy"] <= hi
        assert {"ece", "brier", "f1_weighted"} <= set(m)
        assert store.subjects_csv(key).is_file()
    ens = store.read_predictions("ensemble")
    a = store.read_predictions("vgg16").set_index("path")["prob_all"]
    b = store.read_predictions("efficientnet_b0").set_index("path")["prob_all"]
    expected = ((a + b) / 2).loc[ens["path"]].to_numpy()
    np.testing.assert_allclose(ens["prob_all"], expected, atol=1e-9)
    assert list(ens.columns) == ["path", "subject", "label", "prob_all"]
    comparison = pd.read_csv(store.comparison_csv)
    assert len(comparison) == 1 and set(comparison.iloc[0][["model_a", "model_b"]]) == {"vgg16", "efficientnet_b0"}
    assert json.loads(store.model_file("ensemble", "metrics.json").read_text())["members"] == [
        "vgg16",
        "efficientnet_b0",
    ]


def test_stats_recomputes_subject_tests_and_patient_blocks_from_predictions_alone(tiny_study, tmp_path, capsys):
    import shutil

    from cnmc_core.analysis import verdict
    from cnmc_core.cli import main
    from cnmc_core.patient_stats import SUBJECT_COLUMNS
    from cnmc_core.store import StudyStore

    root, name = tiny_study
    shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("model.keras"))
    store = StudyStore(tmp_path, name)
    store.comparison_csv.unlink()
    for key in ("vgg16", "efficientnet_b0"):  # as a study saved before the patient block existed
        m = store.read_metrics(key)
        store.model_file(key, "metrics.json").write_text(json.dumps({k: v for k, v in m.items() if k != "patient"}))
    assert main(["stats", "--artifacts", str(tmp_path), "--study", name, "--replicates", "200"]) == 0
    capsys.readouterr()

    comparison = pd.read_csv(store.comparison_csv)
    assert set(SUBJECT_COLUMNS) <= set(comparison.columns)
    for column in ("p_subject", "p_subject_holm", "p_value", "p_holm"):
        assert comparison[column].between(0, 1).all(), column
    val = store.read_predictions("vgg16")
    n_val_subjects = val["subject"].nunique()
    row = comparison.iloc[0]
    assert row["n_subjects"] == n_val_subjects and row["n_cells"] == len(val)
    used = {row["model_a"]: row["threshold_a"], row["model_b"]: row["threshold_b"]}
    for key in ("vgg16", "efficientnet_b0"):  # each model at its own saved threshold, not a shared 0.5
        assert used[key] == pytest.approx(store.read_metrics(key)["threshold"])
    for key in ("vgg16", "efficientnet_b0", "ensemble"):
        m = store.read_metrics(key)
        patient = m["patient"]
        assert patient["n_patients"] == n_val_subjects and patient["n_all"] + patient["n_hem"] == n_val_subjects
        assert "not tuned" in patient["share_threshold_source"]  # no training-side predictions to tune it on
        assert m["ci_n_boot"] == 200 and "200 class-stratified" in m["ci_method"]
        assert all(used == 200 for used in m["ci_replicates"].values())  # no replicate loses a class
    v = verdict(comparison)
    assert v.tested and v.n_subjects == n_val_subjects and v.n_pairs == 1
    assert v.sentence.endswith(".") and f"over {n_val_subjects} patients" in v.sentence


def test_verdict_names_a_winner_only_when_it_beats_every_other_model():
    from cnmc_core.analysis import verdict

    def table(p_holm, diffs):
        pairs = [("a", "b"), ("a", "c"), ("b", "c")]
        return pd.DataFrame({"model_a": [x for x, _ in pairs], "model_b": [y for _, y in pairs], "n_subjects": 28,
                             "p_subject_holm": p_holm, "subject_diff": diffs,
                             **{c: 0.0 for c in ("threshold_a", "threshold_b", "n_cells", "subject_diff_low",
                                                 "subject_diff_high", "subjects_a_better", "subjects_b_better",
                                                 "p_subject", "subject_method")}})

    v = verdict(table([0.01, 0.02, 0.9], [0.1, 0.2, 0.01]), name=str.upper)
    assert v.winner == "a"
    assert v.sentence.startswith("A beats every other model (paired sign-flip test over 28 patients")
    v = verdict(table([0.01, 0.2, 0.9], [0.1, 0.2, 0.01]))
    assert v.winner is None and v.significant_pairs == 1
    assert v.sentence.startswith("No model is significantly better than the others")
    assert "Holm-adjusted over 3 pairs" in v.sentence
    v = verdict(table([0.01, 0.01, 0.9], [-0.1, 0.2, 0.01]))  # b beats a, a beats c, b ties c: nobody beats all
    assert v.winner is None
    assert not verdict(pd.DataFrame(columns=["model_a", "model_b", "p_holm"])).tested  # an old comparison.csv
