"""The study report (`python -m cnmc_core report`, issue 17): one self-contained HTML file whose numbers are
metrics.json's, with every section, plotly.js embedded once, nothing fetched from elsewhere, and every text from
a (possibly hostile) study folder escaped. The real-Chromium check is in test_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from cnmc_core.cli import main
from cnmc_core.dashboard.report import SECTIONS
from cnmc_core.report import Cell, Document

from .helpers import parse_report as parse

PLOTLY_JS = "* plotly.js v"  # the banner at the top of the bundled plotly.min.js
HOSTILE = "<script>alert('x')</script>"


def report(root, name: str, out: Path, capsys) -> str:
    code = main(["report", "--study", name, "--artifacts", str(root), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote {out}" in captured.out
    return out.read_text(encoding="utf-8")


# ---- the document alone (fast: nothing trained) ------------------------------------------------------

def test_the_document_escapes_every_text_and_embeds_plotly_once():
    doc = Document(f"Study {HOSTILE}")
    doc.section("The <b>study</b>", "study")
    doc.notice(HOSTILE, "warning", title=HOSTILE, top=True)
    doc.facts({HOSTILE: '"><img src=x onerror=alert(1)>'})
    doc.table([HOSTILE, "n"], [[HOSTILE, Cell("0.500", 0.5, below=HOSTILE)]], row_ids=[f'x" onmouseover="{HOSTILE}'])
    for _ in range(3):
        doc.figure(go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name=HOSTILE)), caption=HOSTILE)
    doc.end_section()
    page = doc.render()
    assert "<script>alert" not in page and "<img src=x" not in page and 'onmouseover="<' not in page
    assert page.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 6
    assert page.count(PLOTLY_JS) == 1 and page.count("Plotly.newPlot(") == 3
    assert parse(page).links == ["#study"]  # the contents' anchor; nothing else is linked or loaded
    with pytest.raises(ValueError, match="anchor"):
        doc.section("x", '"><script>')


def test_a_missing_study_is_one_line_and_exit_2(tmp_path, capsys):
    for argv, said in (
        (["--study", "nope"], "error: no study 'nope' under"),
        (["--study", "<script>"], "error: study name '<script>' is not allowed"),
        (["--study", "nope", "--out", "report.txt"], "error: --out 'report.txt' must end in .html"),
    ):
        assert main(["report", "--artifacts", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # nothing written


# ---- on the tiny trained study -------------------------------------------------------------------------

def test_the_report_holds_every_section_and_the_numbers_of_metrics_json(tiny_study, tmp_path, capsys):
    root, name = tiny_study
    page = report(root, name, tmp_path / "tiny.html", capsys)
    cells = parse(page)
    assert [h.strip() for h in cells.h2] == list(SECTIONS.values())
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
    labels = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1",
              "specificity": "Specificity", "roc_auc": "ROC AUC", "f1_weighted": "Weighted F1", "ece": "ECE"}
    study = Path(root) / name
    for key in ("vgg16", "efficientnet_b0", "ensemble"):
        metrics = json.loads((study / "models" / key / "metrics.json").read_text())
        for metric, label in labels.items():
            row = (f"{key}|ours", label)
            assert cells.values[row] == metrics[metric], (key, metric)  # the very number, read back
            shown = cells.texts[row]
            assert shown.startswith(f"{metrics[metric]:.3f}")
            if metric in metrics.get("ci95", {}):
                low, high = metrics["ci95"][metric]
                assert f"95%: {low:.3f}–{high:.3f}" in shown
        tn_fp, fn_tp = metrics["confusion_matrix"]
        assert [cells.values[(f"{key}|matrix", c)] for c in ("TN (HEM called HEM)", "FP (HEM called ALL)",
                "FN (ALL called HEM)", "TP (ALL called ALL)")] == [*tn_fp, *fn_tp]
    for key in ("vgg16", "efficientnet_b0"):  # the feature-space maps the study saved, with their two numbers
        saved = json.loads((study / "models" / key / "projection.json").read_text())["scores"]["methods"]["tsne"]
        assert cells.values[(f"{key}|features", "Class separability")] == saved["knn_accuracy"]
        assert cells.values[(f"{key}|features", "Patient clustering")] == saved["same_subject_share_map"]
    assert cells.values[("vgg16|paper", "Accuracy")] == 0.7046  # the paper's Table I row, and its caveat
    assert "The paper&#x27;s rows are copied from its Table I" in page
    assert "Research use only, not for diagnosis." in page and "Synthetic demo data." in page
    assert page.count(PLOTLY_JS) == 1 and page.count("Plotly.newPlot(") >= 12
    assert page.count('src="data:image/jpeg;base64,') >= 12  # the gallery's cells and overlays
    third_party = [link for link in cells.links if not link.startswith(("data:", "#"))]
    assert third_party == []
    outside_scripts = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert "http://" not in outside_scripts and "https://" not in outside_scripts and "<link" not in outside_scripts


def test_hostile_study_values_are_escaped_and_nothing_outside_is_read(tiny_study, tmp_path, capsys):
    root, name = tiny_study
    shared = tmp_path / "shared"
    shutil.copytree(Path(root) / name, shared / name, symlinks=True)
    study = shared / name
    info = json.loads((study / "study.json").read_text())
    info["data"]["path"] = HOSTILE
    info["status"] = '"><img src=x onerror=alert(1)>'
    info["versions"] = {HOSTILE: HOSTILE}
    (study / "study.json").write_text(json.dumps(info))
    index = json.loads((study / "gallery" / "index.json").read_text())
    index["cells"][0]["subject"] = HOSTILE
    (study / "gallery" / "index.json").write_text(json.dumps(index))
    for key in ("vgg16", "efficientnet_b0", "ensemble"):  # the hard-patients chart shows subjects as labels
        subjects = pd.read_csv(study / "models" / key / "subjects.csv", dtype={"subject": str})
        subjects.loc[0, "subject"] = HOSTILE
        subjects.to_csv(study / "models" / key / "subjects.csv", index=False)
    outside = tmp_path / "private.png"  # a gallery image that leads out of the study is not read
    shutil.copy(study / "gallery" / "cells" / f"{index['cells'][1]['id']}.png", outside)
    (study / "gallery" / "cells" / f"{index['cells'][1]['id']}.png").unlink()
    (study / "gallery" / "cells" / f"{index['cells'][1]['id']}.png").symlink_to(outside)

    page = report(shared, name, tmp_path / "hostile.html", capsys)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # shown, as text
    assert "the cell (image not available)" in page

    info["models"] = [*info["models"], HOSTILE]  # a model key that is not one: the study is refused, in one line
    (study / "study.json").write_text(json.dumps(info))
    assert main(["report", "--study", name, "--artifacts", str(shared), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "which is not a model key" in err
    assert not (tmp_path / "x.html").exists()
