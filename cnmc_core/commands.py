"""What each command of `python -m cnmc_core` does, given its parsed arguments (cli.py parses them).

Each `cmd_*` returns the exit code; a bad input raises ValueError (or FileNotFoundError) with a
one-line message, which the CLI prints as `error: …` with exit code 2. TensorFlow is imported only
by the commands that run a model, so `models` and `studies` answer at once. The commands that classify or
explain a cell, `predict` and `explain`, are in cell_commands.py.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from . import synthetic
from .analysis import analyse_study
from .config import ablation_configs, from_preset
from .dashboard.base import load_study
from .dashboard.report import study_report
from .dataset import find_root
from .disk import write_bytes, write_json
from .models import resolve_weights
from .progress import ProgressEvent, raise_if_interrupted
from .registry import MODELS, get_spec
from .store import StudyLock, StudyStore, artifacts_root, list_studies
from .study import run_study


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe for GPUs with C-level stderr muted.

    TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are printed before its logging is set
    up and ignore TF_CPP_MIN_LOG_LEVEL; they would bury our one-line messages. Python errors
    still propagate.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import keras  # noqa: F401 - imported here to be frozen below
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            # Take GPU memory as needed, so the dashboard and a training run can share one card.
            tf.config.experimental.set_memory_growth(gpu, True)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    # What the imports made lives as long as the process: keep it out of every later collection
    # (the study collects after each model; walking TensorFlow's objects costs about 0.2 s each time).
    gc.collect()
    gc.freeze()



def cmd_models(args) -> int:
    rows = [
        {"key": s.key, "name": s.name, "input_size": s.input_size, "min_input_size": s.min_input_size,
         "preprocess": s.preprocess, "gradcam_layer": s.gradcam_layer, "params": s.params,
         "features": s.features, "weights_file": s.weights_file, "weights_md5": s.weights_md5}
        for s in MODELS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    layer = max(len(r["gradcam_layer"]) for r in rows) + 2  # ConvNeXt's layer name is 38 characters
    print(f"{'key':<20}{'name':<18}{'input':>6}{'min':>5}  {'preprocess':<11}{'Grad-CAM layer':<{layer}}{'params':>12}")
    for r in rows:
        print(f"{r['key']:<20}{r['name']:<18}{r['input_size']:>6}{r['min_input_size']:>5}  {r['preprocess']:<11}"
              f"{r['gradcam_layer']:<{layer}}{r['params']:>12,}")
    return 0


def cmd_studies(args) -> int:
    studies = list_studies(args.artifacts)
    if args.json:
        print(json.dumps(studies, indent=2))
        return 0
    if not studies:
        print(f"no studies under {artifacts_root(args.artifacts)}; "
              "run `python -m cnmc_core demo` or `train --data …`")
        return 0
    for s in studies:
        state = s["problem"] or (
            "complete" if s["complete"] else f"incomplete ({len(s['models'])} of {len(s['expected'])} models)")
        synthetic_note = " [synthetic]" if s.get("synthetic") else ""
        print(f"{s['name']:<24}{state:<32}{s['created']:<27}{','.join(s['models'])}{synthetic_note}")
    return 0


def cmd_demo(args) -> int:
    config = from_preset(
        "paper_std", models=tuple(args.models), weights="none", input_size=args.input_size,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, feature_batch_size=args.feature_batch_size,
        **_runtime_options(args),
    )
    store = StudyStore(args.artifacts, args.study)
    data = args.data or artifacts_root(args.artifacts) / ".data" / "demo"
    with StudyLock(store):  # before the images: a second build of this study stops at once
        if not synthetic.is_synthetic(data):
            print(f"writing synthetic C-NMC-like cells to {data} …", file=sys.stderr)
        synthetic.ensure_generated(data, synthetic.DemoSpec(seed=config.seed))
        return _run(args, data, config)


def cmd_train(args) -> int:
    StudyStore(args.artifacts, args.study)  # a bad study name fails before anything else
    config = from_preset(
        args.preset, models=tuple(args.models), weights=args.weights,
        input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, split=args.split,
        feature_batch_size=args.feature_batch_size, stopping=args.stopping, **_runtime_options(args),
    )
    _check_weight_files(config.models, config.weights)
    find_root(args.data)  # a folder without C-NMC images is said before TensorFlow's import (seconds)
    return _run(args, args.data, config)


def _runtime_options(args) -> dict:
    return {"precision": args.precision, "xla": args.xla, "distribute": args.distribute}


def _check_weight_files(keys, weights: str) -> None:
    """With a folder of weight files: every file there and whole, before the scan starts."""
    if weights not in ("imagenet", "none"):
        for key in keys:
            resolve_weights(get_spec(key), weights)


def _run(args, data: Path, config) -> int:
    _import_tensorflow_quietly()
    started = time.perf_counter()
    reporter = _ProgressPrinter(args.progress_file)
    try:
        result = run_study(data, config, root=args.artifacts, name=args.study, progress=reporter)
    finally:
        reporter.close()
    store = result.store
    notes = []
    if store.read_study()["data"].get("synthetic"):
        notes.append("synthetic data")
    if config.weights == "none":
        notes.append("random weights")
    print(f"\nstudy {store.name!r} in {store.dir} ({time.perf_counter() - started:.0f} s)"
          + (f" — {', '.join(notes)}: not clinical results" if notes else ""))
    if result.excluded:
        duplicates = store.read_study()["data"].get("summary", {}).get("duplicates", 0)
        print(f"{result.excluded} file(s) excluded; reasons in {store.split_csv}"
              + (f" ({duplicates} identical to a file in an earlier split)" if duplicates else ""))
    if result.data_changed:
        print("the data changed since this study last ran; its models were retrained")
    if result.skipped:
        print(f"already complete, skipped: {', '.join(result.skipped)}")
    _print_table(store, list(config.models) + (["ensemble"] if store.model_complete("ensemble") else []))
    default_root = Path(os.environ.get("CNMC_ARTIFACTS") or "artifacts")
    env = "" if store.root.resolve() == default_root.resolve() else f"CNMC_ARTIFACTS={store.root} "
    print(f"see them in the dashboard: {env}streamlit run app.py")
    return 0


def cmd_stats(args) -> int:
    store = StudyStore(args.artifacts, args.study).require()
    done = analyse_study(store, n_boot=args.replicates, partial_ensemble=args.partial_ensemble)
    _print_table(store, done["models"] + (["ensemble"] if done["ensemble"] else []))
    print(f"{done['pairs']} model pairs compared: {store.comparison_csv}")
    if done["verdict"]:
        print(done["verdict"])
    for line in provenance_lines(store, done["models"]):
        print(line)
    return 0


def cmd_report(args) -> int:
    """One self-contained HTML file of the study (dashboard.report): the pages' results, offline, no server."""
    out = Path(args.out or f"{args.study}_report.html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {str(out)!r} must end in .html")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; give a file name ending in .html")
    store = StudyStore(args.artifacts, args.study).require()
    started = time.perf_counter()
    data = load_study(str(store.root), store.name)
    if not data.models:
        raise ValueError(f"study {store.name!r} has no finished model yet (status: {data.status}); nothing to report")
    page = study_report(data).encode("utf-8")
    write_bytes(out, page)
    print(f"wrote {out}: {len(page) / 1e6:.1f} MB, {len(data.models)} model(s), "
          f"{time.perf_counter() - started:.1f} s; it opens in any browser, offline")
    return 0


