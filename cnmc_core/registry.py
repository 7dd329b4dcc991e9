"""The models: the paper's seven, then newer architectures (opt-in); one row each, the single source of truth.

`--models all` (and the demo) is the paper's seven (`PAPER_MODELS`); `modern` names the newer rows
(`MODERN_MODELS`), and `paper+modern` both.

Every fact the rest of the code needs about a model lives in its `ModelSpec`: the Keras class,
the input sizes, which `preprocess_input` it wants, the Grad-CAM layer, and the ImageNet notop
weight file (name, checksum, address). Nothing else hard-codes 224 or a layer name.
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
    preprocess: str  # "caffe" (BGR, ImageNet mean), "tf" ([-1, 1]) or "none" (0-255, scaled inside the model)
    gradcam_layer: str  # last convolutional block's output, for Grad-CAM
    params: int  # parameters of the notop base (the head adds 2 * features + 2)
    features: int  # channels of the last block = length of the pooled feature vector
    weights_file: str  # ImageNet notop weight file, as Keras names it in ~/.keras/models
    weights_md5: str  # its checksum as Keras checks it: md5 (32 hex digits), or sha256 (64) where Keras uses that
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
    # ---- newer architectures: not in the paper, opt-in (`--models paper+modern` or their keys) ----
    ModelSpec(  # 2022; Keras puts its ImageNet normalisation inside the model (its preprocess_input does nothing)
        key="convnext_tiny", name="ConvNeXtTiny", keras_class="ConvNeXtTiny", input_size=224, min_input_size=32,
        preprocess="none", gradcam_layer="convnext_tiny_stage_3_block_2_identity", params=27_820_128, features=768,
        weights_file="convnext_tiny_notop.h5",
        weights_md5="d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",  # sha256, as Keras checks it
        weights_url=_KA + "convnext/convnext_tiny_notop.h5",
        finetune_from="convnext_tiny_downsampling_block_2",
    ),
    ModelSpec(  # 2021, the successor of EfficientNetB0; rescaling inside the model, as for B0
        key="efficientnet_v2_b0", name="EfficientNetV2B0", keras_class="EfficientNetV2B0", input_size=224,
        min_input_size=32, preprocess="none", gradcam_layer="top_activation", params=5_919_312, features=1280,
        weights_file="efficientnetv2-b0_notop.h5",
        weights_md5="893217f2bb855e2983157299931e43ff",
        weights_url=_KA + "efficientnet_v2/efficientnetv2-b0_notop.h5",
        finetune_from="block6e_expand_conv",  # the last four of the top stage's eight blocks (stage 6: 75% of the base)
    ),
)

# key -> spec: the paper's seven in its order, then the newer rows; each key is written once, in its row above.
MODELS: dict[str, ModelSpec] = {spec.key: spec for spec in _SPECS}
PAPER_MODELS = ("vgg16", "vgg19", "inception_v3", "xception", "efficientnet_b0", "resnet50", "resnet101")
MODERN_MODELS = tuple(k for k in MODELS if k not in PAPER_MODELS)
# Names `--models` accepts besides keys: "all" stays the paper's seven (what the paper compared, and the demo).
MODEL_GROUPS = {"all": PAPER_MODELS, "paper": PAPER_MODELS, "modern": MODERN_MODELS}

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
# Beside Table I's rows (issue 14, points 7 and 11): why they do not invite a like-for-like reading. Every accuracy
# is a whole number of images out of 440 (0.7636 x 440 = 336; VGG16's 0.7046 is 310/440 = 0.70455 rounded twice),
# and only Xception's is possible out of the 1,867-image preliminary set (0.7636 x 1,867 = 1,425.6): the paper
# scored about 440 images, likely 220 ALL / 220 HEM; we score all 1,867 cells of 28 patients. The "implied"
# accuracies below: what a balanced 220/220 set gives with a row's precision and recall (docs/protocols.md,
# "Where we differ from the paper").
PAPER_TABLE_I_CAVEAT = (
    "Table I's accuracies are all whole numbers of images out of 440 (0.7636 = 336/440), and only one of the seven "
    "(Xception's) is possible out of the 1,867 images of the preliminary test set: the paper scored about 440 "
    "images, likely 220 ALL and 220 HEM, while this study scores every validation cell. Its rows are a reference, "
    "not a like-for-like comparison.")
PAPER_TABLE_I_NOTES: dict[str, str] = {
    "vgg16": "Precision 0.50 with recall 0.99: it called about 432 of 440 images ALL, which on a balanced set scores "
             "0.51 accuracy, not the 0.70 reported: the row's three numbers fit no single confusion matrix.",
    "vgg19": "Precision 0.55 with recall 0.92 gives 0.58 accuracy on a balanced 220/220 set, not the 0.72 reported.",
    "inception_v3": "Consistent with one confusion matrix on a balanced 220/220 set (implied accuracy 0.73).",
    "xception": "Consistent with one confusion matrix on a balanced 220/220 set (implied accuracy 0.74).",
    "efficientnet_b0": "0.50 / 0.50 / 1.00 is a model that calls every image ALL on a balanced set: the collapse "
                       "EfficientNet shows when fed 0-1 inputs (its scaling is inside the model; we feed 0-255).",
    "resnet50": "Shares its precision and recall (0.7585 / 0.7636) with ResNet101 to four digits.",
    "resnet101": "Recall equals accuracy (0.7636), and precision and recall equal ResNet50's: possibly a weighted "
                 "average over both classes rather than ALL sensitivity.",
}


def get_spec(key: str) -> ModelSpec:
    """The registry row for `key`; a ValueError naming the known keys otherwise."""
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(
            f"unknown model {key!r}; choose from {', '.join(MODELS)} (or all, modern, paper+modern)"
        ) from None


def parse_model_list(text: str) -> list[str]:
    """Model keys in registry order, validated, from 'all' (or None: the paper's seven) or a comma-separated list
    of keys and groups, where '+' also joins: 'paper+modern', 'modern', 'all,convnext_tiny', 'vgg16,resnet50'."""
    text = ("all" if text is None else text).strip().lower()
    parts = [p.strip() for item in text.split(",") for p in item.split("+") if p.strip()]
    if not parts:
        raise ValueError("--models is empty; give 'all', 'paper+modern' or keys such as vgg16,resnet50")
    keys = set()
    for part in parts:
        keys.update(MODEL_GROUPS[part] if part in MODEL_GROUPS else (get_spec(part).key,))
    return [k for k in MODELS if k in keys]


def check_input_size(spec: ModelSpec, size: int) -> None:
    if size < spec.min_input_size:
        raise ValueError(
            f"input size {size} is below {spec.name}'s minimum of {spec.min_input_size} px; "
            f"use --input-size {spec.min_input_size} or more, or leave it out for the native "
            f"{spec.input_size}"
        )
