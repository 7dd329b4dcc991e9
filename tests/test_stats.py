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
    assert list(frame.columns) == ["model_a", "model_b", "n01", "n10", "p_value", "p_holm", "auc_diff", "auc_diff_low", "auc_diff_high"]
    assert len(frame) == 21
    assert (frame["p_holm"] >= frame["p_value"] - 1e-12).all()
    assert (frame["auc_diff_low"] <= frame["auc_diff_high"]).all()
    # Rows are aligned by path even though each model's file lists the cells in another order.
    preds = _fake_predictions(["a", "b"])
    row = compare_models(preds, n_boot=100).iloc[0]
    a = preds["a"].sort_values("path")
    b = preds["b"].sort_values("path")
    assert row["auc_diff"] == pytest.approx(roc_auc_score(a["label"], a["prob_all"]) - roc_auc_score(b["label"], b["prob_all"]))


def test_per_subject_accuracy():
    preds = pd.DataFrame({"path": list("abcd"), "subject": ["1", "1", "H2", "H2"], "label": [1, 1, 0, 0], "prob_all": [0.9, 0.4, 0.2, 0.1]})
    table = per_subject(preds)
    assert table.iloc[0].to_dict() == {"subject": "1", "label": 1, "cells": 2, "accuracy": 0.5, "mean_prob_all": pytest.approx(0.65)}


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
    assert json.loads(store.model_file("ensemble", "metrics.json").read_text())["members"] == ["vgg16", "efficientnet_b0"]
