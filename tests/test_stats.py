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
    out = capsys.readouterr().out
    lines = out.splitlines()  # the verdict, then what a reader must know about where the figures come from
    assert any(line.startswith("No model is significantly better") or " beats every other model (" in line
               for line in lines), out
    assert "synthetic: synthetic data and random weights; these are not clinical results" in lines
    assert "chosen on the validation split" not in out  # paper_std: the inner slice chose every epoch

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
        # chosen on the out-of-fold predictions of the training patients (the tiny study is --split cv; the
        # ensemble's are the mean of its models')
        n_train = store.read_split().query("split == 'train'")["subject"].nunique()
        assert patient["share_threshold_source"].startswith(f"chosen on {n_train} training-side patients")
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


# ---- validation that chose nothing (issue 14) -----------------------------------------------------------

def test_paper_std_study_chose_its_epoch_on_an_inner_slice_of_training_subjects(tiny_study):
    """paper_std (the tiny study's preset) stops on an inner subject-disjoint slice of the training subjects:
    the validation loss is recorded for the curves but chooses nothing, and study.json and metrics.json say so."""
    from cnmc_core.splits import inner_slice
    from cnmc_core.store import StudyStore

    root, name = tiny_study
    store = StudyStore(root, name)
    info = store.read_study()
    assert info["config"]["stopping"] == "inner"
    split = store.read_split()
    train = split[split["split"] == "train"].reset_index(drop=True)
    held = inner_slice(train["subject"], train["label"].astype(int), seed=info["seed"])
    held_subjects = set(train.loc[held, "subject"].astype(str))
    assert held_subjects and not held_subjects & set(split.loc[split["split"] == "val", "subject"].astype(str))
    for key in ("vgg16", "efficientnet_b0"):
        m = store.read_metrics(key)
        assert m["stopping"]["rule"] == "inner" and m["stopping"]["validation_chose"] is False
        assert f"{len(held_subjects)} training subjects ({int(held.sum())} cells)" in m["stopping"]["chosen_on"]
        history = store.read_history(key)
        assert {"val_loss", "inner_loss", "inner_accuracy"} <= set(history.columns)
        assert m["best_epoch"] == int(history["inner_loss"].idxmin()) + 1  # the inner loss chose, not val_loss


def test_the_kept_epoch_follows_the_rule():
    from cnmc_core.head import history_frame

    logs = {"loss": [0.9, 0.8, 0.7], "accuracy": [0.5, 0.6, 0.7], "val_loss": [0.6, 0.5, 0.65],
            "val_accuracy": [0.5, 0.6, 0.6], "inner_loss": [0.7, 0.75, 0.72], "inner_accuracy": [0.5, 0.5, 0.5]}
    assert history_frame(logs, None)[1] == 3  # the paper: Keras's default restore_best_weights=False, last kept
    assert history_frame(logs, "val_loss")[1] == 2
    frame, best = history_frame(logs, "inner_loss")
    assert best == 1 and list(frame.columns) == ["epoch", *logs]
    assert list(history_frame({k: v for k, v in logs.items() if not k.startswith("inner")}, None)[0].columns) == [
        "epoch", "loss", "accuracy", "val_loss", "val_accuracy"]


def test_stopping_rules_per_preset_and_the_record():
    from cnmc_core.config import from_preset, model_config_hash
    from cnmc_core.splits import stopping_record

    assert from_preset("paper").stopping == "val"  # the paper: stop on validation, last epoch kept
    assert from_preset("paper_std").stopping == from_preset("finetune").stopping == "inner"
    with pytest.raises(ValueError, match="--stopping must be one of"):
        from_preset("paper", stopping="test")
    # A study saved with the old rule (best validation epoch restored) is not reused for the new ones.
    old = model_config_hash(from_preset("paper_std", stopping="val_best"), "vgg16", "x")
    assert old != model_config_hash(from_preset("paper_std"), "vgg16", "x")
    subjects = np.array(["1", "1", "2", "H1", "H2"])
    record = stopping_record("inner", subjects, np.array([True, True, False, True, False]))
    assert record["validation_chose"] is False and "2 training subjects (3 cells)" in record["chosen_on"]
    paper = stopping_record("val", subjects, None)
    assert paper["validation_chose"] is True and "last epoch kept" in paper["chosen_on"]
    assert "chosen on this split" in paper["note"]


