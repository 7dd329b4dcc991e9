"""The commands that classify or explain cells: `predict` and `explain` (cli.py parses their arguments).

Both take `--prepare auto|off` (default auto: each white cell of a smear crop or field is made into a C-NMC-style
frame by prepare.py; a C-NMC frame passes through unchanged), `--um-per-px` and `--save-prepared DIR`. Exit codes:
0 when every input gave an answer, 1 when any input gave none (an unreadable file, no white cell), 2 for usage errors
(raised as ValueError, printed by cli.py). Research use only, like everything here.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import explain, render
from .answer import batch_summary
from .commands import _import_tensorflow_quietly
from .disk import write_bytes, write_npy
from .images import open_image
from .predict import Predictor
from .prepare import PrepareOptions, prepare
from .registry import get_spec
from .store import StudyStore


def check_study_model(store: StudyStore, key: str) -> None:
    """The study exists and its model `key` is complete; else a one-line error naming what there is."""
    get_spec(key)  # (a ValueError naming the known keys)
    store.require()
    if not store.model_complete(key):
        models = [k for k in store.read_study().get("models", []) if store.model_complete(k)]
        raise ValueError(f"study {store.name!r} has no complete model {key!r}; it has: {', '.join(models) or 'none'}")


def explain_image(store: StudyStore, key: str, source, method: str = "gradcam", target: str = "predicted"):
    """One model of a study on one image: (decoded image, Explanation). For the `explain` command."""
    explain.check_method(method)
    explain.check_target(target)
    check_study_model(store, key)
    img = open_image(source)
    classifier = explain.study_classifier(store, key)
    threshold = float(store.read_metrics(key).get("threshold", 0.5))
    return img, explain.Explainer.for_model(classifier, key).explain(img, method, target, threshold=threshold)


def _check_prepare_options(args) -> None:
    """--um-per-px and --save-prepared, refused before TensorFlow starts."""
    try:
        PrepareOptions(um_per_px=args.um_per_px)
    except ValueError as e:
        raise ValueError(f"--um-per-px: {e}") from None
    if args.save_prepared and Path(args.save_prepared).exists() and not Path(args.save_prepared).is_dir():
        raise ValueError(f"--save-prepared {args.save_prepared!r} is a file; give a folder")


def _save_prepared(folder: str | None, image: str, index: int, frame) -> None:
    if folder:
        write_bytes(Path(folder) / f"{Path(image).stem}_cell{index}.png", render.png_bytes(frame))


def cmd_predict(args) -> int:
    """One JSON line per white cell found (per image with --prepare off), each with the study, the models' config
    hash, the time (UTC) and the research-use / synthetic-data flags; a summary line on stderr when there are
    several. Exit 0 when every input gave a prediction, 1 when any line is an error (as grep and ImageMagick's
    identify do)."""
    _check_prepare_options(args)
    store = StudyStore(args.artifacts, args.study).require()
    _import_tensorflow_quietly()
    predictor = Predictor.load(store)
    for reason in predictor.broken.values():
        print(f"warning: {reason}", file=sys.stderr)
    provenance = predictor.provenance()
    results = []
    for image in args.images:
        for out in predictor.classify_prepared(image, name=image, prepare=args.prepare, um_per_px=args.um_per_px):
            if out.cell is not None:
                _save_prepared(args.save_prepared, image, out.cell.index, out.cell.frame)
            results.append(out.result)
            stamp = {**provenance, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            print(json.dumps({**out.result, **stamp}), flush=True)
    if len(results) > 1:
        print(batch_summary(results), file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


def cmd_explain(args) -> int:
    """Where one model looked. With --prepare auto (the default) each white cell of a smear crop or field is made
    into a C-NMC-style frame first and explained on it: one overlay per cell (--out as given for one cell,
    <stem>_cell<i>.png beside it for several); a C-NMC frame passes through exactly as with --prepare off.
    Exit 1 when the image has no white cell to explain."""
    if not 0.0 <= args.opacity <= 1.0:
        raise ValueError(f"--opacity must be between 0 and 1; got {args.opacity}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out!r} must end in .png")
    if args.npy and Path(args.npy).suffix.lower() != ".npy":
        raise ValueError(f"--npy {args.npy!r} must end in .npy")
    if not Path(args.image).is_file():
        raise ValueError(f"{args.image}: no such file")
    _check_prepare_options(args)
    store = StudyStore(args.artifacts, args.study).require()
    check_study_model(store, args.model)  # before TensorFlow starts: a wrong name fails at once
    config = store.read_study().get("config")
    if isinstance(config, dict) and config.get("weights") == "none":  # as the pages say it (gallery_view)
        print("note: this study's networks have random weights: the heatmap shows what an untrained network "
              "responds to, not evidence it learned", file=sys.stderr)
    if args.prepare == "off":
        _import_tensorflow_quietly()
        img, e = explain_image(store, args.model, args.image, args.method, args.target)
        _write_explanation(args, img, e, out, Path(args.npy) if args.npy else None, "")
        return 0
    options = PrepareOptions(um_per_px=args.um_per_px, colour_reference=store.read_image_reference(colour=True))
    preparation = prepare(open_image(args.image), options)
    if preparation.error:
        print(f"error: {args.image}: {preparation.error}", file=sys.stderr)
        return 1
    explain.check_method(args.method)
    explain.check_target(args.target)
    _import_tensorflow_quietly()
    explainer = explain.Explainer.for_model(explain.study_classifier(store, args.model), args.model)
    threshold = float(store.read_metrics(args.model).get("threshold", 0.5))
    several = len(preparation.cells) > 1
    for cell in preparation.cells:
        e = explainer.explain(cell.frame, args.method, args.target, threshold=threshold)
        _save_prepared(args.save_prepared, args.image, cell.index, cell.frame)
        where = "" if not cell.prepared else f"cell {cell.index} at {list(cell.bbox)}: "
        npy = _per_cell(Path(args.npy), cell.index, several) if args.npy else None
        _write_explanation(args, cell.frame, e, _per_cell(out, cell.index, several), npy, where)
    for note in preparation.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _per_cell(path: Path, index: int, several: bool) -> Path:
    """`path` for the only cell; <stem>_cell<index><suffix> beside it when there are several."""
    return path.with_name(f"{path.stem}_cell{index}{path.suffix}") if several else path


def _write_explanation(args, img, e, out: Path, npy: Path | None, where: str) -> None:
    write_bytes(out, render.png_bytes(render.overlay(img, e.heatmap, args.opacity)))
    if npy:
        write_npy(npy, e.heatmap)
    # the heatmap's reading, as the gallery and the Classify page word it: its share of heat on the cell, or why none
    print(f"{where}{args.model}: P(ALL) {e.p_all:.3f}; {explain.METHODS[e.method]} on {e.layer}, "
          f"{e.reading(img).text}; wrote {out}" + (f" and {npy}" if npy else ""))
