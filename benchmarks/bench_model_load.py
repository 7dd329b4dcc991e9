"""How long the dashboard's background load takes until a study's models are ready (issue 16), against a baseline.

    python benchmarks/bench_model_load.py [--artifacts DIR] [--study demo] [--baseline GITREV] [--runs 2]

Each run starts fresh processes, alternated (the machine is shared: a busy moment slows both alike), that import
TensorFlow (not counted) and then run the Classify page's background load (`dashboard.classify._load`: every model
read, then warmed up on a synthetic cell) until it says ready; the load's own `seconds` is printed. Two cases:
- cache filled: the compiled passes read from a cache folder of this machine (filled once, before the runs, by the
  working tree's `compiled.save`; the time a server started after any earlier one takes);
- cache off: every Keras model read and its pass traced (the first start ever).

`--baseline GITREV` (default HEAD) times the same load at that revision: its `cnmc_core` package read with
`git archive` into a temporary folder and put first on the child's path. The medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import keras, tensorflow  # (not counted)
from cnmc_core.dashboard import classify
load = classify.ModelsLoad((sys.argv[2], sys.argv[3]))
load.wanted.set()
classify._load(load, 0.0)
print(json.dumps({"seconds": load.seconds, "stage": load.stage, "total": load.total,
                  "package": os.path.dirname(classify.__file__)}))
"""


def child(tree: Path, artifacts: str, study: str, cache: str) -> dict:
    env = {**os.environ, "CNMC_COMPILED_CACHE": cache}
    r = subprocess.run([sys.executable, "-c", CHILD, str(tree), artifacts, study], capture_output=True, text=True,
                       env=env, cwd=tree, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"error: the load at {tree} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["stage"] != "ready" or not str(out["package"]).startswith(str(tree)):
        raise SystemExit(f"error: the load at {tree} did not end ready from its own package: {out}")
    return out


def fill_cache(artifacts: str, study: str, cache: Path) -> None:
    """Every model's pass traced and saved by the working tree (what the dashboard does once its models are ready)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cnmc_core.predict import Predictor; "
            "from cnmc_core.store import StudyStore; p = Predictor.load(StudyStore(sys.argv[2], sys.argv[3])); "
            "from cnmc_core.dashboard.classify import warm_up; warm_up(p); print(p.save_compiled())")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), artifacts, study], capture_output=True, text=True,
                       env={**os.environ, "CNMC_COMPILED_CACHE": str(cache)}, timeout=900)
    if r.returncode != 0 or not r.stdout.strip().splitlines()[-1].isdigit():
        raise SystemExit(f"error: could not fill the cache: {(r.stderr.strip().splitlines() or ['?'])[-1]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=os.environ.get("CNMC_ARTIFACTS", str(ROOT / "artifacts")))
    ap.add_argument("--study", default="demo")
    ap.add_argument("--baseline", default="HEAD", metavar="GITREV", help="the revision to compare (default HEAD)")
    ap.add_argument("--runs", type=int, default=2, help="alternated pairs per case (default 2)")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 20:
        ap.error("--runs must be between 1 and 20")
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_prepare import extract_package
    from cnmc_core.store import StudyStore

    if not StudyStore(args.artifacts, args.study).exists():
        ap.error(f"no study {args.study!r} under {args.artifacts}: make one with `python -m cnmc_core demo`")
    folder = Path(tempfile.mkdtemp(prefix="cnmc_bench_load_"))  # (0700: the cache inside it is used)
    try:
        baseline = extract_package(args.baseline, folder / "baseline")
        cache = folder / "cache"
        print(f"load average {os.getloadavg()[0]:.1f}; filling the cache {cache} ...", flush=True)
        fill_cache(args.artifacts, args.study, cache)
        trees = {"current": ROOT, args.baseline: baseline}
        for case, setting in (("cache filled", str(cache)), ("cache off", "off")):
            seconds: dict[str, list[float]] = {name: [] for name in trees}
            for run in range(args.runs):
                order = list(trees) if run % 2 == 0 else list(reversed(trees))
                for name in order:
                    out = child(trees[name], args.artifacts, args.study, setting)
                    seconds[name].append(out["seconds"])
                    print(f"{case}, run {run + 1}, {name}: ready in {out['seconds']:.2f} s ({out['total']} models)",
                          flush=True)
            now, before = statistics.median(seconds["current"]), statistics.median(seconds[args.baseline])
            print(f"{case}: median current {now:.2f} s, {args.baseline} {before:.2f} s, current / {args.baseline} "
                  f"{now / before:.2f}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
