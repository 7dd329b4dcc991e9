"""The registry: every row (the paper's seven and the newer, opt-in ones) builds, has its Grad-CAM layer, gets its
own preprocessing, saves and loads; offline weights are checked as Keras checks them; `--models` groups."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cnmc_core import registry
from cnmc_core.images import preprocess
from cnmc_core.models import (
    HEAD_DENSE,
    HEAD_POOL,
    WeightsError,
    build_base,
    load_classifier,
    resolve_weights,
    save_classifier,
)
from cnmc_core.registry import MODELS, MODERN_MODELS, PAPER_MODELS, parse_model_list

from .conftest import ROOT


def test_the_seven_models_of_the_paper_then_the_modern_ones():
    assert list(PAPER_MODELS) == ["vgg16", "vgg19", "inception_v3", "xception", "efficientnet_b0", "resnet50",
                                  "resnet101"]
    assert set(registry.PAPER_TABLE_I) == set(PAPER_MODELS)
    assert {"convnext_tiny", "efficientnet_v2_b0"} <= set(MODERN_MODELS)
    assert list(MODELS) == [*PAPER_MODELS, *MODERN_MODELS]


@pytest.mark.parametrize(("text", "expected"), [
    ("all", list(PAPER_MODELS)),  # `--models all` stays the paper's seven (and so does the demo)
    (None, list(PAPER_MODELS)),
    ("paper+modern", list(MODELS)),
    ("modern", list(MODERN_MODELS)),
    ("ConvNeXt_Tiny, vgg16", ["vgg16", "convnext_tiny"]),  # registry order, case and spaces forgiven
    ("all,efficientnet_v2_b0", [*PAPER_MODELS, "efficientnet_v2_b0"]),
])
def test_models_option_names_groups_and_keys(text, expected):
    assert parse_model_list(text) == expected


def test_models_option_names_the_choices_when_wrong():
    with pytest.raises(ValueError, match="unknown model 'convnext'.*convnext_tiny.*paper\\+modern"):
        parse_model_list("paper+convnext")
    with pytest.raises(ValueError, match="empty"):
        parse_model_list(" , + ")


def test_config_default_is_the_papers_seven():
    from cnmc_core.config import StudyConfig

    assert StudyConfig().models == PAPER_MODELS


@pytest.mark.parametrize("key", list(MODELS))
def test_row_builds_flat_with_its_gradcam_layer(key, registry_classifier):
    """(Building at each row's minimum size is checked by test_finetune_from_names_the_top_block_of_the_base.)"""
    import keras

    spec = MODELS[key]
    clf = registry_classifier(key)
    size = int(clf.input_shape[1])
    # Flat: the Grad-CAM layer is a layer of the classifier itself, not inside a nested model, and nothing from it
    # to the output is nested either (ConvNeXt's stem and downsampling blocks are small Sequentials, below it).
    names = [layer.name for layer in clf.layers]
    assert spec.gradcam_layer in names
    after = clf.layers[names.index(spec.gradcam_layer):]
    assert not any(isinstance(layer, keras.Model) for layer in after)
    nested = [layer.name for layer in clf.layers if isinstance(layer, keras.Model)]
    assert not nested or key == "convnext_tiny", nested  # the others are flat throughout
    layer = clf.get_layer(spec.gradcam_layer)
    keras.Model(clf.inputs, [layer.output, clf.output])  # the gradient model Grad-CAM builds
    assert len(layer.output.shape) == 4  # a spatial map (batch, h, w, channels)
    assert layer.output.shape[-1] == spec.features
    # The head: GlobalMaxPooling2D -> Dropout(0.5) -> Dense(2, sigmoid), base frozen.
    assert isinstance(clf.get_layer(HEAD_POOL), keras.layers.GlobalMaxPooling2D)
    dense = clf.get_layer(HEAD_DENSE)
    assert dense.units == 2 and dense.activation.__name__ == "sigmoid"
    assert clf.get_layer(spec.gradcam_layer).trainable is False
    assert sum(int(np.prod(w.shape)) for w in clf.trainable_weights) == 2 * spec.features + 2
    base_params = clf.count_params() - (2 * spec.features + 2)
    assert base_params == spec.params
    x = np.random.default_rng(0).integers(0, 255, (2, size, size, 3)).astype(np.uint8)
    out = clf.predict_on_batch(preprocess(x, spec.preprocess))
    assert out.shape == (2, 2) and np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.slow  # TensorFlow
def test_preprocess_is_the_models_own(key):
    import keras

    spec = MODELS[key]
    module = {
        "vgg16": keras.applications.vgg16,
        "vgg19": keras.applications.vgg19,
        "inception_v3": keras.applications.inception_v3,
        "xception": keras.applications.xception,
        "efficientnet_b0": keras.applications.efficientnet,
        "resnet50": keras.applications.resnet,
        "resnet101": keras.applications.resnet,
        "convnext_tiny": keras.applications.convnext,
        "efficientnet_v2_b0": keras.applications.efficientnet_v2,
    }[key]
    x = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    ours = preprocess(x, spec.preprocess)
    theirs = np.asarray(module.preprocess_input(x.astype(np.float32).copy()))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_efficientnet_gets_0_to_255():
    spec = MODELS["efficientnet_b0"]
    x = np.full((1, 4, 4, 3), 255, np.uint8)
    assert preprocess(x, spec.preprocess).max() == 255.0  # not 1.0: scaling is inside the model
    assert preprocess(x, MODELS["xception"].preprocess).max() == 1.0


@pytest.mark.slow  # TensorFlow
def test_weight_file_names_and_hashes_are_the_ones_keras_checks():
    """Our table must agree with keras.applications' own download code, or offline folders break."""
    import inspect

    import keras.src.applications.efficientnet as eff
    import keras.src.applications.resnet as res

    for key in ("vgg16", "vgg19", "inception_v3", "xception"):
        src = inspect.getsource(__import__(f"keras.src.applications.{key}", fromlist=["x"]))
        assert MODELS[key].weights_file in src and MODELS[key].weights_md5 in src
    assert res.WEIGHTS_HASHES["resnet50"][1] == MODELS["resnet50"].weights_md5
    assert res.WEIGHTS_HASHES["resnet101"][1] == MODELS["resnet101"].weights_md5
    assert eff.WEIGHTS_HASHES["b0"][1] == MODELS["efficientnet_b0"].weights_md5


@pytest.mark.parametrize(("key", "module", "weights_name", "model_name"), [
    ("convnext_tiny", "convnext", "convnext_tiny", "convnext_tiny"),
    ("efficientnet_v2_b0", "efficientnet_v2", "b0", "efficientnetv2-b0"),
])
@pytest.mark.slow  # TensorFlow
def test_modern_weight_files_are_the_ones_keras_downloads(key, module, weights_name, model_name):
    """Keras names the notop file `<model name>_notop.h5` under BASE_WEIGHTS_PATH and checks WEIGHTS_HASHES[...][1]
    (md5, or sha256 for ConvNeXt: 64 hex digits); the model name is the class's default `name`."""
    import importlib
    import inspect

    import keras

    source = importlib.import_module(f"keras.src.applications.{module}")
    spec = MODELS[key]
    assert inspect.signature(getattr(keras.applications, spec.keras_class)).parameters["name"].default == model_name
    assert spec.weights_file == f"{model_name}_notop.h5"
    assert spec.weights_url == source.BASE_WEIGHTS_PATH + spec.weights_file
    assert spec.weights_md5 == source.WEIGHTS_HASHES[weights_name][1]


def test_convnext_classifier_saves_and_loads_in_safe_mode(registry_classifier, tmp_path):
    """A study saves each classifier as model.keras and loads it back in safe mode. ConvNeXt brings Keras layers
    none of the paper's models has (LayerScale, nested Sequentials); EfficientNetV2's are B0's, which tiny_study
    saves and loads already."""
    key = "convnext_tiny"
    clf = registry_classifier(key)
    save_classifier(clf, tmp_path / "model.keras")
    loaded = load_classifier(tmp_path / "model.keras")
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in clf.layers]
    layer = MODELS[key].gradcam_layer
    assert loaded.get_layer(layer).output.shape == clf.get_layer(layer).output.shape
    for a, b in zip(loaded.weights, clf.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _write_legacy_weights(model, path):
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("key", ["vgg16", *MODERN_MODELS])
@pytest.mark.slow  # TensorFlow
def test_offline_weights_folder_loads_the_file_and_checks_it(key, tmp_path, monkeypatch):
    import keras

    spec = MODELS[key]
    algorithm = "sha256" if key == "convnext_tiny" else "md5"  # as Keras checks each file
    keras.utils.set_random_seed(5)
    donor = build_base(spec, 32, None)
    weights_file = tmp_path / spec.weights_file
    _write_legacy_weights(donor, weights_file)
    digest = hashlib.new(algorithm, weights_file.read_bytes()).hexdigest()

    # The official checksum does not match our home-made file: refused, with the file and checksum named.
    with pytest.raises(WeightsError, match=f"has {algorithm} {digest}, expected {spec.weights_md5}"):
        resolve_weights(spec, str(tmp_path))

    monkeypatch.setitem(MODELS, key, dataclasses.replace(spec, weights_md5=digest))
    keras.utils.set_random_seed(99)  # a different random init, so equality proves the file was loaded
    loaded = build_base(MODELS[key], 32, str(tmp_path))
    for a, b in zip(donor.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("key", list(MODELS))
def test_missing_offline_file_names_file_md5_and_where(key, tmp_path):
    spec = MODELS[key]
    with pytest.raises(WeightsError) as e:
        resolve_weights(spec, str(tmp_path))
    msg = str(e.value)
    assert spec.weights_file in msg and spec.weights_md5 in msg and str(tmp_path) in msg and spec.weights_url in msg


@pytest.mark.slow  # TensorFlow
def test_imagenet_without_network_says_what_to_do(tmp_path, monkeypatch):
    """No internet (as in CI): the error points at the offline folder, never a raw traceback."""
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def no_network(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_network)
    spec = MODELS["vgg16"]
    with pytest.raises(WeightsError, match="--weights FOLDER"):
        build_base(spec, 32, "imagenet")


def test_models_command_lists_the_registry_as_json():
    out = subprocess.run(
        [sys.executable, "-m", "cnmc_core", "models", "--json"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    rows = json.loads(out.stdout)
    assert [r["key"] for r in rows] == list(MODELS)
    eff = next(r for r in rows if r["key"] == "efficientnet_b0")
    assert eff["preprocess"] == "none" and eff["gradcam_layer"] == "top_activation" and eff["input_size"] == 224


@pytest.mark.parametrize("mode", ["caffe", "tf", "none"])
def test_preprocess_gives_bitwise_the_numbers_of_casting_first(mode):
    """The fast form must not change a single feature (the cache holds features of the old form)."""
    rng = np.random.default_rng(2)
    every_value = np.arange(256, dtype=np.uint8)[None, :, None, None].repeat(3, axis=3)
    for batch in (rng.integers(0, 256, (3, 7, 9, 3), dtype=np.uint8), every_value, every_value[:, ::-1, :, ::-1]):
        x = batch.astype(np.float32)
        expected = {
            "caffe": x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32),
            "tf": x / np.float32(127.5) - np.float32(1.0),
            "none": x,
        }[mode]
        got = preprocess(batch, mode)
        assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, expected)
