"""Where each model looked: Grad-CAM, Grad-CAM++ and Score-CAM (tf-keras-vis) on the registry's layer.

The layer is always the registry's `gradcam_layer`, passed by name with the library's layer search
turned off (`seek_penultimate_conv_layer=False`): left to itself, tf-keras-vis walks back to the
last `Conv` layer, which is the wrong one for Xception, InceptionV3, ResNet and EfficientNet (their
last block ends in an activation, a concatenation or an addition).

Score target: the log-odds of the study's P(ALL), log(s_ALL / s_HEM), the logit of `models.p_all`.
Its sign picks the class whose evidence is shown: target "predicted" (the default) shows the
evidence for the class the model predicts at its threshold, "all" always the evidence for ALL.
The log-odds are used rather than one sigmoid unit because a saturated sigmoid has no gradient.
Score-CAM scores the masked inputs through a softmax of the two outputs (tf-keras-vis does so), so
there the same function becomes s_ALL - s_HEM: the same direction, the same sign convention.

Heatmaps: float32 in [0, 1] (ReLU, then divided by the map's maximum), 1 where the evidence is
strongest, in the coordinates of the image as given (the model sees the whole frame resized, so the
layer's grid spans the whole frame and is resized straight to the image's size, bilinearly). All
zero when no location adds evidence for the target (the ReLU removes everything): `Explanation.empty`.

The gallery (`build_gallery`) explains a sample of validation cells with every model of a study at
the end of the study and caches it under the study (store.py knows where), so its page opens at once.
"""

from __future__ import annotations

import gc
import io
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .images import DARK_LEVEL, open_image, preprocess, resize_frame
from .registry import MODELS, get_spec
from .store import StudyStore

log = logging.getLogger(__name__)

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
TARGETS = {"predicted": "the class the model predicts", "all": "ALL (the malignant class)"}
# Faster Score-CAM: mask with the 64 channels of largest spatial variance, not all 512-2048
# (one forward pass per channel; all of them take minutes per image on a CPU).
SCORECAM_CHANNELS = 64
# Images per gradient pass, as pixels: 4 at 96 px, 1 at 224 px and above. Measured on ResNet50
# (2-core CPU): 12 cells at 96 px in passes of 1, 4, 12 took 2.1, 0.8, 0.5 s and 42, 177, 413 MiB
# of extra peak memory; at 224 px 4 per pass took 0.6 GiB more than 1 per pass, 12 per pass 2.1 GiB.
GRADCAM_BATCH_PIXELS = 4 * 96 * 96
GALLERY_CELLS = 12  # validation cells in the gallery: both classes, right and wrong
GALLERY_SIDE = 224  # side of the gallery's cell images and heatmaps, in pixels
DEFAULT_OPACITY = 0.45


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}; got {target!r}")
    return target


def gradcam_layer(classifier, layer_name: str):
    """The classifier's layer `layer_name`, checked to give a (batch, h, w, channels) map."""
    try:
        layer = classifier.get_layer(layer_name)
    except ValueError:
        raise ValueError(
            f"the classifier {classifier.name!r} has no layer {layer_name!r}; it must be a flat registry "
            "classifier (models.build_classifier), not a nested model"
        ) from None
    if len(layer.output.shape) != 4:
        raise ValueError(f"layer {layer_name!r} gives shape {tuple(layer.output.shape)}, not a (batch, h, w, channels) map")
    return layer


def log_odds_score(sign: float | Sequence[float] | np.ndarray):
    """tf-keras-vis score: sign * log(s_ALL / s_HEM) per image, from the (batch, 2) sigmoid output [HEM, ALL].

    `sign`: +1 (evidence for ALL) or -1 (for HEM), one for the whole batch or one per image, shape (batch,).
    """
    import tensorflow as tf

    signs = np.asarray(sign, dtype=np.float32)

    def score(output):
        s = tf.maximum(output, 1e-30)
        return tf.cast(signs, s.dtype) * (tf.math.log(s[:, 1]) - tf.math.log(s[:, 0]))

    return score


@contextmanager
def _quiet_keras():
    """Score-CAM calls model.predict, whose progress bar would land in our stdout (JSON lines)."""
    import keras

    was_on = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        with warnings.catch_warnings():
            # tf-keras-vis passes a one-element list to a one-input model: harmless, Keras warns.
            warnings.filterwarnings("ignore", message=".*structure of `inputs` doesn't match.*")
            yield
    finally:
        if was_on:
            keras.config.enable_interactive_logging()


