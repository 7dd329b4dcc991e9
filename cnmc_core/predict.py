"""Classifying cells with every trained model of a study: the one code path of `predict` and the page.

Models are loaded once (Keras safe mode) and kept; a model served before on this machine comes back as its compiled
pass from compiled.py's cache, its Keras model read only when needed. Each image is decoded once, resized once per
input size, and run through each model. P(ALL) is `models.p_all` of the classifier's output (the
mean over the study's orientations when it was evaluated with test-time augmentation), the same
number `predictions.csv` holds for validation images; each model votes at its own threshold.

Each model runs once per image: one compiled pass (explain.GradcamPass) gives its P(ALL), its pooled features
and its Grad-CAM map, which the result keeps, so that a page draws the predictions first and the Grad-CAM
heatmaps after without running any model again (`explain_cells`).

Each result also carries the out-of-distribution check (`ood`, see ood.py: a warning with one reason
per problem, when the frame is unlike the study's training frames) and, when asked for, each model's
heatmap (explain.py). How those are computed lives in those modules; this one runs the models.
Its headline `label` follows answer.py's rule: "inconclusive" (with `reasons`) when the image is unlike the
training cells, the models split or the ensemble is near its threshold; else the ensemble's `call`, ALL or HEM.

`classify_prepared` first makes C-NMC-style frames of the white cells of a smear crop (prepare.py) and
classifies each; an upload that already is a C-NMC frame passes through with the same numbers as `classify`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .answer import apply_rule, summarise
from .compiled import LazyModels, SavedExplainer, SavedPass, load_pass, save
from .explain import Explainer, to_image_size
from .features import orient
from .images import ImageError, open_image, preprocess, resize_frame
from .models import HEAD_POOL, base_fingerprint, load_classifier, p_all
from .neighbours import NEIGHBOURS, FeatureIndex, Neighbour, load_index
from .ood import ood_check
from .prepare import PreparedCell, PrepareOptions
from .prepare import prepare as prepare_upload  # `prepare` is classify_prepared's parameter
from .registry import MODELS, get_spec
from .render import shrink
from .store import ENSEMBLE, StudyStore

log = logging.getLogger(__name__)


@dataclass
class Classification:
    """One image's result: the JSON-able `result`, and for the page the decoded image and heatmaps."""

    result: dict  # as `predict` prints it: file, predictions, ensemble, label, agreement, ... or file, error
    image: Image.Image | None = None  # decoded RGB frame (None on error)
    heatmaps: dict = field(default_factory=dict)  # key -> explain.Explanation, when asked for
    cell: PreparedCell | None = None  # the white cell this result is about (prepared or passed through), if any
    features: dict = field(default_factory=dict)  # key -> pooled features (view 0) of the frame the models saw
    # key -> float32 (h, w): the model's Grad-CAM map for ALL before the ReLU, on its layer's grid (view 0), from
    # the pass that gave the prediction; `Predictor.explain_cells` makes the heatmaps of either class from it.
    gradcam: dict = field(default_factory=dict)

    def for_display(self, max_side: int = 480) -> Classification:
        """A copy with the image and heatmaps at most `max_side` pixels a side (what a page keeps)."""
        if self.image is None:
            return self
        image = shrink(self.image, None, max_side)[0]
        heatmaps = {k: replace(e, heatmap=to_image_size(e.heatmap, image.size)) for k, e in self.heatmaps.items()}
        return Classification(self.result, image, heatmaps, self.cell, self.features, self.gradcam)


PREPARE_MODES = ("auto", "off")  # auto: find the white cells and make C-NMC-style frames; off: the upload as it is


