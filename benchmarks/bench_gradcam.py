"""One upload on the Classify page through every model of a study, predictions then Grad-CAM: old path and new.

    python benchmarks/bench_gradcam.py [--artifacts DIR] [--study demo] [--rounds 7] [--cold 2] [--image FILE]

Before explain.GradcamPass, each model ran twice per upload: Keras's `predict_on_batch` for the prediction, then
tf-keras-vis's Gradcam, eager, op by op, for the heatmap. Now one compiled pass per model gives both, and the page's
heatmap step only reads the maps the prediction's pass kept. This script times the two side by side, old and new
interleaved (the machine is shared: a busy moment slows both alike), medians:

- warm-up (`--cold` fresh processes per path, alternating): the dashboard's `classify.warm_up` after the models
  are loaded, each model's first calls included (tracing): new, the code as it is; old, as it was (each model's
  first Grad-CAM by tf-keras-vis, its P(ALL) by the classifier's `predict_on_batch`, then the page's path);
- per model (`--rounds`, in this process, on the cell's preprocessed input): old prediction + old Grad-CAM against
  the new pass;
- the page's two calls (views/6_Classify_a_cell.py, `--rounds`): `classify_upload` with the heatmaps off (the
  predictions, drawn first), then `explain_upload` with Grad-CAM. Old: the same calls with the old prediction pass
  swapped in and each heatmap computed by tf-keras-vis as `explain_upload` did; new: the code as it is.

Checks that both paths give the same P(ALL) and heatmaps (largest differences printed), and prints the load average
at the start and the end. The cell defaults to the study's first validation cell.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cnmc_core import compiled  # noqa: E402


def timed(fn, *args) -> tuple[float, object]:
    """(seconds, fn(*args))."""
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


class OldPath:
    """The Classify page's computation before GradcamPass, on the same loaded Predictor: a Keras model giving
    (pooled features, scores) run by `predict_on_batch` for the predictions, tf-keras-vis's Gradcam for the maps."""

    def __init__(self, predictor):
        import keras

        from cnmc_core.models import HEAD_POOL

        self.predictor = predictor
        self.forward = {k: keras.Model(m.input, [m.get_layer(HEAD_POOL).output, m.output])
                        for k, m in predictor.models.items()}

    def run_models(self, frame):
        """Predictor.run_models as Predictor.forward_image was: P(ALL) and features per model, no maps kept."""
        import numpy as np

        from cnmc_core.features import orient
        from cnmc_core.images import preprocess, resize_frame
        from cnmc_core.models import p_all
        from cnmc_core.registry import get_spec

        probs, feats = {}, {}
        for key, forward in self.forward.items():
            frames = resize_frame(frame, self.predictor.sizes[key])[None]
            views = np.concatenate([orient(frames, v) for v in range(self.predictor.views)])
            pooled, scores = forward.predict_on_batch(preprocess(views, get_spec(key).preprocess))
            probs[key], feats[key] = float(np.mean(p_all(np.asarray(scores)))), np.asarray(pooled)[0]
        return probs, feats, {}

    @contextmanager
    def predictions(self):
        """The Predictor's calls run the old prediction pass inside this block."""
        self.predictor.run_models = self.run_models  # (an instance attribute: shadows the method)
        try:
            yield
        finally:
            del self.predictor.run_models

    def heatmap(self, key: str, img, p_all: float | None = None):
        """Explainer.explain(img, "gradcam", p_all=p_all) as it was: float32 (H, W) in [0, 1]."""
        from cnmc_core.explain import to_image_size
        from cnmc_core.images import preprocess, resize_frame

        e = self.predictor.explainer(key)
        x = preprocess(resize_frame(img, e.size)[None], e.preprocess_mode)
        p = e.p_all(x)[0] if p_all is None else p_all  # (the classifier's own predict_on_batch)
        return to_image_size(e.library_map(x, "gradcam", p >= self.predictor.thresholds[key])[0], img.size)

    def heatmaps(self, upload) -> list[dict]:
        """explain_upload as it was: tf-keras-vis per cell and model."""
        return [{key: self.heatmap(key, cell.image, p) for key, p in cell.result.get("predictions", {}).items()}
                for cell in upload.cells]

    def warm_up(self) -> None:
        """classify.warm_up as it was."""
        from cnmc_core import render
        from cnmc_core.dashboard import classify

        frame = classify.warm_up_frame()
        for key in self.predictor.models:
            self.heatmap(key, frame)
        with self.predictions():
            self.predictor.classify_image(frame, "warm-up")
            self.predictor.classify_prepared(render.png_bytes(frame), name="warm-up")


