"""Scaling: wall time and peak memory of `train` against the number of training cells.

Each size is a fresh synthetic dataset and a fresh artifacts folder (cold feature cache), run as
its own process; peak resident memory is that process's ru_maxrss. Also prints the feature
cache's size per image. Time should grow about linearly and memory stay about flat: images are
decoded in batches and only pooled features are kept.

    python benchmarks/bench_scaling.py [--model resnet50] [--input-size 96] [--sizes 100,200,400,800]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", type=int, default=96)
    ap.add_argument("--sizes", default="100,200,400,800")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()

    from cnmc_core import synthetic

    print(f"model {args.model} at {args.input_size} px, {args.epochs} epochs, {os.cpu_count()} cores")
    print(f"{'train cells':>12}{'val cells':>10}{'seconds':>9}{'s/cell':>8}{'peak RSS MiB':>14}{'cache KiB/img':>15}")
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            per_subject = max(2, n // 12)
            spec = synthetic.DemoSpec(
                train_all_subjects=6,
                train_hem_subjects=6,
                train_cells_all=per_subject,
                train_cells_hem=per_subject,
                prelim_cells=max(2, per_subject // 3),
                final_subjects=0,
            )
            data = synthetic.generate(Path(tmp) / "data", spec)
            art = Path(tmp) / "art"
            cmd = [
                sys.executable,
                "-m",
                "cnmc_core",
                "train",
                "--data",
                str(data),
                "--artifacts",
                str(art),
                "--study",
                "s",
                "--models",
                args.model,
                "--weights",
                "none",
                "--input-size",
                str(args.input_size),
                "--epochs",
                str(args.epochs),
                "--preset",
                "paper",
            ]
            t = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t
            if status:
                sys.exit(f"train failed: {proc.stderr.read().decode()[-2000:]}")
            import json

            m = json.loads((art / "s" / "models" / args.model / "metrics.json").read_text())
            cells = m["n_train"] + m["n_val"]
            cache = du(art / ".cache")
            print(
                f"{m['n_train']:>12}{m['n_val']:>10}{seconds:>9.1f}{seconds / cells:>8.3f}"
                f"{usage.ru_maxrss / 1024:>14.0f}{cache / 1024 / cells:>15.1f}"
            )


if __name__ == "__main__":
    main()
