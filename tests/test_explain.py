"""Grad-CAM and friends: the registry layer, heatmaps in image coordinates, sanity checks, the gallery, `explain`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from cnmc_core import explain
from cnmc_core.explain import METHODS, Explainer, GradcamPass, to_image_size
from cnmc_core.gallery import GALLERY_CELLS, GALLERY_SIDE, Gallery, build_gallery, gallery_is_current
from cnmc_core.heat import cell_focus
from cnmc_core.images import open_image
from cnmc_core.models import HEAD_POOL, p_all
from cnmc_core.registry import MODELS
from cnmc_core.store import StudyStore
from cnmc_core.study import build_study_explanations

from .conftest import TINY_MODELS, TINY_SIZE
from .helpers import cli, cli_here, disc_image, explainer_inputs


def cell_detector():
    """A flat classifier whose evidence is known: one channel lights up exactly where the frame is not black.

    Input 0-255 ('none' preprocessing), conv 'cells' (stride 4) -> GlobalMaxPooling2D -> Dense(2, sigmoid)
    that says ALL the brighter the brightest spot. Everything Grad-CAM should find is on the cell.
    """
    import keras

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(2, 3, strides=4, padding="same", activation="relu", name="cells")(inputs)
    x = keras.layers.GlobalMaxPooling2D(name="head_pool")(x)
    out = keras.layers.Dense(2, activation="sigmoid", name="head_dense")(x)
    model = keras.Model(inputs, out)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0] = 1.0 / 27 / 255  # channel 0: mean brightness of the 3x3 patch, 0 on black
    kernel[..., 1] = -1.0 / 27 / 255  # channel 1: never positive (dead), must not matter
    model.get_layer("cells").set_weights([kernel, np.zeros(2, np.float32)])
    dense = [np.array([[-4.0, 4.0], [0.0, 0.0]], np.float32), np.array([0.0, -1.0], np.float32)]
    model.get_layer("head_dense").set_weights(dense)
    return model


# --- the registry layer, on every model --------------------------------------------------------------
# tf-keras-vis's own search walks back to the last Conv layer; for these the registry layer is not one.
SEARCH_PICKS_WRONG = {"inception_v3", "xception", "efficientnet_b0", "resnet50", "resnet101", "convnext_tiny",
                      "efficientnet_v2_b0"}


@pytest.mark.parametrize("key", list(MODELS))
def test_every_registry_model_explains_on_its_registry_layer(key, registry_classifier):
    from tf_keras_vis.utils import find_layer
    from tf_keras_vis.utils.model_modifiers import Conv

    spec = MODELS[key]
    clf = registry_classifier(key)
    explainer = Explainer.for_model(clf, key)
    assert explainer.layer == spec.gradcam_layer
    automatic = find_layer(clf, lambda layer: isinstance(layer, Conv), offset=clf.get_layer(spec.gradcam_layer))
    assert (automatic.name != spec.gradcam_layer) == (key in SEARCH_PICKS_WRONG)

    img = disc_image(90, 60, (45, 30), 18)  # not square: heatmaps come back as (height, width)
    e = explainer.explain(img, "gradcam", "all")
    assert e.heatmap.shape == (60, 90) and e.heatmap.dtype == np.float32
    assert 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0
    assert e.layer == spec.gradcam_layer and e.target == "ALL"
    # With random weights the evidence for ALL may be nowhere (all zero after the ReLU); then the evidence
    # for HEM, the opposite sign of the same map, is somewhere. The one that exists is normalised on the
    # layer's grid (1 at its hottest grid cell), then resized: its peak stays near 1.
    for_hem = explainer.explain(img, "gradcam", "predicted", p_all=0.0)
    assert for_hem.target == "HEM"
    shown = for_hem if e.empty else e
    assert not shown.empty, f"{key}: neither ALL nor HEM has evidence anywhere"
    assert shown.heatmap.max() > 0.9


@pytest.mark.slow  # TensorFlow
def test_a_classifier_without_the_layer_is_refused_with_the_reason():
    model = cell_detector()
    with pytest.raises(ValueError, match="has no layer 'block5_conv3'"):
        Explainer(model, "block5_conv3", "none")
    with pytest.raises(ValueError, match="not a \\(batch, h, w, channels\\) map"):
        Explainer(model, "head_pool", "none")


# --- the heatmap lands where the evidence is -----------------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.slow  # TensorFlow
def test_the_heatmap_of_a_cell_detector_lies_on_the_cell_wherever_the_cell_is(method):
    explainer = Explainer(cell_detector(), "cells", "none")
    for centre in ((64, 64), (40, 88)):  # centred, then off-centre and asymmetric (a transposed map would miss it)
        img = disc_image(128, 128, centre, 26)
        e = explainer.explain(img, method)
        assert e.target == "ALL" and e.p_all > 0.5
        focus = cell_focus(e.heatmap, img)
        assert focus["mass_on_cell"] > 0.5, (centre, focus)  # most of the mass on the cell, the cell covers 13%
        yy, xx = np.mgrid[:128, :128]
        cy, cx = (e.heatmap * yy).sum() / e.heatmap.sum(), (e.heatmap * xx).sum() / e.heatmap.sum()
        assert abs(cx - centre[0]) < 8 and abs(cy - centre[1]) < 8, (centre, cx, cy)


@pytest.mark.slow  # TensorFlow
def test_the_target_sign_shows_evidence_for_the_chosen_class():
    explainer = Explainer(cell_detector(), "cells", "none")
    img = disc_image(64, 64, (32, 32), 14)
    for_all = explainer.explain(img, target="all")
    assert not for_all.empty
    # Predicted HEM (forced by a high threshold): nothing in this model is evidence for HEM.
    for_hem = explainer.explain(img, target="predicted", threshold=0.99)
    assert for_hem.target == "HEM" and for_hem.empty
    with pytest.raises(ValueError, match="--method must be one of gradcam, gradcam\\+\\+, scorecam; got 'lime'"):
        explainer.explain(img, method="lime")


# --- a batch is explained as each image alone ------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_explainer():
    """ResNet50 at 75 px with random weights: maps of both signs, each with its own peak."""
    import keras

    from cnmc_core.models import build_classifier

    keras.utils.set_random_seed(0)
    return Explainer.for_model(build_classifier(MODELS["resnet50"], 75, weights="none"), "resnet50")


# Different cells (place, size, frame shape) and mixed targets: ALL, HEM, ALL, HEM at the threshold 0.5.
BATCH_CELLS = [((80, 80), (40, 40), 20), ((90, 60), (25, 30), 14), ((80, 80), (55, 30), 24), ((70, 90), (30, 60), 10)]
BATCH_P_ALL = [0.9, 0.2, 0.7, 0.1]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.slow  # TensorFlow
def test_a_batch_gets_the_heatmaps_and_targets_each_image_gets_alone(resnet_explainer, method, monkeypatch):
    monkeypatch.setattr(explain, "SCORECAM_CHANNELS", 8)  # faster; still a choice among ResNet's 2048 channels
    imgs = [disc_image(w, h, centre, r) for (w, h), centre, r in BATCH_CELLS]
    batch = resnet_explainer.explain_batch(imgs, method, "predicted", BATCH_P_ALL, threshold=0.5)
    alone = [
        resnet_explainer.explain(img, method, "predicted", p_all=p, threshold=0.5) for img, p in zip(imgs, BATCH_P_ALL)
    ]
    assert [e.target for e in batch] == ["ALL", "HEM", "ALL", "HEM"] == [e.target for e in alone]
    assert [e.p_all for e in batch] == BATCH_P_ALL
    for img, b, a in zip(imgs, batch, alone):
        assert b.heatmap.shape == (img.height, img.width) and b.heatmap.dtype == np.float32
        np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-4)
        assert b.empty == a.empty

    # On the layer's grid, each map has its own sign and its own maximum; and these inputs would show a
    # sign shared by the batch (an image's HEM map is not its ALL map) or a shared maximum (two non-empty maps).
    from cnmc_core.images import preprocess, resize_frame

    frames = np.stack([resize_frame(img, resnet_explainer.size) for img in imgs])
    x = preprocess(frames, resnet_explainer.preprocess_mode)
    maps = resnet_explainer.layer_map(x, method, [True, False, True, False])
    assert maps.ndim == 3 and len(maps) == 4 and maps.dtype == np.float32
    assert np.abs(maps - resnet_explainer.layer_map(x, method, True)).max() > 0.01  # 100x the tolerance
    peaks = maps.max(axis=(1, 2))
    assert np.count_nonzero(peaks) >= 2 and np.allclose(peaks[peaks > 0], 1.0)
    with pytest.raises(ValueError, match="target_all must be one bool or 4 of them"):
        resnet_explainer.layer_map(x, method, [True, False])


@pytest.mark.slow  # TensorFlow
def test_explain_batch_refuses_a_p_all_count_that_does_not_match_the_images():
    explainer = Explainer(cell_detector(), "cells", "none")
    imgs = [disc_image(64, 64, (32, 32), 14)] * 2
    with pytest.raises(ValueError, match="p_alls must give one P\\(ALL\\) per image: 2 images, got 1"):
        explainer.explain_batch(imgs, p_alls=[0.5])
    assert explainer.explain_batch([]) == []


def test_to_image_size_spans_the_whole_frame():
    layer_map = np.zeros((4, 4), np.float32)
    layer_map[0, 3] = 1.0  # top-right grid cell
    h = to_image_size(layer_map, (200, 100))
    assert h.shape == (100, 200)
    y, x = np.unravel_index(np.argmax(h), h.shape)
    assert y < 25 and x > 150


# --- sanity checks on the trained small study ------------------------------------------------------
@pytest.fixture(scope="module")
def study(tiny_study):
    root, name = tiny_study
    return StudyStore(root, name)


@pytest.fixture(scope="module")
def val_cells(study):
    root = study.read_study()["data"]["path"]
    preds = study.read_predictions("vgg16")
    return [open_image(f"{root}/{p}") for p in preds["path"][:4]]


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("key", TINY_MODELS)
def test_model_randomisation_changes_the_heatmaps(study, val_cells, key):
    """Adebayo et al.'s check: a heatmap that survives re-initialising the weights explains nothing."""
    import keras

    from cnmc_core.models import build_classifier, load_classifier

    trained = Explainer.for_model(load_classifier(study.model_file(key, "model.keras")), key)
    keras.utils.set_random_seed(12345)
    fresh = Explainer.for_model(build_classifier(MODELS[key], TINY_SIZE, weights="none"), key)
    similarities, differences = [], []
    for img in val_cells:
        h = trained.explain(img, target="all").heatmap
        # deterministic: any difference below comes from the weights
        assert np.abs(h - trained.explain(img, target="all").heatmap).max() < 1e-4
        r = fresh.explain(img, target="all").heatmap
        similarities.append(_similarity(h, r))
        differences.append(float(np.abs(h - r).mean()))
    assert np.mean(similarities) < 0.7, similarities
    assert min(differences) > 0.05, differences


