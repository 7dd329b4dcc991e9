"""Feature-space maps at C-NMC scale: the study-time cost of `project`, and the page-time cost of reading every
model's saved maps and building the Feature space page's figures.

    python benchmarks/bench_projection.py [--cells 12800] [--features 2048] [--subjects 100] [--models 9]
                                          [--max-tsne 3000] [--runs 3] [--seed 0] [--out DIR [--page-only]]

Synthetic pooled features (non-negative, like pooled ReLU activations): a per-patient offset, a class shift on a
quarter of the channels, noise; every patient all ALL or all HEM, two ALL cells for each HEM cell, as in C-NMC.

1. study time: one `project(...)` (standardise, PCA, t-SNE on a stratified subsample, scores), printed once;
2. a C-NMC-sized study written under `--out` (default: a temporary folder) the way a real one is: study.json,
   split.csv, and for each of the first `--models` registry models metrics.json, predictions.csv (`--cells` rows)
   and the maps saved by `projection.save_projection` (model.keras is an empty placeholder: the page never loads
   it);
3. page time: `dashboard.feature_space.feature_space` (reads every model's saved maps) and `row_figure` for
   every row of three panels, serialised as Streamlit does (`to_json`), for each map and colouring; cold (first)
   and warm (median of
   `--runs`). The browser's own drawing time on that study:
   `python benchmarks/bench_pages.py --artifacts DIR --pages feature-space`. The goal: under 3 s warm.

`--page-only` with `--out DIR` skips 1 and 2 and times the page on the study an earlier run left in DIR.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnmc_core.dashboard import base, feature_space  # noqa: E402
from cnmc_core.projection import METHOD_NAMES, project, save_projection  # noqa: E402
from cnmc_core.registry import MODELS  # noqa: E402
from cnmc_core.store import StudyStore, write_bytes  # noqa: E402

STUDY = "cnmc_scale"


def synthetic_features(cells: int, features: int, subjects: int, seed: int):
    """(features (cells, features) float32, labels, subjects, calls) shaped like a C-NMC validation set."""
    rng = np.random.default_rng(seed)
    subject_of_cell = rng.integers(0, subjects, cells)
    subject_label = (np.arange(subjects) % 3 != 0).astype(int)  # two ALL patients for each HEM patient
    labels = subject_label[subject_of_cell]
    offsets = rng.normal(0, 0.6, (subjects, features)).astype(np.float32)
    shift = np.zeros(features, np.float32)
    shift[: features // 4] = 0.1
    x = rng.normal(0, 1, (cells, features)).astype(np.float32)
    x += offsets[subject_of_cell] + shift * labels[:, None]
    np.maximum(x, 0, out=x)
    calls = np.where(rng.random(cells) < 0.8, labels, 1 - labels)  # a model right four times in five
    return x, labels, np.array([f"{s}" if subject_label[s] else f"H{s}" for s in subject_of_cell]), calls


def write_study(root: Path, projection, labels, subjects, calls, models: int, seed: int) -> None:
    """A study of `models` registry models, each with `projection` saved as its maps."""
    store = StudyStore(root, STUDY)
    keys = list(MODELS)[:models]
    n = len(labels)
    paths = [f"C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data/{i + 1}.bmp" for i in range(n)]
    store.dir.mkdir(parents=True, exist_ok=True)
    store.write_study({"name": STUDY, "created": "2026-12-03T00:00:00+00:00", "status": "complete", "seed": seed,
                       "models": keys, "config": {"models": keys}, "input_sizes": {k: 224 for k in keys},
                       "data": {"path": "", "synthetic": True}})
    store.write_split(pd.DataFrame({"path": paths, "subject": subjects, "label": labels, "split": "val",
                                    "reason": "", "sha1": [f"{i:040x}" for i in range(n)]}))
    prob = np.clip(calls * 0.6 + np.random.default_rng(seed).random(n) * 0.4, 0, 1)
    for key in keys:
        tn, fp = int(((labels == 0) & (calls == 0)).sum()), int(((labels == 0) & (calls == 1)).sum())
        fn, tp = int(((labels == 1) & (calls == 0)).sum()), int(((labels == 1) & (calls == 1)).sum())
        metrics = {"accuracy": (tn + tp) / n, "precision": 0.8, "recall": 0.8, "f1": 0.8, "specificity": 0.8,
                   "roc_auc": 0.85, "threshold": 0.5, "confusion_matrix": [[tn, fp], [fn, tp]],
                   "config_hash": f"bench-{key}", "model": key, "name": MODELS[key].name}
        predictions = pd.DataFrame({"path": paths, "subject": subjects, "label": labels, "prob_all": prob})
        history = pd.DataFrame({"epoch": [1], "loss": [0.5], "accuracy": [0.8], "val_loss": [0.5],
                                "val_accuracy": [0.8]})
        store.write_model(key, metrics, predictions, history, lambda p: write_bytes(p, b""))
        save_projection(store, key, projection, metrics["config_hash"], paths, "synthetic")


def page_seconds(root: Path, method: str, colour_by: str) -> tuple[float, float, int, int]:
    """(seconds to read the study and every saved map, which the page caches after its first view; seconds to
    build and serialise every panel, which every view does; figure JSON bytes; panels)."""
    start = time.perf_counter()
    data = base.load_study(str(root), STUDY)
    space = feature_space.feature_space(data, method, feature_space.files_stamp(data))
    read = time.perf_counter()
    keys = list(space.panels)
    rows = [keys[i:i + 3] for i in range(0, len(keys), 3)]  # as the page draws them: three panels to a figure
    payload = sum(len(feature_space.row_figure(space, row, colour_by).to_json()) for row in rows)
    return read - start, time.perf_counter() - read, payload, len(space.panels)


def time_page(root: Path, runs: int) -> None:
    npz_bytes = StudyStore(root, STUDY).model_file(next(iter(MODELS)), "projection.npz").stat().st_size
    for method in METHOD_NAMES:
        for colour_by in ("class", "subject"):
            reads, draws = [], []
            for _ in range(1 + runs):
                read_s, draw_s, payload_bytes, panels = page_seconds(root, method, colour_by)
                reads.append(read_s)
                draws.append(draw_s)
            print(f"page ({METHOD_NAMES[method]}, by {colour_by}, {panels} panels, {payload_bytes / 1e6:.1f} MB "
                  f"of figure JSON, {npz_bytes / 1e6:.2f} MB npz per model): read the study and maps "
                  f"{reads[0]:.2f} s cold, {statistics.median(reads[1:]):.2f} s again; build the figures "
                  f"{statistics.median(draws[1:]):.2f} s (median of {runs})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=12800)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--models", type=int, default=9, choices=range(1, len(MODELS) + 1), metavar="N")
    parser.add_argument("--max-tsne", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="artifacts root to write the study to (kept; default: temporary)")
    parser.add_argument("--page-only", action="store_true", help="only time the page on the study in --out")
    args = parser.parse_args(argv)
    if args.page_only:
        if not args.out or not StudyStore(args.out, STUDY).exists():
            parser.error(f"--page-only needs --out DIR holding the study {STUDY} of an earlier run")
        time_page(args.out, args.runs)
        return 0

    features, labels, subjects, calls = synthetic_features(args.cells, args.features, args.subjects, args.seed)
    start = time.perf_counter()
    projection = project(features, labels, subjects, calls, seed=args.seed, max_tsne=args.max_tsne)
    study_s = time.perf_counter() - start
    print(f"study time: project() on {args.cells} cells x {args.features} features "
          f"(t-SNE on {projection.tsne_subsample or args.cells}): {study_s:.1f} s per model")
    for method, scores in projection.scores["methods"].items():
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()}
        print(f"  {METHOD_NAMES[method]}: {json.dumps(shown)}")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        write_study(root, projection, labels, subjects, calls, args.models, args.seed)
        time_page(root, args.runs)
        if args.out:
            print(f"study written: {root / STUDY}; in the browser: "
                  f"python benchmarks/bench_pages.py --artifacts {root} --pages feature-space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
