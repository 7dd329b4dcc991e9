"""The out-of-distribution check: is an uploaded frame like the frames the study's models were trained on?

C-NMC frames are one stained cell, centred, on black. A frame is flagged (`warning`, with one reason
per problem) when
- its image statistics (`frame_statistics`: background share, black border, centring, the stain's
  colour) fall outside those of the study's training frames (`unusual_frame_reasons`), or
- its pooled features are far from the training images' features for at least half of the models:
  the RMS z-score of the features against the training mean and spread (`feature_distance`) exceeds
  FEATURE_MARGIN times its 99th percentile over the training sample.
The prediction is still given; the warning says it is unreliable.

Both references are built at the end of a study (`build_reference`, called by study.py's hook) from a
sample of training frames and saved with the study (store.py knows where). This module classifies
nothing (predict.py does, and calls `ood_check` on each image).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .features import FeatureCache
from .images import DARK_LEVEL, open_image, preprocess, resize_frame
from .models import HEAD_POOL, base_fingerprint, load_classifier
from .registry import MODELS, get_spec
from .store import StudyStore

log = logging.getLogger(__name__)

# --- the image half: is this a C-NMC-like frame? ---------------------------------------------------
STATS_SIDE = 128  # frame statistics are computed on the whole frame resized to this side (fast, size-independent)
BORDER = 0.1  # the outer ring (this share of the side on each edge) must be background in a C-NMC frame
# Used when a study has no reference of its own (made before references existed): C-NMC-like frames.
DEFAULT_IMAGE_REFERENCE = {"background": [0.5, 0.97], "border_background": 0.97, "centre_offset": 0.05}

# --- the feature half: have the models seen images like it? -------------------------------------------
REFERENCE_IMAGES = 128  # training frames sampled for the out-of-distribution reference
FEATURE_MARGIN = 1.5  # far = RMS z-score above 1.5 x its 99th percentile over the training sample
SCALE_FLOOR = 0.1  # feature spreads are floored at 0.1 x their median (constant features would dominate)


def frame_statistics(img: Image.Image) -> dict:
    """What makes a frame C-NMC-like, measured on the whole frame resized to STATS_SIDE.

    background: share of near-black pixels; border_background: the same on the outer ring;
    centre_offset: distance of the foreground's centroid from the centre, in frame sides;
    colour: mean RGB of the foreground (None without foreground); contrast: luminance std (0-255).
    """
    a = resize_frame(img, STATS_SIDE).astype(np.float32)  # (side, side, 3)
    dark = a.max(axis=-1) < DARK_LEVEL
    ring = np.ones_like(dark)
    b = max(1, int(round(STATS_SIDE * BORDER)))
    ring[b:-b, b:-b] = False
    fg = ~dark
    if fg.any():
        yy, xx = np.nonzero(fg)
        centre = (STATS_SIDE - 1) / 2
        offset = float(np.hypot(yy.mean() - centre, xx.mean() - centre) / STATS_SIDE)
        colour = [round(float(c), 1) for c in a[fg].mean(axis=0)]
    else:
        offset, colour = 0.0, None
    luminance = a @ np.array([0.299, 0.587, 0.114], np.float32)
    return {
        "background": round(float(dark.mean()), 4),
        "border_background": round(float(dark[ring].mean()), 4),
        "centre_offset": round(offset, 4),
        "colour": colour,
        "contrast": round(float(luminance.std()), 2),
    }


def image_reference(stats: list[dict]) -> dict:
    """The ranges of `frame_statistics` over training frames, widened by margins: what 'C-NMC-like' means here."""
    if not stats:
        return dict(DEFAULT_IMAGE_REFERENCE)
    bg = np.array([s["background"] for s in stats])
    border = np.array([s["border_background"] for s in stats])
    offset = np.array([s["centre_offset"] for s in stats])
    colours = np.array([s["colour"] for s in stats if s["colour"] is not None], dtype=np.float64).reshape(-1, 3)
    ref = {
        "n": len(stats),
        "background": [round(float(np.quantile(bg, 0.01)), 4), round(float(np.quantile(bg, 0.99)), 4)],
        "border_background": round(float(np.quantile(border, 0.01)), 4),
        "centre_offset": round(float(np.quantile(offset, 0.99)), 4),
    }
    if len(colours):
        tint = _tint(colours)
        ref["colour_mean"] = [round(float(c), 2) for c in colours.mean(axis=0)]
        ref["colour_std"] = [round(float(c), 2) for c in colours.std(axis=0)]
        ref["tint_mean"] = [round(float(c), 2) for c in tint.mean(axis=0)]
        ref["tint_std"] = [round(float(c), 2) for c in tint.std(axis=0)]
    return ref


def _tint(colours: np.ndarray) -> np.ndarray:
    """(n, 3) mean RGB -> (n, 2) R-G and B-G: the stain's hue, whatever the brightness."""
    colours = np.asarray(colours, dtype=np.float64).reshape(-1, 3)
    return np.stack([colours[:, 0] - colours[:, 1], colours[:, 2] - colours[:, 1]], axis=1)


