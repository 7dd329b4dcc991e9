"""The Classify page's heatmaps read from the predictions' compiled Grad-CAM pass (explain.GradcamPass) without running
a model again. The pass against tf-keras-vis on every registry model, and its one trace: test_explain.py, which builds
those models once."""

from __future__ import annotations

import numpy as np
import pytest

from cnmc_core.dashboard import classify
from cnmc_core.explain import to_image_size
from cnmc_core.images import open_image, preprocess, resize_frame
from cnmc_core.models import p_all
from cnmc_core.registry import MODELS
from cnmc_core.store import StudyStore

from .conftest import TINY_MODELS
from .helpers import explainer_inputs


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

    runs, real = [], {key: gradcam_pass.function for key, gradcam_pass in predictor._passes.items()}
    for key, gradcam_pass in predictor._passes.items():
        monkeypatch.setattr(gradcam_pass, "function", lambda x, key=key: runs.append(key) or real[key](x))
    maps = classify.explain_upload(predictor, result, "gradcam")  # the heatmaps, after
    assert runs == []  # no model ran again
    assert list(maps[0]) == list(predictor.models)
    for key, e in maps[0].items():
        p = cell.result["predictions"][key]
        for_all = p >= predictor.thresholds[key]
        assert (e.method, e.target, e.p_all) == ("gradcam", "ALL" if for_all else "HEM", p)
        explainer = predictor.explainer(key)
        reference = explainer.library_map(explainer_inputs(explainer, [frame]), "gradcam", for_all)[0]  # tf-keras-vis
        np.testing.assert_allclose(e.heatmap, to_image_size(reference, frame.size), atol=1e-4)

    # The other methods still run (tf-keras-vis) on the frame the page keeps; an unreadable file has no heatmaps.
    plus = classify.explain_upload(predictor, result, "gradcam++")[0]
    assert [e.method for e in plus.values()] == ["gradcam++"] * len(predictor.models)
    broken = classify.classify_upload(predictor, b"not an image", "broken.png", None, 480)
    assert classify.explain_upload(predictor, broken, "gradcam") == [{}]
    assert runs == []
    assert all(run.experimental_get_tracing_count() == 1 for run in real.values())  # warm-up included: one trace
