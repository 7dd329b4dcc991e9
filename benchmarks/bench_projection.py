"""Feature-space maps at C-NMC scale: the study-time cost of `project`, and the page-time cost of reading seven
saved projections back and building the small-multiples figure.

    python benchmarks/bench_projection.py [--cells 12800] [--features 2048] [--subjects 100] [--models 7]
                                          [--max-tsne 3000] [--runs 3] [--seed 0]

Synthetic pooled features (non-negative, like pooled ReLU activations): a per-patient offset, a class shift on a
quarter of the channels, noise; every patient all ALL or all HEM, two ALL cells for each HEM cell, as in C-NMC.

1. study time: one `project(...)` (standardise, PCA, t-SNE on a stratified subsample, scores), printed once;
2. page time: for each of `--models` models, open `projection.npz` + `scores.json` (the store's layout) and
   `from_arrays`, then build one Plotly figure of one panel per model (every cell, coloured by class, subject
   and P(ALL)-like hover data) and serialise it as Streamlit does (`to_json`). Printed cold (first) and warm
   (median of `--runs`). The goal: under 3 s warm for seven models.
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
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnmc_core.projection import METHOD_NAMES, from_arrays, project, to_arrays  # noqa: E402

CLASS_COLOURS = {1: "#d62728", 0: "#1f77b4"}  # ALL red, HEM blue: the same in every panel


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
    return x, labels, np.array([f"UID_{s}" for s in subject_of_cell]), calls


def save(projection, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "projection.npz", **to_arrays(projection))
    (folder / "scores.json").write_text(json.dumps(projection.scores, allow_nan=False))


def load(folder: Path):
    with np.load(folder / "projection.npz", allow_pickle=False) as arrays:
        return from_arrays(arrays, json.loads((folder / "scores.json").read_text()))


def small_multiples(projections: dict, method: str) -> go.Figure:
    """One panel per model: its `method` map of the same cells, coloured by class the same way everywhere."""
    keys = list(projections)
    columns = 4
    rows = -(-len(keys) // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=keys, horizontal_spacing=0.03, vertical_spacing=0.08)
    for i, key in enumerate(keys):
        p = projections[key]
        xy = p.coordinates[method]
        for label, name in ((1, "ALL"), (0, "HEM")):
            rows_of_class = np.flatnonzero((p.labels == label) & ~np.isnan(xy[:, 0]))
            fig.add_trace(go.Scattergl(
                x=xy[rows_of_class, 0], y=xy[rows_of_class, 1], mode="markers", name=name, legendgroup=name,
                showlegend=i == 0, marker=dict(size=3, color=CLASS_COLOURS[label], opacity=0.6),
                customdata=np.column_stack([p.subjects[rows_of_class], p.calls[rows_of_class]]),
                hovertemplate="subject %{customdata[0]}<br>call %{customdata[1]}<extra></extra>",
            ), row=i // columns + 1, col=i % columns + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=320 * rows, title=f"{METHOD_NAMES[method]} of the pooled features, by class")
    return fig


def page_seconds(folders: dict, method: str) -> tuple[float, int]:
    """Seconds to read every model's projection and build and serialise the figure; and the JSON's bytes."""
    start = time.perf_counter()
    projections = {key: load(folder) for key, folder in folders.items()}
    payload = small_multiples(projections, method).to_json()
    return time.perf_counter() - start, len(payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=12800)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--max-tsne", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    features, labels, subjects, calls = synthetic_features(args.cells, args.features, args.subjects, args.seed)
    start = time.perf_counter()
    projection = project(features, labels, subjects, calls, seed=args.seed, max_tsne=args.max_tsne)
    study_s = time.perf_counter() - start
    print(f"study time: project() on {args.cells} cells x {args.features} features "
          f"(t-SNE on {projection.tsne_subsample or args.cells}): {study_s:.1f} s")
    for method, scores in projection.scores["methods"].items():
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()}
        print(f"  {METHOD_NAMES[method]}: {shown}")

    with tempfile.TemporaryDirectory() as tmp:
        folders = {f"model_{i}": Path(tmp) / "models" / f"model_{i}" for i in range(args.models)}
        for folder in folders.values():
            save(projection, folder)
        npz_bytes = (next(iter(folders.values())) / "projection.npz").stat().st_size
        for method in METHOD_NAMES:
            times = []
            for _ in range(1 + args.runs):
                seconds, payload_bytes = page_seconds(folders, method)
                times.append(seconds)
            print(f"page time ({METHOD_NAMES[method]}, {args.models} panels, {payload_bytes / 1e6:.1f} MB figure JSON, "
                  f"{npz_bytes / 1e6:.2f} MB npz per model): cold {times[0]:.2f} s, "
                  f"warm median {statistics.median(times[1:]):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
