"""Models warm before the first upload (issue 16), in a real headless Chromium against `streamlit run app.py`.

    python benchmarks/bench_warm.py [--artifacts DIR] [--study demo] [--parts overview,first,eight,gc]
                                    [--runs 5] [--read 20] [--upload-at 20]

Three measurements on fresh servers (127.0.0.1 only), so every one starts cold, and one in this process:

- overview: the Overview's first drawing (navigation to fully drawn, in a new browser context) on a server
  just started, `--runs` times with the background load on and `--runs` times with it off
  (CNMC_WARM_MODELS=0), alternating, so a busy machine slows both alike. Goal: medians within 10%.
- first: one user opens the dashboard (the Overview), reads it for `--read` seconds, follows the sidebar
  link to Classify a cell and drops a validation cell; seconds from the drop until the prediction and
  every model's Grad-CAM are drawn. Goal: under 3 s. The answer is checked against `Predictor` run here.
- eight: `load_users.py` with 8 sessions uploading together `--upload-at` seconds after the server first
  answered. Goal: each under 15 s.
- gc: in this process, one full `gc.collect()` and one `keras.backend.clear_session()` (what Streamlit runs
  after every script run) with TensorFlow imported and the study's models loaded, before and after
  `gc.freeze()` (what the dashboard's loader does; docs/dashboard.md, "Garbage collection"); then one
  validation cell through every model with Grad-CAM (the Classify page's two calls, warm: the predictions, then
  the heatmaps), median of 3, as it is and with a real `clear_session()` before each (what Streamlit did before
  the loader stopped it). `benchmarks/bench_gradcam.py` sets this against the path before explain.GradcamPass.

Prints one line per measurement and whether each goal is met; exit 0 when all measured goals are met.
Uses Debian's /usr/bin/chromium (no browser download).
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

from benchmarks import load_users  # noqa: E402
from cnmc_core import compiled  # noqa: E402
from tests.helpers import CHROMIUM, browser, wait_rendered  # noqa: E402

OVERVIEW_SLACK = 0.10  # the background load may slow the Overview's first drawing by at most 10%
FIRST_GOAL_S = 3.0
EIGHT_GOAL_S = 15.0
HEATMAP_CAPTION = "evidence for"  # each model's Grad-CAM caption on the Classify page


def overview_cold(artifacts: str, study: str, warm: bool) -> float:
    """Seconds from navigation to the Overview fully drawn, on a fresh server (models loading in the
    background when `warm`, not at all otherwise), in a fresh browser."""
    saved = os.environ.get("CNMC_WARM_MODELS")
    os.environ["CNMC_WARM_MODELS"] = "1" if warm else "0"
    try:
        with load_users.serve(artifacts) as (url, _, _), browser() as b:
            page = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            start = time.perf_counter()
            page.goto(f"{url}/?study={study}")
            wait_rendered(page, 120_000)
            return time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("CNMC_WARM_MODELS", None)
        else:
            os.environ["CNMC_WARM_MODELS"] = saved


def first_upload(artifacts: str, study: str, read: float) -> dict:
    """The user of goal (a); see the module docstring. Returns what was measured and shown."""
    cell, expected = load_users.pick_cells(artifacts, study, 1)[0]
    with load_users.serve(artifacts) as (url, _, log_path), browser() as b:
        page = b.new_context(viewport={"width": 1400, "height": 1200}).new_page()
        page.set_default_timeout(180_000)
        t0 = time.perf_counter()
        page.goto(f"{url}/?study={study}")
        wait_rendered(page, 180_000)
        overview = time.perf_counter() - t0
        page.wait_for_timeout(read * 1000)
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Classify a cell").click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
        wait_rendered(page, 180_000)
        line = next((t for t in page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
                     if "models" in t), "")
        start = time.perf_counter()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(cell))
        page.get_by_text(load_users.RESULT_LABEL).wait_for()
        n = len(expected["predictions"])  # one heatmap per model
        page.wait_for_function(
            f"""() => [...document.querySelectorAll('[data-testid="stImageCaption"]')]
                      .filter(e => e.innerText.includes({HEATMAP_CAPTION!r})).length >= {n}""",
            timeout=180_000, polling=50)
        wait_rendered(page, 180_000)
        seconds = time.perf_counter() - start
        metric = page.locator('[data-testid="stMetric"]').first
        shown = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
        log = log_path.read_text(errors="replace")
    ready = [ln for ln in log.splitlines() if "ready in" in ln]
    return {"overview": overview, "line": line, "seconds": seconds, "shown": shown, "expected": expected["label"],
            "correct": shown.lower() == str(expected["label"]).lower(), "ready": ready[-1] if ready else "",
            "loads": log.count(load_users.LOAD_LINE)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=os.environ.get("CNMC_ARTIFACTS") or str(ROOT / "artifacts"))
    ap.add_argument("--study", default="demo", help="the study (default: demo)")
    ap.add_argument("--parts", default="overview,first,eight", help="comma-separated: overview, first, eight")
    ap.add_argument("--runs", type=int, default=5, help="cold Overview drawings per setting (default 5)")
    ap.add_argument("--read", type=float, default=20.0, help="seconds the first user reads the Overview (default 20)")
    ap.add_argument("--upload-at", type=float, default=20.0,
                    help="seconds after the server started when the 8 users upload (default 20)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"overview", "first", "eight", "gc"}
    if unknown or not parts:
        print(f"error: --parts takes overview, first, eight, gc; got {args.parts!r}", file=sys.stderr)
        return 2
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing; install it with `apt-get install -y chromium`", file=sys.stderr)
        return 2
    print(f"artifacts {args.artifacts}, study {args.study}, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start; compiled-pass cache (the servers load from it): "
          f"{compiled.cache_root() or 'off'}")
    ok = True
    if "overview" in parts:
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.runs):
            for warm in (False, True):
                times[warm].append(overview_cold(args.artifacts, args.study, warm))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        within = on <= off * (1 + OVERVIEW_SLACK)
        ok &= within
        print(f"overview cold, background load off: median {off:.2f} s ({', '.join(f'{t:.2f}' for t in times[False])})")
        print(f"overview cold, background load on:  median {on:.2f} s ({', '.join(f'{t:.2f}' for t in times[True])})"
              f" -> {on / off - 1:+.1%}: {'within' if within else 'OVER'} the {OVERVIEW_SLACK:.0%} bound")
    if "first" in parts:
        r = first_upload(args.artifacts, args.study, args.read)
        met = r["seconds"] < FIRST_GOAL_S and r["correct"]
        ok &= met
        print(f"first user: Overview drawn in {r['overview']:.2f} s, read {args.read:g} s; Classify said "
              f"{r['line']!r}; drop to prediction + heatmaps {r['seconds']:.2f} s "
              f"({'under' if met else 'NOT under'} {FIRST_GOAL_S:g} s); shown {r['shown']}, expected {r['expected']}; "
              f"model loads {r['loads']}; server: {r['ready'].split(' ', 2)[-1] if r['ready'] else 'no ready line'}")
    if "eight" in parts:
        report = load_users.run(args.artifacts, args.study, sessions=8, timeout=300, upload_at=args.upload_at)
        times8 = [s.seconds for s in report.sessions if s.seconds is not None]
        met = len(times8) == 8 and max(times8) < EIGHT_GOAL_S and report.all_correct and report.loads == 1
        ok &= met
        print(f"eight users at {args.upload_at:g} s: " + ", ".join(f"{t:.1f}" for t in times8)
              + (f" s; max {max(times8):.1f} s" if times8 else "")
              + f" ({'each under' if met else 'NOT each under'} {EIGHT_GOAL_S:g} s); all correct: "
              f"{'yes' if report.all_correct else 'NO'}; model loads {report.loads}; peak server memory "
              f"{report.peak_mb:.0f} MB; the uploads went {report.uploaded_at:.1f} s after the server answered "
              f"(opening the 8 sessions first); the server's models ready "
              f"{report.models_ready_s if report.models_ready_s is not None else '?'} s after their load started"
              + "".join(f"; CPU, {c.line()}" for c in report.cpu))
        for s in report.sessions:
            if s.error:
                print(f"  {s.file}: {s.error}")
    if "gc" in parts:
        print("garbage collection, " + collection_seconds(args.artifacts, args.study))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0 if ok else 1


def collection_seconds(artifacts: str, study: str) -> str:
    """One line: gc.collect() and keras.backend.clear_session() seconds, as the loader leaves them and unfrozen."""
    import gc

    import keras

    from cnmc_core.dashboard import classify

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    predictor = classify.load_predictor(artifacts, study)
    gc.unfreeze()
    collect, clear = timed(gc.collect), timed(keras.backend.clear_session)
    gc.freeze()
    frozen_collect, frozen_clear = timed(gc.collect), timed(keras.backend.clear_session)
    classify.warm_up(predictor)
    cell, _ = load_users.pick_cells(artifacts, study, 1)[0]
    content = cell.read_bytes()

    def page_calls() -> None:  # views/6_Classify_a_cell.py: the predictions (drawn first), then the heatmaps
        upload = classify.classify_upload(predictor, content, cell.name, None, 480)
        classify.explain_upload(predictor, upload, classify.WARM_CAM)

    def upload(clear_first: bool) -> float:
        if clear_first:
            keras.backend.clear_session()
        return timed(page_calls)

    kept = statistics.median(upload(False) for _ in range(3))
    cleared = statistics.median(upload(True) for _ in range(3))
    return (f"{len(predictor.models)} models loaded: gc.collect() {collect:.3f} s, clear_session() {clear:.3f} s; "
            f"after gc.freeze(): {frozen_collect:.4f} s and {frozen_clear:.4f} s. One upload with Grad-CAM: "
            f"{kept:.2f} s, {cleared:.2f} s after clear_session()")


if __name__ == "__main__":
    sys.exit(main())
