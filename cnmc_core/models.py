"""Building the classifiers: a frozen base and the paper's head, as one flat Keras graph.

Flat means the head is applied to `base.output`, so every base layer is a layer of the classifier
itself (no nested model). Keras 3 gradient models, hence Grad-CAM, need that.

Weights: "imagenet" (Keras downloads once into ~/.keras/models or $KERAS_HOME/models), "none"
(random), or a folder holding the notop .h5 files for offline machines, checked by md5.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from .disk import atomic_path
from .registry import ModelSpec

HEAD_POOL, HEAD_DROPOUT, HEAD_DENSE = "head_pool", "head_dropout", "head_dense"


class WeightsError(ValueError):
    """ImageNet weights cannot be had; the message says which file and where to put it."""


def md5_of(path: str | Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(spec: ModelSpec, weights: str) -> str | None:
    """What to pass to keras.applications as `weights=`: 'imagenet', None or a checked file path."""
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        return "imagenet"
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"--weights {weights!r} is neither imagenet, none nor an existing folder of weight files")
    path = folder / spec.weights_file
    algorithm = "sha256" if len(spec.weights_md5) == 64 else "md5"  # as Keras's file_utils tells them apart
    if not path.is_file():
        raise WeightsError(
            f"{spec.name}: {spec.weights_file} ({algorithm} {spec.weights_md5}) is not in {str(folder)!r}; "
            f"download it from {spec.weights_url} and put it there"
        )
    actual = md5_of(path, algorithm)
    if actual != spec.weights_md5:
        raise WeightsError(
            f"{spec.name}: {path} has {algorithm} {actual}, expected {spec.weights_md5} "
            f"(a partial or wrong download?); download it again from {spec.weights_url}"
        )
    return str(path)


def build_base(spec: ModelSpec, input_size: int, weights: str | None):
    """The notop base at `input_size` with `weights` resolved as above, frozen."""
    import keras

    resolved = resolve_weights(spec, weights)
    cls = getattr(keras.applications, spec.keras_class)
    try:
        base = cls(include_top=False, weights=resolved, input_shape=(input_size, input_size, 3))
    except Exception as e:  # the download or the weight file failed; say what to do
        if resolved == "imagenet":
            keras_home = os.environ.get("KERAS_HOME", "~/.keras")
            raise WeightsError(
                f"{spec.name}: could not get the ImageNet weights "
                f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                f"without internet, download {spec.weights_url} into a folder and pass --weights FOLDER "
                f"(or into {keras_home}/models), or use --weights none"
            ) from None
        if resolved is not None:
            raise WeightsError(f"{spec.name}: could not load {resolved}: {str(e).splitlines()[0][:200]}") from None
        raise
    base.trainable = False
    return base


def build_classifier(spec: ModelSpec, input_size: int, weights: str | None = "none", dropout: float = 0.5):
    """Frozen base -> GlobalMaxPooling2D -> Dropout -> Dense(2, sigmoid): the paper's classifier, flat.

    Input: float32 (batch, input_size, input_size, 3) after `images.preprocess(..., spec.preprocess)`.
    Output: (batch, 2) sigmoid scores for [HEM, ALL].
    """
    import keras

    base = build_base(spec, input_size, weights)
    x = keras.layers.GlobalMaxPooling2D(name=HEAD_POOL)(base.output)
    x = keras.layers.Dropout(dropout, name=HEAD_DROPOUT)(x)
    out = keras.layers.Dense(2, activation="sigmoid", name=HEAD_DENSE)(x)
    return keras.Model(base.input, out, name=f"{spec.key}_classifier")


def feature_model(classifier):
    """Input image -> pooled features (batch, features): the frozen part of the classifier."""
    import keras

    return keras.Model(classifier.input, classifier.get_layer(HEAD_POOL).output, name="features")


def base_fingerprint(classifier) -> str:
    """sha1 of every weight of the frozen base (everything below the head): keys the feature cache."""
    h = hashlib.sha1()
    for layer in classifier.layers:
        if layer.name in (HEAD_POOL, HEAD_DROPOUT, HEAD_DENSE):
            continue
        for w in layer.weights:
            h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()


def p_all(scores: np.ndarray) -> np.ndarray:
    """(n, 2) sigmoid scores [HEM, ALL] -> P(ALL) in [0, 1], so that P(ALL) > 0.5 iff argmax is ALL.

    The paper's head has two independent sigmoids; normalising them keeps its argmax decision
    and gives one probability to threshold, average and calibrate.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return scores[:, 1] / np.clip(scores[:, 0] + scores[:, 1], 1e-12, None)


def save_classifier(classifier, path: Path) -> None:
    """Save as a .keras file atomically: written beside, then renamed into place."""
    with atomic_path(path) as tmp:
        classifier.save(tmp)


def load_classifier(path: Path):
    """Load a saved classifier in Keras safe mode (a file that would run code is refused).

    A missing file is FileNotFoundError; a file that is not a .keras archive (truncated, random
    bytes) is a ValueError that calls it broken, not missing.
    """
    import keras

    if not Path(path).is_file():
        raise FileNotFoundError(f"{Path(path).name} not found in {Path(path).parent}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{Path(path).name} is broken: not a .keras archive (a truncated or damaged copy?); "
                         "retrain the model")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as e:
        if "safe_mode" in str(e):
            raise ValueError(
                f"{Path(path).name} was refused: it holds code (a Lambda layer) that safe mode never runs; "
                "retrain the model with this tool"
            ) from None
        raise