def unusual_frame_reasons(stats: dict, reference: dict | None = None) -> list[str]:
    """Why a frame does not look like the training frames (empty list: it does), one phrase each.

    Margins around the reference ranges: background -0.15/+0.02, border -0.05 (and never below
    0.9), centre offset +0.07, foreground colour and tint (R-G, B-G) 4 standard deviations (each at least 10 levels).
    """
    ref = reference or DEFAULT_IMAGE_REFERENCE
    reasons = []
    if stats["contrast"] < 2.0:
        return ["the frame is one flat colour: there is no cell in it"]
    if stats["colour"] is None or stats["background"] > 0.995:
        return ["the frame is (almost) all black: no cell was found"]
    lo, hi = ref["background"]
    if stats["background"] < max(0.02, lo - 0.15):
        reasons.append(
            f"only {stats['background']:.0%} of the frame is black background (training cells: {lo:.0%}-{hi:.0%}): "
            "it looks like a smear field, a photo, or a crop without the black surround"
        )
    elif stats["background"] > min(0.995, hi + 0.02):
        reasons.append(f"the cell fills only {1 - stats['background']:.1%} of the frame, less than any training cell")
    if stats["border_background"] < min(0.9, ref["border_background"] - 0.05):
        reasons.append(
            f"the frame's edges are {1 - stats['border_background']:.0%} non-black: "
            "training frames show one cell alone on black"
        )
    if stats["centre_offset"] > ref["centre_offset"] + 0.07:
        reasons.append(
            f"the cell is off-centre by {stats['centre_offset']:.0%} of the frame; training cells are centred"
        )
    if "colour_mean" in ref:
        mean = np.array(ref["colour_mean"] + ref["tint_mean"])
        std = np.maximum(np.array(ref["colour_std"] + ref["tint_std"]), 10.0)
        colour = np.array(stats["colour"])
        z = np.abs(np.concatenate([colour, _tint(colour)[0]]) - mean) / std
        if z.max() > 4.0:
            reasons.append(f"its stain colour is unlike the training cells' ({_stain_words(colour - mean[:3])})")
    return reasons


def _stain_words(diff: np.ndarray) -> str:
    """How a cell's mean colour differs from the training cells', in words a hematologist uses (not RGB numbers)."""
    if (diff > 0).all():
        return "much paler than theirs"
    if (diff < 0).all():
        return "much darker than theirs"
    i = int(np.argmax(np.abs(diff)))
    return f"much {'more' if diff[i] > 0 else 'less'} {('red', 'green', 'blue')[i]} than theirs"


def feature_distance(feats: np.ndarray, ref: dict) -> float:
    """RMS z-score of one pooled feature vector against a reference's mean and (floored) spread."""
    z = (np.asarray(feats, dtype=np.float64) - ref["mean"]) / ref["scale"]
    return float(np.sqrt(np.mean(z * z)))