@pytest.mark.slow
def test_paper_head_keeps_its_last_epoch_and_inner_head_never_sees_the_inner_slice():
    from cnmc_core.config import from_preset
    from cnmc_core.training import train_head

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    feats = (rng.normal(0, 1, (120, 2, 16)) + y[:, None, None] * 0.5).astype(np.float32)
    val = feats[:40, 0]
    paper = train_head(feats, y, val, y[:40], from_preset("paper", weights="none", epochs=4, patience=1))
    assert paper.best_epoch == len(paper.history)  # the last epoch run, whatever val_loss did
    inner = np.zeros(120, bool)
    inner[:10] = inner[60:70] = True
    head = train_head(feats, y, val, y[:40], from_preset("paper_std", weights="none", epochs=4), inner)
    assert "inner_loss" in head.history and head.best_epoch == int(head.history["inner_loss"].idxmin()) + 1
    # The standardisation came from the 100 cells trained on, not from the 20 held out.
    np.testing.assert_allclose(head.mean, feats[~inner].reshape(-1, 16).mean(0), rtol=1e-5)


# ---- cross-validation on cached features (issue 14) -----------------------------------------------------------

def test_cv_folds_are_cnmcs_own_else_subject_disjoint_and_stratified():
    from cnmc_core.splits import SplitError, cv_folds

    subjects = np.array(["1", "1", "2", "H1", "3", "H2"])
    labels = np.array([1, 1, 1, 0, 1, 0])
    groups = np.array(["fold_0", "fold_0", "fold_1", "fold_1", "fold_2", "fold_2"])
    folds, source = cv_folds(subjects, labels, groups)
    assert list(folds) == [0, 0, 1, 1, 2, 2] and source == "C-NMC's 3 training folds"
    subjects = np.repeat([f"{i}" for i in range(6)] + [f"H{i}" for i in range(3)], 2)
    labels = np.repeat([1] * 6 + [0] * 3, 2)
    folds, source = cv_folds(subjects, labels, np.array(["fold_0"] * 18), k=3, seed=5)
    assert "3 subject-disjoint folds stratified by class" in source
    for s in set(subjects):
        assert len(set(folds[subjects == s])) == 1  # a subject's cells share one fold
    for fold in range(3):  # each fold holds 2 ALL subjects and 1 HEM subject
        held = set(subjects[folds == fold])
        assert len({s for s in held if s.startswith("H")}) == 1 and len(held) == 3
    with pytest.raises(SplitError, match="at least 3 training subjects"):
        cv_folds(np.array(["1", "H1"]), np.array([1, 0]), np.array(["x", "x"]), k=3)


def test_cv_figures_by_hand():
    from cnmc_core.crossval import cv_figures

    oof = pd.DataFrame({"path": [f"c{i}" for i in range(8)], "subject": ["1", "1", "H1", "H1", "2", "2", "H2", "H2"],
                        "label": [1, 1, 0, 0, 1, 1, 0, 0], "prob_all": [0.9, 0.4, 0.2, 0.6, 0.8, 0.7, 0.1, 0.3],
                        "fold": [0, 0, 0, 0, 1, 1, 1, 1]})
    cv = cv_figures(oof, 0.5, n_boot=200, seed=0)
    assert cv["n_subjects"] == 4 and cv["n_cells"] == 8 and cv["n_all_subjects"] == cv["n_hem_subjects"] == 2
    assert cv["pooled"]["accuracy"] == pytest.approx(6 / 8)
    assert [f["accuracy"] for f in cv["per_fold"]] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert cv["spread"]["accuracy"] == {"mean": pytest.approx(0.75), "sd": pytest.approx(np.std([0.5, 1], ddof=1)),
                                        "min": 0.5, "max": 1.0}
    assert cv["per_fold"][1]["roc_auc"] == 1.0 and cv["ci_replicates"]["accuracy"] == 200


