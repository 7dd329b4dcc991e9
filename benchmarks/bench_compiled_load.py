"""What a saved compiled pass saves at the dashboard's model load (issue 16; cnmc_core/compiled.py).

    python benchmarks/bench_compiled_load.py [--artifacts DIR] [--study demo] [--runs 2] [--out DIR]

The Classify page's background load reads each model's `model.keras` and then traces its compiled Grad-CAM pass
(explain.GradcamPass) on the first call: on the seven-model demo that is most of the time before the first upload
can be answered. The alternative measured here: the pass saved once as a TensorFlow SavedModel (the traced function
and the model's weights, no Keras objects), and loaded with `tf.saved_model.load`, whose first call needs no trace.

Each run starts two fresh processes, alternated (the machine is shared: a busy moment slows both alike), each calling
`compiled.load_pass` for every model, as the Predictor does, and then the pass once:
- keras: with the cache off: `models.load_classifier` + `GradcamPass` + its first call, which traces;
- saved: with the cache filled: the entry found by the sha256 of the model file + `tf.saved_model.load` + its first
  call (the hash is counted).
Both processes import TensorFlow first (not counted). Before the runs, this process fills the cache `--out`/cache
with `compiled.save` (default: a temporary folder, removed at the end; the save time is printed). The first call is
on the same random input in both, and the largest differences of the maps and the scores between the two are
printed: 0 means the saved pass gives exactly the same answers.

The dashboard does this itself (cnmc_core/compiled.py): it saves each pass in a machine-local cache after its first
warm-up, never in a study, since a saved pass is an executable TensorFlow graph. This script measures the same code
apart from the dashboard, in a cache folder of its own.
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
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
import tensorflow as tf
mode, study_dir, out = sys.argv[2], sys.argv[3], sys.argv[4]
keys = sys.argv[5].split(",")
os.environ["CNMC_COMPILED_CACHE"] = "off" if mode == "keras" else f"{out}/cache"
from cnmc_core import compiled
from cnmc_core.models import HEAD_POOL, load_classifier
from cnmc_core.registry import get_spec
rows = {}
for key in keys:
    x = np.load(f"{out}/{key}.x.npy")
    t0 = time.perf_counter()
    # What the Predictor calls for each model: the Keras model and its pass (cache off), or the cached pass.
    classifier, run, _ = compiled.load_pass(Path(f"{study_dir}/models/{key}/model.keras"),
                                            get_spec(key).gradcam_layer, [HEAD_POOL], load_classifier)
    if (mode == "saved") != isinstance(run, compiled.SavedPass):
        sys.exit(f"{key}: expected the {mode} pass, got {type(run).__name__}")
    t1 = time.perf_counter()
    cams, scores, _ = run(x)
    t2 = time.perf_counter()
    rows[key] = {"load": t1 - t0, "first_call": t2 - t1,
                 "cam_diff": float(np.abs(cams - np.load(f"{out}/{key}.cams.npy")).max()),
                 "score_diff": float(np.abs(scores - np.load(f"{out}/{key}.scores.npy")).max())}
print(json.dumps(rows))
"""


def save_passes(study_dir: Path, keys: list[str], out: Path) -> dict[str, float]:
    """Each model's pass saved with `compiled.save` in the cache `out/cache` (what the dashboard does once its models
    are ready), with a random input and the Keras pass's answers on it (`out/key.*.npy`); returns the seconds each
    save took."""
    import numpy as np

    from cnmc_core import compiled
    from cnmc_core.models import HEAD_POOL, load_classifier
    from cnmc_core.registry import get_spec

    os.environ[compiled.ENV] = str(out / "cache")
    seconds = {}
    for i, key in enumerate(keys):
        layer = get_spec(key).gradcam_layer
        model, gradcam_pass, entry = compiled.load_pass(study_dir / "models" / key / "model.keras", layer,
                                                        [HEAD_POOL], load_classifier)
        if model is None or entry is None:
            raise SystemExit(f"error: {key}: the cache under {out / 'cache'} already holds it or cannot be written")
        size = int(model.input_shape[1])
        x = np.random.default_rng(i).normal(size=(1, size, size, 3)).astype(np.float32)
        cams, scores, _ = gradcam_pass(x)
        for name, array in (("x", x), ("cams", cams), ("scores", scores)):
            np.save(out / f"{key}.{name}.npy", array)
        start = time.perf_counter()
        if not compiled.save(gradcam_pass, model, entry, layer):
            raise SystemExit(f"error: {key}: the pass could not be saved under {out / 'cache'} (see the log line)")
        seconds[key] = time.perf_counter() - start
    return seconds


def child(mode: str, study_dir: Path, out: Path, keys: list[str]) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), mode, str(study_dir), str(out), ",".join(keys)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"error: the {mode} process failed: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", default=os.environ.get("CNMC_ARTIFACTS", str(ROOT / "artifacts")))
    ap.add_argument("--study", default="demo")
    ap.add_argument("--runs", type=int, default=2, help="fresh-process pairs, alternated (default 2)")
    ap.add_argument("--out", help="where the saved passes go (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 20:
        ap.error("--runs must be between 1 and 20")
    from cnmc_core.store import StudyStore

    store = StudyStore(args.artifacts, args.study)
    if not store.exists():
        ap.error(f"no study {args.study!r} under {args.artifacts}: make one with `python -m cnmc_core demo`")
    keys = [k for k in store.read_study().get("models", []) if store.model_complete(k)]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cnmc_compiled_"))  # (made 0700)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "cache").exists():
        ap.error(f"{out / 'cache'} exists: give an --out folder without a cache in it")
    try:
        print(f"load average {os.getloadavg()[0]:.1f}; saving {len(keys)} passes under {out} ...", flush=True)
        saves = save_passes(store.dir, keys, out)
        print(f"saved in {sum(saves.values()):.1f} s: " + ", ".join(f"{k} {s:.1f}" for k, s in saves.items()))
        totals: dict[str, list[float]] = {"keras": [], "saved": []}
        worst = {"cam_diff": 0.0, "score_diff": 0.0}
        for run in range(args.runs):
            for mode in ("keras", "saved") if run % 2 == 0 else ("saved", "keras"):
                rows = child(mode, store.dir, out, keys)
                total = sum(r["load"] + r["first_call"] for r in rows.values())
                totals[mode].append(total)
                for name in worst:
                    worst[name] = max(worst[name], *(r[name] for r in rows.values()))
                print(f"run {run + 1} {mode:5s}: {total:5.2f} s (load {sum(r['load'] for r in rows.values()):.2f}"
                      f" + first calls {sum(r['first_call'] for r in rows.values()):.2f}); "
                      + ", ".join(f"{k} {r['load'] + r['first_call']:.2f}" for k, r in rows.items()), flush=True)
        keras, saved = statistics.median(totals["keras"]), statistics.median(totals["saved"])
        print(f"median over {args.runs} run(s): keras {keras:.2f} s, saved {saved:.2f} s, saved / keras "
              f"{saved / keras:.2f}; largest differences: maps {worst['cam_diff']:.2g}, scores "
              f"{worst['score_diff']:.2g}; load average {os.getloadavg()[0]:.1f}")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
