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

This module computes heatmaps only. Drawing them (colours, overlays, PNG) is render.py; the cached
gallery of a study is gallery.py. TensorFlow and tf-keras-vis are imported inside the functions that
run them, so importing this module stays fast.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import DARK_LEVEL, open_image, preprocess, resize_frame
from .models import load_classifier, p_all
from .registry import get_spec
from .store import StudyStore

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
TARGETS = {"predicted": "the class the model predicts", "all": "ALL (the malignant class)"}
# Faster Score-CAM: mask with the 64 channels of largest spatial variance, not all 512-2048
# (one forward pass per channel; all of them take minutes per image on a CPU).
SCORECAM_CHANNELS = 64
# Images per gradient pass, as pixels: 4 at 96 px, 1 at 224 px and above. Measured on ResNet50
# (2-core CPU): 12 cells at 96 px in passes of 1, 4, 12 took 2.1, 0.8, 0.5 s and 42, 177, 413 MiB
# of extra peak memory; at 224 px 4 per pass took 0.6 GiB more than 1 per pass, 12 per pass 2.1 GiB.
GRADCAM_BATCH_PIXELS = 4 * 96 * 96


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
        raise ValueError(
            f"layer {layer_name!r} gives shape {tuple(layer.output.shape)}, not a (batch, h, w, channels) map"
        )
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
    """One image's heatmap for one model and method, and what it shows."""

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
    def for_model(cls, classifier, key: str) -> Explainer:
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
                cam = np.concatenate(
                    [visualiser(log_odds_score(signs[i:i + 1]), x[i:i + 1], **kwargs) for i in range(n)]
                )
            else:
                cam = visualiser(log_odds_score(signs), x, **kwargs)
        # ReLU (done by tf-keras-vis), then each map divided by its own maximum, as in the keras-io example.
        # Not the library's min-max normalisation: its epsilon flattens maps of tiny magnitude (random bases).
        cam = np.maximum(np.nan_to_num(np.asarray(cam, dtype=np.float64)), 0.0)
        peak = cam.max(axis=(1, 2), keepdims=True)
        return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)

    def p_all(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed inputs (n, size, size, 3) -> the model's P(ALL), float (n,)."""
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
        cams = np.concatenate(
            [self.layer_map(x[i:i + step], method, targets_all[i:i + step]) for i in range(0, len(x), step)]
        )
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
    store.require()
    if not store.model_complete(key):
        models = [k for k in store.read_study().get("models", []) if store.model_complete(k)]
        raise ValueError(f"study {store.name!r} has no complete model {key!r}; it has: {', '.join(models) or 'none'}")


def explain_image(store: StudyStore, key: str, source, method: str = "gradcam", target: str = "predicted"):
    """One model of a study on one image: (decoded image, Explanation). For the `explain` command."""
    check_method(method)
    check_target(target)
    check_study_model(store, key)
    img = open_image(source)
    classifier = study_classifier(store, key)
    threshold = float(store.read_metrics(key).get("threshold", 0.5))
    return img, Explainer.for_model(classifier, key).explain(img, method, target, threshold=threshold)


def study_classifier(store: StudyStore, key: str):
    """The saved classifier of model `key` of the study, loaded from disk (Keras safe mode)."""
    return load_classifier(store.model_file(key, "model.keras"))
