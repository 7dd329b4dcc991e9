"""The ordinary Keras way, as a whole process, for bench_train.py: model.fit on images with random flips.

Same data, split, model, input size, seed, optimiser, batch, epochs and early stopping as
`python -m cnmc_core train --preset paper`; only the feature cache is missing. Prints one JSON line.

    python benchmarks/plain_fit.py --data DIR --model resnet50 --input-size 96 [--epochs 15]
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


def main() -> None:
    started = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    import keras
    import numpy as np

    from cnmc_core.config import from_preset
    from cnmc_core.dataset import scan
    from cnmc_core.evaluation import classification_metrics
    from cnmc_core.images import iter_batches, preprocess
    from cnmc_core.models import build_classifier, p_all
    from cnmc_core.registry import get_spec
    from cnmc_core.splits import assign
    from cnmc_core.training import fit_on_images

    config = from_preset(
        "paper", models=(args.model,), weights="none", input_size=args.input_size, epochs=args.epochs, seed=args.seed
    )
    spec = get_spec(args.model)
    s = scan(args.data)
    _, rows = assign(s, config.split, config.val_fold, config.val_fraction, config.seed)
    train = [r for r in rows if r.split == "train"]
    val = [r for r in rows if r.split == "val"]

    def load(records):
        batches = iter_batches([s.root / r.path for r in records], args.input_size, 64)
        return preprocess(np.concatenate(list(batches)), spec.preprocess)

    x_train, x_val = load(train), load(val)
    y_train = np.array([r.label for r in train])
    y_val = np.array([r.label for r in val])
    keras.utils.set_random_seed(config.seed)
    clf = build_classifier(spec, args.input_size, "none", config.dropout)
    history, best = fit_on_images(clf, x_train, y_train, x_val, y_val, config)
    prob = p_all(clf.predict(x_val, batch_size=64, verbose=0))
    m = classification_metrics(y_val, prob)
    print(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - started, 2),
                "epochs_run": int(len(history)),
                "best_epoch": best,
                "accuracy": m["accuracy"],
                "balanced_accuracy": m["balanced_accuracy"],
                "roc_auc": m["roc_auc"],
                "n_train": len(train),
                "n_val": len(val),
            }
        )
    )


if __name__ == "__main__":
    main()
