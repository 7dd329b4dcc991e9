"""The Classify page: the study's models loaded once, one upload through all of them, the tables and the
heatmap overlays the page shows. Uploads stay in memory; nothing is written.

With the preparation on (the default), each upload may be a smear crop or field: every white cell found is made
into a C-NMC-style frame and classified (predict.Predictor.classify_prepared); the page shows the upload with a
numbered outline on each cell, then one row per cell.

Loading the Predictor imports TensorFlow and reads every model (10-20 s on 2 cores). So it starts in the
background as soon as a page of the study is drawn (`warm`), once per process and per version of the study's
files; the page's cached loader (`loaded_predictor`) waits for that same load instead of starting another.

Streamlit runs a full garbage collection after every script run of every session (twice: `runner.postScriptGC`
and `keras.backend.clear_session()`, which it calls whenever Keras is imported). With TensorFlow and seven models
in memory each took 0.2-1 s on 2 busy cores, holding the interpreter: with 8 sessions the server stopped
answering for minutes. So the loader moves what it loaded out of the collector's reach (`gc.freeze()`, CPython's
tool for long-lived objects) once TensorFlow is in, as each model is in place and once all are warm; an evicted load
gives them back (`gc.unfreeze()`). The project's `.streamlit/config.toml` also turns `runner.postScriptGC` off.

That `clear_session()` also empties TensorFlow's kernel cache under the cached models: one upload's Grad-CAMs,
which then ran op by op (tf-keras-vis, before explain.GradcamPass), took 6.2 s instead of 2.7 s for the seven
demo models (`benchmarks/bench_warm.py --parts gc`). So once the loader has started TensorFlow, the call made by
Streamlit's script runner (and only that caller) does nothing (`keep_models_across_script_runs`).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image, ImageDraw

from .. import explain, predict, render
from ..images import ImageError, open_image
from ..store import StudyStore

CAM_METHODS = dict(explain.METHODS)  # method key -> display name ("gradcam" -> "Grad-CAM")
DEFAULT_OPACITY = render.DEFAULT_OPACITY  # the heatmap's share of an overlay's colour


log = logging.getLogger(__name__)


def load_predictor(base: str, name: str, each=None) -> predict.Predictor:
    """Every trained model of the study, loaded for prediction (imports TensorFlow: cache the result); `each(predictor,
    key)` as each model is in place (predict.Predictor.load).

    Raises FileNotFoundError or ValueError, with one line for a person, when no model can be loaded.
    """
    return predict.Predictor.load(StudyStore(base, name), each=each)


# ---- the study's models, loaded once per process, in the background ------------------------------

WARM_SETTING = "CNMC_WARM_MODELS"  # "1": load in the background; "0": only when a file is dropped; unset: auto
WARM_DELAY_S = 3.0  # the page that asked is drawn first: the load starts this long after (sooner if wanted)
WARM_CAM = "gradcam"  # the page's default heatmap: each model's pass (it gives the predictions too) is traced
KEPT = 2  # loads kept per process, newest first (the page's st.cache_resource keeps as many)


@dataclass
class ModelsLoad:
    """One version of a study's models (`stamp`, base.stamp), loading in a thread of its own or loaded.

    Read by any session; written only by its thread. `ready` counts models loaded and warmed up: their first
    forward pass and first Grad-CAM done, so a user's first upload pays neither.
    """

    stamp: tuple
    total: int | None = None  # models expected (the study's finished ones; once loaded, those that loaded)
    ready: int = 0
    stage: str = "waiting"  # waiting | loading | warming | ready | failed
    predictor: predict.Predictor | None = None
    error: Exception | None = None  # why it failed (raised again to each page that asks)
    seconds: float | None = None  # from the start of loading to ready
    wanted: threading.Event = field(default_factory=threading.Event)  # a page needs it now: no more waiting
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> predict.Predictor:
        """The loaded Predictor, once the thread is done; raises what loading raised."""
        self.wanted.set()
        self.done.wait()
        if self.error is not None:
            raise self.error
        if self.predictor is None:  # (the thread was stopped by something no page can act on)
            raise RuntimeError("the study's models were not loaded; reload the page to try again")
        return self.predictor


_LOADS: OrderedDict[tuple, ModelsLoad] = OrderedDict()  # by stamp, oldest first
_LOCK = threading.Lock()


def warm_enabled(app_test: bool) -> bool:
    """Whether pages start loading models in the background: $CNMC_WARM_MODELS "1" or "0"; otherwise yes in a
    served dashboard, no under AppTest (`app_test`: unit tests load models only when they upload a file)."""
    setting = os.environ.get(WARM_SETTING, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    return not app_test


def warm(stamp: tuple, total: int | None = None, delay: float = WARM_DELAY_S) -> ModelsLoad:
    """Start loading the models of the study at `stamp` in a thread, after `delay` seconds (0: now, also for a
    load already waiting), unless this version of the study is loading or loaded already. Never raises."""
    with _LOCK:
        load = _LOADS.get(stamp)
        if load is None:
            load = _LOADS[stamp] = ModelsLoad(stamp, total)
            threading.Thread(target=_load, args=(load, delay), name=f"cnmc-models-{stamp[1]}", daemon=True).start()
            while len(_LOADS) > KEPT:
                _LOADS.popitem(last=False)  # (a page still holding the oldest keeps it until it lets go)
                gc.unfreeze()  # its models become collectable; the new load freezes what it keeps
        _LOADS.move_to_end(stamp)
    if delay <= 0:
        load.wanted.set()
    return load


def load_status(stamp: tuple) -> ModelsLoad | None:
    """The load of this version of the study's models, or None when none was started in this process."""
    with _LOCK:
        return _LOADS.get(stamp)