@dataclass
class Explanation:
    heatmap: np.ndarray  # float32 (H, W) in [0, 1], image coordinates; 1 = strongest evidence
    p_all: float  # the model's P(ALL) for the image
    target: str  # "ALL" or "HEM": the class whose evidence the heatmap shows
    method: str  # a key of METHODS
    layer: str  # the layer it was computed on

    @property
    def empty(self) -> bool:
        """No location adds evidence for the target: the heatmap is all zero."""
        return not float(self.heatmap.max()) > 0.0


class Explainer:
    """Heatmaps of one loaded classifier; the tf-keras-vis objects are built once and kept."""

    def __init__(self, classifier, layer_name: str, preprocess_mode: str):
        self.classifier = classifier
        self.layer = gradcam_layer(classifier, layer_name).name
        self.channels = int(classifier.get_layer(self.layer).output.shape[-1])
        self.preprocess_mode = preprocess_mode
        self.size = int(classifier.input_shape[1])
        self._visualisers: dict = {}

    @classmethod
    def for_model(cls, classifier, key: str) -> "Explainer":
        spec = get_spec(key)
        return cls(classifier, spec.gradcam_layer, spec.preprocess)

    def _visualiser(self, method: str):
        if method not in self._visualisers:
            from tf_keras_vis.gradcam import Gradcam
            from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
            from tf_keras_vis.scorecam import Scorecam

            cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam}[method]
            self._visualisers[method] = cls(self.classifier, clone=False)  # no model modifier: used as is
        return self._visualisers[method]

    def layer_map(self, x: np.ndarray, method: str = "gradcam", target_all: bool | Sequence[bool] = True) -> np.ndarray:
        """Preprocessed inputs (n, size, size, 3) -> float32 (n, h, w), each in [0, 1], on the layer's grid.

        `target_all`: whose evidence to show, for the whole batch or per image ((n,) bools): ALL if true, else HEM.
        """
        n = len(x)
        targets = np.asarray(target_all, dtype=bool)
        if targets.shape not in ((), (n,)):
            raise ValueError(f"target_all must be one bool or {n} of them (one per image); got shape {targets.shape}")
        signs = np.where(np.broadcast_to(targets, (n,)), 1.0, -1.0)
        kwargs = {"penultimate_layer": self.layer, "seek_penultimate_conv_layer": False, "expand_cam": False,
                  "normalize_cam": False}
        visualiser = self._visualiser(method)
        with _quiet_keras():
            if method == "scorecam":
                # One image at a time: on a batch, tf-keras-vis masks every image with the union of each
                # image's top channels, so an image's map would depend on the others in its batch.
                kwargs.update(max_N=min(SCORECAM_CHANNELS, self.channels), batch_size=16)
                cam = np.concatenate([visualiser(log_odds_score(signs[i:i + 1]), x[i:i + 1], **kwargs) for i in range(n)])
            else:
                cam = visualiser(log_odds_score(signs), x, **kwargs)
        # ReLU (done by tf-keras-vis), then each map divided by its own maximum, as in the keras-io example.
        # Not the library's min-max normalisation: its epsilon flattens maps of tiny magnitude (random bases).
        cam = np.maximum(np.nan_to_num(np.asarray(cam, dtype=np.float64)), 0.0)
        peak = cam.max(axis=(1, 2), keepdims=True)
        return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)

    def p_all(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed inputs (n, size, size, 3) -> the model's P(ALL), float (n,)."""
        from .models import p_all

        return p_all(self.classifier.predict_on_batch(x))

    def explain_batch(
        self, imgs: Sequence[Image.Image], method: str = "gradcam", target: str = "predicted",
        p_alls: Sequence[float] | None = None, threshold: float = 0.5, out_size: tuple[int, int] | None = None,
    ) -> list[Explanation]:
        """Heatmaps of decoded RGB images, explained as one batch, each resized to `out_size` (width, height;
        default its own image's size). Each is what `explain` gives for its image alone.

        `p_alls` (if known, one per image) and `threshold` decide each predicted class for target "predicted".
        """
        check_method(method)
        check_target(target)
        if p_alls is not None and len(p_alls) != len(imgs):
            raise ValueError(f"p_alls must give one P(ALL) per image: {len(imgs)} images, got {len(p_alls)}")
        if not imgs:
            return []
        x = preprocess(np.stack([resize_frame(img, self.size) for img in imgs]), self.preprocess_mode)
        probs = self.p_all(x) if p_alls is None else np.asarray(p_alls, dtype=np.float64)
        targets_all = (probs >= threshold) | (target == "all")
        # The gradient tape keeps every activation of every image of a pass: a bounded number per pass.
        step = max(1, GRADCAM_BATCH_PIXELS // (self.size * self.size))
        cams = np.concatenate([self.layer_map(x[i:i + step], method, targets_all[i:i + step]) for i in range(0, len(x), step)])
        return [
            Explanation(to_image_size(cam, out_size or img.size), float(p), "ALL" if t else "HEM", method, self.layer)
            for img, cam, p, t in zip(imgs, cams, probs, targets_all)
        ]

    def explain(
        self, img: Image.Image, method: str = "gradcam", target: str = "predicted",
        p_all: float | None = None, threshold: float = 0.5, out_size: tuple[int, int] | None = None,
    ) -> Explanation:
        """Heatmap of a decoded RGB image, resized to `out_size` (width, height; default the image's size).

        `p_all` (if known) and `threshold` decide the predicted class for target "predicted".
        """
        return self.explain_batch([img], method, target, None if p_all is None else [p_all], threshold, out_size)[0]


def to_image_size(layer_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map on the layer's grid -> float32 (height, width) over the whole frame, bilinear, in [0, 1]."""
    width, height = size
    resized = Image.fromarray(np.ascontiguousarray(layer_map, dtype=np.float32)).resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


# --- rendering ------------------------------------------------------------------------------------
def _turbo_lut() -> np.ndarray:
    """Google's Turbo colour map (a perceptually smoother jet): (256, 3) uint8, blue (0) to red (1)."""
    x = np.linspace(0.0, 1.0, 256)
    r = 0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))))
    g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))))
    b = 0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))))
    return (np.clip(np.stack([r, g, b], axis=1), 0, 1) * 255).round().astype(np.uint8)


