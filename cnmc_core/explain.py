"""Where each model looked: Grad-CAM (one compiled pass), Grad-CAM++ and Score-CAM (tf-keras-vis) on the
registry's layer.

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

This module computes heatmaps. What one says beside it is heat.py; drawing it, render.py; the cached gallery,
gallery.py. TensorFlow and tf-keras-vis are imported inside the functions that run them (a fast import).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .heat import HeatReading, read_heatmap
from .images import preprocess, resize_frame
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


# Each model has a pass of its own, traced once (`GradcamPass.traces`, tested); TensorFlow counts the seven first
# traces of the one Python function as retracing and warns about it: that warning alone is dropped.
logging.getLogger("tensorflow").addFilter(
    lambda r: not ("triggered tf.function retracing" in r.getMessage() and "GradcamPass" in r.getMessage()))


class GradcamPass:
    """One compiled pass of a classifier giving its scores, its Grad-CAM map on `layer_name`, and the outputs of
    `extra_layers` (the Predictor's pooled features): a prediction and where it came from, in one forward pass.

    Preprocessed inputs (n, size, size, 3) -> (maps float32 (n, h, w): Grad-CAM of the evidence for ALL (the score
    log(s_ALL / s_HEM)) on the layer's grid, before the ReLU; scores float32 (n, 2); [each extra layer's output]).
    The map for HEM is the same map negated: the score's sign carries exactly through the gradient and the sums.

    Hand-written for speed: tf-keras-vis runs eagerly and builds a Keras model on every call; this is one
    tf.function, traced once whatever the batch size, costing what the forward pass does (11x faster for one upload
    on the demo: docs/benchmarks.md section 3). The formula is tf-keras-vis's, and tests/test_gradcam_pass.py
    checks the maps against it on every registry model.
    """

    def __init__(self, classifier, layer_name: str, extra_layers: Sequence[str] = ()):
        import keras
        import tensorflow as tf

        outputs = [gradcam_layer(classifier, layer_name).output, classifier.output]
        model = keras.Model(classifier.inputs, outputs + [classifier.get_layer(name).output for name in extra_layers])
        size = int(classifier.input_shape[1])
        score = log_odds_score(1.0)

        @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                maps, scores, *extra = model(x, training=False)
                target = score(scores)
            grads = tf.cast(tape.gradient(target, maps), tf.float32)  # (n, h, w, channels)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (n, 1, 1, channels)
            cams = tf.reduce_sum(tf.cast(maps, tf.float32) * weights, axis=-1)
            return cams, tf.cast(scores, tf.float32), extra

        self.function = run  # (compiled.py saves it)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        cams, scores, extra = self.function(np.asarray(x, dtype=np.float32))
        return cams.numpy(), scores.numpy(), [np.asarray(e) for e in extra]

    @property
    def traces(self) -> int:
        """How many times the pass was traced: 1 once it has run (each trace of a large model costs seconds)."""
        return int(self.function.experimental_get_tracing_count())


def layer_heatmaps(cams: np.ndarray) -> np.ndarray:
    """Signed maps (n, h, w) of the target's evidence -> float32 (n, h, w) in [0, 1]: ReLU, then each map divided
    by its own maximum, as in the keras-io example (all zero where nothing is positive). Not tf-keras-vis's min-max
    normalisation: its epsilon flattens maps of tiny magnitude (random bases)."""
    cams = np.maximum(np.nan_to_num(np.asarray(cams, dtype=np.float64)), 0.0)
    peak = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0).astype(np.float32)


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

    def reading(self, img: Image.Image) -> HeatReading:
        """Where this heatmap puts its heat on `img`, the frame it was computed on (same size)."""
        return read_heatmap(self.heatmap, img, self.p_all, self.target)


class Explainer:
    """Heatmaps of one loaded classifier: Grad-CAM by its compiled pass (GradcamPass), Grad-CAM++ and Score-CAM by
    tf-keras-vis; each built on first use and kept."""

    def __init__(self, classifier, layer_name: str, preprocess_mode: str, gradcam_pass: GradcamPass | None = None):
        layer = gradcam_layer(classifier, layer_name).name
        self._setup(layer, int(classifier.get_layer(layer).output.shape[-1]), int(classifier.input_shape[1]),
                    preprocess_mode, gradcam_pass, lambda: classifier)

    def _setup(self, layer: str, channels: int, size: int, preprocess_mode: str, gradcam_pass,
               classifier: Callable[[], object]) -> None:
        """What every Explainer holds; `classifier()` gives the Keras model, called once, when first needed (a
        compiled.SavedExplainer reads it from disk only for Grad-CAM++ and Score-CAM)."""
        self.layer, self.channels, self.size, self.preprocess_mode = layer, channels, size, preprocess_mode
        self._gradcam_pass = gradcam_pass  # given by a Predictor: the pass its predictions run (traced once)
        self._get_classifier, self._classifier = classifier, None
        self._visualisers: dict = {}

    @property
    def classifier(self):
        if self._classifier is None:
            self._classifier = self._get_classifier()
        return self._classifier

    @classmethod
    def for_model(cls, classifier, key: str, gradcam_pass: GradcamPass | None = None) -> Explainer:
        spec = get_spec(key)
        return cls(classifier, spec.gradcam_layer, spec.preprocess, gradcam_pass)

    @property
    def gradcam_pass(self) -> GradcamPass:
        if self._gradcam_pass is None:
            self._gradcam_pass = GradcamPass(self.classifier, self.layer)
        return self._gradcam_pass

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
        Grad-CAM by the compiled pass; the other methods by tf-keras-vis (`library_map`).
        """
        if method != "gradcam":
            return self.library_map(x, method, target_all)
        return layer_heatmaps(self.gradcam_pass(x)[0] * _signs(len(x), target_all)[:, None, None])

    def library_map(self, x: np.ndarray, method: str = "gradcam", target_all: bool | Sequence[bool] = True
                    ) -> np.ndarray:
        """`layer_map` as tf-keras-vis computes it, for every method (for Grad-CAM: the reference GradcamPass is
        tested and benchmarked against)."""
        n = len(x)
        signs = _signs(n, target_all)
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
        return layer_heatmaps(cam)  # (tf-keras-vis did the ReLU already)

    def p_all(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed inputs (n, size, size, 3) -> the model's P(ALL), float (n,)."""
        return p_all(self.classifier.predict_on_batch(x))

    def explain_batch(
        self, imgs: Sequence[Image.Image], method: str = "gradcam", target: str = "predicted",
        p_alls: Sequence[float] | None = None, threshold: float = 0.5, out_size: tuple[int, int] | None = None,
        gradcam_maps: Sequence[np.ndarray] | None = None,
    ) -> list[Explanation]:
        """Heatmaps of decoded RGB images, explained as one batch, each resized to `out_size` (width, height;
        default its own image's size). Each is what `explain` gives for its image alone.

        `p_alls` (if known, one per image) and `threshold` decide each predicted class for target "predicted";
        for Grad-CAM without them, P(ALL) comes from the same pass as the maps.
        `gradcam_maps` (method "gradcam", with `p_alls`): each image's map from a pass already run (GradcamPass's
        first output, as `Predictor` keeps it with its prediction): no model is run.
        """
        check_method(method)
        check_target(target)
        if p_alls is not None and len(p_alls) != len(imgs):
            raise ValueError(f"p_alls must give one P(ALL) per image: {len(imgs)} images, got {len(p_alls)}")
        if gradcam_maps is not None and (method != "gradcam" or p_alls is None or len(gradcam_maps) != len(imgs)):
            raise ValueError(f"gradcam_maps go with method 'gradcam' and p_alls, one map per image: {len(imgs)} "
                             f"images, method {method!r}, p_alls {'given' if p_alls is not None else 'None'}, "
                             f"{len(gradcam_maps)} maps")
        if not imgs:
            return []
        probs = None if p_alls is None else np.asarray(p_alls, dtype=np.float64)
        maps = None if gradcam_maps is None else np.stack(gradcam_maps)  # (n, h, w): Grad-CAM for ALL
        x = None if maps is not None else preprocess(np.stack([resize_frame(img, self.size) for img in imgs]),
                                                     self.preprocess_mode)
        # tf-keras-vis's gradient tape keeps every activation of every image of a pass: a bounded number per pass.
        step = max(1, GRADCAM_BATCH_PIXELS // (self.size * self.size))
        if method == "gradcam" and maps is None:
            passes = [self.gradcam_pass(x[i:i + step]) for i in range(0, len(x), step)]
            maps = np.concatenate([m for m, _, _ in passes])
            if probs is None:
                probs = p_all(np.concatenate([scores for _, scores, _ in passes]))
        elif probs is None:
            probs = self.p_all(x)
        targets_all = (probs >= threshold) | (target == "all")
        if method == "gradcam":
            cams = layer_heatmaps(np.where(targets_all[:, None, None], maps, -maps))  # HEM's map: ALL's negated
        else:
            cams = np.concatenate(
                [self.library_map(x[i:i + step], method, targets_all[i:i + step]) for i in range(0, len(x), step)]
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


def _signs(n: int, target_all: bool | Sequence[bool]) -> np.ndarray:
    """+1 (evidence for ALL) or -1 (for HEM) per image, from one bool for all `n` images or one per image."""
    targets = np.asarray(target_all, dtype=bool)
    if targets.shape not in ((), (n,)):
        raise ValueError(f"target_all must be one bool or {n} of them (one per image); got shape {targets.shape}")
    return np.where(np.broadcast_to(targets, (n,)), 1.0, -1.0)


def to_image_size(layer_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map on the layer's grid -> float32 (height, width) over the whole frame, bilinear, in [0, 1]."""
    width, height = size
    resized = Image.fromarray(np.ascontiguousarray(layer_map, dtype=np.float32)).resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def study_classifier(store: StudyStore, key: str):
    """The saved classifier of model `key` of the study, loaded from disk (Keras safe mode)."""
    return load_classifier(store.model_file(key, "model.keras"))
