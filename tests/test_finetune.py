"""The `finetune` protocol: orientations, class weights, TTA, the training-split threshold, fine-tuning, ablation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cnmc_core.config import ABLATION_STEPS, PRESETS, StudyConfig, ablation_configs, from_preset, model_config_hash
from cnmc_core.dataset import scan
from cnmc_core.features import FeatureCache, extract, orient
from cnmc_core.head import (
    HeadResult,
    choose_threshold,
    class_weights,
    fold_standardisation,
    head_probabilities,
    one_hot,
)
from cnmc_core.images import load_for_model, preprocess
from cnmc_core.models import HEAD_DENSE, base_fingerprint, build_classifier, feature_model, p_all
from cnmc_core.registry import MODELS

from .helpers import cli, cli_here


@pytest.fixture
def training():
    """cnmc_core.training, imported only by the tests that use it: it imports Keras (so they are all `slow`)."""
    from cnmc_core import training

    return training

# ---- registry -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
def test_finetune_from_names_the_top_block_of_the_base(key, training):
    """The layer exists, sits below the Grad-CAM layer, and unfreezing from it trains a top block only."""
    import keras

    spec = MODELS[key]
    keras.utils.clear_session()
    clf = build_classifier(spec, spec.min_input_size, weights="none")
    names = [layer.name for layer in clf.layers]
    start = names.index(spec.finetune_from)
    assert start < names.index(spec.gradcam_layer)

    training.unfreeze_top(clf, spec.finetune_from)
    for i, layer in enumerate(clf.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name  # BatchNorm stays in inference mode
        else:
            assert layer.trainable == (i >= start), layer.name
    base_params = sum(int(np.prod(w.shape)) for w in clf.weights) - (spec.features * 2 + 2)
    tuned = sum(int(np.prod(w.shape)) for w in clf.trainable_weights) - (spec.features * 2 + 2)
    assert 0.02 < tuned / base_params < 0.7, tuned / base_params  # a top block, not the whole base


# ---- config -------------------------------------------------------------------------------------


def test_paper_results_keep_their_config_hash():
    """Hashes computed before the finetune fields existed: results made with the stopping rule of that time
    (validation loss, best epoch restored: `val_best`) stay valid. The presets now stop differently (issue 14:
    paper keeps the last epoch, paper_std stops on an inner slice), so their old models are retrained."""
    old = dict(stopping="val_best")
    paper, paper_std = "fab64f6573f9cb2a9551b76870d7f6de094a1e23", "c0a12fd177dd293ebeab4b5907aeda927bbb1d5e"
    assert model_config_hash(from_preset("paper", **old), "vgg16", "fp123") == paper
    assert model_config_hash(from_preset("paper_std", **old), "vgg16", "fp123") == paper_std
    small = dict(weights="none", input_size=96, models=("resnet50",), **old)
    assert (
        model_config_hash(from_preset("paper_std", **small), "resnet50", "abc")
        == "d51ff4732c863719e9a776b7e4d6bd20d31a60e9"
    )
    assert model_config_hash(from_preset("paper"), "vgg16", "fp123") != paper
    assert model_config_hash(from_preset("paper_std"), "vgg16", "fp123") != paper_std


def test_each_finetune_field_is_part_of_the_hash_when_it_matters():
    base = from_preset("paper_std")
    h = model_config_hash(base, "vgg16", "fp")
    for name, value in [
        ("orientations", 8),
        ("class_weight", True),
        ("tta", True),
        ("threshold", "train"),
        ("finetune", True),
    ]:
        assert model_config_hash(from_preset("paper_std", **{name: value}), "vgg16", "fp") != h, name
    # Fine-tuning settings change nothing without fine-tuning, and then count.
    assert model_config_hash(from_preset("paper_std", finetune_epochs=9), "vgg16", "fp") == h
    tuned = model_config_hash(from_preset("paper_std", finetune=True), "vgg16", "fp")
    assert (
        model_config_hash(from_preset("paper_std", finetune=True, finetune_learning_rate=1e-5), "vgg16", "fp") != tuned
    )


def test_finetune_preset_and_the_ablation_steps_agree():
    ft = from_preset("finetune")
    assert (ft.orientations, ft.color_jitter, ft.class_weight, ft.tta, ft.threshold, ft.finetune, ft.standardize) == (
        8,
        0.1,
        True,
        True,
        "train",
        True,
        True,
    )
    changes = {k: v for step in ABLATION_STEPS.values() for k, v in step.items()}
    assert {**PRESETS["paper_std"], **changes} == PRESETS["finetune"]
    # paper and paper_std keep the paper's behaviour
    for preset in ("paper", "paper_std"):
        c = from_preset(preset)
        assert (c.orientations, c.color_jitter, c.class_weight, c.tta, c.threshold, c.finetune) == (
            2,
            0.0,
            False,
            False,
            "fixed",
            False,
        )

    steps = ablation_configs(["orientations", "tta", "finetune", "color_jitter"], weights="none")
    assert [name for name, _ in steps] == ["baseline", "orientations", "tta", "finetune", "color_jitter"]
    assert steps[0][1] == from_preset("paper_std", weights="none")
    assert (steps[2][1].orientations, steps[2][1].tta, steps[2][1].finetune) == (8, True, False)  # cumulative
    assert steps[4][1].color_jitter == 0.1 and steps[4][1].finetune


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"orientations": 4}, "orientations must be one of 1, 2, 8; got 4"),
        ({"threshold": "val"}, "threshold must be one of fixed, train; got 'val'"),
        ({"color_jitter": 0.2}, "only in the fine-tuning stage"),
        ({"color_jitter": 1.5, "finetune": True}, "color_jitter must be in [0, 1)"),
        ({"finetune_epochs": 0}, "finetune_epochs must be at least 1"),
        ({"finetune_learning_rate": 0.0}, "finetune_learning_rate must be in (0, 1)"),
    ],
)
def test_bad_protocol_values_are_refused_with_the_allowed_ones(fields, needle):
    with pytest.raises(ValueError) as e:
        StudyConfig(**fields).validate()
    assert needle in str(e.value)


def test_bad_ablation_steps_are_refused():
    with pytest.raises(ValueError, match="after 'color_jitter'"):
        ablation_configs(["color_jitter", "finetune"])  # jitter needs fine-tuning before it
    with pytest.raises(ValueError, match="--steps must be distinct names"):
        ablation_configs(["tta", "tta"])
    with pytest.raises(ValueError, match="got nothing"):
        ablation_configs([])


# ---- views, weights, threshold ------------------------------------------------------------------


def test_the_eight_views_are_the_symmetries_of_the_square_and_start_with_identity_and_mirror():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    views = [orient(x, v) for v in range(8)]
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1], x[:, :, ::-1])  # the paper's flip, as cached before
    assert len({v.tobytes() for v in views}) == 8
    for v in views:  # each is a rotation or a mirror: the same multiset of pixels, closed under the group
        assert sorted(v[0].ravel()) == sorted(x[0].ravel())
        assert any(np.array_equal(orient(v, 1), w) for w in views)
        assert any(np.array_equal(orient(v, 2), w) for w in views)


def test_class_weights_make_both_classes_count_equally():
    y = np.array([1] * 6 + [0] * 3)
    w = class_weights(y)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum()) == pytest.approx(len(y) / 2)
    assert w[0] == pytest.approx(9 / 12) and w[-1] == pytest.approx(9 / 6)


def test_feature_epochs_draw_every_orientation_and_pass_sample_weights(training):
    feats = np.arange(50 * 8, dtype=np.float32).reshape(50, 8, 1)  # value encodes (image, view)
    y = one_hot(np.array([1] * 30 + [0] * 20))
    w = class_weights(np.array([1] * 30 + [0] * 20))
    data = training.FeatureEpochs(feats, y, 10, seed=0, views=8, weights=w)
    seen = set()
    for _ in range(5):
        for i in range(len(data)):
            x, t, sw = data[i]
            assert len(x) == len(t) == len(sw) == 10
            seen |= {int(v) % 8 for v in x.ravel()}
            np.testing.assert_array_equal(sw, w[(x.ravel() // 8).astype(int)])
        data.on_epoch_end()
    assert seen == set(range(8))


def _balanced_accuracy(y, p, t):
    pred = p >= t
    return 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())


def _best_balanced_accuracy(y, p):
    """Brute force over every cut between sorted scores, independently of the library."""
    s = np.unique(p)
    cuts = np.concatenate([[s[0] - 1], (s[1:] + s[:-1]) / 2, [s[-1] + 1]])
    return max(_balanced_accuracy(y, p, t) for t in cuts)


def test_threshold_maximises_balanced_accuracy_on_the_given_predictions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        p = np.clip(rng.normal(0.45 + 0.2 * y, 0.15), 0, 1)
        t = choose_threshold(y, p)
        assert _balanced_accuracy(y, p, t) == pytest.approx(_best_balanced_accuracy(y, p))
        assert not np.any(p == t)  # between two scores, never on one
    assert choose_threshold(np.ones(5, int), np.linspace(0, 1, 5)) == 0.5  # one class: the default


# ---- the threshold never sees the validation split ------------------------------------------------

DIM = 512  # VGG16's pooled features


def _labels_by_sha1(demo_data):
    return {r.sha1: r.label for r in scan(demo_data).usable}


def _fake_features(sha1, label, views, is_val):
    """Features with a clear ALL/HEM direction; validation ones shifted far towards ALL.

    So the best threshold on the validation split is far above the best one on the training split:
    a threshold fitted on validation data (or on both) would show.
    """
    rng = np.random.default_rng(int(sha1[:8], 16))
    u = np.zeros(DIM, np.float32)
    u[:100] = 1.0
    f = rng.normal(0, 1, (views, DIM)).astype(np.float32) + (2 * label - 1) * 0.5 * u
    return f + (1.5 * u if is_val else 0)


@pytest.mark.slow  # TensorFlow
def test_threshold_comes_from_the_training_split_never_from_validation(demo_data, tmp_path, monkeypatch):
    from cnmc_core import study as study_module
    from cnmc_core.models import load_classifier
    from cnmc_core.study import run_study

    labels = _labels_by_sha1(demo_data)

    def fake_extract(feature_model, mode, size, paths, sha1s, views, cache, batch_size=32, progress=None):
        return np.stack(
            [_fake_features(s, labels[s], views, "validation_data" in str(p)) for p, s in zip(paths, sha1s)]
        )

    calls = []
    real_choose = choose_threshold

    def spy(y, p):
        calls.append(np.asarray(y).copy())
        return real_choose(y, p)

    monkeypatch.setattr(study_module, "extract", fake_extract)  # (the study calls features.extract by this name)
    monkeypatch.setattr(study_module, "choose_threshold", spy)  # (the study's name for head.choose_threshold)
    config = from_preset(
        "paper_std",
        models=("vgg16",),
        weights="none",
        input_size=32,
        epochs=8,
        seed=1,
        learning_rate=0.01,
        orientations=8,
        tta=True,
        threshold="train",
        class_weight=True,
    )
    run_study(demo_data, config, root=tmp_path, name="thr")

    study = tmp_path / "thr"
    split = pd.read_csv(study / "split.csv", dtype={"subject": str, "label": str}, keep_default_na=False)
    train = split[split["split"] == "train"]
    val = split[split["split"] == "val"]
    # The chooser saw the training labels, in order, and nothing else.
    assert len(calls) == 1 and np.array_equal(calls[0], train["label"].astype(int).to_numpy())

    metrics = json.loads((study / "models" / "vgg16" / "metrics.json").read_text())
    assert metrics["threshold_source"] == "train"
    t = metrics["threshold"]
    kernel, bias = load_classifier(study / "models" / "vgg16" / "model.keras").get_layer(HEAD_DENSE).get_weights()

    def tta_probs(frame, is_val):
        f = np.stack([_fake_features(s, labels[s], 8, is_val) for s in frame["sha1"]])  # (n, 8, DIM)
        return np.mean(
            [p_all(1 / (1 + np.exp(-(f[:, v].astype(np.float64) @ kernel + bias)))) for v in range(8)], axis=0
        )

    y_train, p_train = train["label"].astype(int).to_numpy(), tta_probs(train, False)
    y_val, p_val = val["label"].astype(int).to_numpy(), tta_probs(val, True)
    # The saved threshold is optimal on the training predictions ...
    assert _balanced_accuracy(y_train, p_train, t) == pytest.approx(_best_balanced_accuracy(y_train, p_train))
    # ... and far from optimal on validation, where the best cut lies elsewhere: had the threshold been
    # fitted on validation (or on both splits) this metrics.json would show a much higher balanced accuracy.
    assert _best_balanced_accuracy(y_val, p_val) - _balanced_accuracy(y_val, p_val, t) > 0.2
    assert metrics["balanced_accuracy"] == pytest.approx(_balanced_accuracy(y_val, p_val, t))
    preds = pd.read_csv(study / "models" / "vgg16" / "predictions.csv")
    np.testing.assert_allclose(preds["prob_all"], p_val, atol=1e-5)  # the TTA'd probability is saved
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tp == int(((p_val >= t) & (y_val == 1)).sum()) and fp == int(((p_val >= t) & (y_val == 0)).sum())


# ---- the two evaluation paths agree, fine-tuning trains the top block only ------------------------


def _some_images(demo_data, n):
    paths = sorted(demo_data.glob("training_data/fold_*/*/*.bmp"))
    paths = paths[: n // 2] + paths[-(n - n // 2) :]  # both classes
    return paths, np.array([1 if p.parent.name == "all" else 0 for p in paths])


def test_tta_on_images_equals_tta_on_cached_features(demo_data, tmp_path, training):
    import keras

    spec = MODELS["vgg16"]
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    clf = build_classifier(spec, 32, "none")
    paths, y = _some_images(demo_data, 6)
    cache = FeatureCache(tmp_path, "vgg16", base_fingerprint(clf), 32)
    sha1s = [f"{i:040d}" for i in range(len(paths))]
    two = extract(feature_model(clf), spec.preprocess, 32, paths, sha1s, 2, cache, batch_size=4)
    feats = extract(feature_model(clf), spec.preprocess, 32, paths, sha1s, 8, cache, batch_size=4)
    assert feats.shape == (6, 8, spec.features)
    np.testing.assert_allclose(feats[:, :2], two, rtol=1e-4, atol=1e-6)  # views 0 and 1 as before
    assert np.load(cache.path(sha1s[0])).shape == (8, spec.features)  # the 2-view file was redone with 8
    rng = np.random.default_rng(0)
    head = HeadResult(
        rng.normal(0, 1e3, (spec.features, 2)).astype(np.float32), np.zeros(2, np.float32), pd.DataFrame(), 1
    )
    training.install_head(clf, head)
    on_images = training.predict_views(clf, paths, 32, spec.preprocess, 8, batch_size=4)
    on_features = head_probabilities(feats, head)
    np.testing.assert_allclose(on_images, on_features, atol=1e-3)
    img = load_for_model(paths[0], 32)[None]
    direct = p_all(clf.predict_on_batch(preprocess(np.rot90(img, 1, axes=(1, 2))[:, :, ::-1], spec.preprocess)))
    assert on_images[0, 3] == pytest.approx(direct[0], abs=1e-5)  # view 3: rotated once, then mirrored


def test_image_batches_jitter_colour_per_image_and_channel_and_keep_the_background_black(demo_data, training):
    paths, y = _some_images(demo_data, 4)

    def first_batch(jitter, weights=None):
        return training.ImageEpochs(
            paths, y, 48, "none", batch_size=4, seed=1, augment=True, views=8, jitter=jitter, weights=weights
        )[0]

    x, t, w = first_batch(0.2, class_weights(y))
    assert x.shape == (4, 48, 48, 3) and len(t) == len(w) == 4
    np.testing.assert_array_equal(x, first_batch(0.2)[0])  # reproducible for a seed
    plain = first_batch(0.0)[0]  # the same images and orientations, no jitter
    assert np.all(x[plain == 0] == 0)  # black stays black
    lit = (plain > 20) & (x < 255)
    gains = np.array(
        [
            [np.median(x[i][..., c][lit[i][..., c]] / plain[i][..., c][lit[i][..., c]]) for c in range(3)]
            for i in range(4)
        ]
    )
    assert np.all((gains > 0.8**2 - 0.01) & (gains < 1.2**2 + 0.01)) and np.ptp(gains) > 0.02
    for i in range(4):  # one gain per image and channel
        for c in range(3):
            ratio = x[i][..., c][lit[i][..., c]] / plain[i][..., c][lit[i][..., c]]
            np.testing.assert_allclose(ratio, gains[i, c], rtol=0.02, atol=0.02)


def test_the_finetuning_twin_is_the_classifier_with_the_head_stages_scaling_and_folds_back(demo_data, training):
    """Fine-tuning trains pooled -> (x - mean) / std -> Dropout -> Dense, like the head stage; the same function."""
    import keras

    spec = MODELS["vgg16"]
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    clf = build_classifier(spec, 32, "none")
    paths, _ = _some_images(demo_data, 4)
    x = preprocess(np.stack([load_for_model(p, 32) for p in paths]), spec.preprocess)
    pooled = np.asarray(feature_model(clf).predict_on_batch(x))
    rng = np.random.default_rng(1)
    mean, std = pooled.mean(0), pooled.std(0) + 1e-6
    k_std, b_std = rng.normal(0, 1, (spec.features, 2)).astype(np.float32), np.zeros(2, np.float32)
    head = HeadResult(*fold_standardisation(k_std, b_std, mean, std), pd.DataFrame(), 1, mean, std)
    training.install_head(clf, head)
    twin, dense, _, _ = training._trainer(clf, head, 0.5)
    np.testing.assert_allclose(dense.get_weights()[0], k_std, rtol=1e-4, atol=1e-4)  # the head stage's own weights
    np.testing.assert_allclose(twin.predict_on_batch(x), clf.predict_on_batch(x), atol=1e-4)
    assert any(layer is clf.get_layer(spec.finetune_from) for layer in twin.layers)  # the base is shared
    dense.set_weights([rng.normal(0, 1, (spec.features, 2)).astype(np.float32), np.ones(2, np.float32)])
    clf.get_layer(HEAD_DENSE).set_weights(list(fold_standardisation(*dense.get_weights(), mean, std)))
    np.testing.assert_allclose(twin.predict_on_batch(x), clf.predict_on_batch(x), atol=1e-4)


def test_finetuning_trains_the_top_block_and_leaves_batchnorm_and_the_rest_alone(demo_data, training):
    import keras

    spec = MODELS["efficientnet_b0"]
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    clf = build_classifier(spec, 32, "none")
    paths, y = _some_images(demo_data, 8)
    config = from_preset(
        "finetune",
        models=("efficientnet_b0",),
        weights="none",
        input_size=32,
        batch_size=4,
        finetune_epochs=1,
        finetune_learning_rate=0.01,
    )
    names = [layer.name for layer in clf.layers]
    start = names.index(spec.finetune_from)
    below = next(layer for layer in clf.layers[:start] if isinstance(layer, keras.layers.Conv2D))
    top = clf.get_layer(spec.finetune_from)
    norms = [layer for layer in clf.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = {"below": below.get_weights(), "top": top.get_weights(), "bn": [b.get_weights() for b in norms]}
    during = {}

    def snapshot(epoch):
        during.update(below=below.get_weights(), top=top.get_weights(), bn=[b.get_weights() for b in norms])

    head = HeadResult(*[w for w in clf.get_layer(HEAD_DENSE).get_weights()], pd.DataFrame(), 1)
    history, best = training.finetune(
        clf, head, spec.finetune_from, spec.preprocess, 32, paths, y, paths, y, config, snapshot
    )
    assert list(history["epoch"]) == [1] and best in (0, 1)
    for a, b in zip(before["below"], during["below"]):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(before["top"], during["top"]))
    for a, b in zip(before["bn"], during["bn"]):  # gamma, beta and the moving statistics
        for wa, wb in zip(a, b):
            np.testing.assert_array_equal(wa, wb)
    # Back as built: the base frozen, the head trainable.
    assert [layer.name for layer in clf.layers if layer.trainable and layer.weights] == [HEAD_DENSE]


# ---- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_preset_finetune_end_to_end(demo_data, tmp_path, training):
    r = cli(
        "train",
        "--data",
        demo_data,
        "--study",
        "ft",
        "--artifacts",
        tmp_path,
        "--weights",
        "none",
        "--models",
        "vgg16",
        "--input-size",
        "32",
        "--epochs",
        "3",
        "--preset",
        "finetune",
    )
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "ft" / "models" / "vgg16"
    info = json.loads((tmp_path / "ft" / "study.json").read_text())
    assert info["config"]["preset"] == "finetune" and info["config"]["finetune"] is True
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["threshold_source"] == "train" and 0 < metrics["threshold"] < 1
    assert "finetune" in metrics["seconds"]
    history = pd.read_csv(folder / "history.csv")
    assert list(history["stage"].unique()) == ["head", "finetune"]
    assert list(history["epoch"]) == list(range(1, len(history) + 1))
    assert (history["stage"] == "finetune").sum() == PRESETS["finetune"].get("finetune_epochs", 5)
    preds = pd.read_csv(folder / "predictions.csv")
    assert list(preds.columns) == ["path", "subject", "label", "prob_all"]
    t = metrics["threshold"]
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tp == int(((preds["prob_all"] >= t) & (preds["label"] == 1)).sum())

    # predictions.csv holds the saved classifier's P(ALL) averaged over the eight orientations.
    from cnmc_core.models import load_classifier

    clf = load_classifier(folder / "model.keras")
    rows = preds.iloc[:3]
    tta = training.predict_views(clf, [demo_data / p for p in rows["path"]], 32, MODELS["vgg16"].preprocess, 8)
    np.testing.assert_allclose(tta.mean(axis=1), rows["prob_all"], atol=1e-4)


@pytest.mark.slow
def test_ablate_runs_each_step_on_top_of_the_last_and_prints_one_table(demo_data, tmp_path):
    r = cli(
        "ablate",
        "--data",
        demo_data,
        "--artifacts",
        tmp_path,
        "--study-prefix",
        "ab",
        "--weights",
        "none",
        "--models",
        "vgg16",
        "--input-size",
        "32",
        "--epochs",
        "3",
        "--steps",
        "orientations,threshold",
    )
    assert r.returncode == 0, r.stderr
    studies = ["ab-0-baseline", "ab-1-orientations", "ab-2-threshold"]
    assert all((tmp_path / s / "models" / "vgg16" / "metrics.json").is_file() for s in studies)
    configs = [json.loads((tmp_path / s / "study.json").read_text())["config"] for s in studies]
    assert [(c["orientations"], c["threshold"], c["standardize"]) for c in configs] == [
        (2, "fixed", True),
        (8, "fixed", True),
        (8, "train", True),
    ]  # paper_std, then cumulative
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("step"))
    assert lines[header].split() == ["step", "bal.acc", "AUC", "vgg16"]
    table = lines[header + 1 : header + 4]
    assert [" ".join(row.split()[:-3]) for row in table] == ["0 baseline", "1 + orientations", "2 + threshold"]
    for row, study in zip(table, studies):
        m = json.loads((tmp_path / study / "models" / "vgg16" / "metrics.json").read_text())
        assert row.split()[-3:] == [
            f"{m['balanced_accuracy']:.3f}",
            f"{m['roc_auc']:.3f}",
            f"{m['balanced_accuracy']:.3f}",
        ]
    # Later steps reuse the cached features: the threshold step computes none.
    assert "computing features" not in r.stderr.split("== ab-2-threshold")[1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--steps", "orientations,dropout"), "--steps must be distinct names from orientations, color_jitter"),
        (("--steps", "color_jitter"), "only in the fine-tuning stage"),
        (("--study-prefix", "../x"), "is not allowed"),
        (("--models", "alexnet"), "unknown model 'alexnet'"),
    ],
)
def test_ablate_bad_arguments_give_exit_2_and_one_error_line(args, needle, demo_data, tmp_path):
    r = cli_here("ablate", "--data", demo_data, "--artifacts", tmp_path, "--weights", "none", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
