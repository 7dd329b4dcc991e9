"""Hostile uploads on the Classify page, headless (AppTest, uploads through `at.file_uploader`), on the
tiny study: 200 uploads in a row in one session with the memory measured, a file at the upload size
limit, and file names with path separators, HTML and unicode, shown as text and never written to disk.
(Files that are not images, truncated or huge are in tests/test_predict_inputs.py and test_pages_explain.py.)
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from .helpers import ROOT, a_cell_file, memory_mb, open_app, texts

pytestmark = pytest.mark.slow  # they share the trained tiny study

UPLOADS = int(os.environ.get("HOSTILE_UPLOADS", 200))
WARM = 100  # uploads before memory is measured (the page's result cache holds 64: full by then)
GROWTH_LIMIT_MB = 40  # RSS growth allowed from upload WARM to UPLOADS (measured: see docs/reliability.md)
HOSTILE_NAMES = [
    "../../etc/passwd.png",
    "cell<script>alert(1)</script>.png",
    "ünïcödé 細胞.bmp",
    "**bold** [link](javascript:alert(1)) :red[x] $x^2$ `tick`.png",
    "cell\u202egnp.bmp",  # a right-to-left override that would disguise the extension
]


@pytest.fixture
def study(tiny_study, monkeypatch):
    root, name = tiny_study
    monkeypatch.setenv("CNMC_ARTIFACTS", str(root))
    return Path(root), name


def bmp(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="BMP")
    return buf.getvalue()


def a_cell(root: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(a_cell_file(root, name)).convert("RGB"))


def upload_many(root: Path, name: str, uploads: int) -> dict:
    """`uploads` different cells through the Classify page in one AppTest session; the process's RSS after
    some of them, and what the page shows after the last. Runs in a process of its own (`python -m
    tests.test_hostile ROOT NAME N`, from the test below): in a pytest worker the RSS also holds what earlier
    tests left to the allocator, which moved it by more than the bound in one CI run (45 MB, while alone the
    same uploads grew it by 3 MB)."""
    cell = a_cell(root, name)
    at = open_app("classify")
    at.selectbox(key="_w_cam").set_value("off").run()  # heatmaps off: 200 Grad-CAM runs would take 5 min on 2 cores
    rss, first = {}, []
    for i in range(uploads):
        frame = cell.copy()
        frame[0, 0] = (i % 256, i // 256, 7)  # every upload a different file: no cache hit hides the work
        at.file_uploader(key="upload").set_value((f"cell_{i}.bmp", bmp(frame), "image/bmp")).run()
        if i == 0:
            first = [str(e.value) for e in [*at.exception, *at.error]]
        if i + 1 in (1, 50, WARM, 150, uploads):
            gc.collect()
            rss[i + 1] = memory_mb(os.getpid())["VmRSS"]
    return {"rss": rss, "first_upload_problems": first,
            "last_upload_problems": [str(e.value) for e in [*at.exception, *at.error]],
            "metrics": [m.value for m in at.metric], "headers": texts(at.header)}


def test_two_hundred_uploads_in_one_session_keep_memory_bounded(study):
    root, name = study
    run = subprocess.run([sys.executable, "-m", "tests.test_hostile", str(root), name, str(UPLOADS)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    rss = {int(k): v for k, v in seen["rss"].items()}
    print("RSS MB after upload n:", {k: round(v) for k, v in rss.items()})
    assert seen["first_upload_problems"] == []
    # The last upload is still classified correctly and shown, with no error.
    assert seen["last_upload_problems"] == []
    assert len(seen["metrics"]) == 1 and seen["metrics"][0] in ("ALL", "HEM", "Inconclusive")
    assert f"cell_{UPLOADS - 1}.bmp" in seen["headers"]
    growth = rss[UPLOADS] - rss[WARM]
    assert growth < GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MB from upload {WARM} to {UPLOADS}: {rss}"


def upload_limit_bytes() -> int:
    with open(ROOT / ".streamlit" / "config.toml", "rb") as f:
        return int(tomllib.load(f)["server"]["maxUploadSize"]) * 1024 * 1024


def test_a_valid_image_exactly_at_the_upload_limit_is_classified(study):
    root, name = study
    limit = upload_limit_bytes()
    side = 2600  # 24-bit BMP rows are padded to 4 bytes; grow the frame until it just fits under the limit
    while 54 + (side + 1) * (((side + 1) * 3 + 3) // 4 * 4) <= limit:
        side += 1
    big = bmp(np.asarray(Image.fromarray(a_cell(root, name)).resize((side, side), Image.Resampling.BILINEAR)))
    content = big + b"\0" * (limit - len(big))  # trailing bytes after the pixels, as some writers leave
    assert len(content) == limit

    at = open_app("classify")
    at.file_uploader(key="upload").set_value(("big_cell.bmp", content, "image/bmp")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.metric) == 1 and at.metric[0].value in ("ALL", "HEM", "Inconclusive")
    assert "of 2 models" in texts(at.markdown)


def test_hostile_file_names_are_shown_as_text_and_nothing_is_written(study, tmp_path, monkeypatch):
    root, name = study
    monkeypatch.chdir(tmp_path)  # a name taken as a path would land here (or under ../../)
    before = sorted(p for p in Path(root).rglob("*"))
    cell = bmp(a_cell(root, name))
    at = open_app("classify")
    files = [(n, cell, "image/png") for n in HOSTILE_NAMES]
    files.append(("evil<img src=x onerror=alert(1)>.png", b"no image", "image/png"))
    at.file_uploader(key="upload").set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]

    # Each name is one code span: Markdown shows it literally (no HTML, link, emoji, colour or math).
    headings = [h.value for h in at.header if h.value != "All files"]
    assert headings == ["`../../etc/passwd.png`", "`cell<script>alert(1)</script>.png`", "`ünïcödé 細胞.bmp`",
                        "``**bold** [link](javascript:alert(1)) :red[x] $x^2$ `tick`.png``", "`cell\ufffdgnp.bmp`",
                        "`evil<img src=x onerror=alert(1)>.png`"]
    assert [e.value for e in at.error] == [
        "`evil<img src=x onerror=alert(1)>.png` cannot be classified: "
        "not an image file this tool can open (use BMP, PNG, JPEG or TIFF)"]
    assert not any(m.proto.allow_html for m in at.markdown)  # no element of the page lets raw HTML through
    # The table keeps the names as they came (text cells, not Markdown); the CSV cannot start a formula.
    assert list(at.dataframe[0].value["file"]) == [n for n, _, _ in files]
    assert len(at.metric) == len(HOSTILE_NAMES)

    # Nothing written: not in the working folder, not beside the study, not at the path the name points to.
    assert list(tmp_path.rglob("*")) == []
    assert sorted(p for p in Path(root).rglob("*")) == before
    assert not (tmp_path.parent.parent / "etc" / "passwd.png").exists()


def test_csv_download_cannot_run_spreadsheet_formulas():
    import pandas as pd

    from views import _ui as ui

    frame = pd.DataFrame({"file": ["=HYPERLINK(\"http://x\")", "+1.bmp", "cell.bmp"], "p": [0.1, 0.2, 0.3]})
    safe = ui.csv_safe(frame)
    assert list(safe["file"]) == ["'=HYPERLINK(\"http://x\")", "'+1.bmp", "cell.bmp"]
    assert list(safe["p"]) == [0.1, 0.2, 0.3]
    assert ui.code("a`b") == "``a`b``" and ui.code("`x") == "`` `x ``" and ui.code("a\nb") == "`a\ufffdb`"


if __name__ == "__main__":  # the 200 uploads' own process (see upload_many)
    print(json.dumps(upload_many(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