def provenance_lines(store, keys) -> list[str]:
    """What a reader of the figures must know: synthetic data or random weights, and models whose stopping
    epoch the validation split chose (their validation figures are optimistic)."""
    info = store.read_study()
    made = [w for w, yes in (("synthetic data", section(info, "data").get("synthetic")),
                             ("random weights", section(info, "config").get("weights") == "none")) if yes]
    lines = [f"synthetic: {' and '.join(made)}; these are not clinical results"] if made else []
    chose = [k for k in keys if section(store.read_metrics(k), "stopping").get("validation_chose", True)]
    if chose:
        lines.append(f"the stopping epoch of {', '.join(chose)} was chosen on the validation split (or not recorded, "
                     "before issue 14): their validation figures are optimistic")
    return lines


def section(d, key: str) -> dict:
    value = d.get(key) if isinstance(d, dict) else None
    return value if isinstance(value, dict) else {}


def cmd_ablate(args) -> int:
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    configs = ablation_configs(
        steps, models=tuple(args.models), weights=args.weights, input_size=args.input_size,
        epochs=args.epochs, seed=args.seed, **_runtime_options(args),
    )
    names = [f"{args.study_prefix}-{i}-{step}" for i, (step, _) in enumerate(configs)]
    for name in names:
        StudyStore(args.artifacts, name)  # a bad prefix fails before any training
    _check_weight_files(configs[0][1].models, args.weights)
    find_root(args.data)  # (as train does)
    _import_tensorflow_quietly()
    started = time.perf_counter()
    rows = []
    for i, ((step, config), name) in enumerate(zip(configs, names)):
        print(f"== {name} ({i + 1} of {len(configs)})", file=sys.stderr)
        reporter = _ProgressPrinter(args.progress_file)
        try:
            run_study(args.data, config, root=args.artifacts, name=name, progress=reporter)
        finally:
            reporter.close()
        store = StudyStore(args.artifacts, name)
        rows.append((f"{i} {'+ ' if i else ''}{step}", {k: store.read_metrics(k) for k in config.models}))
    print(f"\nablation in {time.perf_counter() - started:.0f} s: each row adds its step to the rows above "
          f"(studies {args.study_prefix}-N-STEP)")
    _print_ablation(rows, list(configs[0][1].models))
    return 0


