"""A study that includes the modern architectures (issue 17): ConvNeXtTiny and EfficientNetV2B0 train like the
paper's seven, and the Feature space page, the study report and `predict` all work on it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cnmc_core.cli import main
from cnmc_core.registry import MODERN_MODELS, get_spec

from .helpers import cli, open_app, parse_report, texts

MODERN = ("convnext_tiny", "efficientnet_v2_b0")
SIZE = 64  # small for the CPU; both accept 32 px and up


@pytest.fixture(scope="module")
def modern_study(demo_data, tmp_path_factory):
    """The two modern models on the shared demo data, random weights, 2 epochs: (artifacts root, study name)."""
    from cnmc_core.config import from_preset
    from cnmc_core.study import run_study

    root = tmp_path_factory.mktemp("modern")
    config = from_preset("paper_std", models=MODERN, weights="none", input_size=SIZE, epochs=2, seed=1)
    run_study(demo_data, config, root=root, name="modern")
    return root, "modern"


@pytest.mark.slow
def test_the_modern_models_are_in_the_registry_beside_the_seven():
    assert set(MODERN) <= set(MODERN_MODELS)


@pytest.mark.slow
def test_the_feature_space_page_draws_a_panel_per_modern_model(modern_study, monkeypatch):
    root, name = modern_study
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    at = open_app("feature-space")
    assert not at.error, texts(at.error)
    specs = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    titles = [a["text"] for spec in specs for a in spec["layout"]["annotations"]]
    assert titles == [get_spec(k).name for k in MODERN] == ["ConvNeXtTiny", "EfficientNetV2B0"]
    assert {t.get("xaxis", "x") for spec in specs for t in spec["data"]} == {"x", "x2"}  # a map in each panel
    for key in MODERN:
        saved = json.loads((Path(root) / name / "models" / key / "projection.json").read_text())
        assert f"**Class separability: {saved['scores']['methods']['tsne']['knn_accuracy']:.2f}**" in texts(
            at.markdown)


@pytest.mark.slow
def test_the_report_of_a_modern_study_holds_their_numbers(modern_study, tmp_path, capsys):
    root, name = modern_study
    out = tmp_path / "modern.html"
    assert main(["report", "--study", name, "--artifacts", str(root), "--out", str(out)]) == 0, capsys.readouterr()
    cells = parse_report(out.read_text(encoding="utf-8"))
    for key in MODERN:
        metrics = json.loads((Path(root) / name / "models" / key / "metrics.json").read_text())
        assert cells.values[(f"{key}|ours", "ROC AUC")] == metrics["roc_auc"]
        saved = json.loads((Path(root) / name / "models" / key / "projection.json").read_text())
        assert cells.values[(f"{key}|features", "Class separability")] == saved["scores"]["methods"]["tsne"][
            "knn_accuracy"]


@pytest.mark.slow
def test_predict_gives_every_modern_models_p_all_as_the_study_did(modern_study):
    root, name = modern_study
    info = json.loads((Path(root) / name / "study.json").read_text())
    preds = pd.read_csv(Path(root) / name / "models" / MODERN[0] / "predictions.csv")
    cell = Path(info["data"]["path"]) / preds["path"][0]
    r = cli("predict", "--study", name, "--artifacts", root, "--prepare", "off", cell)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.splitlines()[0])
    assert set(line["predictions"]) == set(MODERN)
    for key in MODERN:
        saved = pd.read_csv(Path(root) / name / "models" / key / "predictions.csv")["prob_all"][0]
        assert line["predictions"][key] == pytest.approx(saved, abs=1e-4)
