"""What chose the kept epoch, and the cross-validated ranking, as the Overview and Training curves pages say them
(issue 14): headless AppTest on two small studies written here from known numbers, without TensorFlow.

- `inner_cv`: stopping on an inner slice of the training patients, `--split cv` with the threshold chosen on
  out-of-fold predictions; EfficientNetB0 is the better model cross-validated, VGG16 on the validation split.
- `paper_val`: the paper's rule (the validation loss decides, the last epoch is kept), no cross-validation.

Both go through `analysis.analyse_study`, as `python -m cnmc_core stats` would: intervals, patients, the ensemble
(with its own out-of-fold predictions for `inner_cv`) and the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnmc_core import analysis, crossval
from cnmc_core.config import from_preset
from cnmc_core.evaluation import classification_metrics
from cnmc_core.head import choose_threshold
from cnmc_core.splits import stopping_record
from cnmc_core.store import ENSEMBLE, StudyStore
from cnmc_core.study import split_summary

from .helpers import open_app, texts

MODELS = ("vgg16", "efficientnet_b0")
TRAIN_ALL, TRAIN_HEM = ["1", "2", "3", "4", "5", "6"], ["H1", "H2", "H3", "H4", "H5", "H6"]
VAL_ALL, VAL_HEM = ["57", "58", "59"], ["H60", "H61", "H62"]
CELLS = 10  # per training patient
VAL_CELLS = 8  # per validation patient
EPOCHS = 7
# How far apart the two classes' P(ALL) lie: VGG16 is better on validation, EfficientNetB0 cross-validated.
SEPARATION = {"vgg16": {"val": 0.45, "oof": 0.10}, "efficientnet_b0": {"val": 0.10, "oof": 0.45}}
INNER_SUBJECTS = {"1", "H1"}  # the inner slice of `inner_cv`: one patient of each class


def _cells(subjects: list[str], per: int, split: str) -> pd.DataFrame:
    rows = [(f"{split}/{s}_{c}.bmp", s, int(not s.startswith("H"))) for s in subjects for c in range(per)]
    return pd.DataFrame(rows, columns=["path", "subject", "label"])


def _probabilities(frame: pd.DataFrame, separation: float, seed: int) -> np.ndarray:
    """P(ALL) around 0.5 ± separation / 2 by class, with noise and a per-patient offset (as in C-NMC)."""
    rng = np.random.default_rng(seed)
    patient = {s: rng.normal(0, 0.08) for s in frame["subject"].unique()}
    centre = 0.5 + separation * (frame["label"].to_numpy() - 0.5)
    noise = rng.normal(0, 0.12, len(frame)) + frame["subject"].map(patient).to_numpy()
    return np.clip(centre + noise, 0.01, 0.99)


def _history(inner: bool, lowest: int) -> pd.DataFrame:
    """Losses that fall, then rise after epoch `lowest` on the chooser's side (the inner slice's or validation's)."""
    epoch = np.arange(1, EPOCHS + 1)
    u = (epoch - lowest) ** 2 / 20
    frame = pd.DataFrame({"epoch": epoch, "loss": 0.7 - 0.05 * epoch, "accuracy": 0.6 + 0.04 * epoch,
                          "val_loss": 0.6 + (0.03 * epoch if inner else u), "val_accuracy": 0.75 - 0.01 * epoch})
    if inner:
        frame["inner_loss"], frame["inner_accuracy"] = 0.5 + u, 0.8 - u
    return frame