def _print_ablation(rows, keys) -> None:
    """One row per step: mean balanced accuracy and AUC over the models, then each model's balanced accuracy."""
    def mean(values):
        values = [v for v in values if v is not None]
        return f"{sum(values) / len(values):.3f}" if values else "n/a"

    def cell(value):
        return "n/a" if value is None else f"{value:.3f}"

    width = max(len(r[0]) for r in rows) + 2
    print(f"{'step':<{width}}{'bal.acc':>9}{'AUC':>7}" + "".join(f"{k:>{max(len(k), 5) + 2}}" for k in keys))
    for label, metrics in rows:
        bal = [metrics[k].get("balanced_accuracy") for k in keys]
        auc = [metrics[k].get("roc_auc") for k in keys]
        print(f"{label:<{width}}{mean(bal):>9}{mean(auc):>7}"
              + "".join(f"{cell(b):>{max(len(k), 5) + 2}}" for k, b in zip(keys, bal)))


def _print_table(store, keys) -> None:
    print(f"{'model':<16}{'acc':>7}{'bal.acc':>9}{'prec':>7}{'recall':>8}{'f1':>7}{'spec':>7}{'AUC':>7}  AUC 95% CI")
    for key in keys:
        m = store.read_metrics(key)
        auc = f"{m['roc_auc']:.3f}" if m.get("roc_auc") is not None else "  n/a"
        bal = m.get("balanced_accuracy") or 0.0
        ci = m.get("ci95", {}).get("roc_auc")
        ci_text = f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else ""
        print(f"{key:<16}{m['accuracy']:>7.3f}{bal:>9.3f}{m['precision']:>7.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}"
              f"{m['specificity']:>7.3f}{auc:>7}{ci_text}")


class _ProgressPrinter:
    """Progress bars on stderr (tqdm) and, if asked, the same events as JSON in a file."""

    def __init__(self, progress_file: str | None):
        self.file = Path(progress_file) if progress_file else None
        self.bar = None
        self.bar_key = None
        self.last_write = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        raise_if_interrupted()
        stage = event.stage
        if stage in ("model", "skip"):
            done = ": already complete" if stage == "skip" else ""
            tqdm.write(f"[{event.index + 1}/{event.count}] {MODELS[event.model].name}{done}", file=sys.stderr)
        elif stage == "features":
            key = (event.model, event.split)
            if key != self.bar_key:
                self._close_bar()
                self.bar = tqdm(total=event.total, desc=f"  features ({event.split})", unit="img", file=sys.stderr,
                                leave=False)
                self.bar_key = key
            self.bar.n = event.done
            self.bar.refresh()
        elif stage == "finetune":
            self._close_bar()
            tqdm.write(f"  fine-tuning the top block: epoch {event.epoch} of at most {event.epochs}", file=sys.stderr)
        elif stage == "evaluate":
            tqdm.write("  evaluating the fine-tuned model on images", file=sys.stderr)
        elif stage in ("head", "save", "statistics", "gallery", "done"):
            self._close_bar()
        self._write(event)

    def _write(self, event: ProgressEvent) -> None:
        if not self.file:
            return
        now = time.monotonic()
        if event.stage == "features" and now - self.last_write < 0.5 and event.done != event.total:
            return
        self.last_write = now
        write_json(self.file, {**event.to_dict(), "time": time.time()})

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.bar_key = None, None

    def close(self) -> None:
        self._close_bar()