@dataclass
class Predictor:
    """Every usable model of one study, loaded once, with its threshold and out-of-distribution reference."""

    store: StudyStore
    models: LazyModels = field(default_factory=LazyModels)  # key -> Keras classifier (read on first use, see load)
    sizes: dict = field(default_factory=dict)  # key -> input size
    broken: dict = field(default_factory=dict)  # key -> one-line reason it could not be loaded
    thresholds: dict = field(default_factory=dict)  # key -> decision threshold on P(ALL)
    views: int = 1  # orientations averaged (features.orient), > 1 when the study used tta
    ensemble_threshold: float = 0.5
    image_reference: dict | None = None  # ood.image_reference of the training frames
    colour_reference: dict | None = None  # prepare.colour_reference of the training frames; None: no stain norm.
    feature_references: dict = field(default_factory=dict)  # key -> {mean, scale, limit}
    config_hashes: dict = field(default_factory=dict)  # key -> the model's config hash (its metrics.json)
    synthetic: bool = False  # the study was trained on synthetic (generated) data
    _indexes: dict = field(default_factory=dict)  # key -> neighbours.FeatureIndex, or why there is none
    _passes: dict = field(default_factory=dict)  # key -> GradcamPass / compiled.SavedPass: (map, scores, [pooled])
    _unsaved: dict = field(default_factory=dict)  # key -> the compiled-pass cache key of a fresh pass, or None
    _explainers: dict = field(default_factory=dict)

    @classmethod
    def load(cls, store: StudyStore, keys: list[str] | None = None, each=None) -> Predictor:
        """The study's models (`keys`, default all), each model's pass read from this machine's cache when it has one
        (compiled.py). `each(predictor, key)`, when given, is called as each model is in place (the dashboard warms it
        up meanwhile, in another thread)."""
        info = store.require().read_study()
        wanted = keys or [k for k in info.get("models", []) if k in MODELS]
        config = info.get("config", {})
        p = cls(store, views=int(config.get("orientations", 2)) if config.get("tta") else 1,
                synthetic=bool((info.get("data") or {}).get("synthetic")))
        for key in wanted:
            get_spec(key)
            if not store.model_complete(key):
                p.broken[key] = f"{key}: results incomplete; rerun the study's train command to rebuild it"
                continue
            model_file = store.model_file(key, "model.keras")
            try:  # (the pass from this machine's cache when it has one: compiled.py; then the model stays on disk)
                model, gradcam_pass, p._unsaved[key] = load_pass(model_file, get_spec(key).gradcam_layer,
                                                                 [HEAD_POOL], load_classifier)
            except Exception as e:  # a truncated or hostile file must not take the others down
                p.broken[key] = (
                    f"{key}: model file cannot be loaded ({type(e).__name__}); rerun the study's train command"
                )
                continue
            metrics = store.read_metrics(key)
            if model is None:
                p.models.defer(key, lambda f=model_file: load_classifier(f))
            else:
                p.models[key] = model
            p._passes[key] = gradcam_pass
            p.sizes[key] = gradcam_pass.size if model is None else int(model.input_shape[1])
            p.thresholds[key] = float(metrics.get("threshold", 0.5))
            p.config_hashes[key] = str(metrics.get("config_hash", ""))
            ref = store.read_feature_reference(key)
            if ref is not None and str(ref.get("config_hash", "")) == str(metrics.get("config_hash", "")):
                p.feature_references[key] = ref
            if each is not None:
                each(p, key)
        if not p.models:
            raise FileNotFoundError(f"study {store.name!r} has no usable model: " + "; ".join(p.broken.values()))
        if store.model_complete(ENSEMBLE):
            p.ensemble_threshold = float(store.read_metrics(ENSEMBLE).get("threshold", 0.5))
        p.image_reference = store.read_image_reference()
        p.colour_reference = store.read_image_reference(colour=True)
        # One line per load: the load test (tests/test_many_users.py) counts these in the server's log.
        log.info("loaded the models of study %r: %s", store.name, ", ".join(p.models) or "none")
        return p

    # -- the forward passes ------------------------------------------------------------------------
    def forward_image(self, img: Image.Image) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """P(ALL) per model and pooled features (view 0) per model, for one decoded RGB image."""
        probs, feats, _ = self.run_models(img)
        return probs, feats

    def run_models(self, img: Image.Image) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One decoded RGB image through every model, one pass each: P(ALL) (the mean over the views), pooled
        features (view 0) and the Grad-CAM map for ALL before the ReLU (view 0, float32 (h, w)), per model."""
        probs, feats, maps, resized = {}, {}, {}, {}
        for key, gradcam_pass in self._passes.items():
            size = self.sizes[key]
            if size not in resized:
                frame = resize_frame(img, size)[None]  # uint8 (1, size, size, 3)
                resized[size] = np.concatenate([orient(frame, v) for v in range(self.views)])
            cams, scores, (pooled,) = gradcam_pass(preprocess(resized[size], get_spec(key).preprocess))
            probs[key] = float(np.mean(p_all(scores)))
            feats[key] = pooled[0]
            maps[key] = cams[0]
        return probs, feats, maps

    def explainer(self, key: str) -> Explainer:
        """The model's Explainer, built on first use and kept; its Grad-CAM is the pass the predictions run."""
        if key not in self._explainers:
            gradcam_pass = self._passes.get(key)
            self._explainers[key] = (
                SavedExplainer(gradcam_pass, get_spec(key).preprocess, lambda: self.models[key])
                if self.cached(key) else Explainer.for_model(self.models[key], key, gradcam_pass))
        return self._explainers[key]

    def explain_cells(self, results: list[Classification], cam: str, target: str = "predicted") -> list[dict]:
        """Each model's heatmap (method `cam`) of each classified image: per result a dict key -> explain.Explanation
        in its image's coordinates (empty for an error). Each model's class is its P(ALL) in the result at its own
        threshold. Grad-CAM comes from the maps the predictions' passes kept: no model runs again. The other methods
        run on each result's image, the results' images through each model as one batch."""
        out: list[dict] = [{} for _ in results]
        for key in self.models:
            todo = [i for i, r in enumerate(results) if r.image is not None and key in r.result.get("predictions", {})]
            if not todo:
                continue
            kept = cam == "gradcam" and all(key in results[i].gradcam for i in todo)
            explained = self.explainer(key).explain_batch(
                [results[i].image for i in todo], cam, target, [results[i].result["predictions"][key] for i in todo],
                self.thresholds[key], gradcam_maps=[results[i].gradcam[key] for i in todo] if kept else None,
            )
            for i, e in zip(todo, explained):
                out[i][key] = e
        return out

    # -- one image ---------------------------------------------------------------------------------
    def classify(
        self, source: str | Path | bytes, name: str | None = None, cam: str | None = None, target: str = "predicted",
    ) -> Classification:
        """Decode, classify with every model, check for out-of-distribution, and (if `cam`) explain.

        `cam`: None, or a method of explain.METHODS; the heatmaps are in the image's coordinates.
        Bad input gives a result {file, error} with a one-line reason, never an exception.
        """
        label = _file_label(source, name)
        img = _decode(source, label)
        if isinstance(img, Classification):
            return img
        return self.classify_image(img, label, cam, target)

    def classify_image(self, img: Image.Image, label: str, cam: str | None = None,
                       target: str = "predicted") -> Classification:
        """One decoded RGB frame through every model (see `classify`)."""
        probs, feats, maps = self.run_models(img)
        result = summarise(label, probs, self.broken, self.thresholds, self.ensemble_threshold)
        result["ood"] = self.ood_check(img, feats)
        apply_rule(result, self.thresholds, self.ensemble_threshold)
        out = Classification(result, img, features=feats, gradcam=maps)
        if cam:
            out.heatmaps = self.explain_cells([out], cam, target)[0]
        return out

    def classify_prepared(
        self, source: str | Path | bytes, name: str | None = None, prepare: str = "auto",
        um_per_px: float | None = None, cam: str | None = None, target: str = "predicted",
    ) -> list[Classification]:
        """One Classification per white cell found in a smear crop or field (prepare.py), in reading order.

        prepare="off": the upload as it is, one result exactly as `classify` gives it. prepare="auto": an upload
        that already is a C-NMC frame passes through unchanged (the same predictions as "off"); otherwise each
        white cell is made into a C-NMC-style frame and classified. Each result gains "cell" (0, 1, ...), "bbox"
        ([x0, y0, x1, y1] in the upload's pixels), "prepared" (false for a pass-through), "scale" (micrometres per
        pixel, how it was found, the cell's diameter), "found" (white cells found) and "notes". An upload without a
        white cell gives one result {file, error: "no white cell found: ..."}; an unreadable one, {file, error}.
        `um_per_px`: the user's stated scale of the upload (otherwise measured from its red cells).
        """
        if prepare not in PREPARE_MODES:
            raise ValueError(f"prepare must be one of {list(PREPARE_MODES)}; got {prepare!r}")
        options = PrepareOptions(um_per_px=um_per_px, colour_reference=self.colour_reference)  # 450 px frames
        if prepare == "off":
            return [self.classify(source, name, cam, target)]
        label = _file_label(source, name)
        img = _decode(source, label)
        if isinstance(img, Classification):
            return [img]
        preparation = prepare_upload(img, options)
        if preparation.error:
            return [Classification({"file": label, "error": preparation.error})]
        notes = list(preparation.notes)
        if self.colour_reference is None and not preparation.passthrough:
            notes = [n for n in notes if not n.startswith("no colour reference")]
            notes.append("the study has no colour reference saved: the stain is not normalised")
        out = []
        for cell in preparation.cells:
            classification = self.classify_image(cell.frame, label, cam, target)
            summary = cell.summary()
            classification.result.update({
                "cell": cell.index, "bbox": summary["bbox"], "prepared": cell.prepared,
                "scale": {"um_per_px": summary["um_per_px"], "source": summary["scale"],
                          "diameter_um": summary["diameter_um"]},
                "found": preparation.found, "notes": summary["notes"] + notes,
            })
            classification.cell = cell
            out.append(classification)
        return out

    def predict(self, source: str | Path | bytes, name: str | None = None) -> dict:
        """One result per image, as `predict` prints it: predictions, ensemble, label, agreement, ood; or error."""
        return self.classify(source, name).result

    def table(self, result: dict) -> pd.DataFrame:
        """Per-model rows of one result, for a page: Model, P(ALL), Call (at the model's own threshold)."""
        rows = [
            {"Model": get_spec(k).name, "P(ALL)": p, "Call": "ALL" if p >= self.thresholds.get(k, 0.5) else "HEM"}
            for k, p in result.get("predictions", {}).items()
        ]
        return pd.DataFrame(rows, columns=["Model", "P(ALL)", "Call"])

    def provenance(self) -> dict:
        """What a saved result must carry to be traced: the study, the models' config hash (the first 16 hex of the
        sha1 of the sorted "key=config hash" lines of the loaded models) and whether the data was synthetic."""
        lines = "\n".join(f"{k}={h}" for k, h in sorted(self.config_hashes.items()))
        return {"study": self.store.name, "config_hash": hashlib.sha1(lines.encode()).hexdigest()[:16],
                "synthetic_data": self.synthetic, "research_use_only": True}

    def reference_cells(self, key: str, features: np.ndarray, k: int = NEIGHBOURS) -> dict[str, list[Neighbour]] | str:
        """The `k` training cells of each class nearest to `features` in model `key`'s feature space
        (neighbours.py), or one line saying why the study has none here. The index is read once per model."""
        if key not in self.models:
            return f"{key} is not a loaded model of this study"
        if key not in self._indexes:
            fingerprint = self._passes[key].fingerprint if self.cached(key) else base_fingerprint(self.models[key])
            self._indexes[key] = load_index(self.store, key, fingerprint, self.sizes[key])
        index = self._indexes[key]
        return index.nearest(features, k) if isinstance(index, FeatureIndex) else index

    def cached(self, key: str) -> bool:
        """The model's pass was read from this machine's cache (compiled.py): its Keras model is still on disk."""
        return isinstance(self._passes.get(key), SavedPass)

    def save_compiled(self) -> int:
        """Cache each pass traced in this process that this machine's cache lacks (compiled.py), so that the next
        process loads it faster; returns how many were saved. Never raises (a failure is one log line)."""
        saved = 0
        for key, cache_key in list(self._unsaved.items()):
            if cache_key and key in self._passes and self.models.loaded(key):
                saved += save(self._passes[key], self.models[key], cache_key, get_spec(key).gradcam_layer)
            self._unsaved.pop(key, None)
        return saved

    def ood_check(self, img: Image.Image, feats: dict[str, np.ndarray]) -> dict:
        """{"warning": bool, "reasons": [...], "far_models": [...]}: ood.ood_check with this study's references."""
        return ood_check(img, feats, self.image_reference, self.feature_references)


