"""The feature-cache shortcut is honest, the demo data is deterministic and learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cnmc_core import synthetic
from cnmc_core.config import from_preset
from cnmc_core.dataset import scan
from cnmc_core.evaluation import classification_metrics
from cnmc_core.features import FeatureCache, extract
from cnmc_core.images import iter_batches, load_for_model, preprocess
from cnmc_core.models import base_fingerprint, build_classifier, feature_model, p_all
from cnmc_core.registry import MODELS
from cnmc_core.splits import assign


def _tree_digest(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


SMALL = synthetic.DemoSpec(
    seed=11,
    train_all_subjects=2,
    train_hem_subjects=2,
    train_cells_all=3,
    train_cells_hem=3,
    prelim_all_subjects=1,
    prelim_hem_subjects=1,
    prelim_cells=2,
    final_subjects=1,
    final_cells=1,
)


def test_demo_generator_is_deterministic_for_a_seed(tmp_path):
    a = synthetic.generate(tmp_path / "a", SMALL, workers=1)
    b = synthetic.generate(tmp_path / "b", SMALL, workers=4)
    assert _tree_digest(a) == _tree_digest(b)
    c = synthetic.generate(tmp_path / "c", synthetic.DemoSpec(**{**SMALL.__dict__, "seed": 12}))
    assert _tree_digest(a) != _tree_digest(c)
    assert synthetic.is_synthetic(a)


def test_demo_generator_writes_cnmc_cells(demo_data):
    s = scan(demo_data)
    assert s.layout == "kaggle" and not s.excluded
    from PIL import Image

    img = Image.open(next(demo_data.glob("training_data/fold_0/all/*.bmp")))
    assert img.size == (450, 450) and img.mode == "RGB"
    px = np.asarray(img)
    assert px[:20, :20].max() == 0  # black background in the corners
    assert px[200:250, 200:250].mean() > 40  # a stained cell in the centre


def test_demo_classes_differ_as_the_hematology_says(demo_data):
    """ALL cells are larger than normal ones; the classes overlap but differ clearly on average."""

    def area(path):
        return (np.asarray(load_for_model(path, 225)).max(axis=2) > 10).sum()

    all_areas = [area(p) for p in sorted(demo_data.glob("training_data/fold_*/all/*.bmp"))[:30]]
    hem_areas = [area(p) for p in sorted(demo_data.glob("training_data/fold_*/hem/*.bmp"))[:30]]
    ratio = np.mean(all_areas) / np.mean(hem_areas)
    assert 1.15 < ratio < 1.5  # about 30% more area
    assert min(all_areas) < max(hem_areas)  # overlapping: not separable by size alone


def _split_arrays(demo_data):
    s = scan(demo_data)
    _, rows = assign(s)
    train = [r for r in rows if r.split == "train"]
    val = [r for r in rows if r.split == "val"]
    return s.root, train, val


@pytest.mark.slow  # TensorFlow
def test_cached_features_are_exactly_the_base_on_image_and_mirror(demo_data, tmp_path):
    import keras

    root, train, _ = _split_arrays(demo_data)
    spec = MODELS["resnet50"]
    keras.utils.set_random_seed(0)
    clf = build_classifier(spec, 64, "none")
    fm = feature_model(clf)
    cache = FeatureCache(tmp_path, "resnet50", base_fingerprint(clf), 64)
    paths = [root / r.path for r in train[:6]]
    sha1s = [r.sha1 for r in train[:6]]
    passes = []
    feats = extract(_Counting(fm, passes), spec.preprocess, 64, paths, sha1s, 2, cache, batch_size=4)
    assert feats.shape == (6, 2, spec.features)
    assert passes == [4, 4]  # image + mirror of 4 images, the last batch padded: one shape, traced once
    images = np.stack([load_for_model(p, 64) for p in paths])
    direct = fm.predict_on_batch(preprocess(images, spec.preprocess))
    mirror = fm.predict_on_batch(preprocess(images[:, :, ::-1], spec.preprocess))
    np.testing.assert_allclose(feats[:, 0], direct, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(feats[:, 1], mirror, rtol=1e-4, atol=1e-4)
    assert not np.allclose(feats[:, 0], feats[:, 1])  # the mirror really is another input

    # Second call: everything from the cache, no image decoded.
    calls = []
    again = extract(_Counting(fm, calls), spec.preprocess, 64, paths, sha1s, 2, cache)
    assert calls == [] and np.array_equal(again, feats)
    # An edited image (another sha1) is computed anew, never served stale.
    edited = extract(_Counting(fm, calls), spec.preprocess, 64, paths[:1], ["0" * 40], 2, cache)
    assert len(calls) == 1 and np.allclose(edited[0], feats[0], rtol=1e-4, atol=1e-4)


class _Counting:
    def __init__(self, model, calls):
        self.model, self.calls = model, calls

    def predict_on_batch(self, x):
        self.calls.append(len(x) // 2)
        return self.model.predict_on_batch(x)


@pytest.mark.slow
def test_cached_feature_training_agrees_with_ordinary_fit(demo_data, tmp_path):
    from cnmc_core.training import fit_on_images, install_head, train_head

    """The shortcut gives the same results as model.fit on images with random flips, within seed noise."""
    import keras

    root, train, val = _split_arrays(demo_data)
    spec, size = MODELS["resnet50"], 32
    # Enough steps for the head to converge on 120 cells, so that differences are not just the init.
    common = dict(models=("resnet50",), weights="none", input_size=size, epochs=15, learning_rate=0.01)
    y_train = np.array([r.label for r in train])
    y_val = np.array([r.label for r in val])
    x_train = preprocess(np.stack([load_for_model(root / r.path, size) for r in train]), spec.preprocess)
    x_val = preprocess(np.stack([load_for_model(root / r.path, size) for r in val]), spec.preprocess)

    # One base for both paths and every seed (random weights, seed 0): its features do not depend on the seed, so
    # they are extracted once, and each training starts from the same initial head, restored from `initial`.
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    clf = build_classifier(spec, size, "none")
    initial = clf.get_weights()
    fm = feature_model(clf)
    cache = FeatureCache(tmp_path, "resnet50", base_fingerprint(clf), size)
    tf_ = extract(fm, spec.preprocess, size, [root / r.path for r in train], [r.sha1 for r in train], 2, cache)
    vf = extract(fm, spec.preprocess, size, [root / r.path for r in val], [r.sha1 for r in val], 1, cache)[:, 0]

    ours, ordinary = [], []
    for seed in (1, 2, 3):
        cfg = from_preset("paper", seed=seed, **common)
        clf.set_weights(initial)
        head = train_head(tf_, y_train, vf, y_val, cfg)
        install_head(clf, head)
        # The installed head in the full classifier reproduces the feature-path probabilities.
        prob_model = p_all(clf.predict_on_batch(x_val))
        prob_feat = p_all(1 / (1 + np.exp(-(vf @ head.kernel + head.bias))))
        np.testing.assert_allclose(prob_model, prob_feat, atol=1e-4)
        ours.append(classification_metrics(y_val, prob_feat))

        clf.set_weights(initial)  # the ordinary loop starts from the same weights
        fit_on_images(clf, x_train, y_train, x_val, y_val, cfg)
        ordinary.append(classification_metrics(y_val, p_all(clf.predict_on_batch(x_val))))

    for metric in ("accuracy", "roc_auc"):
        a = np.mean([m[metric] for m in ours])
        b = np.mean([m[metric] for m in ordinary])
        print(metric, [m[metric] for m in ours], [m[metric] for m in ordinary])
        assert abs(a - b) < 0.08, (metric, a, b)
    assert np.mean([m["roc_auc"] for m in ours]) > 0.6  # both actually learned something


@pytest.mark.slow  # it trains two heads
def test_standardised_head_folds_back_into_the_papers_dense_layer():
    """Features at 1e-5 (as random-weight bases give): the paper's head cannot learn from them in
    15 epochs at 1e-3, the standardised one can, and it still is the paper's Dense(2)."""
    from cnmc_core.training import train_head

    rng = np.random.default_rng(0)
    n, dim = 400, 256
    y = rng.integers(0, 2, n)
    feats = (rng.normal(0, 1, (n, 2, dim)) + y[:, None, None] * 0.25) * 1e-5 + 3e-5
    y_val = np.repeat([0, 1], 100)
    val = (rng.normal(0, 1, (200, dim)) + y_val[:, None] * 0.25) * 1e-5 + 3e-5
    # (Both stop by the same rule, so that only the scaling differs.)
    paper = train_head(feats, y, val, y_val, from_preset("paper", weights="none", epochs=15, stopping="val_best"))
    std = train_head(feats, y, val, y_val, from_preset("paper_std", weights="none", epochs=15, stopping="val_best"))

    def auc(head):
        return classification_metrics(y_val, p_all(1 / (1 + np.exp(-(val @ head.kernel + head.bias)))))["roc_auc"]

    assert auc(std) > 0.75  # learns (0.79 here), with the scaling folded into raw-feature weights
    assert auc(paper) < 0.6  # learns nothing (0.48 here): the logits barely move at this scale
    assert std.kernel.shape == (dim, 2) and std.bias.shape == (2,)  # still the paper's Dense(2)
    assert list(paper.history.columns[:5]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]


def test_iter_batches_keeps_order_and_shape(demo_data):
    paths = sorted(demo_data.glob("training_data/fold_0/*/*.bmp"))[:7]
    batches = list(iter_batches(paths, 32, batch_size=3, workers=2))
    assert [len(b) for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(batches[1][0], load_for_model(paths[3], 32))


@pytest.mark.slow  # TensorFlow
def test_a_failed_cache_write_stops_feature_extraction(demo_data, tmp_path, monkeypatch):
    """Cache files are written on their own thread; a write that fails (disk full) must not pass unnoticed."""
    import errno

    import keras

    root, train, _ = _split_arrays(demo_data)
    spec = MODELS["efficientnet_b0"]
    keras.utils.set_random_seed(0)
    fm = feature_model(build_classifier(spec, 75, "none"))
    cache = FeatureCache(tmp_path, "efficientnet_b0", "x", 75)

    def full(self, sha1, feats):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FeatureCache, "put", full)
    with pytest.raises(OSError, match="No space left"):
        extract(
            fm,
            spec.preprocess,
            75,
            [root / r.path for r in train[:6]],
            [r.sha1 for r in train[:6]],
            2,
            cache,
            batch_size=2,
        )
    assert not list(tmp_path.rglob("*.npy"))
