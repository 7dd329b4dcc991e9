"""Many users at once: N browser sessions upload a cell to the Classify page of one dashboard together.

    python benchmarks/load_users.py [--artifacts DIR] [--study NAME] [--sessions 8] [--timeout 300] [--upload-at S]

Starts one `streamlit run app.py` on 127.0.0.1 (loopback only) against the artifacts root, opens N
headless Chromium contexts (N separate Streamlit sessions) on the Classify page, all at once, then has every one
upload a different validation cell of the study at the same moment: at once (the default), while the models
are still loading in the background, so every session races for the one cached load; or `--upload-at S`
seconds after the server first answered (issue 16's goal: 8 users at 20 s each wait under 15 s). Each session reads the
result it is shown (the file name, the ensemble call and its P(ALL)) and compares it with
`cnmc_core.predict.Predictor` on the same file, computed in this process before the server starts.

Prints per-session latency (upload to result drawn), when the uploads went (opening the sessions may take
longer than --upload-at), the server's own seconds to models ready, whether every answer is right, how many times
the server loaded the models (its log lines from `Predictor.load`; should be exactly 1), the
server's memory before and after from /proc/<pid>/status (VmRSS now, VmHWM peak), and where the machine's CPU went
from the server's first answer to the last result drawn: the server's core-seconds and the browsers' (Chromium and
Playwright's driver, which on a lab's network run on the users' own machines), against what the cores could give.
Bounded: --sessions (1-32) contexts, and the whole run is cut at --timeout seconds.
Uses Debian's /usr/bin/chromium (no browser download).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, RENDERED_JS, memory_mb, server  # noqa: E402

MAX_SESSIONS = 32
LOAD_LINE = "loaded the models of study"  # what Predictor.load logs once per load
READY_LINE = r"models of study '[^']*' ready in ([0-9.]+) s"  # what the dashboard's background load logs at the end
RESULT_LABEL = "Ensemble call (mean P(ALL) of the models)"
# `streamlit run`, with the library's INFO lines (one per model load) on stderr; nothing else changes.
SERVER = (
    "import logging, sys\n"
    "h = logging.StreamHandler(sys.stderr)\n"
    "h.setFormatter(logging.Formatter('%(asctime)s %(name)s %(levelname)s %(message)s'))\n"
    "lg = logging.getLogger('cnmc_core'); lg.addHandler(h); lg.setLevel(logging.INFO)\n"
    "from streamlit.web.cli import main\n"
    "main(prog_name='streamlit')\n"
)


@dataclass
class Session:
    file: str
    expected_label: str
    expected_ensemble: float
    shown_file: str = ""
    shown_label: str = ""
    shown_ensemble: float | None = None
    seconds: float | None = None
    error: str = ""

    @property
    def correct(self) -> bool:
        return (not self.error and self.shown_file == self.file
                and self.shown_label.lower() == self.expected_label.lower()  # the page shows "Inconclusive"
                and self.shown_ensemble is not None and abs(self.shown_ensemble - self.expected_ensemble) <= 6e-4)


@dataclass
class CpuSplit:
    """CPU seconds (user + system, all threads) of one stretch of the run."""

    what: str
    server_s: float  # the Streamlit server and any process it started
    browsers_s: float  # every other process this one started: Chromium and Playwright's driver
    wall_s: float
    cores: int

    @property
    def busy(self) -> float:
        """The share of what the cores could give in that time that these processes used."""
        return (self.server_s + self.browsers_s) / (self.wall_s * self.cores) if self.wall_s > 0 else 0.0

    def line(self) -> str:
        return (f"{self.what} ({self.wall_s:.1f} s): the server {self.server_s:.1f} core-s, the browsers "
                f"{self.browsers_s:.1f}, of the {self.wall_s * self.cores:.0f} the {self.cores} cores could give "
                f"({100 * self.busy:.0f}% busy)")


@dataclass
class Report:
    sessions: list[Session]
    loads: int  # model loads in the server process (should be 1)
    rss_before_mb: float
    rss_after_mb: float
    peak_mb: float  # VmHWM: the server's peak resident memory
    wall_seconds: float
    log: str = ""
    exceptions: list[str] = field(default_factory=list)  # Streamlit exception elements seen on the pages
    uploaded_at: float | None = None  # seconds after the server first answered when the uploads went (opening the
    # sessions may take longer than --upload-at: then they upload late, and this says so)
    models_ready_s: float | None = None  # the server's own "models of study ... ready in X s" (load and warm-up)
    cpu: list[CpuSplit] = field(default_factory=list)  # where the CPU went: until the uploads, then until the
    # last result was drawn (empty where /proc cannot say)

    @property
    def all_correct(self) -> bool:
        return bool(self.sessions) and all(s.correct for s in self.sessions) and not self.exceptions


def _cpu_by_process() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU seconds so far)} of every process /proc shows (Linux); {} where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # (it ended meanwhile)
            continue
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_seconds(server_pid: int) -> tuple[float, float] | None:
    """(CPU seconds of the server and its descendants, of this process's other descendants) now; None without
    /proc. Exited processes are not counted: read it before the browser closes."""
    procs = _cpu_by_process()
    if not procs:
        return None
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in procs.items():
        children.setdefault(parent, []).append(pid)

    def tree(root: int) -> set[int]:
        found, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo += children.get(pid, [])
        return found

    server = tree(server_pid) & procs.keys()
    others = tree(os.getpid()) - server - {os.getpid()}
    return sum(procs[p][1] for p in server), sum(procs[p][1] for p in others & procs.keys())


def pick_cells(artifacts: str, study: str, n: int) -> list[tuple[Path, dict]]:
    """`n` different validation cells of the study with `Predictor`'s result for each (the expected answers)."""
    from cnmc_core.dashboard import base
    from cnmc_core.predict import Predictor
    from cnmc_core.store import StudyStore

    data = base.load_study(artifacts, study)
    paths = list(data.predictions[data.models[0]]["path"])
    if len(paths) < n:
        raise ValueError(f"--sessions {n}: study {study!r} has only {len(paths)} validation cells")
    step = max(1, len(paths) // n)
    data_dir = Path(base.section(data.info, "data").get("path", ""))  # the folder the study was trained from
    cells = [data_dir / p for p in paths[::step][:n]]
    predictor = Predictor.load(StudyStore(artifacts, study))
    return [(c, predictor.predict(c.read_bytes(), name=c.name)) for c in cells]


def serve(artifacts: str, timeout: float = 60.0):
    """One `streamlit run app.py` on 127.0.0.1 with the library's log lines on; yields (url, process, log path)."""
    return server(artifacts, timeout=timeout, launcher=("-c", SERVER))


async def _one(page, cell: Path, session: Session, go: asyncio.Event, timeout_ms: float) -> None:
    """Wait for the common start, upload `cell`, wait for the drawn result and read it."""
    await go.wait()
    start = time.perf_counter()
    try:
        await page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(cell))
        await page.get_by_text(RESULT_LABEL).wait_for(timeout=timeout_ms)
        await page.wait_for_function(RENDERED_JS, timeout=timeout_ms, polling=100)
        session.seconds = time.perf_counter() - start
        main = page.locator('[data-testid="stMain"]')
        session.shown_file = (await main.locator("h2").first.inner_text()).strip()
        metric = page.locator('[data-testid="stMetric"]').first
        session.shown_label = (await metric.locator('[data-testid="stMetricValue"]').inner_text()).strip()
        delta = await metric.locator('[data-testid="stMetricDelta"]').inner_text()
        found = re.search(r"P\(ALL\) = ([0-9.]+)", delta)
        session.shown_ensemble = float(found.group(1)) if found else None
    except Exception as e:  # a timeout or a missing element: this session failed, the others go on
        session.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


async def _drive(url: str, study: str, cells: list[Path], sessions: list[Session], timeout: float,
                 upload_at: float | None = None, server_pid: int | None = None,
                 ) -> tuple[list[str], float, list[tuple[float, float, float]]]:
    """Open every session on the Classify page, then upload all at once: now, or at `upload_at` (perf_counter).
    Returns the exceptions the pages show, when (perf_counter) the uploads went, and (when, server's CPU s,
    browsers' CPU s) as the uploads went and once every result was drawn (`cpu_seconds`; none without a
    `server_pid` or /proc)."""
    from playwright.async_api import async_playwright

    timeout_ms = timeout * 1000
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:

            async def open_one():
                context = await browser.new_context(viewport={"width": 1200, "height": 1000})
                page = await context.new_page()
                page.set_default_timeout(timeout_ms)
                await page.goto(f"{url}/classify?study={study}")
                # ready for a file: the drop zone is there (the line above it may still be counting models)
                await page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
                return page

            # Every user opens the Classify page at once (one after the other, the eighth page was open only 33-47 s
            # after the server answered with the 7-model demo, and uploads meant for 20 s went then), and every
            # session is open before anyone uploads.
            pages = await asyncio.gather(*(open_one() for _ in cells))
            if upload_at is not None:
                await asyncio.sleep(max(0.0, upload_at - time.perf_counter()))
            go = asyncio.Event()
            tasks = [asyncio.create_task(_one(pg, c, s, go, timeout_ms)) for pg, c, s in zip(pages, cells, sessions)]
            went = time.perf_counter()
            cpu = [(went, *c)] if server_pid and (c := cpu_seconds(server_pid)) else []
            go.set()  # all at once
            await asyncio.gather(*tasks)
            done = time.perf_counter()
            if cpu and (c := cpu_seconds(server_pid)):
                cpu.append((done, *c))
            exceptions = []
            for i, pg in enumerate(pages):
                for e in await pg.locator('[data-testid="stException"]').all_inner_texts():
                    exceptions.append(f"session {i + 1}: {e.splitlines()[0] if e else ''}")
            return exceptions, went, cpu
        finally:
            await browser.close()


def run(artifacts: str, study: str, sessions: int = 8, timeout: float = 300.0,
        upload_at: float | None = None) -> Report:
    """The whole load test; see the module docstring. `upload_at`: seconds after the server first answered
    (None: as soon as every session is open). Raises ValueError on bad arguments."""
    if not 1 <= sessions <= MAX_SESSIONS:
        raise ValueError(f"--sessions must be between 1 and {MAX_SESSIONS}; got {sessions}")
    if upload_at is not None and not 0 <= upload_at <= 600:
        raise ValueError(f"--upload-at must be between 0 and 600 seconds; got {upload_at}")
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium`")
    picked = pick_cells(artifacts, study, sessions)
    rows = [Session(c.name, r["label"], float(r["ensemble"])) for c, r in picked]
    cells = [c for c, _ in picked]
    start = time.perf_counter()
    with serve(artifacts) as (url, proc, log_path):
        started = time.perf_counter()  # the server answers from here on
        cpu_then = cpu_seconds(proc.pid)  # (its own start not counted)
        before = memory_mb(proc.pid)
        at = None if upload_at is None else started + upload_at
        exceptions, went, snapshots = asyncio.run(asyncio.wait_for(
            _drive(url, study, cells, rows, timeout, at, proc.pid), timeout + 60 + (upload_at or 0)))
        after = memory_mb(proc.pid)
        text = log_path.read_text(errors="replace")
    cpu = []
    if cpu_then is not None and len(snapshots) == 2:
        cores = len(os.sched_getaffinity(0))
        stretches = [(started, *cpu_then), *snapshots]
        for what, (t0, s0, b0), (t1, s1, b1) in zip(("opening the sessions, until the uploads",
                                                     "the uploads, until the last result was drawn"),
                                                    stretches, stretches[1:]):
            cpu.append(CpuSplit(what, s1 - s0, b1 - b0, t1 - t0, cores))
    return Report(rows, text.count(LOAD_LINE), before["VmRSS"], after["VmRSS"], after["VmHWM"],
                  time.perf_counter() - start, text, exceptions, went - started, _ready_seconds(text), cpu)


def _ready_seconds(log: str) -> float | None:
    found = re.search(READY_LINE, log)
    return float(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=os.environ.get("CNMC_ARTIFACTS") or str(ROOT / "artifacts"))
    ap.add_argument("--study", default="demo", help="the study to open (default: demo)")
    ap.add_argument("--sessions", type=int, default=8, help=f"browser sessions at once (1-{MAX_SESSIONS}, default 8)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a session may take (default 300)")
    ap.add_argument("--upload-at", type=float, help="upload this many seconds after the server first answered "
                                                    "(default: as soon as every session is open)")
    args = ap.parse_args(argv)
    try:
        report = run(args.artifacts, args.study, args.sessions, args.timeout, args.upload_at)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    when = "at once" if args.upload_at is None else f"{args.upload_at:g} s after the server started"
    print(f"artifacts {args.artifacts}, study {args.study}, {args.sessions} sessions uploading {when}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'session':<9}{'file':<28}{'expected':>18}{'shown':>18}{'seconds':>9}  ok")
    for i, s in enumerate(report.sessions, 1):
        shown = f"{s.shown_label} {s.shown_ensemble:.3f}" if s.shown_ensemble is not None else (s.error[:18] or "-")
        took = f"{s.seconds:.1f}" if s.seconds is not None else "-"
        print(f"{i:<9}{s.file[:27]:<28}{s.expected_label + f' {s.expected_ensemble:.3f}':>18}{shown:>18}{took:>9}  "
              f"{'yes' if s.correct else 'NO'}")
    times = sorted(s.seconds for s in report.sessions if s.seconds is not None)
    if times:
        print(f"latency: median {times[len(times) // 2]:.1f} s, max {times[-1]:.1f} s; "
              f"whole run {report.wall_seconds:.0f} s")
    print(f"the uploads went {report.uploaded_at:.1f} s after the server first answered; the server's models were "
          f"ready {report.models_ready_s if report.models_ready_s is not None else '?'} s after their load started")
    for c in report.cpu:
        print(f"CPU, {c.line()}")
    for e in report.exceptions:
        print(f"exception shown: {e}")
    print(f"model loads in the server: {report.loads} (expected 1)")
    print(f"server memory: RSS {report.rss_before_mb:.0f} MB before, {report.rss_after_mb:.0f} MB after, "
          f"peak {report.peak_mb:.0f} MB")
    ok = report.all_correct and report.loads == 1
    print(f"all correct: {'yes' if report.all_correct else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
