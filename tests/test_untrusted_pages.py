"""The dashboard treats a shared study (and the link) as input from someone else (issue 12), headless
(AppTest) on copies of the tiny trained study:

- text from the link or from a study is shown literally: no link, image, colour or math is rendered;
- one broken model is listed as not shown, and the rest of each page works;
- cell images come only from the study's own gallery files or from a data folder this machine trusts;
- any number of presses of the demo button start one build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cnmc_core.dashboard import base, demo_build, gallery_view, thumbnails
from cnmc_core.store import DATA_ROOTS_ENV, demo_build_dir

from .helpers import open_app, texts

LINK_PAYLOADS = ["[Click](http://127.0.0.1:9/phish)", "![x](http://127.0.0.1:9/t.png)", ":red[x]", "$\\huge x$"]
MARKUP = ("](http", ":red[", "$\\huge")  # what would render as a link, an image, colour or math
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def outside_code_spans(text: str) -> str:
    return CODE_SPAN.sub("", text)


def shown_markdown(at) -> list[str]:
    """Every element whose text Streamlit renders as Markdown."""
    kinds = ("markdown", "caption", "warning", "info", "error", "success", "subheader", "header", "title")
    return [e.value for kind in kinds for e in at.get(kind)]


def copy_study(tiny_study, root: Path, name: str = "tiny") -> Path:
    source, study = tiny_study
    shutil.copytree(Path(source) / study, root / name, ignore=shutil.ignore_patterns("model.keras", ".lock"))
    return root / name


def open_page(page: str, study: str | None = None):
    return open_app(page, query={"study": study} if study else None)


# ---- text from the link and from a study ----------------------------------------------------------

@pytest.mark.parametrize("payload", LINK_PAYLOADS)
def test_a_study_name_in_the_link_is_shown_as_literal_text(tiny_study, monkeypatch, payload):
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tiny_study[0]))
    at = open_app(query={"study": payload})
    (warning,) = [w.value for w in at.warning if "The link asks for study" in w.value]
    assert f"`{payload}`" in warning and "showing `tiny`" in warning  # inside one code span
    for text in shown_markdown(at):
        assert not any(mark in outside_code_spans(text) for mark in MARKUP), text
    assert not any(m.proto.allow_html for m in at.markdown)


def test_model_keys_and_reasons_from_a_study_are_shown_as_literal_text(tiny_study, tmp_path, monkeypatch):
    copy_study(tiny_study, tmp_path, "tiny")
    hostile = copy_study(tiny_study, tmp_path, "hostile")
    info = json.loads((hostile / "study.json").read_text())
    models = [*info["models"], LINK_PAYLOADS[0], "../../outside/m"]
    (hostile / "study.json").write_text(json.dumps({**info, "models": models}))
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    at = open_page("overview", "tiny")
    cannot = next(w.value for w in at.warning if w.value.startswith("Cannot read"))
    assert "`hostile`" in cannot and "http://127.0.0.1:9/phish" in cannot
    for text in shown_markdown(at):
        assert not any(mark in outside_code_spans(text) for mark in MARKUP), text


# ---- one broken model never takes a page down ----------------------------------------------------

def _text_in_prob_all(folder: Path) -> None:
    p = pd.read_csv(folder / "predictions.csv")
    p["prob_all"] = p["prob_all"].astype(object)
    p.loc[0, "prob_all"] = "could not be a number"
    p.to_csv(folder / "predictions.csv", index=False)


def _truncated(folder: Path) -> None:
    lines = (folder / "predictions.csv").read_text().splitlines()
    (folder / "predictions.csv").write_text("\n".join(lines[:3] + [lines[3].split(",")[0]]))  # cut inside a row


CORRUPTIONS = {
    "text in prob_all": _text_in_prob_all,
    "no prob_all column": lambda f: pd.read_csv(f / "predictions.csv").drop(columns="prob_all").to_csv(
        f / "predictions.csv", index=False),
    "header only": lambda f: (f / "predictions.csv").write_text("path,subject,label,prob_all\n"),
    "truncated predictions": _truncated,
    "metrics.json a list": lambda f: (f / "metrics.json").write_text("[1, 2, 3]"),
    "string confusion matrix": lambda f: (f / "metrics.json").write_text(json.dumps(
        {**json.loads((f / "metrics.json").read_text()), "confusion_matrix": "[[1, 2], [3, 4]]"})),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_one_broken_model_is_listed_and_every_page_still_works(tiny_study, tmp_path, monkeypatch, corruption):
    study = copy_study(tiny_study, tmp_path)
    CORRUPTIONS[corruption](study / "models" / "efficientnet_b0")
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    for page in ("overview", "confusion", "curves", "compare"):
        at = open_page(page)
        assert not at.error, (page, texts(at.error))
        not_shown = [w.value for w in at.warning if w.value.startswith("Not shown: ")]
        assert len(not_shown) == 1, (page, not_shown)
        assert "`EfficientNetB0`: `tiny/models/efficientnet_b0/" in not_shown[0], (page, not_shown)
        if page == "overview":
            ours = at.dataframe[0].value  # this study's rows (the paper's are apart)
            assert list(ours["Model"]) == ["VGG16", base.ENSEMBLE_NAME]  # the others are shown
        if page == "confusion":
            assert [spec.proto.spec for spec in at.get("plotly_chart")]  # VGG16's matrix and the ensemble's
        if page == "compare":
            assert at.title[0].value == "Compare" and at.get("plotly_chart")


# ---- cell images only from trusted places ----------------------------------------------------------

def red_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), (255, 0, 0), np.uint8)).save(path)
    return path


def test_thumbnails_come_only_from_a_trusted_data_folder(tiny_study, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    root = tmp_path / "artifacts"
    study = copy_study(tiny_study, root)
    data_dir = Path(json.loads((study / "study.json").read_text())["data"]["path"])
    image = pd.read_csv(study / "models" / "vgg16" / "predictions.csv")["path"][0]
    stamp = base.stamp(str(root), "tiny")

    # A copied (shared) study: the folder its study.json names is a hint, not a permission.
    assert (data_dir / image).is_file() and thumbnails.thumbnail(stamp, image) is None
    assert not thumbnails.image_source(base.load_study(str(root), "tiny")).available
    mine = tmp_path / "my copy of the data"  # the local user says where their copy of the data is
    (mine / image).parent.mkdir(parents=True)
    shutil.copy(data_dir / image, mine / image)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(mine))
    assert thumbnails.thumbnail(stamp, image)[:8] == b"\x89PNG\r\n\x1a\n"

    # A study that names "/" as its data folder and an image elsewhere on the disk gets nothing.
    secret = red_png(tmp_path / "elsewhere" / "secret.png")
    info = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**info, "data": {**info["data"], "path": "/"}}))
    stamp = base.stamp(str(root), "tiny")
    assert thumbnails.thumbnail(stamp, str(secret.relative_to("/"))) is None
    # A file in the trusted folder that is a symlink to an image outside it is not followed.
    (mine / "link_out.png").symlink_to(secret)
    assert thumbnails.thumbnail(stamp, "link_out.png") is None
    assert thumbnails.thumbnail(stamp, image) is not None  # the trusted copy still serves the study's own rows


def test_the_confusion_page_shows_no_cell_of_an_untrusted_copy_and_says_how(tiny_study, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    copy_study(tiny_study, tmp_path)
    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    at = open_page("confusion")
    at.selectbox(key="_w_quadrant").set_value("tn").run()
    assert not at.error and not at.get("image")
    assert DATA_ROOTS_ENV in texts(at.info) and "cannot be shown" in texts(at.info)
    assert at.dataframe[0].value.columns.tolist() == ["image", "subject", "prob_all"]  # the list instead


def test_a_gallery_image_that_is_a_symlink_is_not_shown(tiny_study, tmp_path, monkeypatch):
    study = copy_study(tiny_study, tmp_path)
    index = json.loads((study / "gallery" / "index.json").read_text())
    first, second = index["cells"][0]["id"], index["cells"][1]["id"]
    outside = red_png(tmp_path.parent / f"{tmp_path.name}_outside.png")
    (study / "gallery" / "cells" / f"{first}.png").unlink()
    (study / "gallery" / "cells" / f"{first}.png").symlink_to(outside)
    (study / "gallery" / "cells" / f"{second}.png").unlink()  # inside the study, still not a plain file
    third = study / "gallery" / "cells" / f"{index['cells'][2]['id']}.png"
    (study / "gallery" / "cells" / f"{second}.png").symlink_to(third)

    shown = gallery_view.load_gallery(str(tmp_path), "tiny")
    assert shown.image(first) is None and shown.overlay(first, shown.models[0]) is None
    assert shown.image(second) is None
    assert shown.image(index["cells"][2]["id"]).size == (224, 224)  # a plain file of the study is shown

    monkeypatch.setenv("CNMC_ARTIFACTS", str(tmp_path))
    at = open_page("gradcam")
    at.selectbox(key="_w_gallery_cell").set_value(first).run()
    assert not at.exception and not at.error
    assert "the cell: the gallery file is missing, broken, or not a plain file of the study" in texts(at.caption)
    assert "the cell" not in [c for img in at.get("image") for c in img.captions]


# ---- the demo button ------------------------------------------------------------------------------

def test_eight_presses_at_once_start_one_build(tmp_path, monkeypatch):
    marker = tmp_path / "started.txt"
    script = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(2)"
    monkeypatch.setattr(demo_build, "demo_command",
                        lambda root, progress, extra=(): [sys.executable, "-c", script, str(marker)])
    go, states = threading.Barrier(8), []

    def press():
        go.wait()
        states.append(demo_build.start_demo_build(str(tmp_path)).state)

    threads = [threading.Thread(target=press) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert states == ["running"] * 8
    deadline = time.monotonic() + 20
    while demo_build.demo_build_status(str(tmp_path)).state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    started = marker.read_text().split()
    assert len(started) == 1, f"{len(started)} builds started: {started}"
    assert int((demo_build_dir(str(tmp_path)) / "pid").read_text()) == int(started[0])
    assert os.getpid() != int(started[0])