def loaded_predictor(stamp: tuple) -> predict.Predictor:
    """The study's Predictor: the background load's (started now if no page started it), waited for.

    Raises FileNotFoundError or ValueError, with one line for a person, when no model can be loaded.
    """
    return warm(stamp, delay=0.0).wait()


def models_line(load: ModelsLoad | None, n: int) -> str:
    """The Classify page's line on its models: how many of the `n` are ready, or when they will load."""
    if load is None:
        return f"The {n} models load when the first file is dropped (the first time, TensorFlow starts: about 10-20 s)."
    total = load.total or n
    if load.stage == "ready":
        return f"✅ {load.ready} of {total} models ready."
    if load.stage == "failed":
        return "The models could not be loaded: dropping a file shows why."
    doing = "starting TensorFlow and loading them" if load.stage in ("waiting", "loading") else "warming them up"
    return (f"⏳ {load.ready} of {total} models ready ({doing}, in the background). You can drop files now: "
            "they are classified as soon as the models are ready.")


def _load(load: ModelsLoad, delay: float) -> None:
    """The thread: wait, load every model, then warm each up on a synthetic cell (nothing is read but the study).

    A model whose pass came from this machine's cache is warmed in a second thread as soon as it is in place, while
    the next one loads: that first call runs mostly outside Python's lock, reading a model mostly inside it. On the
    2-core machine the seven demo models were ready in 0.72 of the time this way. A pass traced here (no cache entry
    yet) is warmed after the load, as before: tracing holds Python's lock too, and overlapping it with the loads
    gained nothing (docs/benchmarks.md, section 5)."""
    load.wanted.wait(delay)
    start = time.perf_counter()
    warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnmc-warm")
    warming = {}  # key -> its warm-up, submitted as the model was loaded

    def each(predictor: predict.Predictor, key: str) -> None:
        gc.freeze()  # this model out of the collections every script run of every session makes meanwhile
        if predictor.cached(key):
            warming[key] = warmer.submit(warm_model, predictor, key)

    try:
        load.stage = "loading"
        try:
            start_tensorflow()
            predictor = load_predictor(load.stamp[0], load.stamp[1], each=each)
        except Exception as e:  # (raised again to every page that asks for them, as the page's own load would)
            load.error, load.stage = e, "failed"
            log.warning("the models of study %r could not be loaded: %s: %s", load.stamp[1], type(e).__name__, e)
            return
        load.total, load.stage = len(predictor.models), "warming"
        try:
            for key in predictor.models:
                (warming.get(key) or warmer.submit(warm_model, predictor, key)).result()
                load.ready += 1  # (only this thread counts)
            warm_paths(predictor)
        except Exception as e:  # noqa: BLE001 - only speed is lost: the first upload pays what is left
            log.warning("warming up the models of study %r stopped: %s: %s", load.stamp[1], type(e).__name__, e)
        gc.freeze()  # the models and what the warm-up built: kept for the life of the load
        load.ready, load.predictor, load.stage = load.total, predictor, "ready"
        load.seconds = time.perf_counter() - start
        log.info("models of study %r ready in %.1f s (%d)", load.stamp[1], load.seconds, load.total)
    finally:
        warmer.shutdown(wait=False, cancel_futures=True)
        load.done.set()
    # After they are ready: each pass traced here goes into this machine's cache, so that the next start of the
    # dashboard loads it in about half the time (compiled.py; never raises).
    if saved := predictor.save_compiled():
        log.info("%d compiled passes of study %r cached for the next start", saved, load.stamp[1])