@pytest.mark.slow
def test_trained_study_gallery_is_cached_with_both_classes_and_the_studys_numbers(study):
    gallery = Gallery.load(study)
    assert gallery is not None and gallery.models == list(TINY_MODELS) and gallery.stale() == []
    cells = gallery.cells
    assert len(cells) == GALLERY_CELLS
    assert {c["label"] for c in cells} == {"ALL", "HEM"}
    preds = {k: study.read_predictions(k).set_index("path")["prob_all"] for k in TINY_MODELS}
    for cell in cells:
        for key in TINY_MODELS:
            entry = cell["models"][key]
            assert entry["p_all"] == pytest.approx(preds[key][cell["path"]], abs=1e-6)  # the study's own number
            assert entry["correct"] == ((entry["p_all"] >= 0.5) == (cell["label"] == "ALL"))
            h = gallery.heatmap(key, cell["id"])
            assert h.shape == (GALLERY_SIDE, GALLERY_SIDE) and 0 <= h.min() and h.max() <= 1
            recomputed = cell_focus(h, gallery.image(cell["id"]))["mass_on_cell"]
            assert entry["mass_on_cell"] is None or entry["mass_on_cell"] == pytest.approx(recomputed, abs=0.01)
    # The filters the page offers.
    assert all(c["label"] == "HEM" for c in gallery.select(label="HEM"))
    wrong = gallery.select(correct=False, model="vgg16")
    assert all(not c["models"]["vgg16"]["correct"] for c in wrong)
    assert len(gallery.select(label="ALL")) + len(gallery.select(label="HEM")) == len(cells)
    shown = gallery.overlay(cells[0]["id"], "vgg16", opacity=0.0)
    assert np.array_equal(np.asarray(shown), np.asarray(gallery.image(cells[0]["id"])))  # opacity 0: the cell itself


