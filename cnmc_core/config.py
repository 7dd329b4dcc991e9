"""The study configuration: one frozen dataclass, one comment per field, presets as overrides.

The resolved config is saved in study.json; `model_config_hash` decides whether a model's saved
results are still valid for a rerun. The fields after `feature_batch_size` came with the
`finetune` preset; their defaults are the paper's behaviour, and `docs/protocols.md` explains each.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .registry import PAPER_MODELS, check_input_size, get_spec
from .runtime import DISTRIBUTE_MODES, PRECISIONS, XLA_MODES


@dataclass(frozen=True)
class StudyConfig:
    preset: str = "paper"  # name of the preset these values came from
    models: tuple[str, ...] = PAPER_MODELS  # registry keys to train, in registry order (default: the paper's seven)
    weights: str = "imagenet"  # imagenet | none | folder of notop .h5 files
    input_size: int | None = None  # side in pixels for every model; None = each model's native size
    epochs: int = 15  # upper bound; early stopping usually ends sooner
    batch_size: int = 40  # head training batch (the paper's 40)
    learning_rate: float = 0.001  # Adamax
    patience: int = 5  # early stopping: epochs without a lower monitored loss before training stops
    # what chooses the stopping epoch (and fine-tuning's keep-or-revert): "val" = the validation loss,
    # last epoch's weights kept (the paper, Keras's restore_best_weights=False: the validation figures
    # are then optimistic, that split chose the epoch); "inner" = the loss on an inner subject-disjoint,
    # class-stratified slice of the training subjects (splits.inner_slice), best epoch restored: validation
    # chooses nothing; "val_best" = the validation loss with the best epoch restored (before issue 14)
    stopping: str = "val"
    dropout: float = 0.5  # before the Dense layer
    flip: bool = True  # random horizontal flips of training images (original or mirror each epoch)
    standardize: bool = False  # train the head on standardised features, folded back into Dense at the end
    split: str = "auto"  # auto | official | folds | random (always by subject)
    val_fold: int = 2  # with split=folds: this fold is validation
    val_fraction: float = 0.2  # with split=random: share of each class's subjects in validation
    seed: int = 42  # model init, head init, flips, dropout, random split
    # images per decoded batch when caching features; a forward pass holds twice as many (speed only)
    feature_batch_size: int = 32
    # 1 = as is, 2 = + horizontal mirror (the paper's flips), 8 = the four 90-degree rotations, each
    # also mirrored (cells have no orientation): the views `flip` draws from and `tta` averages over
    orientations: int = 2
    # colour jitter strength j: each training image's channels are scaled by gains in [1-j, 1+j] and
    # its brightness by a factor in [1-j, 1+j] (multiplicative: the black background stays black).
    # It needs images, so it acts only in the fine-tuning stage (`finetune`), never on cached features
    color_jitter: float = 0.0
    class_weight: bool = False  # weight each training image by n / (2 * n_its_class): both classes count equally
    tta: bool = False  # test-time augmentation: P(ALL) is the mean over the `orientations` views of each image
    # decision threshold on P(ALL): "fixed" = 0.5; "train" = the one that maximises balanced accuracy
    # (Youden's J) on the training split's own predictions. The validation split is never used for it
    threshold: str = "fixed"
    finetune: bool = False  # after the head, train the registry's top block of the base too (BatchNorm stays frozen)
    finetune_epochs: int = 5  # upper bound for the fine-tuning stage (early stopping with `patience` too)
    finetune_learning_rate: float = 1e-4  # Adamax, for the fine-tuning stage (the head stage keeps `learning_rate`)
    # How the forward passes run (`runtime.py`): float32 | mixed (bfloat16/float16 compute for the
    # frozen base's features and fine-tuning; the head and the saved classifier stay float32)
    precision: str = "float32"
    xla: str = "auto"  # auto (Keras's choice: on with one GPU, off on CPU) | on | off (speed only)
    # auto (MirroredStrategy with 2+ GPUs) | none | mirrored (speed only, except fine-tuning's global batch)
    distribute: str = "auto"

    def size_for(self, key: str) -> int:
        return self.input_size or get_spec(key).input_size

    def validate(self) -> StudyConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        for key in self.models:
            spec = get_spec(key)
            check_input_size(spec, self.size_for(key))
        for name in ("epochs", "batch_size", "feature_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.input_size is not None and self.input_size > 1024:
            raise ValueError(
                f"--input-size {self.input_size} is larger than useful (C-NMC frames are 450 px); use 1024 or less")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.orientations not in ORIENTATIONS:
            allowed = ", ".join(map(str, ORIENTATIONS))
            raise ValueError(f"orientations must be one of {allowed}; got {self.orientations!r}")
        if self.stopping not in STOPPING:
            raise ValueError(f"--stopping must be one of {', '.join(STOPPING)}; got {self.stopping!r}")
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}; got {self.threshold!r}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1); got {self.color_jitter}")
        if self.color_jitter and not self.finetune:
            raise ValueError("color_jitter acts on images, so only in the fine-tuning stage; set finetune too")
        if self.finetune_epochs < 1:
            raise ValueError(f"finetune_epochs must be at least 1; got {self.finetune_epochs}")
        if not 0 < self.finetune_learning_rate < 1:
            raise ValueError(f"finetune_learning_rate must be in (0, 1); got {self.finetune_learning_rate}")
        for name, allowed in (("precision", PRECISIONS), ("xla", XLA_MODES), ("distribute", DISTRIBUTE_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.distribute == "multiworker" and self.finetune:
            # Keras 3.15's Model.fit fails under MultiWorkerMirroredStrategy before its first step (it reduces a
            # PerReplica batch: "Attempt to convert a value (PerReplica...) with an unsupported type to a Tensor").
            raise ValueError("--distribute multiworker cannot fine-tune (Keras's fit fails under "
                             "MultiWorkerMirroredStrategy); use a preset without fine-tuning, or --distribute mirrored")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["models"] = list(self.models)
        return d


PRESETS: dict[str, dict] = {
    # The paper's protocol (Vijesh & Sikka): frozen base, Adamax 1e-3, batch 40, 15 epochs, patience 5.
    "paper": {},
    # The same, with the head trained on standardised features. Random-weight bases (--weights none,
    # the CPU demo) give features around 1e-5 for some models, which the paper's head cannot learn
    # from in 15 epochs at 1e-3; standardising fixes the scale. The saved classifier has the paper's
    # exact architecture: the scaling is folded into the Dense layer.
    "paper_std": {"standardize": True, "stopping": "inner"},
    # What the strongest C-NMC work does: every orientation (eight views), class weights, test-time
    # augmentation, the threshold chosen on the training split, then the top block of the base
    # fine-tuned at a lower learning rate with colour jitter. Each part is a field of its own.
    "finetune": {
        "standardize": True, "orientations": 8, "color_jitter": 0.1, "class_weight": True, "tta": True,
        "threshold": "train", "finetune": True, "stopping": "inner",
    },
}

ORIENTATIONS = (1, 2, 8)
THRESHOLDS = ("fixed", "train")
STOPPING = ("val", "inner", "val_best")
# Fields added after the first studies: hashed only when they differ from these defaults, so that
# the results of `paper` and `paper_std` studies stay valid. The fine-tuning-only ones are not
# hashed at all without fine-tuning (they change nothing then).
_LATER_FIELDS = {
    "orientations": 2, "color_jitter": 0.0, "class_weight": False, "tta": False, "threshold": "fixed",
    "finetune": False, "finetune_epochs": 5, "finetune_learning_rate": 1e-4, "precision": "float32",
    # every study before issue 14 stopped on validation with the best epoch restored: their saved results
    # stay valid for that rule only, and a study made since (val or inner) retrains
    "stopping": "val_best",
}
_FINETUNE_ONLY = ("color_jitter", "finetune_epochs", "finetune_learning_rate")


# The finetune preset's parts, each a step an ablation can add on top of `paper_std`.
ABLATION_STEPS: dict[str, dict] = {
    "orientations": {"orientations": 8},
    "color_jitter": {"color_jitter": 0.1},
    "class_weight": {"class_weight": True},
    "tta": {"tta": True},
    "threshold": {"threshold": "train"},
    "finetune": {"finetune": True},
}


def ablation_configs(steps: list[str], **overrides) -> list[tuple[str, StudyConfig]]:
    """[("baseline", paper_std), (step 1, + its change), (step 2, + both changes), ...], all validated."""
    unknown = [s for s in steps if s not in ABLATION_STEPS]
    if unknown or not steps or len(set(steps)) != len(steps):
        raise ValueError(
            f"--steps must be distinct names from {', '.join(ABLATION_STEPS)}; got {','.join(steps) or 'nothing'}"
        )
    out = [("baseline", from_preset("paper_std", **overrides))]
    changes: dict = {}
    for step in steps:
        changes.update(ABLATION_STEPS[step])
        try:
            out.append((step, from_preset("paper_std", **{**overrides, **changes})))
        except ValueError as e:
            raise ValueError(f"--steps: after {step!r}: {e}") from None
    return out


def from_preset(preset: str = "paper", **overrides) -> StudyConfig:
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return StudyConfig(preset=preset, **values).validate()


def model_config_hash(config: StudyConfig, key: str, data_fingerprint: str, replicas: int = 1) -> str:
    """What a model's results depend on: every result-relevant field, its input size and the data.

    `replicas` (of a tf.distribute strategy) counts only for fine-tuning, whose global batch it scales.
    """
    d = config.to_dict()
    for speed_only in ("models", "feature_batch_size", "preset", "xla", "distribute"):
        d.pop(speed_only)
    if config.finetune and replicas > 1:
        d["replicas"] = replicas
    for name, default in _LATER_FIELDS.items():
        if d[name] == default or (name in _FINETUNE_ONLY and not config.finetune):
            d.pop(name)
    d["input_size"] = config.size_for(key)
    d["model"] = key
    d["data"] = data_fingerprint
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()