def ood_check(
    img: Image.Image, feats: dict[str, np.ndarray], image_reference: dict | None, feature_references: dict,
) -> dict:
    """{"warning": bool, "reasons": [...], "far_models": [...]} for one decoded RGB frame (module docstring).

    `feats`: pooled features (view 0) by model key, for every key of `feature_references`;
    `image_reference`: the study's image reference (None: DEFAULT_IMAGE_REFERENCE);
    `feature_references`: key -> {mean, scale, limit}, for the models whose reference is current.
    """
    reasons = unusual_frame_reasons(frame_statistics(img), image_reference)
    far = [key for key, ref in feature_references.items() if feature_distance(feats[key], ref) > float(ref["limit"])]
    checked = len(feature_references)
    if checked and 2 * len(far) >= checked:
        reasons.append(
            f"its features are far from the training cells' for {len(far)} of {checked} models: "
            "the models have not seen images like it"
        )
    return {"warning": bool(reasons), "reasons": reasons, "far_models": far}


# --- the references, built at the end of a study ------------------------------------------------------
def build_reference(store: StudyStore, n: int = REFERENCE_IMAGES, load=None) -> dict:
    """Image statistics and per-model feature statistics of `n` training frames, saved with the study.

    Returns the image reference. `load(key)` gives a model's classifier (default: loaded from the study).
    """
    info = store.read_study()
    images, sha1s = reference_frames(store, n)
    image_ref = image_reference([frame_statistics(img) for img in images])
    features = _feature_references(store, info, images, sha1s, load)
    store.write_references(image_ref, features)
    log.info("out-of-distribution reference: %d training frames, %d models", len(images), len(features))
    return image_ref


def reference_frames(store: StudyStore, n: int = REFERENCE_IMAGES) -> tuple[list[Image.Image], list[str]]:
    """(decoded RGB frames, their sha1s): `n` training frames, sampled evenly over the two classes with the
    study's seed (the same frames give the smear preparation's stain reference: study.build_study_explanations).
    """
    info = store.read_study()
    split = store.read_split()
    train = split[split["split"] == "train"]
    if train.empty:
        raise ValueError(f"study {store.name!r} has no training images to build a reference from")
    rng = np.random.default_rng(int(info.get("seed", 0)))
    per_class = max(1, n // 2)
    picked = []
    for _, group in train.groupby("label"):
        picked.extend(group.index[rng.permutation(len(group))[:per_class]])
    data_root = Path(info["data"]["path"])
    images, sha1s = [], []
    for i in picked:
        try:
            images.append(open_image(data_root / train.loc[i, "path"]))
            sha1s.append(str(train.loc[i, "sha1"]))
        except (OSError, ValueError) as e:
            log.warning("reference: skipped %s (%s)", train.loc[i, "path"], e)
    if not images:
        raise ValueError(f"none of the reference frames could be read under {data_root}; was the data moved?")
    return images, sha1s


def _feature_references(store: StudyStore, info: dict, images: list, sha1s: list[str], load) -> dict:
    import keras

    features = {}
    for key in info.get("models", []):
        if key not in MODELS or not store.model_complete(key):
            continue
        model = load(key) if load else load_classifier(store.model_file(key, "model.keras"))
        size = int(model.input_shape[1])
        # The study cached these features (view 0) unless fine-tuning changed the base since.
        cache = FeatureCache(store.feature_cache_root, key, base_fingerprint(model), size)
        cached = [cache.get(s, 1) for s in sha1s]
        if all(c is not None for c in cached):
            f = np.concatenate(cached).astype(np.float64)
        else:
            pooled = keras.Model(model.input, model.get_layer(HEAD_POOL).output)
            batch = np.stack([resize_frame(img, size) for img in images])
            f = np.concatenate([
                np.asarray(pooled.predict_on_batch(preprocess(batch[i:i + 32], get_spec(key).preprocess)))
                for i in range(0, len(batch), 32)
            ]).astype(np.float64)
            del pooled
        mean = f.mean(axis=0)
        spread = f.std(axis=0)
        scale = np.maximum(spread, SCALE_FLOOR * max(float(np.median(spread)), 1e-12))
        ref = {"mean": mean, "scale": scale}
        distances = np.array([feature_distance(row, ref) for row in f])
        limit = FEATURE_MARGIN * float(np.quantile(distances, 0.99))
        features[key] = {
            "mean": mean.astype(np.float32), "scale": scale.astype(np.float32), "limit": np.float64(limit),
            "config_hash": np.str_(store.read_metrics(key).get("config_hash", "")),
        }
        del model
    return features