@pytest.mark.slow
def test_a_rebuilt_gallery_holds_what_each_cell_explained_alone_gives(study, tmp_path):
    """build_gallery explains all cells of a model in one batch: the same heatmaps, targets and masses."""
    from cnmc_core.models import load_classifier

    shutil.copytree(study.dir, tmp_path / "copy")
    copy = StudyStore(tmp_path, "copy")
    models = {k: load_classifier(copy.model_file(k, "model.keras")) for k in TINY_MODELS}
    index = build_gallery(copy, force=True, load=models.__getitem__)
    gallery = Gallery.load(copy)
    assert gallery.index == index and len(gallery.cells) == GALLERY_CELLS
    for key in TINY_MODELS:
        explainer = Explainer.for_model(models[key], key)
        threshold = index["models"][key]["threshold"]
        targets = set()
        for cell in gallery.cells:
            entry = cell["models"][key]
            alone = explainer.explain(gallery.image(cell["id"]), p_all=entry["p_all"], threshold=threshold)
            targets.add(entry["target"])
            assert entry["target"] == alone.target == ("ALL" if entry["p_all"] >= threshold else "HEM")
            assert entry["empty"] == alone.empty
            h = gallery.heatmap(key, cell["id"])
            assert np.abs(h - alone.heatmap).max() <= 1.5 / 255  # stored as uint8
            recomputed = cell_focus(alone.heatmap, gallery.image(cell["id"]))["mass_on_cell"]
            assert entry["mass_on_cell"] == (None if recomputed is None else pytest.approx(recomputed, abs=1e-3))
        assert targets == {"ALL", "HEM"}, key  # the batch mixed both signs


