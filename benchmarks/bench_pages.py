"""Page render time of the dashboard in a real browser (headless Chromium driven by Playwright).

    python benchmarks/bench_pages.py [--artifacts DIR] [--runs 5] [--pages overview,confusion,...]

Starts `streamlit run app.py` on a free port against the artifacts root (default: $CNMC_ARTIFACTS,
else ./artifacts), opens each page once cold (first visit: the server reads the artifacts, the
browser loads the app's scripts), then `--runs` times warm (caches filled, a fresh browser tab and
Streamlit session each time), and prints seconds from navigation until the page is fully drawn:
the script run finished, no placeholder skeleton left, every table, chart and image rendered.
The target: the Overview of the demo study in under 2 s warm on a 2-core machine.

Uses Debian's /usr/bin/chromium (no browser download). The browser tests reuse these helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGES = {  # url path -> title, as app.py lists them ("" is the home page, the Overview)
    "": "Overview", "confusion": "Confusion matrices", "training": "Training curves",
    "curves": "Curves and calibration", "compare": "Compare", "gradcam": "Grad-CAM gallery",
    "classify": "Classify a cell",
    "dataset": "Dataset", "about": "About",
}
# True when the page is completely drawn: Streamlit's script run is over, no skeleton placeholder
# is left, and every dataframe, plotly chart and image inside the main area has rendered.
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


def render_seconds(context, url: str) -> float:
    """Seconds from navigation to a fully drawn page, in a fresh tab (a new Streamlit session)."""
    page = context.new_page()
    try:
        start = time.perf_counter()
        page.goto(url)
        wait_rendered(page)
        return time.perf_counter() - start
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=os.environ.get("CNMC_ARTIFACTS") or str(ROOT / "artifacts"))
    ap.add_argument("--study", help="study to open (default: the newest)")
    ap.add_argument("--runs", type=int, default=5, help="warm visits per page (default 5)")
    ap.add_argument("--pages", default=",".join(p or "overview" for p in PAGES), help="comma-separated (default: all)")
    ap.add_argument("--budget", type=float, default=2.0, help="warm Overview target in seconds (default 2.0)")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing; install it with `apt-get install -y chromium`", file=sys.stderr)
        return 2
    paths = ["" if p == "overview" else p for p in args.pages.split(",")]
    query = f"?study={args.study}" if args.study else ""
    rows = []
    with serve(args.artifacts) as url, browser() as b:
        context = b.new_context(viewport={"width": 1400, "height": 1000})
        for path in paths:
            cold = render_seconds(context, f"{url}/{path}{query}")
            warm = [render_seconds(context, f"{url}/{path}{query}") for _ in range(args.runs)]
            rows.append((PAGES.get(path, path), cold, statistics.median(warm), max(warm)))
    print(f"artifacts {args.artifacts}, {os.cpu_count()} CPU cores, {args.runs} warm runs per page")
    print(f"{'page':<24}{'cold s':>8}{'warm median s':>15}{'warm max s':>12}")
    for name, cold, median, worst in rows:
        print(f"{name:<24}{cold:>8.2f}{median:>15.2f}{worst:>12.2f}")
    overview = next((r for r in rows if r[0] == "Overview"), None)
    if overview:
        ok = overview[2] < args.budget
        print(f"Overview warm median {overview[2]:.2f} s: {'within' if ok else 'OVER'} the {args.budget:.1f} s budget")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
