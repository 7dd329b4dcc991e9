"""Input pipeline against the model: is decoding ever the bottleneck?

Per model, in one process: images/s of our feature extraction from BMP files on disk (decode,
resize, preprocess, forward pass of image and mirror, cache write) against the bare forward pass
of the same model on the same number of tensors already in memory, same batch size. The ratio
should be at least 0.90 on the CPU.

    python benchmarks/bench_pipeline.py [--models all] [--input-size 96|native] [--images 192]

`--input-size native` runs each model at its own size (224 or 299 px), as a real study does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--input-size", default="96", help="pixels, or native (each model's own size)")
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import keras
    import numpy as np

    from cnmc_core import synthetic
    from cnmc_core.features import FeatureCache, extract
    from cnmc_core.images import iter_batches, preprocess
    from cnmc_core.models import build_classifier, feature_model
    from cnmc_core.registry import get_spec, parse_model_list

    with tempfile.TemporaryDirectory() as tmp:
        spec_data = synthetic.DemoSpec(
            train_all_subjects=6,
            train_hem_subjects=6,
            train_cells_all=args.images // 12 + 1,
            train_cells_hem=args.images // 12 + 1,
            prelim_cells=1,
            final_subjects=0,
        )
        data = synthetic.generate(Path(tmp) / "data", spec_data)
        paths = sorted(data.glob("training_data/fold_*/*/*.bmp"))[: args.images]
        sha1s = [f"{i:040x}" for i in range(len(paths))]  # distinct keys; content hashing is the scan's job
        n = len(paths)
        print(
            f"{n} images of 450x450 BMP -> {args.input_size} px, batch {args.batch_size}, "
            f"image + mirror per image, {os.cpu_count()} cores"
        )
        print(f"{'model':<16}{'size':>5}{'ours img/s':>12}{'bare img/s':>12}{'ratio':>8}")
        for key in parse_model_list(args.models):
            spec = get_spec(key)
            size = spec.input_size if args.input_size == "native" else int(args.input_size)
            keras.utils.clear_session()
            fm = feature_model(build_classifier(spec, size, "none"))
            # Bare: the same forward passes (image + mirror batches) on tensors already in memory.
            x = preprocess(np.concatenate(list(iter_batches(paths, size, 64))), spec.preprocess)
            fm.predict_on_batch(np.concatenate([x[: args.batch_size]] * 2))  # warm up both batch shapes
            last = n % args.batch_size
            if last:
                fm.predict_on_batch(np.concatenate([x[:last]] * 2))
            t = time.perf_counter()
            for i in range(0, n, args.batch_size):
                b = x[i : i + args.batch_size]
                fm.predict_on_batch(np.concatenate([b, b[:, :, ::-1]]))
            bare = n / (time.perf_counter() - t)
            cache = FeatureCache(Path(tmp) / "cache", key, "bench", size)
            t = time.perf_counter()
            extract(fm, spec.preprocess, size, paths, sha1s, 2, cache, args.batch_size)
            ours = n / (time.perf_counter() - t)
            print(f"{key:<16}{size:>5}{ours:>12.1f}{bare:>12.1f}{ours / bare:>8.2f}")


if __name__ == "__main__":
    main()
