"""Precision, XLA and several devices (runtime.py): speed options that must not change the answers.

The tolerances stated here are the ones docs/benchmarks.md gives: mixed precision (bfloat16 on
the CPU) features within 3% relative L2 error of float32; a whole study's validation P(ALL)
within 0.02 on average and 0.10 at most of the float32 study's, the same call for 95%+ of cells.
XLA and tf.distribute must give the float32 features (to float round-off).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnmc_core import runtime
from cnmc_core.config import from_preset, model_config_hash

from .conftest import ROOT
from .helpers import cli_here

SIZE = 75


def _features(demo_data, key: str, policy: str = "float32", xla: str = "auto", n: int = 12):
    import keras

    from cnmc_core.features import FeatureCache, extract
    from cnmc_core.models import build_classifier, feature_model
    from cnmc_core.registry import get_spec

    spec = get_spec(key)
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    clf = build_classifier(spec, SIZE, "none")
    runner = (
        clf if policy == "float32" else runtime.mixed_twin(clf, lambda: build_classifier(spec, SIZE, "none"), policy)
    )
    fm = feature_model(runner)
    runtime.set_xla(fm, xla)
    assert fm.jit_compile == {"on": True, "off": False, "auto": fm.jit_compile}[xla]  # not silently dropped by Keras
    paths = sorted(demo_data.glob("training_data/fold_*/*/*.bmp"))[:n]
    cache = FeatureCache(demo_data.parent / f"cache-{key}-{policy}-{xla}", key, "test", SIZE, policy)
    return extract(fm, spec.preprocess, SIZE, paths, [f"{i:040x}" for i in range(n)], 2, cache, batch_size=8), cache


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("key", ["vgg16", "efficientnet_b0"])
@pytest.mark.slow  # TensorFlow
def test_mixed_precision_features_are_within_3_percent_of_float32_and_cached_apart(demo_data, key):
    f32, cache32 = _features(demo_data, key)
    mixed, cache_mixed = _features(demo_data, key, runtime.mixed_policy())
    assert mixed.dtype == np.float32 and mixed.shape == f32.shape
    err = _rel_err(mixed, f32)
    assert 0 < err < 0.03, err  # it really ran in lower precision, and stayed close
    assert cache_mixed.dir.name.endswith("-mixed_bfloat16") and cache_mixed.dir.name != cache32.dir.name


@pytest.mark.slow  # TensorFlow
def test_xla_compiled_features_equal_the_plain_forward_pass(demo_data):
    plain, _ = _features(demo_data, "vgg16", xla="off")
    compiled, _ = _features(demo_data, "vgg16", xla="on")
    assert _rel_err(compiled, plain) < 1e-4


@pytest.mark.slow
def test_a_mixed_precision_study_agrees_with_float32_and_saves_a_float32_model(demo_data, tmp_path):
    from cnmc_core.images import iter_batches, preprocess
    from cnmc_core.models import load_classifier, p_all
    from cnmc_core.registry import get_spec
    from cnmc_core.store import StudyStore
    from cnmc_core.study import run_study

    probs = {}
    for precision in ("float32", "mixed"):
        config = from_preset(
            "paper_std", models=("vgg16",), weights="none", input_size=SIZE, epochs=4, seed=1, precision=precision
        )
        run_study(demo_data, config, root=tmp_path, name=precision)
        probs[precision] = StudyStore(tmp_path, precision).read_predictions("vgg16")
    store = StudyStore(tmp_path, "mixed")
    assert store.read_metrics("vgg16")["compute"]["dtype_policy"] == runtime.mixed_policy()
    assert store.read_study()["compute"]["dtype_policy"] == runtime.mixed_policy()
    a, b = probs["float32"]["prob_all"].to_numpy(), probs["mixed"]["prob_all"].to_numpy()
    diff = np.abs(a - b)
    assert diff.mean() <= 0.02 and diff.max() <= 0.10, (diff.mean(), diff.max())
    assert ((a >= 0.5) == (b >= 0.5)).mean() >= 0.95

    # What is saved is a float32 classifier, and it reproduces the recorded predictions within the tolerance.
    model = load_classifier(store.model_file("vgg16", "model.keras"))
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    preds = store.read_predictions("vgg16")
    root = store.read_study()["data"]["path"]
    x = np.concatenate(list(iter_batches([f"{root}/{p}" for p in preds["path"]], SIZE, 32)))
    again = p_all(model.predict(preprocess(x, get_spec("vgg16").preprocess), verbose=0))
    assert np.abs(again - preds["prob_all"].to_numpy()).max() <= 0.10


@pytest.mark.slow  # TensorFlow
def test_runtime_options_are_checked_and_only_precision_changes_the_results_hash():
    base = from_preset("paper")
    h = model_config_hash(base, "vgg16", "data")
    assert model_config_hash(dataclasses.replace(base, xla="on", distribute="none"), "vgg16", "data") == h
    assert model_config_hash(dataclasses.replace(base, precision="mixed"), "vgg16", "data") != h
    # Replicas scale the global batch, so they count for fine-tuning only.
    assert model_config_hash(base, "vgg16", "data", replicas=4) == h
    tuned = from_preset("finetune")
    assert model_config_hash(tuned, "vgg16", "data", replicas=4) != model_config_hash(tuned, "vgg16", "data")
    for field, bad in (("precision", "half"), ("xla", "yes"), ("distribute", "tpu")):
        with pytest.raises(ValueError, match=f"--{field} must be one of"):
            from_preset("paper", **{field: bad})
    assert runtime.make_strategy("none") is None
    assert runtime.make_strategy("auto") is None  # no GPUs here


def test_the_cli_refuses_an_unknown_precision_in_one_line(demo_data, tmp_path):
    out = cli_here(
        "train", "--data", str(demo_data), "--artifacts", str(tmp_path), "--models", "vgg16", "--precision", "half"
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: argument --precision: invalid choice: 'half' (choose from 'float32', 'mixed') "
        "(see `python -m cnmc_core train --help`)"
    ]
    assert not (tmp_path / "default").exists()


TWO_CPU_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from pathlib import Path
    from cnmc_core import runtime
    from cnmc_core.config import from_preset
    from cnmc_core.features import FeatureCache, extract
    from cnmc_core.models import build_classifier, feature_model
    from cnmc_core.registry import get_spec
    from cnmc_core.store import StudyStore
    from cnmc_core.study import run_study

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    spec = get_spec("efficientnet_b0")
    paths = sorted(data.glob("training_data/fold_*/*/*.bmp"))[:11]  # an odd number: a partial last batch
    sha1s = [f"{i:040x}" for i in range(len(paths))]
    strategy = runtime.make_strategy("mirrored")
    keras.utils.set_random_seed(0)
    with runtime.scope(strategy):
        clf = build_classifier(spec, 75, "none")
    cache = FeatureCache(out / "c1", "e", "x", 75)
    mirrored = extract(feature_model(clf), spec.preprocess, 75, paths, sha1s, 2, cache, 4)
    plain_clf = build_classifier(spec, 75, "none")
    plain_clf.set_weights(clf.get_weights())
    cache = FeatureCache(out / "c2", "e", "x", 75)
    plain = extract(feature_model(plain_clf), spec.preprocess, 75, paths, sha1s, 2, cache, 4)
    config = from_preset("finetune", models=("efficientnet_b0",), weights="none", input_size=75, epochs=2,
                         finetune_epochs=1, distribute="mirrored", orientations=2, seed=1)
    run_study(data, config, root=out / "art", name="two")
    metrics = StudyStore(out / "art", "two").read_metrics("efficientnet_b0")
    print(json.dumps({"replicas": runtime.replicas(strategy), "shape": list(mirrored.shape),
                      "max_diff": float(np.abs(mirrored - plain).max()), "scale": float(np.abs(plain).max()),
                      "study_replicas": metrics["compute"]["replicas"], "n_val": metrics["n_val"],
                      "epochs_run": metrics["epochs_run"]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_over_two_devices_splits_each_batch_and_fine_tunes(demo_data, tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", TWO_CPU_SCRIPT, str(demo_data), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    # Keras's predict_on_batch would return each image twice under two replicas; ours splits the batch.
    assert r["shape"][:2] == [11, 2]
    assert r["max_diff"] <= 1e-4 * r["scale"]
    assert r["study_replicas"] == 2 and r["n_val"] > 0 and r["epochs_run"] >= 2


@pytest.mark.slow  # (it trains)
def test_fine_tuning_float16_layers_scales_the_loss_and_trains(demo_data, monkeypatch):
    """GPUs before Ampere get float16; Keras adds loss scaling only to a model whose own policy is mixed_float16."""
    import keras

    from cnmc_core import training
    from cnmc_core.models import build_classifier
    from cnmc_core.registry import get_spec

    wrapped = []
    real = keras.optimizers.LossScaleOptimizer
    monkeypatch.setattr(keras.optimizers, "LossScaleOptimizer", lambda opt: wrapped.append(opt) or real(opt))
    spec = get_spec("vgg16")
    paths = (
        sorted(demo_data.glob("training_data/fold_*/all/*.bmp"))[:8]
        + sorted(demo_data.glob("training_data/fold_*/hem/*.bmp"))[:8]
    )
    labels = np.array([1] * 8 + [0] * 8)
    config = from_preset("finetune", models=("vgg16",), weights="none", input_size=SIZE, epochs=2, finetune_epochs=1)
    keras.utils.clear_session()
    clf = build_classifier(spec, SIZE, "none")
    twin = runtime.mixed_twin(clf, lambda: build_classifier(spec, SIZE, "none"), "mixed_float16")
    assert twin.get_layer(spec.finetune_from).compute_dtype == "float16"
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(16, 8, spec.features)).astype(np.float32)
    head = training.train_head(feats, labels, feats[:, 0], labels, config)
    training.install_head(twin, head)
    frame, _ = training.finetune(
        twin, head, spec.finetune_from, spec.preprocess, SIZE, paths, labels, paths, labels, config
    )
    assert len(wrapped) == 1 and np.isfinite(frame["loss"]).all()
