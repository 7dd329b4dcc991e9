"""`python -m cnmc_core …`: the command line. The only place (with the pages) that talks to people.

Exit codes: 0 success, 2 bad input (one line `error: …` on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

from .registry import MODELS, parse_model_list

DEMO_STUDY = "demo"
DEMO_INPUT_SIZE = 96  # the smallest size every model accepts comfortably (InceptionV3 needs 75)


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise CliError(f"{message} (see `python -m cnmc_core {self.prog.split()[-1]} --help`)")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cnmc_core", description="Seven Keras transfer models on C-NMC 2019 (ALL vs HEM): train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    m = sub.add_parser("models", help="list the seven models of the registry")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")

    s = sub.add_parser("studies", help="list the studies under the artifacts root")
    s.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def study_args(q, default_study):
        q.add_argument("--study", default=default_study, help=f"study name (default: {default_study})")
        q.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
        q.add_argument("--models", default="all", help="all, or comma-separated keys (see `models`)")
        q.add_argument("--epochs", type=int, help="maximum epochs (default 15)")
        q.add_argument("--batch-size", type=int, help="head training batch size (default 40)")
        q.add_argument("--seed", type=int, help="random seed (default 42)")
        q.add_argument("--progress-file", help="also write progress as JSON to this file")
        q.add_argument("--feature-batch-size", type=int, help="images per decoded batch when computing features (default 32)")
        compute_args(q)

    def compute_args(q):
        q.add_argument("--precision", default="float32", help=(
            "float32 (default) or mixed: the frozen base's features and fine-tuning in bfloat16/float16 "
            "(faster on GPUs); the head and the saved models stay float32"))
        q.add_argument("--xla", default="auto", help="auto (Keras's choice: on with one GPU, off on CPU), on or off: XLA-compile the forward passes")
        q.add_argument("--distribute", default="auto", help=(
            "auto (tf.distribute.MirroredStrategy when 2+ GPUs are visible; each GPU takes a whole batch), "
            "none, or mirrored (always, also over CPU devices)"))

    d = sub.add_parser("demo", help="make a synthetic C-NMC-like dataset and run the seven-model study on it (CPU, no download)")
    study_args(d, DEMO_STUDY)
    d.add_argument("--input-size", type=int, default=DEMO_INPUT_SIZE, help=f"input side in pixels (default {DEMO_INPUT_SIZE})")
    d.add_argument("--data", help="where to write the synthetic images (default: <artifacts>/.data/demo)")

    t = sub.add_parser("train", help="run a study on a C-NMC folder")
    study_args(t, "default")
    t.add_argument("--data", required=True, help="the C-NMC folder (Kaggle or TCIA layout, or fold_* folders)")
    t.add_argument("--weights", default="imagenet", help="imagenet (downloaded once), none (random), or a folder of notop .h5 files")
    t.add_argument("--input-size", type=int, help="input side in pixels for every model (default: each model's native size)")
    t.add_argument("--preset", default="paper", help=(
        "paper (the paper's protocol, default), paper_std (head on standardised features) or finetune "
        "(eight orientations, class weights, test-time augmentation, threshold from the training split, "
        "top block fine-tuned: best on a GPU; see docs/protocols.md)"))
    t.add_argument("--split", default="auto", help="auto, official, folds or random (always by subject)")

    ab = sub.add_parser("ablate", help="paper_std, then the finetune preset's parts added one by one: one study each, one table")
    ab.add_argument("--data", required=True, help="the C-NMC folder (Kaggle or TCIA layout, or fold_* folders)")
    ab.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
    ab.add_argument("--study-prefix", default="ablation", help="studies are PREFIX-0-baseline, PREFIX-1-STEP, … (default: ablation)")
    ab.add_argument("--models", default="all", help="all, or comma-separated keys (see `models`)")
    ab.add_argument("--weights", default="imagenet", help="imagenet (downloaded once), none (random), or a folder of notop .h5 files")
    ab.add_argument("--input-size", type=int, help="input side in pixels for every model (default: each model's native size)")
    ab.add_argument("--epochs", type=int, help="maximum head epochs (default 15)")
    ab.add_argument("--seed", type=int, help="random seed (default 42)")
    ab.add_argument("--steps", default="orientations,class_weight,tta,threshold,finetune",
                    help="what to add, in order, cumulatively: orientations, color_jitter, class_weight, tta, threshold, "
                         "finetune (default: orientations,class_weight,tta,threshold,finetune)")
    ab.add_argument("--progress-file", help="also write progress as JSON to this file")
    compute_args(ab)

    st = sub.add_parser("stats", help="recompute a study's statistics (intervals, ensemble, comparisons) from its predictions")
    st.add_argument("--study", required=True, help="study name")
    st.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
    st.add_argument("--replicates", type=int, default=2000, help="subject-bootstrap replicates (default 2000)")

    pr = sub.add_parser("predict", help="P(ALL) from every model of a study, one JSON line per image")
    pr.add_argument("--study", required=True, help="study name")
    pr.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (BMP, PNG, JPEG, TIFF)")

    ex = sub.add_parser("explain", help="where one model looked (Grad-CAM overlay as PNG, heatmap as .npy)")
    ex.add_argument("--study", required=True, help="study name")
    ex.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
    ex.add_argument("--model", required=True, help="model key (see `models`)")
    ex.add_argument("image", metavar="IMAGE", help="image file (BMP, PNG, JPEG, TIFF)")
    ex.add_argument("--out", required=True, help="the overlay, a .png file")
    ex.add_argument("--npy", help="also save the heatmap: float32 (height, width) in [0, 1], image coordinates")
    ex.add_argument("--method", default="gradcam", help="gradcam (default), gradcam++ or scorecam")
    ex.add_argument("--target", default="predicted", help="predicted (the model's class, default) or all (evidence for ALL)")
    ex.add_argument("--opacity", type=float, default=0.45, help="heatmap opacity over the cell, 0-1 (default 0.45)")
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_TqdmHandler()])
    for noisy in ("tensorflow", "absl", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 0
        return {"models": cmd_models, "studies": cmd_studies, "demo": cmd_demo, "train": cmd_train, "predict": cmd_predict, "explain": cmd_explain, "stats": cmd_stats, "ablate": cmd_ablate}[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished models and cached features are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.strerror or e} ({getattr(e, 'filename', '') or 'file system'})", file=sys.stderr)
        return 2


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
    print(f"{'key':<16}{'name':<16}{'input':>6}{'min':>5}  {'preprocess':<11}{'Grad-CAM layer':<22}{'params':>12}")
    for r in rows:
        print(f"{r['key']:<16}{r['name']:<16}{r['input_size']:>6}{r['min_input_size']:>5}  {r['preprocess']:<11}{r['gradcam_layer']:<22}{r['params']:>12,}")
    return 0


def cmd_studies(args) -> int:
    from .store import artifacts_root, list_studies

    studies = list_studies(args.artifacts)
    if args.json:
        print(json.dumps(studies, indent=2))
        return 0
    if not studies:
        print(f"no studies under {artifacts_root(args.artifacts)}; run `python -m cnmc_core demo` or `train --data …`")
        return 0
    for s in studies:
        state = s["problem"] or ("complete" if s["complete"] else f"incomplete ({len(s['models'])} of {len(s['expected'])} models)")
        synthetic = " [synthetic]" if s.get("synthetic") else ""
        print(f"{s['name']:<24}{state:<32}{s['created']:<27}{','.join(s['models'])}{synthetic}")
    return 0


def cmd_demo(args) -> int:
    from . import synthetic
    from .config import from_preset
    from .store import artifacts_root, check_study_name

    check_study_name(args.study)
    models = parse_model_list(args.models)
    config = from_preset(
        "paper_std", models=tuple(models), weights="none", input_size=args.input_size,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, feature_batch_size=args.feature_batch_size,
        **_compute_options(args),
    )
    data = Path(args.data) if args.data else artifacts_root(args.artifacts) / ".data" / "demo"
    if not synthetic.is_synthetic(data):
        print(f"writing synthetic C-NMC-like cells to {data} …", file=sys.stderr)
        synthetic.generate(data, synthetic.DemoSpec(seed=config.seed))
    return _run(args, data, config)


def cmd_train(args) -> int:
    from .config import from_preset
    from .store import check_study_name

    check_study_name(args.study)
    config = from_preset(
        args.preset, models=tuple(parse_model_list(args.models)), weights=args.weights,
        input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, split=args.split,
        feature_batch_size=args.feature_batch_size, **_compute_options(args),
    )
    if config.weights not in ("imagenet", "none"):
        from .models import resolve_weights  # fail before scanning if a weight file is missing
        from .registry import get_spec

        for key in config.models:
            resolve_weights(get_spec(key), config.weights)
    return _run(args, Path(args.data), config)


def _compute_options(args) -> dict:
    return {"precision": args.precision, "xla": args.xla, "distribute": args.distribute}


def _run(args, data: Path, config) -> int:
    from .study import run_study

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
        print(f"{result.excluded} file(s) excluded; reasons in {store.split_csv}")
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
    from .analysis import analyse_study
    from .store import StudyStore

    store = StudyStore(args.artifacts, args.study)
    if not store.exists():
        raise CliError(f"no study {args.study!r} under {store.root} (see `python -m cnmc_core studies`)")
    if args.replicates < 100:
        raise CliError(f"--replicates {args.replicates} is too few for a 95% interval; use 100 or more")
    done = analyse_study(store, n_boot=args.replicates)
    _print_table(store, done["models"] + (["ensemble"] if done["ensemble"] else []))
    print(f"{done['pairs']} model pairs compared: {store.comparison_csv}")
    return 0


def cmd_ablate(args) -> int:
    from .config import ablation_configs
    from .store import StudyStore, check_study_name
    from .study import run_study

    check_study_name(f"{args.study_prefix}-0-baseline")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    configs = ablation_configs(
        steps, models=tuple(parse_model_list(args.models)), weights=args.weights, input_size=args.input_size,
        epochs=args.epochs, seed=args.seed, **_compute_options(args),
    )
    if args.weights not in ("imagenet", "none"):
        from .models import resolve_weights
        from .registry import get_spec

        for key in configs[0][1].models:
            resolve_weights(get_spec(key), args.weights)
    _import_tensorflow_quietly()
    started = time.perf_counter()
    rows = []
    for i, (step, config) in enumerate(configs):
        name = f"{args.study_prefix}-{i}-{step}"
        print(f"== {name} ({i + 1} of {len(configs)})", file=sys.stderr)
        reporter = _ProgressPrinter(args.progress_file)
        try:
            run_study(Path(args.data), config, root=args.artifacts, name=name, progress=reporter)
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
        print(f"{label:<{width}}{mean(bal):>9}{mean(auc):>7}" + "".join(f"{cell(b):>{max(len(k), 5) + 2}}" for k, b in zip(keys, bal)))


def _print_table(store, keys) -> None:
    print(f"{'model':<16}{'acc':>7}{'bal.acc':>9}{'prec':>7}{'recall':>8}{'f1':>7}{'spec':>7}{'AUC':>7}  AUC 95% CI")
    for key in keys:
        m = store.read_metrics(key)
        auc = f"{m['roc_auc']:.3f}" if m.get("roc_auc") is not None else "  n/a"
        bal = m.get("balanced_accuracy") or 0.0
        ci = m.get("ci95", {}).get("roc_auc")
        ci_text = f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else ""
        print(f"{key:<16}{m['accuracy']:>7.3f}{bal:>9.3f}{m['precision']:>7.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['specificity']:>7.3f}{auc:>7}{ci_text}")


def cmd_predict(args) -> int:
    from .predict import Predictor
    from .store import StudyStore

    _import_tensorflow_quietly()
    predictor = Predictor.load(StudyStore(args.artifacts, args.study))
    for key, reason in predictor.broken.items():
        print(f"warning: {reason}", file=sys.stderr)
    failed = 0
    for image in args.images:
        result = predictor.predict(image, name=image)
        failed += "error" in result
        print(json.dumps(result), flush=True)
    return 0 if failed < len(args.images) else 2


def cmd_explain(args) -> int:
    from . import explain
    from .registry import get_spec
    from .store import StudyStore, write_bytes, write_npy

    get_spec(args.model)
    explain.check_method(args.method)
    explain.check_target(args.target)
    if not 0.0 <= args.opacity <= 1.0:
        raise CliError(f"--opacity must be between 0 and 1; got {args.opacity}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise CliError(f"--out {args.out!r} must end in .png")
    if args.npy and Path(args.npy).suffix.lower() != ".npy":
        raise CliError(f"--npy {args.npy!r} must end in .npy")
    if not Path(args.image).is_file():
        raise CliError(f"{args.image}: no such file")
    store = StudyStore(args.artifacts, args.study)
    explain.check_study_model(store, args.model)  # before TensorFlow starts: a wrong name fails at once
    _import_tensorflow_quietly()
    img, e = explain.explain_image(store, args.model, args.image, args.method, args.target)
    write_bytes(out, explain.png_bytes(explain.overlay(img, e.heatmap, args.opacity)))
    if args.npy:
        write_npy(Path(args.npy), e.heatmap)
    note = "; no location adds evidence for it (the heatmap is all zero)" if e.empty else ""
    print(f"{args.model}: P(ALL) {e.p_all:.3f}; {explain.METHODS[e.method]} on {e.layer}, evidence for {e.target}{note}; wrote {out}"
          + (f" and {args.npy}" if args.npy else ""))
    return 0


class _TqdmHandler(logging.Handler):
    """Log lines on stderr that do not collide with a progress bar being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never take the run down
            self.handleError(record)


