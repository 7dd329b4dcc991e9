"""Helpers the test modules share (imported from here, never from another test module).

The dashboard's: open the app headless (streamlit.testing AppTest) on a page, read what its elements
say, find a study's first validation image; and the marks of a module that drives a real Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cnmc_core.images import preprocess, resize_frame

ROOT = Path(__file__).resolve().parents[1]

# The real-Chromium launcher, shared by the browser tests and benchmarks/ (bench_pages.py, load_users.py).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGE_TITLES = {  # url path -> title, as app.py lists them ("" is the home page, the Overview)
    "": "Overview", "confusion": "Confusion matrices", "training": "Training curves",
    "curves": "Curves and calibration", "compare": "Compare", "feature-space": "Feature space",
    "gradcam": "Grad-CAM gallery", "classify": "Classify a cell",
    "dataset": "Dataset", "about": "About",
}
# True when the page is completely drawn: Streamlit's script run is over, no skeleton placeholder
# is left, and every dataframe, chart (plotly, or Vega-Lite: Altair) and image inside the main area has rendered.
RENDERED_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main || !main.querySelector('h1') || main.querySelector('[data-testid="stSkeleton"]')) return false;
  const shown = (el) => !el.closest('details:not([open])');  // a closed expander draws nothing
  for (const df of main.querySelectorAll('[data-testid="stDataFrame"]'))
    if (shown(df) && !df.querySelector('[data-testid="data-grid-canvas"]')) return false;
  for (const chart of main.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (shown(chart) && !chart.querySelector('.main-svg')) return false;
  for (const chart of main.querySelectorAll('[data-testid="stVegaLiteChart"]'))
    if (shown(chart) && !chart.querySelector('.marks')) return false;
  for (const img of main.querySelectorAll('img')) if (!img.complete) return false;
  return true;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(artifacts: str | Path, port: int | None = None, timeout: float = 60.0,
           launcher: tuple[str, ...] = ("-m", "streamlit")):
    """`streamlit run app.py` on 127.0.0.1 against `artifacts`; yields (url, process, log path), stops it after.

    `launcher` is what follows the Python executable to reach Streamlit's CLI (load_users.py
    passes a `-c` script that also turns on the library's INFO logging).
    """
    port = port or free_port()
    env = {**os.environ, "CNMC_ARTIFACTS": str(artifacts), "PYTHONUNBUFFERED": "1"}
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"streamlit-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, *launcher, "run", "app.py", "--server.headless", "true", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s; see {log_path}")
            time.sleep(0.3)
        yield url, proc, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def serve(artifacts: str | Path, port: int | None = None, timeout: float = 60.0):
    """`streamlit run app.py` against `artifacts` on a free port; yields the base URL."""
    with server(artifacts, port, timeout) as (url, _, _):
        yield url


@contextlib.contextmanager
def browser():
    """Headless Debian Chromium through Playwright; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_rendered(page, timeout_ms: float = 60_000) -> None:
    page.wait_for_function(RENDERED_JS, timeout=timeout_ms, polling=50)


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
    "feature-space": "views/10_Feature_space.py",
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


def vega_layers(at: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """Each layer of every Vega-Lite (Altair) chart on the page, with the rows it draws (Streamlit sends each
    dataset apart from the spec, as Arrow)."""
    import pyarrow as pa

    out = []
    for chart in at.get("vega_lite_chart"):
        data = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets}
        spec = json.loads(chart.proto.spec)
        for layer in spec.get("layer", [spec]):
            name = layer.get("data", spec.get("data", {})).get("name")
            out.append((layer, data.get(name, pd.DataFrame())))
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak) of a process in MB (Linux /proc)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


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


def cli_here(*args, env=None) -> subprocess.CompletedProcess:
    """`python -m cnmc_core ARGS` run in this process (`cli.main`), for commands that must stop at their arguments:
    the same exit status, stdout and stderr as `cli` gives (log lines included, as the command's own process writes
    them to stderr), without a new Python process's 2 s of imports. A command that goes on to load models or train
    belongs in `cli`."""
    import io
    import logging

    from cnmc_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler, level = logging.StreamHandler(err), root.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved_env = dict(os.environ)
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["cnmc_core", *map(str, args)], code, out.getvalue(), err.getvalue())


class ReportCells(HTMLParser):
    """(row id, column) -> data-value of every table cell that has one; every src/href outside <script>."""

    def __init__(self):
        super().__init__()
        self.values: dict[tuple[str, str], float] = {}
        self.texts: dict[tuple[str, str], str] = {}
        self.links: list[str] = []
        self.h2: list[str] = []
        self._row, self._cell, self._in_h2 = None, None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href", "action", "srcset") and v is not None]
        if tag == "script" and "src" in a:
            self.links.append(a["src"])
        if tag == "tr":
            self._row = a.get("data-row")
        if tag == "td" and self._row:
            self._cell = (self._row, a.get("data-col"))
            self.texts[self._cell] = ""
            if "data-value" in a:
                self.values[self._cell] = float(a["data-value"])
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data):
        if self._cell:
            self.texts[self._cell] += data
        if self._in_h2:
            self.h2.append(data)


def parse_report(page: str) -> ReportCells:
    """A study report's table cells, links and section headings (tests of `python -m cnmc_core report`)."""
    cells = ReportCells()
    cells.feed(page)
    return cells


def disc_image(width: int, height: int, centre: tuple[int, int], radius: int) -> Image.Image:
    """A purple disc (a 'cell') at `centre` (x, y) on black, RGB."""
    yy, xx = np.mgrid[:height, :width]
    img = np.zeros((height, width, 3), np.uint8)
    img[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < radius**2] = (150, 90, 200)
    return Image.fromarray(img)


def explainer_inputs(explainer, imgs) -> np.ndarray:
    """Decoded frames -> an explain.Explainer's preprocessed batch (n, size, size, 3)."""
    return preprocess(np.stack([resize_frame(img, explainer.size) for img in imgs]), explainer.preprocess_mode)
