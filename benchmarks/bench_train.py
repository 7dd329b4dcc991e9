"""Training speed: our `train` (cached features) against the ordinary Keras loop, whole processes.

Both run the paper's protocol on the same cells (the synthetic demo data unless --data is given),
the same model, input size, seed, batch, epochs and early stopping. Ours starts with an empty
feature cache, so feature extraction is inside its time. The ordinary loop decodes the images
once into memory (kinder to it than the paper's ImageDataGenerator, which decodes every epoch).

    python benchmarks/bench_train.py [--model resnet50] [--input-size 96] [--data DIR]

Prints both wall times, the ratio, both accuracies, and a projection to the full C-NMC sizes
(10,661 training and 1,867 validation cells) from the per-image costs measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FULL_TRAIN, FULL_VAL = 10_661, 1_867


def run(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--data", help="a C-NMC folder (default: the synthetic demo data, generated once)")
    args = ap.parse_args()

    from cnmc_core import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else synthetic.generate(Path(tmp) / "demo", synthetic.DemoSpec())
        artifacts = Path(tmp) / "artifacts"
        ours_s, _ = run(
            [
                sys.executable,
                "-m",
                "cnmc_core",
                "train",
                "--data",
                str(data),
                "--artifacts",
                str(artifacts),
                "--study",
                "bench",
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
        )
        metrics = json.loads((artifacts / "bench" / "models" / args.model / "metrics.json").read_text())
        plain_s, out = run(
            [
                sys.executable,
                "benchmarks/plain_fit.py",
                "--data",
                str(data),
                "--model",
                args.model,
                "--input-size",
                str(args.input_size),
                "--epochs",
                str(args.epochs),
            ]
        )
        plain = json.loads(out.strip().splitlines()[-1])

    n_train, n_val = metrics["n_train"], metrics["n_val"]
    fixed_ours = ours_s - metrics["seconds"]["features"] - metrics["seconds"]["head"]  # start-up, scan, saving
    per_image = metrics["seconds"]["features"] / (2 * n_train + n_val)  # one forward pass
    per_epoch_plain = (plain_s - fixed_ours) / max(1, plain["epochs_run"])
    per_image_plain = per_epoch_plain / (n_train + n_val)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"model {args.model} at {args.input_size} px"
    )
    print(
        f"cells: {n_train} train, {n_val} val; epochs run: ours {metrics['epochs_run']}, ordinary {plain['epochs_run']}"
    )
    print(
        f"ours (cached features):  {ours_s:7.1f} s   accuracy {metrics['accuracy']:.3f}  AUC {metrics['roc_auc']:.3f}"
    )
    print(f"ordinary model.fit:      {plain_s:7.1f} s   accuracy {plain['accuracy']:.3f}  AUC {plain['roc_auc']:.3f}")
    print(f"speed-up: {plain_s / ours_s:.2f}x")
    epochs = plain["epochs_run"]
    proj_ours = fixed_ours + per_image * (2 * FULL_TRAIN + FULL_VAL)
    proj_plain = fixed_ours + epochs * per_image_plain * (FULL_TRAIN + FULL_VAL)
    print(
        f"projection to full C-NMC ({FULL_TRAIN} + {FULL_VAL} cells, {epochs} epochs, this machine): "
        f"ours {proj_ours / 60:.1f} min, ordinary {proj_plain / 60:.1f} min, {proj_plain / proj_ours:.1f}x"
    )


if __name__ == "__main__":
    main()