def warm_up_seconds(artifacts: str, study: str, path: str) -> float:
    """In this (fresh) process: load the study, then the seconds of the dashboard's warm-up, `path` "old" or "new"."""
    from cnmc_core.dashboard import classify

    predictor = classify.load_predictor(artifacts, study)
    return timed(OldPath(predictor).warm_up if path == "old" else lambda: classify.warm_up(predictor))[0]


def cold_warm_ups(args, runs: int) -> dict[str, list[float]]:
    """`runs` fresh processes per path, alternating (old first, then new first, ...)."""
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(runs):
        for path in ("old", "new") if i % 2 == 0 else ("new", "old"):
            out = subprocess.run([sys.executable, __file__, "--artifacts", args.artifacts, "--study", args.study,
                                  "--warm-up-only", path], capture_output=True, text=True, check=True)
            seconds[path].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=os.environ.get("CNMC_ARTIFACTS") or str(ROOT / "artifacts"))
    ap.add_argument("--study", default="demo", help="the study (default: demo)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds, old and new interleaved (default 7)")
    ap.add_argument("--cold", type=int, default=2, help="fresh processes per path for the warm-up (default 2; 0: none)")
    ap.add_argument("--image", help="the cell to upload (default: the study's first validation cell)")
    ap.add_argument("--warm-up-only", choices=("old", "new"), help=argparse.SUPPRESS)  # one cold process's part
    args = ap.parse_args(argv)
    if args.warm_up_only:
        print(json.dumps({"seconds": warm_up_seconds(args.artifacts, args.study, args.warm_up_only)}))
        return 0
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start; compiled-pass cache "
          f"(the new path loads from it): {compiled.cache_root() or 'off'}")
    cold = cold_warm_ups(args, args.cold) if args.cold > 0 else None

    import numpy as np
    from bench_predict import cell_file, model_inputs  # (the script's own folder is on sys.path)

    from cnmc_core.dashboard import classify
    from cnmc_core.store import StudyStore

    store = StudyStore(args.artifacts, args.study)
    predictor = classify.load_predictor(args.artifacts, args.study)
    old = OldPath(predictor)
    image = cell_file(store, predictor, args.image)
    content = image.read_bytes()
    img, x = model_inputs(predictor, content)
    keys = list(predictor.models)
    explainers = {k: predictor.explainer(k) for k in keys}
    passes = {k: predictor._passes[k] for k in keys}  # (the Predictor's own passes: the ones the page runs)

    def old_page():
        with old.predictions():
            t_pred, upload = timed(classify.classify_upload, predictor, content, image.name, None, 480)
        t_maps, maps = timed(old.heatmaps, upload)
        return t_pred, t_maps, upload, maps

    def new_page():
        t_pred, upload = timed(classify.classify_upload, predictor, content, image.name, None, 480)
        t_maps, maps = timed(classify.explain_upload, predictor, upload, classify.WARM_CAM)
        return t_pred, t_maps, upload, maps

    old.warm_up()
    classify.warm_up(predictor)
    for run in (old_page, new_page):
        run()

    per_model = {k: {"old predict": [], "old Grad-CAM": [], "new pass": []} for k in keys}
    page = {"old": [], "new": []}
    for _ in range(args.rounds):
        for k in keys:
            per_model[k]["old predict"].append(timed(old.forward[k].predict_on_batch, x[k])[0])
            per_model[k]["old Grad-CAM"].append(timed(explainers[k].library_map, x[k], "gradcam", True)[0])
            per_model[k]["new pass"].append(timed(passes[k], x[k])[0])
        for name, run in (("old", old_page), ("new", new_page)):
            page[name].append(run())

    # The same answers.
    _, _, old_upload, old_maps = page["old"][-1]
    _, _, new_upload, new_maps = page["new"][-1]
    p_diff = max(abs(o.result["predictions"][k] - n.result["predictions"][k])
                 for o, n in zip(old_upload.cells, new_upload.cells) for k in n.result.get("predictions", {}))
    map_diff = max(float(np.abs(o[k] - n[k].heatmap).max()) for o, n in zip(old_maps, new_maps) for k in n)
    layer_diff = max(float(np.abs(explainers[k].library_map(x[k], "gradcam", s) - explainers[k].layer_map(
        x[k], "gradcam", s)).max()) for k in keys for s in (True, False))

    med = statistics.median
    w, h = img.size
    print(f"study {args.study!r}: {len(keys)} models, input {sorted(set(predictor.sizes.values()))} px; "
          f"cell {image.name} {w}x{h}, {len(new_upload.cells)} frame(s)")
    if cold:
        o, n = med(cold["old"]), med(cold["new"])
        print(f"warm-up after loading (classify.warm_up), median of {args.cold} fresh processes each: old {o:.1f} s, "
              f"new {n:.1f} s ({o / n:.2f}x); old {', '.join(f'{t:.1f}' for t in cold['old'])}, "
              f"new {', '.join(f'{t:.1f}' for t in cold['new'])}")
    print(f"per model, medians of {args.rounds} rounds (s):")
    print(f"  {'model':<16}{'old predict':>12}{'old Grad-CAM':>14}{'old sum':>9}{'new pass':>10}{'old/new':>9}")
    totals = {"old": 0.0, "new": 0.0}
    for k in keys:
        m = {name: med(v) for name, v in per_model[k].items()}
        before = m["old predict"] + m["old Grad-CAM"]
        totals["old"] += before
        totals["new"] += m["new pass"]
        print(f"  {k:<16}{m['old predict']:>12.3f}{m['old Grad-CAM']:>14.3f}{before:>9.3f}{m['new pass']:>10.3f}"
              f"{before / m['new pass']:>8.1f}x")
    print(f"  {'all models':<42}{totals['old']:>9.3f}{totals['new']:>10.3f}{totals['old'] / totals['new']:>8.1f}x")
    rows = {name: [(p, m, p + m) for p, m, _, _ in runs] for name, runs in page.items()}
    old_pred, old_maps_s, old_total = (med(r[i] for r in rows["old"]) for i in range(3))
    new_pred, new_maps_s, new_total = (med(r[i] for r in rows["new"]) for i in range(3))
    print(f"the page's calls for one upload, medians of {args.rounds} rounds:")
    print(f"  classify_upload (predictions):     old {old_pred:.3f} s, new {new_pred:.3f} s "
          f"({old_pred / new_pred:.2f}x)")
    print(f"  explain_upload (Grad-CAM heatmaps): old {old_maps_s:.3f} s, new {new_maps_s:.3f} s "
          f"({old_maps_s / new_maps_s:.0f}x)")
    print(f"  both:                               old {old_total:.3f} s, new {new_total:.3f} s "
          f"({old_total / new_total:.1f}x); rounds old {', '.join(f'{r[2]:.2f}' for r in rows['old'])}; "
          f"new {', '.join(f'{r[2]:.2f}' for r in rows['new'])}")
    print(f"same answers: P(ALL) differs by at most {p_diff:.1e}; heatmaps on the page by {map_diff:.1e}; "
          f"layer maps (both classes) by {layer_diff:.1e} (0-1 scale)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
