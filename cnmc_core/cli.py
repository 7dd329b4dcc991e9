"""`python -m cnmc_core …`: the command line. The only place (with the pages) that talks to people.

This module parses the arguments (each shared option written once, in a parent parser; bad values
refused here, before anything is written) and dispatches to commands.py.
Exit codes: 0 success, 2 bad input (one line `error: …` on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from . import cell_commands, commands, explain, progress
from .analysis import MAX_BOOT
from .config import PRESETS, STOPPING
from .predict import PREPARE_MODES
from .registry import MODELS, parse_model_list
from .runtime import DISTRIBUTE_MODES, PRECISIONS, XLA_MODES
from .splits import SPLIT_MODES

DEMO_STUDY = "demo"
DEMO_INPUT_SIZE = 96  # the smallest size every model accepts comfortably (InceptionV3 needs 75)
MIN_BOOT = 100  # fewer bootstrap replicates give no usable 95% interval


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    commands: dict[str, argparse.ArgumentParser] = {}  # the top-level parser's: command -> its parser

    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise CliError(f"{message} (see `{self.prog} --help`)")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# ---- argument types: a bad value is refused by the parser, before anything is written ----------------

def _int_from(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low:,} to {high:,}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {value}")
        return value

    return parse


def _model_keys(text: str) -> list[str]:
    try:
        return parse_model_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give the folder")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cnmc_core",
                description="Seven Keras transfer models on C-NMC 2019 (ALL vs HEM): train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p.commands = sub.choices

    # Options shared by several commands, each written once.
    root = _Parser(add_help=False)
    root.add_argument("--artifacts", help="artifacts root (default: $CNMC_ARTIFACTS or ./artifacts)")
    runtime = _Parser(add_help=False)
    runtime.add_argument("--precision", default="float32", choices=PRECISIONS, help=(
        "float32 (default) or mixed: the frozen base's features and fine-tuning in bfloat16/float16 "
        "(faster on GPUs); the head and the saved models stay float32"))
    runtime.add_argument("--xla", default="auto", choices=XLA_MODES,
                         help="auto (Keras's choice: on with one GPU, off on CPU), on or off: "
                              "XLA-compile the forward passes")
    runtime.add_argument("--distribute", default="auto", choices=DISTRIBUTE_MODES, help=(
        "auto (tf.distribute.MirroredStrategy when 2+ GPUs are visible; each GPU takes a whole batch), "
        "none, mirrored (always, also over CPU devices), or multiworker (MultiWorkerMirroredStrategy over the "
        "machines in $TF_CONFIG: each runs the same command; no fine-tuning; see docs/protocols.md)"))
    training = _Parser(add_help=False, parents=[root, runtime])
    training.add_argument("--models", default="all", type=_model_keys,
                          help="all (the paper's seven), paper+modern, or comma-separated keys (see `models`)")
    training.add_argument("--epochs", type=_int_from(1), help="maximum head epochs (default 15)")
    training.add_argument("--seed", type=_int_from(0), help="random seed (default 42)")
    training.add_argument("--progress-file", help="also write progress as JSON to this file")
    batches = _Parser(add_help=False)
    batches.add_argument("--batch-size", type=_int_from(1), help="head training batch size (default 40)")
    batches.add_argument("--feature-batch-size", type=_int_from(1),
                         help="images per decoded batch when computing features (default 32)")
    real_data = _Parser(add_help=False)
    real_data.add_argument("--data", required=True, type=_folder,
                           help="the C-NMC folder (Kaggle or TCIA layout, or fold_* folders)")
    real_data.add_argument("--weights", default="imagenet",
                           help="imagenet (downloaded once), none (random), or a folder of notop .h5 files")
    real_data.add_argument("--input-size", type=_int_from(1),
                           help="input side in pixels for every model (default: each model's native size)")

    def study(q, default: str | None = None):
        if default is None:
            q.add_argument("--study", required=True, help="study name")
        else:
            q.add_argument("--study", default=default, help=f"study name (default: {default})")

    def preparation(q, verb: str):  # predict and explain: the smear preparation's options
        q.add_argument("--prepare", default="auto", choices=PREPARE_MODES, help=(
            f"auto (default): find the white cells of a smear crop or field and {verb} a C-NMC-style frame of each "
            f"(a C-NMC frame passes through unchanged); off: {verb} each image as it is"))
        q.add_argument("--um-per-px", type=float, metavar="X",
                       help="the images' scale in micrometres per pixel (default: measured from their red cells)")
        q.add_argument("--save-prepared", metavar="DIR",
                       help="also write each cell's frame, as the models saw it, to DIR/<image stem>_cell<i>.png")

    m = sub.add_parser("models", help="list the seven models of the registry")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=commands.cmd_models)

    s = sub.add_parser("studies", parents=[root], help="list the studies under the artifacts root")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=commands.cmd_studies)

    d = sub.add_parser("demo", parents=[training, batches],
                       help="make a synthetic C-NMC-like dataset and run the seven-model study on it "
                            "(CPU, no download)")
    study(d, DEMO_STUDY)
    d.add_argument("--input-size", type=_int_from(1), default=DEMO_INPUT_SIZE,
                   help=f"input side in pixels (default {DEMO_INPUT_SIZE})")
    d.add_argument("--data", type=_folder, help="where to write the synthetic images (default: <artifacts>/.data/demo)")
    d.set_defaults(func=commands.cmd_demo)

    t = sub.add_parser("train", parents=[training, batches, real_data], help="run a study on a C-NMC folder")
    study(t, "default")
    t.add_argument("--preset", default="paper", choices=PRESETS, help=(
        "paper (the paper's protocol, default), paper_std (head on standardised features) or finetune "
        "(eight orientations, class weights, test-time augmentation, threshold from the training split, "
        "top block fine-tuned: best on a GPU; see docs/protocols.md)"))
    t.add_argument("--split", default="auto", choices=SPLIT_MODES,
                   help="auto, official, folds or random (always by subject); cv: validation as auto, and the head "
                        "also cross-validated over the training subjects (C-NMC's three folds, else 3 subject-disjoint "
                        "folds): out-of-fold P(ALL) in oof.csv, a cv block in metrics.json")
    t.add_argument("--stopping", choices=STOPPING, help=(
        "what chooses the stopping epoch: val (the validation loss, last epoch kept: the paper's rule, the preset "
        "paper's default), inner (an inner slice of the training subjects: the validation split chooses nothing; "
        "paper_std's and finetune's default) or val_best (the validation loss, best epoch restored: before issue 14)"))
    t.set_defaults(func=commands.cmd_train)

    ab = sub.add_parser("ablate", parents=[training, real_data],
                        help="paper_std, then the finetune preset's parts added one by one: one study each, one table")
    ab.add_argument("--study-prefix", default="ablation",
                    help="studies are PREFIX-0-baseline, PREFIX-1-STEP, … (default: ablation)")
    ab.add_argument("--steps", default="orientations,class_weight,tta,threshold,finetune",
                    help="what to add, in order, cumulatively: orientations, color_jitter, class_weight, tta, "
                         "threshold, finetune (default: orientations,class_weight,tta,threshold,finetune)")
    ab.set_defaults(func=commands.cmd_ablate)

    st = sub.add_parser("stats", parents=[root],
                        help="recompute a study's statistics (intervals, ensemble, comparisons) from its predictions")
    study(st)
    st.add_argument("--replicates", type=_int_from(MIN_BOOT, MAX_BOOT), default=2000,
                    help=f"subject-bootstrap replicates, {MIN_BOOT} to {MAX_BOOT:,} (default 2000)")
    st.add_argument("--partial-ensemble", action="store_true",
                    help="build the ensemble from the complete models even when some model of the study is missing")
    st.set_defaults(func=commands.cmd_stats)

    rp = sub.add_parser("report", parents=[root],
                        help="one self-contained HTML file of a study (metrics, curves, tests, Grad-CAM); opens "
                             "offline")
    study(rp)
    rp.add_argument("--out", help="the .html file to write (default: <study>_report.html in this folder)")
    rp.set_defaults(func=commands.cmd_report)

    pr = sub.add_parser("predict", parents=[root], help=(
        "P(ALL) from every model of a study, one JSON line per white cell found (exit 1 when any line is an error)"))
    study(pr)
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (BMP, PNG, JPEG, TIFF)")
    preparation(pr, "classify")
    pr.set_defaults(func=cell_commands.cmd_predict)

    ex = sub.add_parser("explain", parents=[root],
                        help="where one model looked (Grad-CAM overlay as PNG, heatmap as .npy)")
    study(ex)
    ex.add_argument("--model", required=True, choices=list(MODELS), metavar="KEY", help="model key (see `models`)")
    ex.add_argument("image", metavar="IMAGE", help="image file (BMP, PNG, JPEG, TIFF)")
    ex.add_argument("--out", required=True, help="the overlay, a .png file")
    ex.add_argument("--npy", help="also save the heatmap: float32 (height, width) in [0, 1], image coordinates")
    ex.add_argument("--method", default="gradcam", choices=list(explain.METHODS),
                    help="gradcam (default), gradcam++ or scorecam")
    ex.add_argument("--target", default="predicted", choices=list(explain.TARGETS),
                    help="predicted (the model's class, default) or all (evidence for ALL)")
    ex.add_argument("--opacity", type=float, default=0.45, help="heatmap opacity over the cell, 0-1 (default 0.45)")
    preparation(ex, "explain")
    ex.set_defaults(func=cell_commands.cmd_explain)
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the command's own parser, so the hint names it
            parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
        if not args.command:
            parser.print_help()
            return 0
        with logging_redirect_tqdm(), progress.catching_interrupts():  # (log lines do not break a progress bar)
            return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished models and cached features are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.strerror or e} ({getattr(e, 'filename', '') or 'file system'})", file=sys.stderr)
        return 2
