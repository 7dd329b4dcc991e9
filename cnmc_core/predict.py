"""Classifying cells with every trained model of a study: the one code path of `predict` and the page.

Models are loaded once (Keras safe mode) and kept; each image is decoded once, resized once per
input size, and run through each model. P(ALL) is `models.p_all` of the classifier's output,
the same number `predictions.csv` holds for validation images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import ImageError, open_image, preprocess, resize_frame
from .registry import MODELS, get_spec
from .store import StudyStore

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    store: StudyStore
    models: dict = field(default_factory=dict)  # key -> loaded Keras classifier
    sizes: dict = field(default_factory=dict)  # key -> input size
    broken: dict = field(default_factory=dict)  # key -> one-line reason it could not be loaded

    @classmethod
    def load(cls, store: StudyStore, keys: list[str] | None = None) -> "Predictor":
        from .models import load_classifier

        if not store.exists():
            raise FileNotFoundError(f"no study {store.name!r} under {store.root} (see `python -m cnmc_core studies`)")
        info = store.read_study()
        wanted = keys or [k for k in info.get("models", []) if k in MODELS]
        p = cls(store)
        for key in wanted:
            get_spec(key)
            if not store.model_complete(key):
                p.broken[key] = f"{key}: results incomplete; rerun the study's train command to rebuild it"
                continue
            try:
                model = load_classifier(store.model_file(key, "model.keras"))
            except Exception as e:  # a truncated or hostile file must not take the others down
                p.broken[key] = f"{key}: model file cannot be loaded ({type(e).__name__}); rerun the study's train command"
                continue
            p.models[key] = model
            p.sizes[key] = int(model.input_shape[1])
        if not p.models:
            raise FileNotFoundError(f"study {store.name!r} has no usable model: " + "; ".join(p.broken.values()))
        return p

    def predict_image(self, img) -> dict[str, float]:
        """P(ALL) per model for one decoded RGB PIL image."""
        from .models import p_all

        out = {}
        resized = {}
        for key, model in self.models.items():
            size = self.sizes[key]
            if size not in resized:
                resized[size] = resize_frame(img, size)[None]  # uint8 (1, size, size, 3)
            x = preprocess(resized[size], get_spec(key).preprocess)
            out[key] = float(p_all(np.asarray(model.predict_on_batch(x)))[0])
        return out

    def predict(self, source: str | Path | bytes, name: str | None = None) -> dict:
        """One result per image, as `predict` prints it: predictions, ensemble, label, agreement; or error."""
        label = name or (Path(source).name if isinstance(source, (str, Path)) else "upload")
        try:
            img = open_image(source)
        except ImageError as e:
            return {"file": label, "error": str(e).split(": ", 1)[-1]}
        except OSError as e:
            return {"file": label, "error": f"cannot read the file ({e.strerror or e})"}
        preds = self.predict_image(img)
        return summarise(label, preds, self.broken)


def summarise(file: str, preds: dict[str, float], broken: dict | None = None) -> dict:
    """Ensemble (mean P(ALL)), label, and agreement in words, from per-model probabilities."""
    ensemble = float(np.mean(list(preds.values())))
    label = "ALL" if ensemble >= 0.5 else "HEM"
    votes = sum((p >= 0.5) == (label == "ALL") for p in preds.values())
    out = {
        "file": file,
        "predictions": {k: round(v, 6) for k, v in preds.items()},
        "ensemble": round(ensemble, 6),
        "label": label,
        "agreement": f"{votes} of {len(preds)} models: {label}",
        "confidence": round(max(ensemble, 1 - ensemble), 6),
    }
    if broken:
        out["unavailable"] = dict(broken)
    return out