@pytest.mark.slow
def test_a_retrained_model_marks_the_gallery_stale_and_a_broken_one_never_fails_the_study(study, tmp_path, caplog):
    shutil.copytree(study.dir, tmp_path / "copy")
    copy = StudyStore(tmp_path, "copy")
    copy.update_metrics("vgg16", {"config_hash": "retrained"})
    assert Gallery.load(copy).stale() == ["vgg16"]
    assert not gallery_is_current(copy, list(TINY_MODELS))

    copy.model_file("vgg16", "model.keras").write_bytes(b"not a model")
    copy.gallery_index.unlink()
    build_study_explanations(copy)  # logs, never raises
    assert "Grad-CAM gallery not built" in caplog.text
    assert Gallery.load(copy) is None


@pytest.mark.slow
def test_explain_command_writes_the_overlay_and_the_heatmap(study, val_cells, tmp_path):
    image = tmp_path / "cell.png"
    val_cells[0].resize((150, 120)).save(image)  # not square, not the model's size
    out, npy = tmp_path / "overlay.png", tmp_path / "heat.npy"
    r = cli("explain", "--study", study.name, "--artifacts", study.root, "--model", "efficientnet_b0", image,
            "--out", out, "--npy", npy)
    assert r.returncode == 0, r.stderr
    assert "top_activation" in r.stdout and "P(ALL)" in r.stdout
    heat = np.load(npy, allow_pickle=False)
    assert heat.shape == (120, 150) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    with Image.open(out) as png:
        assert png.format == "PNG" and png.height == 120 and png.width > 150  # the image plus its colour scale

    r = cli("explain", "--study", study.name, "--artifacts", study.root, "--model", "vgg19", image, "--out", out)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: study 'tiny' has no complete model 'vgg19'; it has: vgg16, efficientnet_b0"
    ]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--model", "alexnet"), "invalid choice: 'alexnet'"),
        (("--model", "vgg16", "--method", "lime"), "argument --method: invalid choice: 'lime'"),
        (("--model", "vgg16", "--out", "x.jpg"), "must end in .png"),
        (("--model", "vgg16", "--opacity", "2"), "--opacity must be between 0 and 1"),
    ],
)
def test_explain_command_bad_arguments_give_one_error_line(args, needle, tmp_path):
    image = tmp_path / "c.png"
    disc_image(40, 40, (20, 20), 8).save(image)
    full = ["explain", "--study", "s", "--artifacts", tmp_path, image, *args]
    if "--out" not in args:
        full += ["--out", tmp_path / "o.png"]
    r = cli_here(*full)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr


# ---- Grad-CAM in one compiled pass (explain.GradcamPass) beside tf-keras-vis (the registry models built once) ----

# Two different cells: different maps, so a map mixed up between the images of a batch would show.
CELLS = [disc_image(80, 80, (40, 40), 20), disc_image(90, 60, (25, 30), 14)]


@pytest.mark.parametrize("key", list(MODELS))
def test_the_compiled_gradcam_is_tf_keras_vis_gradcam_on_every_registry_model(key, registry_classifier):
    clf = registry_classifier(key)
    explainer = Explainer.for_model(clf, key)
    x = explainer_inputs(explainer, CELLS)
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
    x = explainer_inputs(explainer, CELLS + CELLS[::-1])
    maps, scores, (pooled,) = gradcam_pass(x)  # 4 images
    assert maps.shape[0] == scores.shape[0] == pooled.shape[0] == 4 and maps.ndim == 3
    for i in range(4):
        alone, alone_scores, _ = gradcam_pass(x[i:i + 1])
        np.testing.assert_allclose(alone[0], maps[i], rtol=1e-4, atol=1e-6 * np.abs(maps).max())
        np.testing.assert_allclose(alone_scores[0], scores[i], atol=1e-6)
    explainer.explain_batch(CELLS, "gradcam")  # the Explainer runs the pass it was given
    assert gradcam_pass.traces == 1
