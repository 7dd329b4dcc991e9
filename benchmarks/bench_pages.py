"""Page render time of the dashboard in a real browser (headless Chromium driven by Playwright).

    python benchmarks/bench_pages.py [--artifacts DIR] [--runs 5] [--pages overview,confusion,...]

Starts `streamlit run app.py` on a free port against the artifacts root (default: $CNMC_ARTIFACTS,
else ./artifacts), opens each page once cold (first visit: the server reads the artifacts, the
browser loads the app's scripts), then `--runs` times warm (caches filled, a fresh browser tab and
Streamlit session each time), and prints seconds from navigation until the page is fully drawn:
the script run finished, no placeholder skeleton left, every table, chart and image rendered.
The target: the Overview of the demo study in under 2 s warm on a 2-core machine.

Uses Debian's /usr/bin/chromium (no browser download), through the launcher in tests/helpers.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import CHROMIUM, PAGE_TITLES, browser, serve, wait_rendered  # noqa: E402


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
    ap.add_argument("--pages", default=",".join(p or "overview" for p in PAGE_TITLES),
                    help="comma-separated (default: all)")
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
            rows.append((PAGE_TITLES.get(path, path), cold, statistics.median(warm), max(warm)))
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
