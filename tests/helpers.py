"""Helpers the test modules share (imported from here, never from another test module).

The dashboard's: open the app headless (streamlit.testing AppTest) on a page, read what its elements
say, find a study's first validation image; and the marks of a module that drives a real Chromium.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from benchmarks.bench_pages import CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "overview": "views/1_Overview.py",
    "confusion": "views/2_Confusion_matrices.py",
    "training": "views/3_Training_curves.py",
    "curves": "views/4_Curves_and_calibration.py",
    "gradcam": "views/5_Grad-CAM_gallery.py",
    "classify": "views/6_Classify_a_cell.py",
    "dataset": "views/7_Dataset.py",
    "about": "views/8_About.py",
    "compare": "views/9_Compare.py",
}


def open_app(page: str = "overview", query: dict | None = None) -> AppTest:
    """app.py (the entry point, as `streamlit run` starts it), then `page` through its navigation."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.query_params.update(query or {})
    at.run()
    if page != "overview":
        at.switch_page(PAGES.get(page, page)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


def a_cell_file(root: Path, study: str) -> Path:
    """The first validation image of the study's VGG16 predictions, in the folder the study was trained from."""
    data_dir = json.loads((Path(root) / study / "study.json").read_text())["data"]["path"]
    return Path(data_dir) / pd.read_csv(Path(root) / study / "models" / "vgg16" / "predictions.csv")["path"][0]


def chromium_marks(playwright_api: str) -> list:
    """The `pytestmark` of a module that drives Chromium through Playwright (`playwright_api`: "sync_api" or
    "async_api"): marked `browser`, skipped where Chromium or Playwright is missing, except in CI (which
    installs both), where a missing Chromium fails."""
    if os.environ.get("CI") and not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing in CI: scripts/test.sh should have installed it")
    pytest.importorskip(f"playwright.{playwright_api}",
                        reason="playwright (Python) is not installed: pip install -r requirements-dev.txt")
    missing = f"{CHROMIUM} is missing: `apt-get install -y chromium`"
    return [pytest.mark.browser, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=missing)]


def cli(*args, env=None, check=False, timeout=900) -> subprocess.CompletedProcess:
    """`python -m cnmc_core ARGS` in a process of its own, with this environment's Python; output as text."""
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnmc_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=e, check=check, timeout=timeout)
