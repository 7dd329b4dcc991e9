"""The seven models of the paper: one row each, the single source of truth.

Every fact the rest of the code needs about a model lives in its `ModelSpec`: the Keras class,
the input sizes, which `preprocess_input` it wants, the Grad-CAM layer, and the ImageNet notop
weight file (name, md5, address). Nothing else hard-codes 224 or a layer name.
"""

from __future__ import annotations

from dataclasses import dataclass

_KA = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KA2 = "https://storage.googleapis.com/keras-applications/"


@dataclass(frozen=True, kw_only=True)
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
    # first layer of the top block: this layer and every later one (BatchNorm excepted) is fine-tuned
    finetune_from: str


_SPECS = (
    ModelSpec(
        key="vgg16", name="VGG16", keras_class="VGG16", input_size=224, min_input_size=32,
        preprocess="caffe", gradcam_layer="block5_conv3", params=14_714_688, features=512,
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="6d6bbae143d832006294945121d1f1fc",
        weights_url=_KA + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="block5_conv1",
    ),
    ModelSpec(
        key="vgg19", name="VGG19", keras_class="VGG19", input_size=224, min_input_size=32,
        preprocess="caffe", gradcam_layer="block5_conv4", params=20_024_384, features=512,
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="253f8cb515780f3b799900260a226db6",
        weights_url=_KA + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="block5_conv1",
    ),
    ModelSpec(
        key="inception_v3", name="InceptionV3", keras_class="InceptionV3", input_size=299, min_input_size=75,
        preprocess="tf", gradcam_layer="mixed10", params=21_802_784, features=2048,
        weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="bcbd6486424b2319ff4ef7d526e38f63",
        weights_url=_KA + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="mixed9",
    ),
    ModelSpec(
        key="xception", name="Xception", keras_class="Xception", input_size=299, min_input_size=71,
        preprocess="tf", gradcam_layer="block14_sepconv2_act", params=20_861_480, features=2048,
        weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="b0042744bf5b25fce3cb969f33bebb97",
        weights_url=_KA + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="block14_sepconv1",
    ),
    ModelSpec(
        key="efficientnet_b0", name="EfficientNetB0", keras_class="EfficientNetB0", input_size=224, min_input_size=32,
        preprocess="none", gradcam_layer="top_activation", params=4_049_571, features=1280,
        weights_file="efficientnetb0_notop.h5",
        weights_md5="50bc09e76180e00e4465e1a485ddc09d",
        weights_url=_KA2 + "efficientnetb0_notop.h5",
        finetune_from="block7a_expand_conv",
    ),
    ModelSpec(
        key="resnet50", name="ResNet50", keras_class="ResNet50", input_size=224, min_input_size=32,
        preprocess="caffe", gradcam_layer="conv5_block3_out", params=23_587_712, features=2048,
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="4d473c1dd8becc155b73f8504c6f6626",
        weights_url=_KA + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="conv5_block1_1_conv",
    ),
    ModelSpec(
        key="resnet101", name="ResNet101", keras_class="ResNet101", input_size=224, min_input_size=32,
        preprocess="caffe", gradcam_layer="conv5_block3_out", params=42_658_176, features=2048,
        weights_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="88cf7a10940856eca736dc7b7e228a21",
        weights_url=_KA + "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        finetune_from="conv5_block1_1_conv",
    ),
)

# key -> spec, in the paper's order; each key is written once, in its row above.
MODELS: dict[str, ModelSpec] = {spec.key: spec for spec in _SPECS}

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
    """'all' (or None) or a comma-separated list of keys -> keys in registry order, validated."""
    text = ("all" if text is None else text).strip().lower()
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
