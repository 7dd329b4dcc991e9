"""Grad-CAM in one compiled pass (explain.GradcamPass): tf-keras-vis's maps, the classifier's P(ALL), one trace,
and the Classify page's heatmaps read from the predictions' pass without running a model again."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnmc_core.dashboard import classify
from cnmc_core.explain import Explainer, GradcamPass, to_image_size
from cnmc_core.images import open_image, preprocess, resize_frame
from cnmc_core.models import HEAD_POOL, p_all
from cnmc_core.registry import MODELS
from cnmc_core.store import StudyStore

from .conftest import TINY_MODELS


def disc_image(width: int, height: int, centre: tuple[int, int], radius: int) -> Image.Image:
    """A purple disc (a 'cell') at `centre` (x, y) on black, RGB."""
    yy, xx = np.mgrid[:height, :width]
    img = np.zeros((height, width, 3), np.uint8)
    img[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < radius**2] = (150, 90, 200)
    return Image.fromarray(img)


def inputs(explainer: Explainer, imgs) -> np.ndarray:
    """Decoded frames -> the explainer's preprocessed batch (n, size, size, 3)."""
    return preprocess(np.stack([resize_frame(img, explainer.size) for img in imgs]), explainer.preprocess_mode)


# Two different cells: different maps, so a map mixed up between the images of a batch would show.
CELLS = [disc_image(80, 80, (40, 40), 20), disc_image(90, 60, (25, 30), 14)]


@pytest.mark.parametrize("key", list(MODELS))
def test_the_compiled_gradcam_is_tf_keras_vis_gradcam_on_every_registry_model(key, registry_classifier):
    clf = registry_classifier(key)
    explainer = Explainer.for_model(clf, key)
    x = inputs(explainer, CELLS)
    for targets in ([True, False], [False, True]):  # each image's evidence for ALL and for HEM
        ours = explainer.layer_map(x, "gradcam", targets)
        reference = explainer.library_map(x, "gradcam", targets)  # tf-keras-vis's Gradcam, eager
        assert ours.shape == reference.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference, atol=1e-4)
        assert np.array_equal(ours.max(axis=(1, 2)) > 0, reference.max(axis=(1, 2)) > 0)  # the same empty maps
    # Not a vacuous match: each image has evidence for one class or the other, normalised to a peak of 1.
    both = np.stack([explainer.layer_map(x, "gradcam", t) for t in (True, False)])  # (2 signs, 2 images, h, w)
    assert np.allclose(both.max(axis=(0, 2, 3)), 1.0)
    # The pass's scores are the classifier's: P(ALL) comes from the same pass as the map.
    _, scores, _ = explainer.gradcam_pass(x)
    np.testing.assert_allclose(p_all(scores), p_all(clf.predict_on_batch(x)), atol=1e-6)


@pytest.mark.slow  # TensorFlow
def test_the_pass_is_traced_once_for_any_batch_size_and_a_batch_is_each_image_alone(registry_classifier):
    clf = registry_classifier("resnet50")
    gradcam_pass = GradcamPass(clf, MODELS["resnet50"].gradcam_layer, extra_layers=[HEAD_POOL])
    explainer = Explainer.for_model(clf, "resnet50", gradcam_pass)
    x = inputs(explainer, CELLS + CELLS[::-1])
    maps, scores, (pooled,) = gradcam_pass(x)  # 4 images
    assert maps.shape[0] == scores.shape[0] == pooled.shape[0] == 4 and maps.ndim == 3
    for i in range(4):
        alone, alone_scores, _ = gradcam_pass(x[i:i + 1])
        np.testing.assert_allclose(alone[0], maps[i], rtol=1e-4, atol=1e-6 * np.abs(maps).max())
        np.testing.assert_allclose(alone_scores[0], scores[i], atol=1e-6)
    explainer.explain_batch(CELLS, "gradcam")  # the Explainer runs the pass it was given
    assert gradcam_pass.traces == 1


@pytest.fixture(scope="module")
def upload(tiny_study) -> tuple[bytes, str]:
    """A validation cell of the trained tiny study, as the bytes a user drops, and its name."""
    store = StudyStore(*tiny_study)
    path = store.read_predictions(TINY_MODELS[0])["path"][0]
    with open(f"{store.read_study()['data']['path']}/{path}", "rb") as f:
        return f.read(), path.rsplit("/", 1)[-1]


@pytest.mark.slow  # a trained study
def test_the_page_draws_predictions_then_heatmaps_read_from_their_pass(tiny_study, upload, monkeypatch):
    predictor = classify.load_predictor(*tiny_study)
    classify.warm_up(predictor)
    content, name = upload
    result = classify.classify_upload(predictor, content, name, None, 480)  # what the page draws first
    cell = result.cells[0]
    frame = open_image(content)
    assert cell.image.size == frame.size  # a C-NMC frame: kept whole, the heatmaps are on the frame the models saw
    for key, clf in predictor.models.items():  # the predictions are the classifier's own, as before the pass
        x = preprocess(resize_frame(frame, predictor.sizes[key])[None], MODELS[key].preprocess)
        assert cell.result["predictions"][key] == pytest.approx(float(p_all(clf.predict_on_batch(x))[0]), abs=1e-6)

    runs, real = [], {key: gradcam_pass._run for key, gradcam_pass in predictor._passes.items()}
    for key, gradcam_pass in predictor._passes.items():
        monkeypatch.setattr(gradcam_pass, "_run", lambda x, key=key: runs.append(key) or real[key](x))
    maps = classify.explain_upload(predictor, result, "gradcam")  # the heatmaps, after
    assert runs == []  # no model ran again
    assert list(maps[0]) == list(predictor.models)
    for key, e in maps[0].items():
        p = cell.result["predictions"][key]
        for_all = p >= predictor.thresholds[key]
        assert (e.method, e.target, e.p_all) == ("gradcam", "ALL" if for_all else "HEM", p)
        explainer = predictor.explainer(key)
        reference = explainer.library_map(inputs(explainer, [frame]), "gradcam", for_all)[0]  # tf-keras-vis
        np.testing.assert_allclose(e.heatmap, to_image_size(reference, frame.size), atol=1e-4)

    # The other methods still run (tf-keras-vis) on the frame the page keeps; an unreadable file has no heatmaps.
    plus = classify.explain_upload(predictor, result, "gradcam++")[0]
    assert [e.method for e in plus.values()] == ["gradcam++"] * len(predictor.models)
    broken = classify.classify_upload(predictor, b"not an image", "broken.png", None, 480)
    assert classify.explain_upload(predictor, broken, "gradcam") == [{}]
    assert runs == []
    assert all(run.experimental_get_tracing_count() == 1 for run in real.values())  # warm-up included: one trace
