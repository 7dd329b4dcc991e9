"""The answer a hematologist can act on (issue 13): the Inconclusive rule, each model's track record on the
validation cells, the reference cells nearest in a model's feature space, the batch summary and the export.
The rule and the record are checked on constructed inputs against hand computations (fast); the reference cells
on the tiny study's cached training features (slow). All images are SYNTHETIC."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from cnmc_core import answer
from cnmc_core.answer import MIN_AGREEMENT, NEAR_THRESHOLD, apply_rule, batch_summary, inconclusive_reasons
from cnmc_core.dashboard import classify_answer
from cnmc_core.dashboard.base import StudyData

CALM = {"warning": False, "reasons": [], "far_models": []}
FAR = {"warning": True, "reasons": ["its features are far from the training cells' for 2 of 2 models"]}


# --- the Inconclusive rule ----------------------------------------------------------------------------------
def test_a_clear_agreed_in_distribution_result_keeps_its_call():
    assert inconclusive_reasons(0.9, 0.5, 7, 7, CALM) == []
    assert inconclusive_reasons(0.1, 0.5, 5, 7, CALM) == []  # 5 of 7 is at least two thirds
    assert inconclusive_reasons(0.5 + NEAR_THRESHOLD, 0.5, 2, 2, None) == []  # exactly at the margin: conclusive


def test_each_reason_alone_makes_it_inconclusive():
    (ood,) = inconclusive_reasons(0.9, 0.5, 7, 7, FAR)
    assert "unlike the cells the models were trained on" in ood
    (split,) = inconclusive_reasons(0.9, 0.5, 4, 7, CALM)
    assert split.startswith("the models split: 4 of 7 say ALL, 3 say HEM")
    (near,) = inconclusive_reasons(0.55, 0.5, 7, 7, CALM)
    assert near == f"the ensemble's P(ALL) 0.550 is within {NEAR_THRESHOLD} of its threshold 0.50"
    (near_other_threshold,) = inconclusive_reasons(0.25, 0.3, 3, 3, CALM)  # the study's own threshold counts
    assert "threshold 0.30" in near_other_threshold


def test_the_issue_example_gives_both_reasons_and_all_three_can_hold():
    # "A valid cell got a large HEM at ensemble P(ALL) 0.494, while 4 of 7 models said ALL."
    reasons = inconclusive_reasons(0.494, 0.5, 3, 7, CALM)
    assert len(reasons) == 2 and "3 of 7 say HEM, 4 say ALL" in reasons[0] and "0.494" in reasons[1]
    assert len(inconclusive_reasons(0.494, 0.5, 3, 7, FAR)) == 3


def test_the_agreement_margin_is_two_thirds():
    assert MIN_AGREEMENT == pytest.approx(2 / 3)
    for votes, n, split in ((1, 2, True), (2, 2, False), (2, 3, False), (3, 4, False), (2, 4, True), (4, 7, True)):
        assert bool(inconclusive_reasons(0.95, 0.5, votes, n, CALM)) is split, (votes, n)
    with pytest.raises(ValueError, match="votes must be from 0 to n_models"):
        inconclusive_reasons(0.9, 0.5, 8, 7, CALM)


def test_apply_rule_sets_label_call_and_reasons_and_keeps_every_model():
    result = {"predictions": {"vgg16": 0.9, "resnet50": 0.2}, "ensemble": 0.55, "label": "ALL", "ood": CALM}
    apply_rule(result, {"vgg16": 0.5, "resnet50": 0.5}, 0.5)
    assert result["label"] == answer.INCONCLUSIVE and result["call"] == "ALL" and len(result["reasons"]) == 2
    assert result["predictions"] == {"vgg16": 0.9, "resnet50": 0.2}
    # Each model votes at its own threshold: resnet50 at 0.1 says ALL too, and 0.75 is far from 0.5.
    clear = {"predictions": {"vgg16": 0.9, "resnet50": 0.6}, "ensemble": 0.75, "label": "ALL", "ood": CALM}
    apply_rule(clear, {"vgg16": 0.5, "resnet50": 0.5}, 0.5)
    assert (clear["label"], clear["call"], clear["reasons"]) == ("ALL", "ALL", [])
    apply_rule(clear, {}, 0.5)  # applying it again changes nothing
    assert clear["label"] == "ALL"


# --- the batch summary and the export -----------------------------------------------------------------------
def _result(label: str, prepared: bool = True, unreliable: bool = False) -> dict:
    return {"file": "f.png", "label": label, "prepared": prepared, "ood": {"warning": unreliable, "reasons": []},
            "predictions": {"vgg16": 0.7}, "ensemble": 0.7, "call": "ALL" if label != "HEM" else "HEM",
            "reasons": ["the models split"] if label == answer.INCONCLUSIVE else []}


def test_the_batch_summary_counts_calls_inconclusive_prepared_and_unreliable():
    results = ([_result("ALL")] * 9 + [_result("HEM", prepared=False)] * 2
               + [_result("inconclusive", unreliable=True)] * 2)
    assert batch_summary(results) == ("9 of 13 cells called ALL, 2 HEM, 2 inconclusive; 11 of 13 prepared; "
                                      "2 of 13 unreliable (unlike the training cells)")
    assert batch_summary(results[:1] + [{"file": "x.png", "error": "not an image"}]).endswith(
        "; 1 upload(s) gave no result")
    assert batch_summary([{"file": "x.png", "error": "no white cell found"}]) == (
        "no cell classified: 1 upload(s) gave no result")


class _Provenance:
    def provenance(self):
        return {"study": "demo", "config_hash": "0123456789abcdef", "synthetic_data": True, "research_use_only": True}


def test_the_export_carries_study_config_hash_time_and_flags_on_every_row():
    when = datetime(2026, 12, 3, 4, 5, 6, tzinfo=timezone.utc)
    results = [_result("ALL"), _result("inconclusive"), {"file": "bad.png", "error": "not an image"}]
    frame = classify_answer.export_frame(_Provenance(), results, when)
    assert list(frame.columns[:5]) == ["study", "config_hash", "synthetic_data", "research_use_only", "time"]
    assert (frame["time"] == "2026-12-03T04:05:06+00:00").all() and (frame["study"] == "demo").all()
    assert frame["research_use_only"].all() and frame["synthetic_data"].all()
    assert list(frame["label"]) == ["ALL", "inconclusive", ""]
    assert list(frame["why inconclusive"]) == ["", "the models split", ""] and frame["error"].iloc[2] == "not an image"
    labels = list(frame.columns)
    assert labels.index("unreliable (out of distribution)") == labels.index("label") + 1  # kept in view


# --- the track record ---------------------------------------------------------------------------------------
def _study(metrics: dict) -> StudyData:
    rng = np.random.default_rng(4)
    subjects = np.repeat([f"{s}" for s in range(6)] + [f"H{s}" for s in range(6)], 10)
    labels = np.array([0 if s.startswith("H") else 1 for s in subjects])
    prob = np.clip(0.35 * labels + rng.uniform(0, 0.65, len(labels)), 0, 1)
    preds = pd.DataFrame({"path": [f"v/{i}.bmp" for i in range(len(labels))], "subject": subjects,
                          "label": labels, "prob_all": prob})
    return StudyData("root", "s", ("root", "s"), {}, pd.DataFrame(), ["vgg16"], {"vgg16": metrics},
                     {"vgg16": preds})


def test_the_track_record_matches_a_hand_computation():
    data = _study({"threshold": 0.5})
    preds = data.predictions["vgg16"]
    y, p = preds["label"].to_numpy(), preds["prob_all"].to_numpy()
    tp, fn = int(((p >= 0.5) & (y == 1)).sum()), int(((p < 0.5) & (y == 1)).sum())
    tn, fp = int(((p < 0.5) & (y == 0)).sum()), int(((p >= 0.5) & (y == 0)).sum())
    data.metrics["vgg16"].update({"recall": tp / (tp + fn), "specificity": tn / (tn + fp), "roc_auc": 0.8})
    record = classify_answer.track_records(data)["vgg16"]
    assert (record.n_cells, record.n_subjects) == (120, 12)
    assert record.values == {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "AUC": 0.8}
    # No ci95 in metrics.json: computed here by the class-stratified subject bootstrap, around the value.
    low, high = record.intervals["sensitivity"]
    assert low <= tp / (tp + fn) <= high and high - low > 0.01
    assert "class-stratified subject-bootstrap" in record.method
    for score in (0.1, 0.42, 0.5, 0.77, 0.99):
        near = [(yy, s) for yy, s, pp in zip(y, preds["subject"], p) if score - 0.05 <= pp <= score + 0.05]
        n_all = sum(yy for yy, _ in near)
        assert record.near(score) == (len(near), n_all, len({s for _, s in near}))
        words = record.near_words(score)
        assert words.startswith(f"{n_all / len(near):.0%} were ALL: {n_all} of the {len(near)} validation cells")


def test_stored_intervals_are_used_and_a_score_without_neighbours_says_so():
    stored = {"recall": [0.6, 0.9], "specificity": [0.5, 0.8], "roc_auc": [0.7, 0.95]}
    data = _study({"threshold": 0.5, "recall": 0.75, "specificity": 0.66, "roc_auc": 0.83, "ci95": stored,
                   "ci_method": "2000 class-stratified subject-bootstrap replicates, seed 0"})
    data.predictions["vgg16"]["prob_all"] = 0.9  # every validation cell scored 0.9
    record = classify_answer.track_records(data)["vgg16"]
    assert record.metric_text("sensitivity") == "0.75 [0.60, 0.90]" and record.metric_text("AUC") == "0.83 [0.70, 0.95]"
    assert record.near_words(0.3) == "no validation cell scored 0.25-0.35: no record for a score like this"
    note = classify_answer.record_note({"vgg16": record})
    assert "120 validation cells of 12 patients (unit: cell)" in note and "2000 class-stratified" in note


# --- through the Predictor and the CLI, on the tiny study ---------------------------------------------------
@pytest.fixture(scope="module")
def predictor(tiny_study):
    from cnmc_core.predict import Predictor
    from cnmc_core.store import StudyStore

    return Predictor.load(StudyStore(*tiny_study))


def test_the_predictor_applies_the_rule_to_every_result(predictor, tiny_study):
    from .helpers import a_cell_file

    result = predictor.classify(a_cell_file(*tiny_study)).result
    votes = answer.votes_with(result["call"], result["predictions"], predictor.thresholds)
    expected = inconclusive_reasons(result["ensemble"], predictor.ensemble_threshold, votes,
                                    len(result["predictions"]), result["ood"])
    assert result["reasons"] == expected
    assert result["label"] == (answer.INCONCLUSIVE if expected else result["call"])
    assert result["call"] == ("ALL" if result["ensemble"] >= predictor.ensemble_threshold else "HEM")
    provenance = predictor.provenance()
    assert provenance["study"] == "tiny" and len(provenance["config_hash"]) == 16 and provenance["synthetic_data"]


def test_reference_cells_are_the_truly_nearest_cached_training_cells(predictor, tiny_study):
    from cnmc_core.features import FeatureCache
    from cnmc_core.models import base_fingerprint
    from cnmc_core.ood import SCALE_FLOOR
    from cnmc_core.store import StudyStore

    from .helpers import a_cell_file

    out = predictor.classify(a_cell_file(*tiny_study))
    store = StudyStore(*tiny_study)
    for key in ("vgg16", "efficientnet_b0"):
        found = predictor.reference_cells(key, out.features[key], k=3)
        assert isinstance(found, dict), found
        # By hand: every training cell's cached features (view 0), standardised, Euclidean distance.
        split = store.read_split()
        train = split[split["split"] == "train"].reset_index(drop=True)
        model = predictor.models[key]
        cache = FeatureCache(store.feature_cache_root, key, base_fingerprint(model), int(model.input_shape[1]))
        feats = np.stack([np.load(cache.path(s))[0] for s in train["sha1"]]).astype(np.float64)
        spread = feats.std(axis=0)
        scale = np.maximum(spread, SCALE_FLOOR * np.median(spread))
        z = (feats - feats.mean(axis=0)) / scale
        query = (out.features[key] - feats.mean(axis=0)) / scale
        distance = np.sqrt(((z - query) ** 2).sum(axis=1))
        for name, label in (("ALL", 1), ("HEM", 0)):
            members = np.flatnonzero(train["label"].astype(int).to_numpy() == label)
            nearest = members[np.argsort(distance[members], kind="stable")[:3]]
            assert [n.path for n in found[name]] == list(train["path"][nearest]), (key, name)
            assert [n.distance for n in found[name]] == pytest.approx(list(distance[nearest]), rel=1e-3)
            assert all(n.label == label for n in found[name])


def test_without_the_cached_training_features_the_reference_cells_say_why(predictor, tiny_study, tmp_path):
    from cnmc_core.models import base_fingerprint
    from cnmc_core.neighbours import load_index
    from cnmc_core.store import StudyStore

    root, study = tiny_study
    shutil.copytree(root / study, tmp_path / study)  # the study alone, as handed over: no .cache/ beside it
    reason = load_index(StudyStore(tmp_path, study), "vgg16", base_fingerprint(predictor.models["vgg16"]),
                        predictor.sizes["vgg16"])
    assert isinstance(reason, str) and reason.startswith("the cached training features of vgg16 are not available")


def test_a_shared_study_cannot_point_the_reference_cells_outside_the_cache(predictor, tiny_study, tmp_path):
    from cnmc_core.models import base_fingerprint
    from cnmc_core.neighbours import load_index
    from cnmc_core.store import StudyStore

    root, study = tiny_study
    shutil.copytree(root / study, tmp_path / study)
    split = pd.read_csv(tmp_path / study / "split.csv", dtype=str, keep_default_na=False)
    split["sha1"] = "../../../../etc/passwd"  # a hostile split.csv: "checksums" that are paths
    split.to_csv(tmp_path / study / "split.csv", index=False)
    reason = load_index(StudyStore(tmp_path, study), "vgg16", base_fingerprint(predictor.models["vgg16"]),
                        predictor.sizes["vgg16"])
    assert reason == "the study's split lists no training cells with their checksums"


def test_score_cam_on_many_cells_is_announced_with_its_expected_time():
    from cnmc_core.dashboard import classify as classify_view

    assert classify_view.heatmap_estimate("gradcam", 50, 7) is None  # Grad-CAM: no warning
    assert classify_view.heatmap_estimate("scorecam", 1, 2) is None  # a few seconds: no warning
    seconds = classify_view.heatmap_estimate("scorecam", 13, 7)
    assert seconds == pytest.approx(13 * 7 * classify_view.SCORECAM_S_PER_CELL_MODEL)
    assert 150 < seconds < 250  # the issue measured 194 s for 13 files and seven models