def write_study(root: Path, name: str, stopping: str, cv: bool) -> StudyStore:
    """A complete study of MODELS under root/name, as run_study and analyse_study would leave it."""
    config = from_preset("paper_std" if stopping == "inner" else "paper", models=MODELS, weights="none",
                         epochs=EPOCHS, split="cv" if cv else "auto", threshold="train" if cv else "fixed",
                         stopping=stopping)
    train, val = _cells(TRAIN_ALL + TRAIN_HEM, CELLS, "train"), _cells(VAL_ALL + VAL_HEM, VAL_CELLS, "val")
    split = pd.concat([train.assign(split="train"), val.assign(split="val")], ignore_index=True).assign(reason="")
    store = StudyStore(root, name)
    store.dir.mkdir(parents=True)
    store.write_split(split)
    store.write_study({"name": name, "status": "complete", "created": "2026-12-01T10:00:00+00:00",
                       "config": config.to_dict(), "models": list(MODELS), "seed": 0,
                       "data": {"synthetic": True, "path": "synthetic", "layout": "kaggle", "split_mode": "folds",
                                "summary": split_summary(split)}})
    # Folds as cv_folds deals them: each fold two ALL and two HEM patients.
    fold_of = {s: i % 3 for i, s in enumerate(TRAIN_ALL)} | {s: i % 3 for i, s in enumerate(TRAIN_HEM)}
    folds = train["subject"].map(fold_of).to_numpy()
    inner = train["subject"].isin(INNER_SUBJECTS).to_numpy() if stopping == "inner" else None
    for i, key in enumerate(MODELS):
        store.model_dir(key).mkdir(parents=True)
        preds = val.assign(prob_all=_probabilities(val, SEPARATION[key]["val"], seed=i))
        threshold, source, extra = 0.5, "fixed", {}
        if cv:
            oof = train.assign(prob_all=_probabilities(train, SEPARATION[key]["oof"], seed=10 + i), fold=folds)
            oof.to_csv(store.model_file(key, crossval.OOF_FILE), index=False)
            threshold, source = choose_threshold(oof["label"], oof["prob_all"]), "train (out-of-fold)"
            extra = {"cv": crossval.cv_record(config, folds, "C-NMC's 3 training folds")}
        lowest = 3 + i  # the chooser's lowest loss; the paper's rule keeps the last epoch all the same
        kept = EPOCHS if stopping == "val" else lowest
        metrics = classification_metrics(preds["label"].to_numpy(), preds["prob_all"].to_numpy(), threshold)
        metrics |= {"model": key, "threshold_source": source, "best_epoch": kept, "epochs_run": EPOCHS,
                    "stopping": stopping_record(stopping, train["subject"], inner), "n_train": len(train),
                    "n_val": len(val), **extra}
        store.write_model(key, metrics, preds, _history(stopping == "inner", lowest), lambda path: path.touch())
    analysis.analyse_study(store, n_boot=200, seed=0)
    return store


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stopping_cv")
    write_study(root, "inner_cv", "inner", cv=True)
    write_study(root, "paper_val", "val", cv=False)
    return root


def open_study(root: Path, monkeypatch, study: str, page: str = "overview"):
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    at = open_app(page, {"study": study})
    assert not at.error, texts(at.error)
    return at


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- the ensemble, cross-validated like its models -------------------------------------------------------

def test_the_ensemble_has_out_of_fold_predictions_a_cv_block_and_a_threshold_chosen_on_them(root):
    store = StudyStore(root, "inner_cv")
    oof = crossval.read(store, ENSEMBLE)
    members = [crossval.read(store, k).set_index("path") for k in MODELS]
    mean = (members[0]["prob_all"] + members[1]["prob_all"]) / 2
    assert oof["prob_all"].to_numpy() == pytest.approx(mean.loc[oof["path"]].to_numpy())  # the mean of its models'
    assert (oof["fold"].to_numpy() == members[0].loc[oof["path"], "fold"].to_numpy()).all()
    m = store.read_metrics(ENSEMBLE)
    assert m["threshold_source"] == "train (out-of-fold)"
    assert m["threshold"] == pytest.approx(choose_threshold(oof["label"], oof["prob_all"]))  # not 0.5, not tuned
    cv = m["cv"]
    assert cv["n_subjects"] == 12 and cv["n_all_subjects"] == 6 and cv["n_cells"] == 120 and cv["folds"] == 3
    assert len(cv["per_fold"]) == 3 and cv["threshold"] == m["threshold"]
    assert "inner slice" in cv["stopping"]
    # the patient share threshold is chosen on the training side too (its out-of-fold patients)
    assert m["patient"]["share_threshold_source"].startswith("chosen on 12 training-side patients")


def test_without_cross_validation_the_ensemble_has_no_cv_and_follows_its_models_threshold(root):
    store = StudyStore(root, "paper_val")
    assert crossval.read(store, ENSEMBLE) is None
    m = store.read_metrics(ENSEMBLE)
    assert "cv" not in m and m["threshold"] == 0.5 and m["threshold_source"] == "fixed"


# ---- Overview ---------------------------------------------------------------------------------------------

