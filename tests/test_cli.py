"""The CLI end to end: train writes the whole artifact contract, reruns resume, predict agrees, errors are one line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .helpers import cli, cli_here

METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "threshold", "confusion_matrix"}


TRAIN_ARGS = (
    "--weights",
    "none",
    "--models",
    "vgg16,efficientnet_b0",
    "--input-size",
    "75",
    "--epochs",
    "3",
    "--preset",
    "paper_std",
)


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_artifacts")
    r = cli("train", "--data", demo_data, "--study", "e2e", "--artifacts", root, *TRAIN_ARGS)
    assert r.returncode == 0, r.stderr
    return root, root / "e2e", r


@pytest.mark.slow
def test_train_writes_the_artifact_contract(trained, demo_data):
    root, study, run = trained
    info = json.loads((study / "study.json").read_text())
    assert info["status"] == "complete"
    assert info["config"]["weights"] == "none" and info["config"]["preset"] == "paper_std"
    assert info["data"]["fingerprint"] and info["data"]["synthetic"] is True
    assert info["data"]["split_mode"] == "official"
    assert {"tensorflow", "keras", "numpy"} <= set(info["versions"])
    assert info["models"] == ["vgg16", "efficientnet_b0"]

    split = pd.read_csv(study / "split.csv", dtype=str, keep_default_na=False)
    assert list(split.columns[:5]) == ["path", "subject", "label", "split", "reason"]
    on_disk = {p.relative_to(demo_data).as_posix() for p in demo_data.rglob("*.bmp")}
    assert set(split["path"]) == on_disk  # every image file is listed
    train_subjects = set(split.loc[split.split == "train", "subject"])
    val_subjects = set(split.loc[split.split == "val", "subject"])
    assert train_subjects and val_subjects and not train_subjects & val_subjects
    n_val = int((split.split == "val").sum())

    for key in ("vgg16", "efficientnet_b0"):
        folder = study / "models" / key
        metrics = json.loads((folder / "metrics.json").read_text())
        assert METRIC_KEYS <= set(metrics)
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        assert tn + fp + fn + tp == n_val
        assert metrics["recall"] == pytest.approx(tp / (tp + fn))
        assert metrics["specificity"] == pytest.approx(tn / (tn + fp))
        preds = pd.read_csv(folder / "predictions.csv", dtype={"subject": str})
        assert list(preds.columns) == ["path", "subject", "label", "prob_all"] and len(preds) == n_val
        assert preds["prob_all"].between(0, 1).all()
        assert ((preds["prob_all"] >= 0.5) & (preds["label"] == 1)).sum() == tp
        hist = pd.read_csv(folder / "history.csv")
        # paper_std stops on an inner slice of the training patients (issue 14): its loss is recorded too
        assert list(hist.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "inner_loss",
                                      "inner_accuracy"]
        assert metrics["stopping"]["rule"] == "inner" and metrics["stopping"]["validation_chose"] is False
        assert 1 <= len(hist) <= 3
        assert (folder / "model.keras").stat().st_size > 0
    leftovers = [p for p in study.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".part")]
    assert leftovers == []
    assert "synthetic data, random weights: not clinical results" in run.stdout  # the summary says what this is


@pytest.mark.slow
def test_rerun_skips_complete_models_and_a_config_change_retrains(trained, demo_data):
    root, study, _ = trained
    saved_model = study / "models" / "vgg16" / "model.keras"
    before = saved_model.stat().st_mtime_ns
    r = cli("train", "--data", demo_data, "--study", "e2e", "--artifacts", root, *TRAIN_ARGS)
    assert r.returncode == 0, r.stderr
    assert "already complete, skipped: vgg16, efficientnet_b0" in r.stdout
    assert saved_model.stat().st_mtime_ns == before  # not retrained

    # One model asked again with another epoch count: it is retrained, from cached features.
    args = list(TRAIN_ARGS)
    args[args.index("--models") + 1] = "vgg16"
    args[args.index("--epochs") + 1] = "2"
    r = cli("train", "--data", demo_data, "--study", "e2e2", "--artifacts", root, *args)
    assert r.returncode == 0, r.stderr
    assert "computing features" not in r.stderr  # same base, size and images: all from the cache
    m = json.loads((root / "e2e2" / "models" / "vgg16" / "metrics.json").read_text())
    assert m["epochs_run"] <= 2


@pytest.mark.slow
def test_predict_agrees_with_the_study_and_reports_bad_files(trained, demo_data, tmp_path):
    root, study, _ = trained
    preds = pd.read_csv(study / "models" / "vgg16" / "predictions.csv")
    row = preds.iloc[0]
    bad = tmp_path / "broken.bmp"
    bad.write_bytes(b"BM not really")
    r = cli("predict", "--study", "e2e", "--artifacts", root, demo_data / row["path"], bad)
    assert r.returncode == 1, r.stderr  # 1: a line is an error (issue 13)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 2
    good, err = lines
    assert set(good["predictions"]) == {"vgg16", "efficientnet_b0"}
    assert good["predictions"]["vgg16"] == pytest.approx(row["prob_all"], abs=1e-4)
    assert good["label"] in ("ALL", "HEM", "inconclusive") and 0 <= good["ensemble"] <= 1
    assert err["file"].endswith("broken.bmp") and "error" in err and "\n" not in err["error"]


@pytest.mark.slow
def test_studies_lists_the_study_with_its_models(trained):
    root, _, _ = trained
    r = cli("studies", "--artifacts", root, "--json", check=True)
    entry = next(s for s in json.loads(r.stdout) if s["name"] == "e2e")
    assert entry["complete"] and entry["models"] == ["vgg16", "efficientnet_b0"] and entry["synthetic"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("train", "--data", "{data}", "--models", "vgg16,alexnet"), "unknown model 'alexnet'"),
        (
            ("train", "--data", "{data}", "--models", "inception_v3", "--input-size", "64"),
            "below InceptionV3's minimum of 75",
        ),
        (("train", "--data", "{empty}"), "no C-NMC images found"),
        (
            ("train", "--data", "{data}", "--weights", "{empty}", "--models", "vgg16"),
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        (("train", "--data", "{data}", "--preset", "fast"), "argument --preset: invalid choice: 'fast'"),
        (("train", "--data", "{data}", "--study", "../escape"), "study name '../escape' is not allowed"),
        (("train",), "--data"),
        (("predict", "--study", "nothing", "--artifacts", "{empty}", "x.bmp"), "no study 'nothing'"),
        (("frobnicate",), "invalid choice"),
        # the hint names the command's own help, not a command that does not exist
        (("predict", "--study", "demo", "x.png", "--bogus"), "--bogus (see `python -m cnmc_core predict --help`)"),
        (("--bogus",), "--bogus (see `python -m cnmc_core --help`)"),
    ],
)
def test_bad_arguments_give_exit_2_and_one_error_line(args, needle, demo_data, tmp_path):
    (tmp_path / "empty").mkdir()
    filled = [a.format(data=demo_data, empty=tmp_path / "empty") for a in args]
    r = cli_here(*filled, "--artifacts", tmp_path / "art") if args[0] == "train" else cli_here(*filled)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [("--bogus",), ("predict", "--study", "demo", "x.png", "--bogus")])
def test_a_usage_error_is_exit_2_and_one_line_from_the_command_itself(args):
    """The test above runs the command in this process; here its own process: the status a script sees."""
    r = cli(*args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_unwritable_artifacts_folder_fails_before_any_work(demo_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = cli("train", "--data", demo_data, "--artifacts", blocker, *TRAIN_ARGS)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot write to")


def test_artifacts_root_comes_from_the_environment(tmp_path):
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "study.json").write_text(json.dumps({"created": "2026-01-01", "config": {"models": ["vgg16"]}}))
    r = cli("studies", env={"CNMC_ARTIFACTS": str(tmp_path)}, check=True)
    assert "s1" in r.stdout and "incomplete (0 of 1 models)" in r.stdout


def test_training_folder_is_never_written(demo_data, trained):
    # `trained` ran train on demo_data; the data folder holds only what the generator wrote.
    names = {p.name for p in demo_data.rglob("*") if p.is_file()}
    assert not any(n.endswith((".tmp", ".npy", ".json", ".keras")) for n in names)