def start_tensorflow() -> None:
    """Import Keras (TensorFlow starts: 5-10 s), put its objects out of every later collection, and keep Streamlit
    from clearing the Keras session after each script run (see the module docstring)."""
    import keras

    keep_models_across_script_runs(keras.backend)
    gc.freeze()


STREAMLIT_RUNNER = "streamlit.runtime.scriptrunner.script_runner"  # calls clear_session after every script run


def keep_models_across_script_runs(backend) -> None:
    """Replace `backend.clear_session` (keras.backend's) with one that does nothing when Streamlit's script runner
    calls it, and what it did for every other caller (training, tests). Installed once."""
    real = backend.clear_session
    if getattr(real, "keeps_models", False):
        return

    def clear_session(*args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__") == STREAMLIT_RUNNER:
            return None
        return real(*args, **kwargs)

    clear_session.keeps_models = True
    backend.clear_session = clear_session


def warm_up(predictor: predict.Predictor, on_model=lambda: None) -> None:
    """Run every model once on a synthetic cell as an upload would: its first Grad-CAM (its compiled pass traced:
    seconds for a large model; the same pass gives the predictions), then every prediction, the out-of-distribution
    check and the page's path through the preparation. `on_model()` after each model's Grad-CAM."""
    for key in predictor.models:
        warm_model(predictor, key)
        on_model()
    warm_paths(predictor)


def warm_model(predictor: predict.Predictor, key: str) -> None:
    """The model's first Grad-CAM on a synthetic cell: its compiled pass traced (or, read from this machine's cache,
    run once)."""
    predictor.explainer(key).explain(warm_up_frame(), WARM_CAM)


def warm_paths(predictor: predict.Predictor) -> None:
    """Every prediction and the out-of-distribution check, then the page's path through the preparation."""
    frame = warm_up_frame()
    predictor.classify_image(frame, "warm-up")
    predictor.classify_prepared(render.png_bytes(frame), name="warm-up")


def warm_up_frame(side: int = 450) -> Image.Image:
    """A synthetic C-NMC-like frame (a stained cell centred on black) to run each model once on."""
    frame = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(frame)
    c = side // 2
    draw.ellipse((c - side // 4, c - side // 4, c + side // 4, c + side // 4), fill=(178, 140, 190))  # cytoplasm
    draw.ellipse((c - side // 6, c - side // 6, c + side // 7, c + side // 7), fill=(95, 45, 130))  # nucleus
    return frame


def classify(predictor: predict.Predictor, content: bytes, name: str, cam: str | None,
             max_side: int) -> predict.Classification:
    """One upload through every model (and the CAM `cam`, when not None), kept at most `max_side` px a side.

    A file that is not a usable image gives a result with an "error" line, never an exception.
    """
    return predictor.classify(content, name=name, cam=cam).for_display(max_side)


@dataclass
class UploadResult:
    """One upload on the page: the upload with the cells found outlined and numbered, and one result per cell."""

    cells: list[predict.Classification]  # one per white cell (or one for the upload as it is), at display size
    outlined: Image.Image | None = None  # the upload at display size, each cell's outline and number drawn on it
    notes: list[str] = field(default_factory=list)  # about the whole upload (cells found and shown, scale, ...)


def classify_upload(predictor: predict.Predictor, content: bytes, name: str, cam: str | None, max_side: int,
                    prepare: bool = True, um_per_px: float | None = None) -> UploadResult:
    """One upload: its white cells found and made into C-NMC-style frames (when `prepare`), each through every
    model (and the CAM `cam`). Images kept at most `max_side` px a side. A bad image or an upload without a white
    cell gives one result with an "error" line, never an exception; a bad `um_per_px` raises ValueError."""
    results = predictor.classify_prepared(content, name=name, prepare="auto" if prepare else "off",
                                          um_per_px=um_per_px, cam=cam)
    cells = [r.for_display(max_side) for r in results]
    first = results[0].result
    notes = [] if "error" in first or "found" not in first else [
        f"{first['found']} white cell(s) found, {len(cells)} shown"]
    if not any(r.cell is not None and r.cell.prepared for r in results):
        return UploadResult(cells, None, notes)
    try:
        upload = open_image(content)
    except (ImageError, OSError):  # it decoded a moment ago: nothing to outline if it no longer does
        return UploadResult(cells, None, notes)
    return UploadResult(cells, outline_cells(upload, [r.cell for r in results], max_side), notes)


# Score-CAM's cost per cell and model, measured on the 2-core machine with the seven-model demo (issue 15: 194 s for
# 13 files): about 2.1 s. The page warns with this estimate before it starts on many cells.
SCORECAM_S_PER_CELL_MODEL = 2.1
SCORECAM_WARN_S = 20.0


def heatmap_estimate(cam: str, n_cells: int, n_models: int) -> float | None:
    """Seconds the heatmaps of `n_cells` cells are expected to take, when that is worth a warning (Score-CAM)."""
    seconds = n_cells * n_models * SCORECAM_S_PER_CELL_MODEL
    return seconds if cam == "scorecam" and seconds >= SCORECAM_WARN_S else None


def explain_upload(predictor: predict.Predictor, upload: UploadResult, cam: str) -> list[dict]:
    """The heatmaps of each cell of an upload already classified (one dict key -> Explanation per cell, empty for
    an error), so that a page caches predictions apart from heatmaps: switching the heatmaps off or changing the
    method never recomputes a prediction. Grad-CAM comes from the maps the prediction's pass kept (no model runs
    again); the other methods run on the frame the page keeps (a prepared frame is 450 px, kept whole), the cells
    of the upload as one batch per model. Each model's class comes from its P(ALL) and its own threshold, as in
    `Predictor.classify_image`."""
    return predictor.explain_cells(upload.cells, cam)


def outline_cells(upload: Image.Image, cells: list, max_side: int) -> Image.Image:
    """The upload at most `max_side` px a side with each cell's outline (prepare.PreparedCell.outline, in the
    upload's pixels) and its number (cell 0, 1, ...) drawn on it."""
    shown = render.shrink(upload, None, max_side)[0].copy()
    scale = shown.width / upload.width
    draw = ImageDraw.Draw(shown)
    width = max(2, round(shown.width / 200))
    for cell in cells:
        points = [(float(x) * scale, float(y) * scale) for x, y in cell.outline()]
        if len(points) > 2:
            draw.line(points + points[:1], fill=(0, 200, 255), width=width)
        x0, y0 = cell.bbox[0] * scale, cell.bbox[1] * scale
        label = str(cell.index)
        box = draw.textbbox((x0, y0), label, font_size=max(12, shown.width // 25))
        draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
        draw.text((x0, y0), label, fill=(255, 255, 255), font_size=max(12, shown.width // 25))
    return shown


def model_table(predictor: predict.Predictor, result: dict) -> pd.DataFrame:
    """Model, P(ALL), Call (at each model's own threshold) for one result."""
    return predictor.table(result)


def results_frame(results: list[dict]) -> pd.DataFrame:
    """One row per file: the table a page offers for download (see predict.results_frame)."""
    return predict.results_frame(results)


def heatmap_overlay(image: Image.Image, heatmap, opacity: float) -> Image.Image:
    """The heatmap (float (h, w) in [0, 1], the image's size) in colour over the image."""
    return render.overlay(image, heatmap, opacity, colour_scale=False)


def colour_bar() -> Image.Image:
    """The colour scale of every heatmap: cold (no evidence) to hot."""
    return render.colour_bar()