def test_overview_ranks_by_the_cross_validated_auc_with_the_fold_spread_and_its_n(root, monkeypatch):
    at = open_study(root, monkeypatch, "inner_cv")
    store = StudyStore(root, "inner_cv")
    auc = {k: store.read_metrics(k)["cv"]["pooled"]["roc_auc"] for k in (*MODELS, ENSEMBLE)}
    names = {"vgg16": "VGG16", "efficientnet_b0": "EfficientNetB0", ENSEMBLE: "Ensemble (mean)"}
    ranked = [names[k] for k in sorted(auc, key=auc.get, reverse=True)]
    val_auc = {k: store.read_metrics(k)["roc_auc"] for k in MODELS}
    assert auc["efficientnet_b0"] > auc["vgg16"] and val_auc["vgg16"] > val_auc["efficientnet_b0"]  # the premise

    bold = at.markdown[1].value  # the answer in words: the cross-validated top, with its unit and N
    assert (f"Highest cross-validated ROC AUC: {ranked[0]}, {auc[next(k for k in names if names[k] == ranked[0])]:.3f}"
            " (out-of-fold over 12 training patients in 3 folds; unit: cell, N = 120 training cells)") in bold
    ours = at.dataframe[0].value  # the validation table stays in study order (a reader can sort it)
    assert list(ours["Model"]) == ["VGG16", "EfficientNetB0", "Ensemble (mean)"]
    cv = next(d.value for d in at.dataframe if "AUC (out-of-fold)" in d.value.columns)
    assert list(cv["Model"]) == ranked
    efficientnet = store.read_metrics("efficientnet_b0")["cv"]
    row = cv.set_index("Model").loc["EfficientNetB0"]
    assert row["Fold AUC min"] == pytest.approx(efficientnet["spread"]["roc_auc"]["min"])
    assert row["Fold AUC max"] == pytest.approx(efficientnet["spread"]["roc_auc"]["max"])
    assert row["Fold AUC SD"] == pytest.approx(efficientnet["spread"]["roc_auc"]["sd"])
    assert row["Patients"] == 12 and row["Folds"] == 3
    captions = texts(at.caption)
    assert ("Unit: cell, N = 120 training cells of 12 training patients (6 ALL, 6 HEM), in 3 folds of 4 patients "
            "(C-NMC's 3 training folds).") in captions
    assert "The ranking that rests on more patients, cross-validated over the training patients, follows" in captions
    threshold = store.read_metrics(ENSEMBLE)["threshold"]
    assert (f"calls ALL at {threshold:.2f} (chosen on its out-of-fold predictions of the training cells)"
            in captions)
    assert not at.warning or "stopping epoch" not in texts(at.warning)  # the inner slice chose: no caveat
    (details,) = [e for e in at.expander if e.label.startswith("How this study was run")]
    assert ("Stopping epoch chosen on:** `inner: an inner slice of 2 training subjects (20 cells), not trained on`"
            in texts(details.markdown))


def test_overview_of_a_study_stopped_on_validation_says_its_figures_are_optimistic(root, monkeypatch):
    at = open_study(root, monkeypatch, "paper_val")
    assert ("The validation split chose the stopping epoch of VGG16, EfficientNetB0 (the paper's rule: last epoch "
            "kept), so their validation figures, and the ensemble's, are optimistic.") in texts(at.warning)
    (details,) = [e for e in at.expander if e.label.startswith("How this study was run")]
    assert "Stopping epoch chosen on:** `val: the validation split, last epoch kept`" in texts(details.markdown)
    # no cross-validation: no cv table, the validation ranking as before, rows in study order
    assert not any("AUC (out-of-fold)" in d.value.columns for d in at.dataframe)
    assert list(at.dataframe[0].value["Model"]) == ["VGG16", "EfficientNetB0", "Ensemble (mean)"]
    assert "Highest ROC AUC: " in at.markdown[1].value and "N = 48 validation cells" in at.markdown[1].value
    assert "calls ALL at 0.50, like its models" in texts(at.caption)


# ---- Training curves --------------------------------------------------------------------------------------

def _figure(at) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def _values(x) -> list:
    import base64

    if isinstance(x, dict) and "bdata" in x:
        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    return list(x)


