"""The study report's size and build time: on a study you have, or on a synthetic C-NMC-sized one.

    python benchmarks/bench_report.py --study demo [--artifacts DIR] [--runs 3]
    python benchmarks/bench_report.py --cells 12800 [--subjects 100] [--models 7] [--gallery-from artifacts/demo]

The first builds the report of an existing study (`dashboard.report.study_report`, what `python -m cnmc_core
report` writes) `--runs` times and prints its size and the median build time (the study read once, as the
command does; imports not counted). The second writes a C-NMC-sized study to a temporary folder first, the way
benchmarks/bench_projection.py does (random-looking predictions, the same saved t-SNE/PCA maps for every
model), computes its statistics (`analysis.analyse_study`, 200 replicates: the report's size does not depend on
them) and copies the Grad-CAM gallery of `--gallery-from` (a gallery always holds 12 cells, whatever the study's
size), then measures the same.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_projection import STUDY, synthetic_features, write_study  # noqa: E402

from cnmc_core.analysis import analyse_study  # noqa: E402
from cnmc_core.dashboard import base, report  # noqa: E402
from cnmc_core.projection import project  # noqa: E402
from cnmc_core.store import StudyStore  # noqa: E402


def measure(root: Path, name: str, runs: int, out: Path | None) -> None:
    data = base.load_study(str(root), name)
    times, page = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        page = report.study_report(data)
        times.append(time.perf_counter() - start)
    size = len(page.encode("utf-8"))
    print(f"{name}: {len(data.models)} models, {len(data.predictions[data.models[0]]):,} validation cells: "
          f"report {size / 1e6:.2f} MB ({size:,} bytes), built in {statistics.median(times):.2f} s "
          f"(median of {runs}; min {min(times):.2f} s)")
    if out:
        out.write_text(page, encoding="utf-8")
        print(f"written: {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", help="an existing study (else a synthetic C-NMC-sized one is written)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--cells", type=int, default=12800)
    parser.add_argument("--features", type=int, default=256, help="feature width of the synthetic maps")
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--gallery-from", type=Path, help="a study folder whose gallery/ to copy")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.study:
        measure(args.artifacts, args.study, args.runs, args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        features, labels, subjects, calls = synthetic_features(args.cells, args.features, args.subjects, args.seed)
        start = time.perf_counter()
        projection = project(features, labels, subjects, calls, seed=args.seed)
        write_study(root, projection, labels, subjects, calls, args.models, args.seed)
        analyse_study(StudyStore(root, STUDY), n_boot=200, seed=args.seed)
        if args.gallery_from:
            shutil.copytree(args.gallery_from / "gallery", root / STUDY / "gallery")
        print(f"synthetic study written in {time.perf_counter() - start:.0f} s")
        measure(root, STUDY, args.runs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
