"""The seven models of the paper: one row each, the single source of truth.

Every fact the rest of the code needs about a model lives in its `ModelSpec`: the Keras class,
the input sizes, which `preprocess_input` it wants, the Grad-CAM layer, and the ImageNet notop
weight file (name, md5, address). Nothing else hard-codes 224 or a layer name.
"""

from __future__ import annotations

from dataclasses import dataclass

_KA = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KA2 = "https://storage.googleapis.com/keras-applications/"


@dataclass(frozen=True)
class ModelSpec:
    key: str  # canonical lowercase key: CLI, artifact paths, UI
    name: str  # human name, as the paper writes it
    keras_class: str  # attribute of keras.applications
    input_size: int  # native (ImageNet) input side in pixels
    min_input_size: int  # smallest side the architecture accepts
    preprocess: str  # "caffe" (BGR, ImageNet mean), "tf" ([-1, 1]) or "none" (0-255, scaled inside)
    gradcam_layer: str  # last convolutional block's output, for Grad-CAM
    params: int  # parameters of the notop base (the head adds 2 * features + 2)
    features: int  # channels of the last block = length of the pooled feature vector
    weights_file: str  # ImageNet notop weight file, as Keras names it in ~/.keras/models
    weights_md5: str  # its md5, as Keras checks it
    weights_url: str  # where Keras downloads it from
    finetune_from: str  # first layer of the top block: this layer and every later one (BatchNorm excepted) is fine-tuned


MODELS: dict[str, ModelSpec] = {
    "vgg16": ModelSpec(
        "vgg16", "VGG16", "VGG16", 224, 32, "caffe", "block5_conv3", 14_714_688, 512,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc",
        _KA + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="block5_conv1",
    ),
    "vgg19": ModelSpec(
        "vgg19", "VGG19", "VGG19", 224, 32, "caffe", "block5_conv4", 20_024_384, 512,
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6",
        _KA + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="block5_conv1",
    ),
    "inception_v3": ModelSpec(
        "inception_v3", "InceptionV3", "InceptionV3", 299, 75, "tf", "mixed10", 21_802_784, 2048,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "bcbd6486424b2319ff4ef7d526e38f63",
        _KA + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="mixed9",
    ),
    "xception": ModelSpec(
        "xception", "Xception", "Xception", 299, 71, "tf", "block14_sepconv2_act", 20_861_480, 2048,
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "b0042744bf5b25fce3cb969f33bebb97",
        _KA + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="block14_sepconv1",
    ),
    "efficientnet_b0": ModelSpec(
        "efficientnet_b0", "EfficientNetB0", "EfficientNetB0", 224, 32, "none", "top_activation",
        4_049_571, 1280,
        "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d",
        _KA2 + "efficientnetb0_notop.h5",
        finetune_from="block7a_expand_conv",
    ),
    "resnet50": ModelSpec(
        "resnet50", "ResNet50", "ResNet50", 224, 32, "caffe", "conv5_block3_out", 23_587_712, 2048,
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626",
        _KA + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="conv5_block1_1_conv",
    ),
    "resnet101": ModelSpec(
        "resnet101", "ResNet101", "ResNet101", 224, 32, "caffe", "conv5_block3_out", 42_658_176, 2048,
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", "88cf7a10940856eca736dc7b7e228a21",
        _KA + "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="conv5_block1_1_conv",
    ),
}

# The paper's Table I (validation accuracy / precision / recall), shown beside ours as reference.
PAPER_TABLE_I: dict[str, dict[str, float]] = {
    "vgg16": {"accuracy": 0.7046, "precision": 0.5035, "recall": 0.9886},
    "vgg19": {"accuracy": 0.7227, "precision": 0.5497, "recall": 0.9182},
    "inception_v3": {"accuracy": 0.7341, "precision": 0.7101, "recall": 0.7682},
    "xception": {"accuracy": 0.7386, "precision": 0.7310, "recall": 0.7659},
    "efficientnet_b0": {"accuracy": 0.5000, "precision": 0.5000, "recall": 1.0000},
    "resnet101": {"accuracy": 0.7636, "precision": 0.7585, "recall": 0.7636},
    "resnet50": {"accuracy": 0.7591, "precision": 0.7585, "recall": 0.7636},
}


def get_spec(key: str) -> ModelSpec:
    """The registry row for `key`; a ValueError naming the known keys otherwise."""
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(
            f"unknown model {key!r}; choose from {', '.join(MODELS)} (or 'all')"
        ) from None


def parse_model_list(text: str) -> list[str]:
    """'all' or a comma-separated list of keys -> keys in registry order, validated."""
    text = (text or "all").strip().lower()
    if text == "all":
        return list(MODELS)
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ValueError("--models is empty; give 'all' or keys such as vgg16,resnet50")
    for key in keys:
        get_spec(key)
    return [k for k in MODELS if k in keys]


def check_input_size(spec: ModelSpec, size: int) -> None:
    if size < spec.min_input_size:
        raise ValueError(
            f"input size {size} is below {spec.name}'s minimum of {spec.min_input_size} px; "
            f"use --input-size {spec.min_input_size} or more, or leave it out for the native "
            f"{spec.input_size}"
        )