def test_training_curves_star_the_inner_slice_loss_that_chose_the_epoch(root, monkeypatch):
    at = open_study(root, monkeypatch, "inner_cv", "training")
    spec = _figure(at)
    names = {t["name"] for t in spec["data"]}
    assert {"VGG16 (train)", "VGG16 (inner slice)", "VGG16 (validation)"} <= names
    inner = next(t for t in spec["data"] if t["name"] == "VGG16 (inner slice)" and t["xaxis"] == "x")
    assert inner["line"]["dash"] == "dot"
    star = next(t for t in spec["data"] if t["name"] == "kept epoch" and t["xaxis"] == "x")  # the loss panel
    history = pd.read_csv(root / "inner_cv" / "models" / "vgg16" / "history.csv")
    assert _values(star["x"]) == [3, 4]  # each model's kept epoch (metrics.json best_epoch)
    assert _values(star["y"])[0] == pytest.approx(history.loc[2, "inner_loss"])  # on the curve that chose it
    assert history["inner_loss"].idxmin() + 1 == 3 and history["val_loss"].idxmin() + 1 == 1  # not validation's
    assert ("The kept epoch is the one with the lowest loss on an inner slice of 2 training subjects (20 cells), "
            "not trained on; the validation split chose nothing, so its figures are not made optimistic by the "
            "choice of epoch.") in texts(at.markdown)
    assert "dotted: the inner slice of training patients" in texts(at.caption)
    kept = at.dataframe[0].value.set_index("Model")
    assert kept.loc["VGG16", "Chosen on"] == "inner slice of training patients"
    assert kept.loc["VGG16", "Loss that chose it"] == pytest.approx(history.loc[2, "inner_loss"])
    assert kept.loc["VGG16", "Validation loss"] == pytest.approx(history.loc[2, "val_loss"])
    # the axis runs 1..epochs (issue 15: it ran to 16 for 15 epochs)
    low, high = spec["layout"]["xaxis"]["range"]
    assert round(low) == 1 and round(high) == EPOCHS and spec["layout"]["xaxis"]["tick0"] == 1


def test_training_curves_of_the_paper_rule_star_the_last_epoch_on_validation(root, monkeypatch):
    at = open_study(root, monkeypatch, "paper_val", "training")
    spec = _figure(at)
    assert not any("inner slice" in t["name"] for t in spec["data"])
    star = next(t for t in spec["data"] if t["name"] == "kept epoch" and t["xaxis"] == "x")
    history = pd.read_csv(root / "paper_val" / "models" / "vgg16" / "history.csv")
    assert _values(star["x"]) == [EPOCHS, EPOCHS]  # the last epoch, not the lowest validation loss (epoch 3)
    assert history["val_loss"].idxmin() + 1 == 3
    assert _values(star["y"])[0] == pytest.approx(history["val_loss"].iloc[-1])
    assert ("The kept epoch is the last one, as in the paper: training stopped once the validation loss had not "
            "fallen for 5 epochs (or at the epoch limit), so the validation split chose it and the validation "
            "figures are optimistic.") in texts(at.markdown)
    assert "dotted" not in texts(at.caption)
    assert set(at.dataframe[0].value["Chosen on"]) == {"validation split"}
    low, high = spec["layout"]["xaxis"]["range"]
    assert round(low) == 1 and round(high) == EPOCHS


# ---- the stopping rule in words, for every rule -----------------------------------------------------------

@pytest.mark.parametrize("block, curve, kept, says", [
    ({"rule": "inner", "chosen_on": "an inner slice of 4 training subjects (100 cells), not trained on",
      "validation_chose": False}, "inner", "lowest",
     "lowest loss on an inner slice of 4 training subjects (100 cells), not trained on; the validation split chose "
     "nothing"),
    ({"rule": "val", "chosen_on": "the validation split, last epoch kept", "validation_chose": True}, "validation",
     "last", "The kept epoch is the last one, as in the paper"),
    ({"rule": "val_best", "chosen_on": "the validation split, best epoch restored", "validation_chose": True},
     "validation", "lowest", "the lowest validation loss, restored by early stopping"),
    (None, "validation", "lowest", "the lowest validation loss"),  # a study made before the rule was recorded
    # a rule of `inner` whose slice could not be made (too few subjects) falls back to the validation loss
    ({"rule": "inner", "chosen_on": "the validation split, best epoch restored", "validation_chose": True},
     "validation", "lowest", "the validation split chose it and the validation figures are optimistic"),
])
def test_what_chose_the_kept_epoch_is_said_for_every_rule(block, curve, kept, says):
    from cnmc_core.analysis import stopping_of, stopping_sentence

    stopping = stopping_of({} if block is None else {"stopping": block})
    assert (stopping.curve, stopping.kept) == (curve, kept)
    assert says in stopping_sentence(stopping, 5)


def test_a_saved_description_that_is_not_ours_is_not_shown():
    """A shared study's metrics.json is someone else's text, and the sentence is rendered as Markdown."""
    from cnmc_core.analysis import stopping_of

    hostile = {"rule": "inner", "chosen_on": "[a link](http://127.0.0.1:9/phish)", "validation_chose": False}
    stopping = stopping_of({"stopping": hostile})
    assert stopping.chosen_on == "an inner slice of the training subjects, not trained on"
    assert stopping_of({"stopping": {**hostile, "rule": "[x](http://e)"}}).rule == "val_best"
