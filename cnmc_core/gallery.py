"""The Grad-CAM gallery of a study: choosing the cells, building the cache at the end of the study, reading it.

At the end of a study (study.py's hook), `build_gallery` explains a sample of validation cells
(`choose_cells`: both classes, right and wrong, different subjects first) with every complete model,
and caches the cell images, the uint8 heatmaps and an index under the study (store.py knows where),
so the gallery page opens at once. `Gallery` reads that cache back for the page.

This module holds no CAM method (explain.py) and draws nothing itself (render.py draws the overlays).
"""

from __future__ import annotations

import gc
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .explain import METHODS, Explainer, check_method, check_target, study_classifier
from .heat import HeatReading, cell_focus, heat_reading
from .images import open_image, resize_frame
from .registry import MODELS, get_spec
from .render import DEFAULT_OPACITY, is_flat, overlay, png_bytes
from .store import StudyStore, read_npy

log = logging.getLogger(__name__)

GALLERY_CELLS = 12  # validation cells in the gallery: both classes, right and wrong
GALLERY_SIDE = 224  # side of the gallery's cell images and heatmaps, in pixels


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
        classifier = load(key) if load else study_classifier(store, key)
        explainer = Explainer.for_model(classifier, key)
        p_alls = [float(probs[cell["path"]]) for cell in cells]
        explained = explainer.explain_batch([images[c["id"]] for c in cells], method, target, p_alls, threshold)
        masses = []
        for cell, p, e in zip(cells, p_alls, explained):
            heatmaps[(key, cell["id"])] = (e.heatmap * 255).round().astype(np.uint8)
            focus = cell_focus(e.heatmap, images[cell["id"]])
            flat = is_flat(e.heatmap)
            masses.append(None if flat else focus["mass_on_cell"])  # a flat map's share is the cell's area
            cell["cell_area"] = focus["cell_area"]
            cell["models"][key] = {
                "p_all": round(p, 6), "predicted": "ALL" if p >= threshold else "HEM",
                "correct": (p >= threshold) == (cell["label"] == "ALL"), "target": e.target,
                "empty": e.empty, "flat": flat, "mass_on_cell": focus["mass_on_cell"],
            }
        found = [m for m in masses if m is not None]
        models[key] = {
            "name": get_spec(key).name, "layer": explainer.layer, "threshold": threshold,
            "config_hash": metrics.get("config_hash"),
            "mean_mass_on_cell": round(float(np.mean(found)), 4) if found else None,
        }
        del explainer, classifier  # one model in memory at a time
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
    def load(cls, store: StudyStore) -> Gallery | None:
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
        return read_npy(self.store.gallery_heatmap(key, cell_id)).astype(np.float32) / 255.0

    def overlay(
        self, cell_id: str, key: str, opacity: float = DEFAULT_OPACITY, colour_scale: bool = False
    ) -> Image.Image:
        return overlay(self.image(cell_id), self.heatmap(key, cell_id), opacity, colour_scale)

    def cell_caption(self, cell_id: str) -> str:
        """'true ALL · subject 13 · ensemble P(ALL) 0.96, right' for a person."""
        c = self.cell(cell_id)
        return (f"true {c['label']} · subject {c['subject']} · ensemble P(ALL) {c['ensemble']:.2f}, "
                f"{'right' if c['correct'] else 'wrong'}")

    def reading(self, cell_id: str, key: str, flat: bool | None = None) -> HeatReading:
        """Model `key`'s heatmap of the cell, read from the index. Galleries made before issue 14 record neither
        `flat` (pass it, from the heatmap: `render.is_flat`) nor `cell_area` (the share is shown without it)."""
        cell = self.cell(cell_id)
        m = cell["models"][key]
        flat = bool(m.get("flat", False)) if flat is None else flat
        return heat_reading(bool(m["empty"]), flat, m.get("mass_on_cell"), cell.get("cell_area"), m["p_all"],
                            m["target"])

    def caption(self, cell_id: str, key: str, flat: bool | None = None) -> str:
        """One model on one cell: its call, whether right, and its heatmap's reading (`reading`)."""
        m = self.cell(cell_id)["models"][key]
        return (f"{get_spec(key).name}: P(ALL) {m['p_all']:.2f}, calls {m['predicted']} "
                f"({'right' if m['correct'] else 'wrong'}); {self.reading(cell_id, key, flat).text}")

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