TURBO = _turbo_lut()


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W, 3) Turbo colours."""
    return TURBO[(np.clip(heatmap, 0, 1) * 255).round().astype(np.uint8)]


def overlay(img: Image.Image, heatmap: np.ndarray, opacity: float = DEFAULT_OPACITY, colour_scale: bool = True) -> Image.Image:
    """The heatmap in Turbo colours blended over the cell at `opacity` (0 = cell only, 1 = heatmap only).

    With `colour_scale`, a bar on the right shows which colour means low and high evidence.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1; got {opacity}")
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    if heatmap.shape != base.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the image's {base.shape[:2]}; resize it with to_image_size")
    blended = (1.0 - opacity) * base + opacity * colorize(heatmap).astype(np.float32)
    out = Image.fromarray(blended.round().astype(np.uint8))
    return with_colour_scale(out) if colour_scale else out


def with_colour_scale(img: Image.Image) -> Image.Image:
    """`img` with a vertical Turbo bar (high at the top) and its labels on the right."""
    w, h = img.size
    font_size = max(9, min(24, h // 18))
    font = ImageFont.load_default(size=font_size)
    bar_w = max(8, w // 28)
    label_w = int(font_size * 2.6)
    pad = max(4, w // 60)
    canvas = Image.new("RGB", (w + pad + bar_w + pad + label_w, h), (255, 255, 255))
    canvas.paste(img, (0, 0))
    top, bottom = font_size // 2 + 1, h - font_size // 2 - 1
    ramp = colorize(np.linspace(1.0, 0.0, max(1, bottom - top))[:, None].repeat(bar_w, axis=1))
    canvas.paste(Image.fromarray(ramp), (w + pad, top))
    draw = ImageDraw.Draw(canvas)
    x = w + pad + bar_w + 3
    draw.text((x, top), "high", fill=(0, 0, 0), font=font, anchor="lm")
    draw.text((x, bottom), "low", fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def colour_bar(width: int = 320, height: int = 16) -> Image.Image:
    """A horizontal legend of the heatmap colours: 'no evidence' on the left, 'strongest' on the right."""
    font = ImageFont.load_default(size=12)
    label_w = 92
    canvas = Image.new("RGB", (width + 2 * label_w, height), (255, 255, 255))
    canvas.paste(Image.fromarray(colorize(np.linspace(0.0, 1.0, width)[None, :].repeat(height, axis=0))), (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w - 4, height // 2), "no evidence", fill=(0, 0, 0), font=font, anchor="rm")
    draw.text((label_w + width + 4, height // 2), "strongest", fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def shrink(img: Image.Image, heatmap: np.ndarray | None = None, max_side: int = 480):
    """The image (and its heatmap) at most `max_side` on the longer side, for display: (image, heatmap)."""
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    if scale == 1.0:
        return img, heatmap
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = img.resize(size, Image.BILINEAR)
    if heatmap is None:
        return small, None
    resized = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32)).resize(size, Image.BILINEAR)
    return small, np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def cell_focus(heatmap: np.ndarray, img: Image.Image) -> dict:
    """Share of the heatmap's mass on the cell (non-black pixels) and the cell's share of the frame.

    A model that looks at the cell puts more of its mass there than the cell's share of the area.
    `mass_on_cell` is None for an all-zero heatmap.
    """
    cell = np.asarray(img.convert("RGB")).max(axis=-1) >= DARK_LEVEL
    if cell.shape != heatmap.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the image's {cell.shape}")
    total = float(heatmap.sum())
    return {
        "mass_on_cell": round(float(heatmap[cell].sum()) / total, 4) if total > 0 else None,
        "cell_area": round(float(cell.mean()), 4),
    }


def check_study_model(store: StudyStore, key: str) -> None:
    """The study exists and its model `key` is complete; else a one-line error naming what there is."""
    get_spec(key)
    if not store.exists():
        raise FileNotFoundError(f"no study {store.name!r} under {store.root} (see `python -m cnmc_core studies`)")
    if not store.model_complete(key):
        models = [k for k in store.read_study().get("models", []) if store.model_complete(k)]
        raise ValueError(f"study {store.name!r} has no complete model {key!r}; it has: {', '.join(models) or 'none'}")


def explain_image(store: StudyStore, key: str, source, method: str = "gradcam", target: str = "predicted"):
    """One model of a study on one image: (decoded image, Explanation). For the `explain` command."""
    from .models import load_classifier

    check_method(method)
    check_target(target)
    check_study_model(store, key)
    img = open_image(source)
    classifier = load_classifier(store.model_file(key, "model.keras"))
    threshold = float(store.read_metrics(key).get("threshold", 0.5))
    return img, Explainer.for_model(classifier, key).explain(img, method, target, threshold=threshold)


# --- the gallery ----------------------------------------------------------------------------------
def choose_cells(store: StudyStore, keys: list[str], n: int = GALLERY_CELLS, seed: int = 0) -> pd.DataFrame:
    """Validation cells for the gallery: path, subject, label, ensemble P(ALL), correct.

    Taken in turn from four groups (ALL right, HEM right, ALL wrong, HEM wrong by the mean P(ALL)
    of the models), each shuffled with `seed` and with different subjects first, so the sample shows
    both classes and the errors whenever there are any.
    """
    preds = None
    for key in keys:
        p = store.read_predictions(key)[["path", "subject", "label", "prob_all"]].rename(columns={"prob_all": key})
        preds = p if preds is None else preds.merge(p[["path", key]], on="path", how="inner")
    preds = preds.dropna(subset=["label"]).reset_index(drop=True)
    preds["label"] = preds["label"].astype(int)
    preds["ensemble"] = preds[keys].mean(axis=1)
    preds["correct"] = (preds["ensemble"] >= 0.5) == (preds["label"] == 1)
    rng = np.random.default_rng(seed)
    groups = []
    for label, correct in ((1, True), (0, True), (1, False), (0, False)):
        g = preds[(preds["label"] == label) & (preds["correct"] == correct)]
        g = g.iloc[rng.permutation(len(g))]
        g = g.assign(_turn=g.groupby("subject").cumcount()).sort_values("_turn", kind="stable")
        groups.append(list(g.index))
    order = []
    while len(order) < n and any(groups):
        for g in groups:
            if g and len(order) < n:
                order.append(g.pop(0))
    return preds.loc[order].reset_index(drop=True)


def gallery_is_current(store: StudyStore, keys: list[str]) -> bool:
    """The cached gallery covers exactly `keys`, each as trained now (same config hash)."""
    index = store.read_gallery_index()
    if not index or list(index.get("models", {})) != list(keys):
        return False
    return all(index["models"][k].get("config_hash") == store.read_metrics(k).get("config_hash") for k in keys)


def build_gallery(
    store: StudyStore, keys: list[str] | None = None, n: int = GALLERY_CELLS, method: str = "gradcam",
    target: str = "predicted", side: int = GALLERY_SIDE, force: bool = False, load=None,
) -> dict:
    """Explain `n` validation cells with every complete model of the study and cache them; returns the index.

    `load(key)` gives a model's classifier (default: loaded from the study, one at a time). A gallery
    already current for these models is kept unless `force`.
    """
    check_method(method)
    check_target(target)
    info = store.read_study()
    keys = keys or [k for k in info.get("models", []) if k in MODELS and store.model_complete(k)]
    if not keys:
        raise ValueError(f"study {store.name!r} has no complete model to explain")
    if not force and gallery_is_current(store, keys):
        log.info("Grad-CAM gallery is current; kept")
        return store.read_gallery_index()
    data_root = Path(info["data"]["path"])
    chosen = choose_cells(store, keys, n, seed=int(info.get("seed", 0)))
    images, cells = {}, []
    for row in chosen.itertuples(index=False):
        try:
            img = open_image(data_root / row.path)
        except (OSError, ValueError) as e:
            log.warning("gallery: skipped %s (%s)", row.path, e)
            continue
        cell_id = f"c{len(cells):02d}"
        images[cell_id] = Image.fromarray(resize_frame(img, side))
        cells.append({
            "id": cell_id, "path": row.path, "subject": str(row.subject), "label": "ALL" if row.label == 1 else "HEM",
            "ensemble": round(float(row.ensemble), 6), "correct": bool(row.correct), "models": {},
        })
    if not cells:
        raise ValueError(f"none of the gallery's cells could be read under {data_root}; was the data moved?")

    heatmaps, models = {}, {}
    for key in keys:
        metrics = store.read_metrics(key)
        threshold = float(metrics.get("threshold", 0.5))
        probs = store.read_predictions(key).set_index("path")["prob_all"]
        explainer = Explainer.for_model((load or _load_model(store))(key), key)
        p_alls = [float(probs[cell["path"]]) for cell in cells]
        explained = explainer.explain_batch([images[c["id"]] for c in cells], method, target, p_alls, threshold)
        masses = []
        for cell, p, e in zip(cells, p_alls, explained):
            heatmaps[(key, cell["id"])] = (e.heatmap * 255).round().astype(np.uint8)
            focus = cell_focus(e.heatmap, images[cell["id"]])
            masses.append(focus["mass_on_cell"])
            cell["cell_area"] = focus["cell_area"]
            cell["models"][key] = {
                "p_all": round(p, 6), "predicted": "ALL" if p >= threshold else "HEM",
                "correct": (p >= threshold) == (cell["label"] == "ALL"), "target": e.target,
                "empty": e.empty, "mass_on_cell": focus["mass_on_cell"],
            }
        found = [m for m in masses if m is not None]
        models[key] = {
            "name": get_spec(key).name, "layer": explainer.layer, "threshold": threshold,
            "config_hash": metrics.get("config_hash"),
            "mean_mass_on_cell": round(float(np.mean(found)), 4) if found else None,
        }
        del explainer
        gc.collect()
    index = {
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": method, "target": target, "side": side,
        "mean_cell_area": round(float(np.mean([c["cell_area"] for c in cells])), 4),
        "models": models, "cells": cells,
    }
    store.write_gallery(index, {cid: png_bytes(img) for cid, img in images.items()}, heatmaps)
    log.info("Grad-CAM gallery: %d cells x %d models", len(cells), len(keys))
    return index


class Gallery:
    """The cached gallery of a study, for the page: cells, filters, heatmaps and overlays."""

    def __init__(self, store: StudyStore, index: dict):
        self.store = store
        self.index = index

    @classmethod
    def load(cls, store: StudyStore) -> "Gallery | None":
        index = store.read_gallery_index()
        return cls(store, index) if index and index.get("cells") else None

    @property
    def models(self) -> list[str]:
        return list(self.index["models"])

    @property
    def cells(self) -> list[dict]:
        return list(self.index["cells"])

    @property
    def method(self) -> str:
        return METHODS.get(self.index.get("method"), self.index.get("method", ""))

    def stale(self) -> list[str]:
        """Models retrained since the gallery was made (their heatmaps are of the old model)."""
        out = []
        for key, entry in self.index["models"].items():
            try:
                current = self.store.read_metrics(key).get("config_hash")
            except (OSError, ValueError):
                current = None
            if current != entry.get("config_hash"):
                out.append(key)
        return out

    def select(self, label: str | None = None, correct: bool | None = None, model: str | None = None) -> list[dict]:
        """Cells of true class `label` ("ALL"/"HEM"), classified right or wrong (by `model`, else the ensemble)."""
        out = []
        for cell in self.index["cells"]:
            if label is not None and cell["label"] != label:
                continue
            right = cell["models"][model]["correct"] if model else cell["correct"]
            if correct is not None and right != correct:
                continue
            out.append(cell)
        return out

    def cell(self, cell_id: str) -> dict:
        for cell in self.index["cells"]:
            if cell["id"] == cell_id:
                return cell
        raise ValueError(f"no gallery cell {cell_id!r}")

    def image(self, cell_id: str) -> Image.Image:
        with Image.open(self.store.gallery_cell(cell_id)) as img:
            return img.convert("RGB")

    def heatmap(self, key: str, cell_id: str) -> np.ndarray:
        """float32 (side, side) in [0, 1]."""
        from .store import read_npy

        return read_npy(self.store.gallery_heatmap(key, cell_id)).astype(np.float32) / 255.0

    def overlay(self, cell_id: str, key: str, opacity: float = DEFAULT_OPACITY, colour_scale: bool = False) -> Image.Image:
        return overlay(self.image(cell_id), self.heatmap(key, cell_id), opacity, colour_scale)

    def cell_caption(self, cell_id: str) -> str:
        """'true ALL · subject 13 · ensemble P(ALL) 0.96, right' for a person."""
        c = self.cell(cell_id)
        return (f"true {c['label']} · subject {c['subject']} · ensemble P(ALL) {c['ensemble']:.2f}, "
                f"{'right' if c['correct'] else 'wrong'}")

    def caption(self, cell_id: str, key: str) -> str:
        """One model on one cell: its call, whether right, whose evidence is shown, the heat on the cell."""
        m = self.cell(cell_id)["models"][key]
        heat = "no evidence for it anywhere" if m["empty"] else f"{m['mass_on_cell']:.0%} of the heat on the cell"
        return (f"{get_spec(key).name}: P(ALL) {m['p_all']:.2f}, calls {m['predicted']} "
                f"({'right' if m['correct'] else 'wrong'}); evidence for {m['target']}, {heat}")

    def option_label(self, cell_id: str, model: str | None = None) -> str:
        c = self.cell(cell_id)
        right = c["models"][model]["correct"] if model else c["correct"]
        return f"{cell_id} · true {c['label']} · {'right' if right else 'wrong'} · subject {c['subject']}"

    def sanity_table(self) -> pd.DataFrame:
        """Per model: its layer and the mean share of heat on the cell, beside the cells' share of the frame."""
        area = self.index.get("mean_cell_area")
        return pd.DataFrame([
            {"Model": entry["name"], "Grad-CAM layer": entry["layer"],
             "Heat on the cell": entry.get("mean_mass_on_cell"), "Cell's share of the frame": area}
            for entry in self.index["models"].values()
        ])


def load_gallery(root: str | Path | None, name: str) -> Gallery | None:
    """The cached gallery of study `name` under `root`, or None when the study has none yet."""
    return Gallery.load(StudyStore(root, name))


def build_study_explanations(store: StudyStore, in_memory: dict | None = None) -> None:
    """At the end of a study: the Grad-CAM gallery and the out-of-distribution reference.

    Both are extras: a failure is logged in one line and never fails the study. `in_memory`:
    classifiers still in memory, by key, exactly as saved (the study passes the one it trained
    last, saving a load from disk).
    """
    from .predict import build_reference

    loaded: dict = dict(in_memory or {})  # each model is loaded once for both (loading costs more than the work here)

    def load(key: str):
        if key not in loaded:
            loaded[key] = _load_model(store)(key)
        return loaded[key]

    for what, build in (("Grad-CAM gallery", build_gallery), ("out-of-distribution reference", build_reference)):
        try:
            build(store, load=load)
        except Exception as e:  # noqa: BLE001 - the study's results are complete without these
            log.warning("%s not built (%s: %s); the study's results are complete without it", what, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    loaded.clear()
    gc.collect()


def _load_model(store: StudyStore):
    from .models import load_classifier

    return lambda key: load_classifier(store.model_file(key, "model.keras"))
