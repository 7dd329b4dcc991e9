"""Accelerator check: per model, feature-extraction images/s in float32 and mixed precision, and the
cached-versus-ordinary training ratio on a synthetic batch. Random weights, native input sizes.

Written with Keras APIs only, so it runs on whichever backend Keras has (TensorFlow as the project
uses it, or JAX where only JAX is installed: `KERAS_BACKEND=jax`). Prints one line per model and
a JSON summary; `--tiny` runs a small setting on the CPU in seconds (what the tests use).

    python benchmarks/device_check.py [--models all] [--images 256] [--batch-size 64] [--epochs 10]
                                      [--input-size N] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def throughput(model, x, batch_size: int, repeats: int = 2) -> float:
    for i in range(0, min(len(x), 2 * batch_size), batch_size):  # warm-up and compilation
        model.predict_on_batch(x[i : i + batch_size])
    t = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(x), batch_size):
            out = model.predict_on_batch(x[i : i + batch_size])
    _ = float(out.reshape(-1)[0])  # wait for the device
    return repeats * len(x) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--input-size", type=int, help="one input side for every model (default: each model's native size)")
    ap.add_argument("--tiny", action="store_true", help="small inputs and few images: a CPU smoke run")
    args = ap.parse_args()

    import keras
    import numpy as np

    from cnmc_core.images import preprocess
    from cnmc_core.models import build_classifier, feature_model
    from cnmc_core.registry import get_spec, parse_model_list
    from cnmc_core.runtime import mixed_policy

    if args.tiny:
        args.images, args.batch_size, args.epochs = 16, 8, 2
    rng = np.random.default_rng(0)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, mixed policy {mixed_policy()}")
    print(
        f"{'model':<16}{'size':>5}{'fp32 img/s':>12}{'mixed img/s':>13}{'mixed/fp32':>11}"
        f"{'rel.err':>10}{'train ratio':>13}"
    )
    summary = {}
    for key in parse_model_list(args.models):
        spec = get_spec(key)
        size = spec.min_input_size if args.tiny else args.input_size or spec.input_size
        images = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
        x = preprocess(images, spec.preprocess)
        y = np.eye(2, dtype="float32")[rng.integers(0, 2, args.images)]
        row = {}
        feats_of = {}
        for policy in ("float32", mixed_policy()):
            keras.utils.clear_session()  # (this also resets the dtype policy, so set it after)
            keras.config.set_dtype_policy(policy)
            keras.utils.set_random_seed(0)
            clf = build_classifier(spec, size, "none")
            row[policy] = throughput(feature_model(clf), x, args.batch_size)
            feats_of[policy] = np.asarray(feature_model(clf).predict_on_batch(x[: args.batch_size]), dtype="float32")
            if policy == "float32":
                # Ordinary: every epoch runs the frozen base on every image (flip inside the step).
                clf.compile(optimizer=keras.optimizers.Adamax(1e-3), loss="binary_crossentropy")
                clf.train_on_batch(x[: args.batch_size], y[: args.batch_size])
                t = time.perf_counter()
                for _ in range(args.epochs):
                    for i in range(0, len(x), args.batch_size):
                        clf.train_on_batch(x[i : i + args.batch_size], y[i : i + args.batch_size])
                ordinary = time.perf_counter() - t
                # Cached: features of image and mirror once, then the head alone each epoch.
                fm = feature_model(clf)
                row["xla"] = float(bool(fm.jit_compile))  # Keras's own choice ("auto"): 1 = XLA-compiled
                fm.predict_on_batch(np.concatenate([x[: args.batch_size]] * 2))  # compile outside the timing
                head = keras.Sequential(
                    [
                        keras.Input((fm.output_shape[-1],)),
                        keras.layers.Dropout(0.5),
                        keras.layers.Dense(2, activation="sigmoid"),
                    ]
                )
                head.compile(optimizer=keras.optimizers.Adamax(1e-3), loss="binary_crossentropy")
                head.train_on_batch(np.zeros((args.batch_size, fm.output_shape[-1]), "float32"), y[: args.batch_size])
                t = time.perf_counter()
                feats = np.concatenate(
                    [
                        fm.predict_on_batch(
                            np.concatenate([x[i : i + args.batch_size], x[i : i + args.batch_size, :, ::-1]])
                        )
                        for i in range(0, len(x), args.batch_size)
                    ]
                )
                for _ in range(args.epochs):
                    for i in range(0, len(x), args.batch_size):
                        head.train_on_batch(feats[i : i + args.batch_size], y[i : i + args.batch_size])
                cached = time.perf_counter() - t
                row["train_ratio"] = ordinary / cached
        keras.config.set_dtype_policy("float32")
        mixed = mixed_policy()
        # Agreement of mixed with float32: relative L2 error of the pooled features.
        row["feature_rel_err"] = float(
            np.linalg.norm(feats_of["float32"] - feats_of[mixed]) / (np.linalg.norm(feats_of["float32"]) + 1e-30)
        )
        summary[key] = {k: round(v, 4) for k, v in row.items()}
        print(
            f"{key:<16}{size:>5}{row['float32']:>12.1f}{row[mixed]:>13.1f}{row[mixed] / row['float32']:>11.2f}"
            f"{row['feature_rel_err']:>10.4f}{row['train_ratio']:>12.1f}x"
        )
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "images": args.images,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "models": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