def test_cross_validated_study_saves_out_of_fold_predictions_and_the_cv_block(tiny_study):
    from cnmc_core import crossval
    from cnmc_core.store import StudyStore

    root, name = tiny_study
    store = StudyStore(root, name)
    assert store.read_study()["config"]["split"] == "cv"
    split = store.read_split()
    train, val = split[split["split"] == "train"], split[split["split"] == "val"]
    for key in ("vgg16", "efficientnet_b0"):
        oof = crossval.read(store, key)
        assert sorted(oof["path"]) == sorted(train["path"])  # every training cell once, none of validation
        folds = dict(zip(train["path"], train["group"]))
        assert all(folds[p] == f"fold_{f}" for p, f in zip(oof["path"], oof["fold"]))  # C-NMC's own folds
        assert oof["prob_all"].between(0, 1).all()
        assert sorted(store.read_predictions(key)["path"]) == sorted(val["path"])  # validation as without cv
        cv = store.read_metrics(key)["cv"]
        assert cv["folds"] == 3 and cv["fold_source"] == "C-NMC's 3 training folds"
        assert cv["n_subjects"] == train["subject"].nunique() and cv["n_cells"] == len(train)
        assert len(cv["per_fold"]) == 3 and sum(f["n_cells"] for f in cv["per_fold"]) == len(train)
        assert cv["spread"]["accuracy"]["min"] <= cv["pooled"]["accuracy"] <= cv["spread"]["accuracy"]["max"]
        lo, hi = cv["ci95"]["roc_auc"]
        assert lo <= cv["pooled"]["roc_auc"] <= hi
        assert "inner slice" in cv["stopping"] and "whole model" in cv["scope"]


def test_table_i_notes_cover_every_row_and_its_arithmetic_holds():
    """Issue 14, points 7 and 11: the caveat's claims are checked against the table itself."""
    from cnmc_core.registry import PAPER_TABLE_I, PAPER_TABLE_I_CAVEAT, PAPER_TABLE_I_NOTES

    assert set(PAPER_TABLE_I_NOTES) == set(PAPER_TABLE_I) and "440" in PAPER_TABLE_I_CAVEAT
    for row in PAPER_TABLE_I.values():
        assert abs(row["accuracy"] * 440 - round(row["accuracy"] * 440)) < 0.03  # whole images out of 440
    possible = [k for k, r in PAPER_TABLE_I.items() if any(round(i / 1867, 4) == r["accuracy"] for i in range(1868))]
    assert possible == ["xception"]  # the other six are impossible out of the 1,867 preliminary images

    def implied_accuracy(row):  # a balanced 220/220 set with the row's precision and recall
        tp = row["recall"] * 220
        return (tp + 220 - tp * (1 - row["precision"]) / row["precision"]) / 440

    assert implied_accuracy(PAPER_TABLE_I["vgg16"]) == pytest.approx(0.51, abs=0.005)
    assert implied_accuracy(PAPER_TABLE_I["vgg19"]) == pytest.approx(0.58, abs=0.005)
    assert implied_accuracy(PAPER_TABLE_I["efficientnet_b0"]) == 0.5


def test_compare_page_shows_cross_validated_figures_the_gap_to_the_top_and_who_chose_the_epoch(tiny_study):
    from cnmc_core.dashboard.base import load_study
    from cnmc_core.dashboard.comparison import compare
    from cnmc_core.store import StudyStore

    root, name = tiny_study
    view = compare(load_study(root, name))
    train = StudyStore(root, name).read_split().query("split == 'train'")
    assert len(view.cv) == 3 and (view.cv["Subjects"] == train["subject"].nunique()).all()  # the ensemble too
    auc = view.cv["AUC (out-of-fold)"].to_numpy()
    assert (auc[:-1] >= auc[1:]).all()  # ranked by the cross-validated AUC
    assert view.stopping == ""  # paper_std: the validation split chose nothing
    assert len(view.from_top) == 2 and view.from_top["Model"].iloc[0] == view.top
    assert view.from_top["difference"].iloc[0] == 0 and view.from_top["difference"].iloc[1] <= 0


def test_stopping_note_names_the_models_whose_epoch_validation_chose():
    from types import SimpleNamespace

    from cnmc_core.dashboard.comparison import stopping_note

    data = SimpleNamespace(evaluated=["vgg16", "resnet50", "xception"], metrics={
        "vgg16": {"stopping": {"validation_chose": False}}, "resnet50": {"stopping": {"validation_chose": True}},
        "xception": {}})  # (an old study: not recorded, it restored the best validation epoch)
    note = stopping_note(data)
    assert note.startswith("The stopping epoch of ResNet50, Xception was chosen on the validation split")
    assert "VGG16" not in note
    data.metrics["resnet50"]["stopping"]["validation_chose"] = False
    data.metrics["xception"] = {"stopping": {"validation_chose": False}}
    assert stopping_note(data) == ""