def _file_label(source: str | Path | bytes, name: str | None) -> str:
    return name or (Path(source).name if isinstance(source, (str, Path)) else "upload")


def _decode(source: str | Path | bytes, label: str) -> Image.Image | Classification:
    """The decoded RGB image, or a Classification {file, error} saying in one line why it cannot be read."""
    try:
        return open_image(source)
    except ImageError as e:
        return Classification({"file": label, "error": str(e).split(": ", 1)[-1]})
    except OSError as e:
        return Classification({"file": label, "error": f"cannot read the file ({e.strerror or e})"})


def results_frame(results: list[dict], provenance: dict | None = None) -> pd.DataFrame:
    """One row per result (the CSV a page offers): file, cell, label (ALL, HEM or inconclusive) and why, the
    ensemble's call, P(ALL) and agreement, uncertainty, out-of-distribution warning and reasons, each model's
    P(ALL), and the error of a file that failed. `provenance` (Predictor.provenance() plus "time"): columns put
    first on every row, so a saved table says where it came from."""
    rows = []
    for r in results:
        row = dict(provenance or {})
        ood = r.get("ood") or {}
        row.update({"file": r["file"], "cell": r.get("cell"), "prepared": r.get("prepared"),
                    "label": r.get("label", ""),
                    "unreliable (out of distribution)": bool(ood.get("warning")) if "ood" in r else None,
                    "why inconclusive": "; ".join(r.get("reasons", [])),
                    "ensemble call": r.get("call", ""), "ensemble P(ALL)": r.get("ensemble"),
                    "agreement": r.get("agreement", ""), "uncertainty": r.get("uncertainty", ""),
                    "why unreliable": "; ".join(ood.get("reasons", []))})
        row.update({f"P(ALL) {get_spec(k).name}": p for k, p in r.get("predictions", {}).items()})
        row["error"] = r.get("error", "")
        rows.append(row)
    return pd.DataFrame(rows)
