"""Training the paper's head: on cached features (our way), or on images (the ordinary Keras way).

Both use the same optimiser, loss, batch size, epochs and early stopping. The feature path picks,
for each training image and each epoch, its original or its mirror at random: the same
distribution of inputs as random horizontal flipping, without running the base again.
`fit_on_images` exists to show (tests, benchmarks) that the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from .config import StudyConfig
from .models import HEAD_DENSE


@dataclass
class HeadResult:
    kernel: np.ndarray  # (features, 2) Dense kernel for raw (unstandardised) features
    bias: np.ndarray  # (2,)
    history: pd.DataFrame  # epoch, loss, accuracy, val_loss, val_accuracy
    best_epoch: int  # 1-based epoch whose weights were kept (lowest val_loss)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """labels 0 (HEM) / 1 (ALL) -> float32 (n, 2) one-hot [HEM, ALL]."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.eye(2, dtype=np.float32)[labels]


def _compile(model, config: StudyConfig) -> None:
    model.compile(
        optimizer=keras.optimizers.Adamax(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )


def _callbacks(config: StudyConfig):
    return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)]


def _history_frame(history) -> tuple[pd.DataFrame, int]:
    h = history.history
    frame = pd.DataFrame(
        {
            "epoch": np.arange(1, len(h["loss"]) + 1),
            "loss": h["loss"],
            "accuracy": h["accuracy"],
            "val_loss": h["val_loss"],
            "val_accuracy": h["val_accuracy"],
        }
    )
    best = int(frame["val_loss"].idxmin()) + 1
    return frame, best


def train_head(
    train_feats: np.ndarray, train_labels: np.ndarray, val_feats: np.ndarray, val_labels: np.ndarray, config: StudyConfig
) -> HeadResult:
    """Fit Dropout -> Dense(2, sigmoid) on pooled features.

    train_feats: (n, views, features), views = 2 (image, mirror) or 1; val_feats: (m, features).
    """
    keras.utils.set_random_seed(config.seed)
    n, views, dim = train_feats.shape
    if config.standardize:
        flat = train_feats.reshape(-1, dim)
        mean = flat.mean(0)
        std = flat.std(0)
        std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    else:
        mean, std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    x_train = ((train_feats - mean) / std).astype(np.float32)
    x_val = ((val_feats - mean) / std).astype(np.float32)

    inputs = keras.Input((dim,))
    x = keras.layers.Dropout(config.dropout)(inputs)
    out = keras.layers.Dense(2, activation="sigmoid", name=HEAD_DENSE)(x)
    head = keras.Model(inputs, out)
    _compile(head, config)
    data = FeatureEpochs(x_train, one_hot(train_labels), config.batch_size, config.seed, config.flip and views > 1)
    history = head.fit(
        data,
        validation_data=(x_val, one_hot(val_labels)),
        epochs=config.epochs,
        callbacks=_callbacks(config),
        verbose=0,
    )
    frame, best = _history_frame(history)
    kernel, bias = head.get_layer(HEAD_DENSE).get_weights()
    # Fold the standardisation into the Dense layer: W'x + b' == W((x - mean) / std) + b.
    kernel_raw = kernel / std[:, None]
    bias_raw = bias - (mean / std) @ kernel
    return HeadResult(kernel_raw.astype(np.float32), bias_raw.astype(np.float32), frame, best)


def install_head(classifier, head: HeadResult) -> None:
    classifier.get_layer(HEAD_DENSE).set_weights([head.kernel, head.bias])


class FeatureEpochs(keras.utils.PyDataset):
    """Batches of (features, one-hot); each epoch a new order and, per image, original or mirror."""

    def __init__(self, feats: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, flip: bool):
        super().__init__()
        self.feats, self.targets, self.batch_size, self.flip = feats, targets, batch_size, flip
        self.rng = np.random.default_rng(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        n = len(self.feats)
        self.order = self.rng.permutation(n)
        self.view = self.rng.integers(0, 2, size=n) if self.flip else np.zeros(n, np.int64)

    def __len__(self) -> int:
        return math.ceil(len(self.feats) / self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        return self.feats[idx, self.view[idx]], self.targets[idx]

    def on_epoch_end(self) -> None:
        self._new_epoch()


def fit_on_images(
    classifier, x_train: np.ndarray, train_labels: np.ndarray, x_val: np.ndarray, val_labels: np.ndarray, config: StudyConfig
) -> tuple[pd.DataFrame, int]:
    """The ordinary Keras loop: model.fit on preprocessed images with random horizontal flips.

    x_train, x_val: float32 (n, size, size, 3) already through `images.preprocess`.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    ds = tf.data.Dataset.from_tensor_slices((x_train, one_hot(train_labels)))
    ds = ds.shuffle(len(x_train), seed=config.seed, reshuffle_each_iteration=True)
    if config.flip:
        ds = ds.map(lambda x, y: (tf.image.random_flip_left_right(x), y))
    ds = ds.batch(config.batch_size).prefetch(2)
    _compile(classifier, config)
    history = classifier.fit(
        ds,
        validation_data=(x_val, one_hot(val_labels)),
        validation_batch_size=config.batch_size,
        epochs=config.epochs,
        callbacks=_callbacks(config),
        verbose=0,
    )
    return _history_frame(history)