class _ProgressPrinter:
    """Progress bars on stderr (tqdm) and, if asked, the same state as JSON in a file."""

    def __init__(self, progress_file: str | None):
        self.file = Path(progress_file) if progress_file else None
        self.bar = None
        self.bar_key = None
        self.last_write = 0.0

    def __call__(self, info: dict) -> None:
        from tqdm import tqdm

        stage = info.get("stage")
        if stage == "model":
            tqdm.write(f"[{info['index'] + 1}/{info['count']}] {MODELS[info['model']].name}", file=sys.stderr)
        elif stage == "skip":
            tqdm.write(f"[{info['index'] + 1}/{info['count']}] {MODELS[info['model']].name}: already complete", file=sys.stderr)
        elif stage == "features":
            key = (info["model"], info["split"])
            if key != self.bar_key:
                self._close_bar()
                self.bar = tqdm(total=info["total"], desc=f"  features ({info['split']})", unit="img", file=sys.stderr, leave=False)
                self.bar_key = key
            self.bar.n = info["done"]
            self.bar.refresh()
        elif stage == "finetune":
            self._close_bar()
            tqdm.write(f"  fine-tuning the top block: epoch {info['epoch']} of at most {info['epochs']}", file=sys.stderr)
        elif stage == "evaluate":
            tqdm.write("  evaluating the fine-tuned model on images", file=sys.stderr)
        elif stage in ("head", "save", "statistics", "gallery", "done"):
            self._close_bar()
        self._write(info)

    def _write(self, info: dict) -> None:
        if not self.file:
            return
        now = time.monotonic()
        if info.get("stage") == "features" and now - self.last_write < 0.5 and info.get("done") != info.get("total"):
            return
        self.last_write = now
        from .store import write_json

        write_json(self.file, {**info, "time": time.time()})

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.bar_key = None, None

    def close(self) -> None:
        self._close_bar()
