"""Training with Keras: the paper's head on cached features, and fine-tuning on images (NumPy parts: head.py).

The head path and the ordinary Keras loop use the same optimiser, loss, batch size, epochs and
early stopping. The feature path picks, for each training image and each epoch, one of its cached
views (original or mirror; or one of the eight orientations) at random: the same distribution of
inputs as random flipping, without running the base again. `fit_on_images` exists to show
(tests, benchmarks) that the two agree.

Fine-tuning (`finetune`) cannot use cached features: the base changes. It trains the registry's
top block on images decoded batch by batch from disk (`ImageEpochs`), never all in memory.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .config import StudyConfig
from .features import orient
from .head import HeadResult, class_weights, color_jitter, fold_standardisation, history_frame, inner_mask, one_hot
from .images import iter_batches, load_for_model, preprocess
from .models import HEAD_DENSE, HEAD_POOL, p_all
from .runtime import forward, jit_compile

log = logging.getLogger(__name__)


def _compile(model, config: StudyConfig, learning_rate: float | None = None, loss_scale: bool = False) -> None:
    """Adamax, binary cross-entropy, accuracy. `loss_scale`: dynamic loss scaling, which float16
    layers need against underflowing gradients (Keras adds it itself only to a model whose own
    policy is mixed_float16; the fine-tuning model's is float32, its base layers' may not be)."""
    optimizer = keras.optimizers.Adamax(learning_rate=learning_rate or config.learning_rate)
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer,
        loss="binary_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile(config.xla),
    )


def _monitor(config: StudyConfig, inner) -> str | None:
    """The loss whose lowest epoch is restored: inner_loss with an inner slice, else val_loss (None: the paper's
    rule, restore_best_weights=False, the last epoch kept)."""
    return "inner_loss" if inner is not None else None if config.stopping == "val" else "val_loss"


def _callbacks(config: StudyConfig, model, inner=None):
    """Early stopping with `patience`; with an `inner` slice ((x, one-hot) or a PyDataset), `model`'s loss and
    accuracy on it join each epoch's logs first (inner_loss, inner_accuracy) and choose the epoch."""
    if config.stopping == "inner" and inner is None:
        log.warning("stopping=inner but no inner slice was given: the validation loss chooses, best epoch restored")
    def add_inner(epoch, logs):
        scores = model.evaluate(*(inner if isinstance(inner, tuple) else (inner,)), verbose=0, return_dict=True)
        logs["inner_loss"], logs["inner_accuracy"] = float(scores["loss"]), float(scores["accuracy"])

    stop = keras.callbacks.EarlyStopping(monitor="inner_loss" if inner is not None else "val_loss",
                                         patience=config.patience, mode="min",
                                         restore_best_weights=_monitor(config, inner) is not None)
    return ([keras.callbacks.LambdaCallback(on_epoch_end=add_inner)] if inner is not None else []) + [stop]


def train_head(
    train_feats: np.ndarray, train_labels: np.ndarray, val_feats: np.ndarray, val_labels: np.ndarray,
    config: StudyConfig, inner: np.ndarray | None = None,
) -> HeadResult:
    """Fit Dropout -> Dense(2, sigmoid) on pooled features.

    train_feats: (n, views, features), views 0.. of `features.orient`; val_feats: (m, features).
    With `flip`, each epoch shows each image as one of its first `orientations` views at random.
    `inner`: bool (n,), the training cells that choose the stopping epoch (`splits.inner_slice`) with
    `config.stopping == "inner"`; they are left out of the fit, and the validation loss is then only
    recorded, never used. Without it, the validation loss chooses (`config.stopping`).
    """
    keras.utils.set_random_seed(config.seed)
    inner = inner_mask(inner, len(train_labels)) if config.stopping == "inner" else None
    if inner is not None:
        inner_feats, inner_labels = train_feats[inner, 0], train_labels[inner]
        train_feats, train_labels = train_feats[~inner], train_labels[~inner]
    views = config.orientations if config.flip else 1
    if train_feats.shape[1] < views:
        raise ValueError(
            f"train_feats holds {train_feats.shape[1]} views; flip with orientations={views} needs {views}")
    train_feats = train_feats[:, :views]
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
    monitored = None if inner is None else (((inner_feats - mean) / std).astype(np.float32), one_hot(inner_labels))

    inputs = keras.Input((dim,))
    x = keras.layers.Dropout(config.dropout)(inputs)
    out = keras.layers.Dense(2, activation="sigmoid", name=HEAD_DENSE)(x)
    head = keras.Model(inputs, out)
    _compile(head, config)
    weights = class_weights(train_labels) if config.class_weight else None
    data = FeatureEpochs(x_train, one_hot(train_labels), config.batch_size, config.seed, views, weights)
    history = head.fit(
        data,
        validation_data=(x_val, one_hot(val_labels)),
        epochs=config.epochs,
        callbacks=_callbacks(config, head, monitored),
        verbose=0,
    )
    frame, best = history_frame(history.history, _monitor(config, monitored))
    kernel_raw, bias_raw = fold_standardisation(*head.get_layer(HEAD_DENSE).get_weights(), mean, std)
    return HeadResult(kernel_raw.astype(np.float32), bias_raw.astype(np.float32), frame, best,
                      mean.astype(np.float32), std.astype(np.float32))


def install_head(classifier, head: HeadResult) -> None:
    classifier.get_layer(HEAD_DENSE).set_weights([head.kernel, head.bias])


class FeatureEpochs(keras.utils.PyDataset):
    """Batches of (features, one-hot[, sample weights]); each epoch a new order and, per image, one of `views`."""

    def __init__(self, feats: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, views: int,
                 weights: np.ndarray | None = None):
        super().__init__()
        self.feats, self.targets, self.batch_size, self.views, self.weights = feats, targets, batch_size, views, weights
        self.rng = np.random.default_rng(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        n = len(self.feats)
        self.order = self.rng.permutation(n)
        self.view = self.rng.integers(0, self.views, size=n) if self.views > 1 else np.zeros(n, np.int64)

    def __len__(self) -> int:
        return math.ceil(len(self.feats) / self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        if self.weights is None:
            return self.feats[idx, self.view[idx]], self.targets[idx]
        return self.feats[idx, self.view[idx]], self.targets[idx], self.weights[idx]

    def on_epoch_end(self) -> None:
        self._new_epoch()


def fit_on_images(
    classifier, x_train: np.ndarray, train_labels: np.ndarray, x_val: np.ndarray, val_labels: np.ndarray,
    config: StudyConfig,
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
        callbacks=_callbacks(config, classifier),
        verbose=0,
    )
    return history_frame(history.history, _monitor(config, None))


# ---- fine-tuning on images ----------------------------------------------------------------------

def unfreeze_top(classifier, first_layer: str) -> int:
    """Make `first_layer` and every later layer trainable, BatchNorm excepted; returns trainable weights.

    BatchNormalization stays frozen, which in Keras 3 also means inference mode: its moving
    statistics are kept, not replaced by those of small batches of one dataset.
    """
    names = [layer.name for layer in classifier.layers]
    if first_layer not in names:
        raise ValueError(f"{classifier.name} has no layer {first_layer!r} to fine-tune from")
    start = names.index(first_layer)
    for i, layer in enumerate(classifier.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return int(sum(np.prod(w.shape) for w in classifier.trainable_weights))


class ImageEpochs(keras.utils.PyDataset):
    """Batches of preprocessed images (x, one-hot[, sample weights]) decoded from disk batch by batch.

    x: float32 (batch, size, size, 3) after `images.preprocess`. With `augment`, each epoch has a
    new order, and each image is shown as one of its first `views` orientations, colour-jittered
    by `jitter`; the random draws depend only on (seed, epoch, batch), so a run is reproducible.
    Without it, images come in order, as they are (validation). The images of a batch are decoded
    by one thread pool, kept for the object's life; `close()` ends it.
    """

    def __init__(
        self, paths: Sequence[str | Path], labels: np.ndarray, size: int, preprocess_mode: str, batch_size: int,
        seed: int = 0, augment: bool = False, views: int = 1, jitter: float = 0.0, weights: np.ndarray | None = None,
    ):
        super().__init__()
        self.paths, self.targets, self.weights = list(paths), one_hot(labels), weights
        self.size, self.mode, self.batch_size = size, preprocess_mode, batch_size
        self.seed, self.augment, self.views, self.jitter = seed, augment, views, jitter
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)))
        self.epoch = 0
        self._order()

    def _order(self) -> None:
        n = len(self.paths)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.augment else np.arange(n)

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        batch = np.stack(list(self.pool.map(lambda j: load_for_model(self.paths[j], self.size), idx)))
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            views = rng.integers(0, self.views, size=len(idx))
            batch = np.stack([orient(img[None], v)[0] for img, v in zip(batch, views)])
            if self.jitter:
                batch = color_jitter(batch, self.jitter, rng)
        x = preprocess(batch, self.mode)
        if self.weights is None:
            return x, self.targets[idx]
        return x, self.targets[idx], self.weights[idx]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _Standardize(keras.layers.Layer):
    """(x - mean) / std with fixed constants: the head stage's input scaling, during fine-tuning only."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def call(self, x):
        return (x - self.mean) / self.std


def _trainer(classifier, head: HeadResult, dropout: float):
    """The classifier as the head stage trained it: pooled -> standardise -> Dropout -> Dense.

    The saved classifier applies Dropout to raw features with the standardisation folded into
    Dense, which is the same function at inference but not in training: dropping a raw feature
    sets it to 0, which is -mean/std in standardised units (huge for random-weight bases). So
    fine-tuning trains this twin, sharing the base's layers, and folds the head back afterwards.
    Returns the model, its Dense layer, and the mean and std it standardises with.
    """
    dim = head.kernel.shape[0]
    mean = head.mean if head.mean is not None else np.zeros(dim, np.float32)
    std = head.std if head.std is not None else np.ones(dim, np.float32)
    x = _Standardize(mean, std)(classifier.get_layer(HEAD_POOL).output)
    x = keras.layers.Dropout(dropout)(x)
    dense = keras.layers.Dense(2, activation="sigmoid")
    model = keras.Model(classifier.input, dense(x), name=f"{classifier.name}_finetune")
    # W_std = W_raw * std and b_std = b_raw + mean @ W_raw give the same outputs.
    dense.set_weights([head.kernel * std[:, None], head.bias + mean @ head.kernel])
    return model, dense, mean, std


def finetune(
    classifier, head: HeadResult, first_layer: str, preprocess_mode: str, size: int,
    train_paths: Sequence[str | Path], train_labels: np.ndarray, val_paths: Sequence[str | Path],
    val_labels: np.ndarray,
    config: StudyConfig, on_epoch: Callable[[int], None] | None = None, replicas: int = 1,
    inner: np.ndarray | None = None,
) -> tuple[pd.DataFrame, int]:
    """Train `first_layer` onwards (and the head) on images at `finetune_learning_rate`, then refreeze.

    Call it under the strategy's scope (`runtime.scope`) when there is one: each of the
    `replicas` takes `batch_size` images, so the global batch is `batch_size x replicas`.

    `head` is the head stage's result, installed in `classifier`: fine-tuning continues from it
    with the same input scaling and dropout (see `_trainer`).

    Augmentation: one of the `orientations` views per image and epoch (with `flip`), colour
    jitter, class weights, as configured. Early stopping as in the head stage (`config.stopping`;
    `inner`: bool per training image, the slice that chooses, left out of the fit), and the start
    (the head alone, epoch 0) competes too: when the kept epoch does not lower the monitored loss,
    the classifier is left as it came. Returns the history (epochs from 1) and the epoch whose
    weights were kept (0 = none).
    """
    keras.utils.set_random_seed(config.seed)
    inner = inner_mask(inner, len(train_labels)) if config.stopping == "inner" else None
    train_paths, train_labels = list(train_paths), np.asarray(train_labels)
    if inner is not None:
        inner_paths = [p for p, held in zip(train_paths, inner) if held]
        inner_labels = train_labels[inner]
        train_paths, train_labels = [p for p, held in zip(train_paths, inner) if not held], train_labels[~inner]
    was_trainable = [layer.trainable for layer in classifier.layers]
    trainable = unfreeze_top(classifier, first_layer)
    log.info("fine-tuning %s from %s: %d trainable weights", classifier.name, first_layer, trainable)
    model, dense, mean, std = _trainer(classifier, head, config.dropout)
    float16 = any(layer.dtype_policy.name == "mixed_float16" for layer in classifier.layers)
    _compile(model, config, config.finetune_learning_rate, loss_scale=float16)
    views = config.orientations if config.flip else 1
    weights = class_weights(train_labels) if config.class_weight else None
    batch = config.batch_size * replicas
    train = ImageEpochs(train_paths, train_labels, size, preprocess_mode, batch, config.seed,
                        augment=True, views=views, jitter=config.color_jitter, weights=weights)
    val = ImageEpochs(val_paths, val_labels, size, preprocess_mode, batch)
    monitored = None if inner is None else ImageEpochs(inner_paths, inner_labels, size, preprocess_mode, batch)
    start_weights = model.get_weights()
    callbacks = _callbacks(config, model, monitored)
    if on_epoch:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1)))
    try:
        start_loss = float(model.evaluate(monitored or val, verbose=0, return_dict=True)["loss"])
        history = model.fit(train, validation_data=val, epochs=config.finetune_epochs, callbacks=callbacks, verbose=0)
    finally:
        for images in (train, val, monitored):
            if images is not None:
                images.close()
    frame, best = history_frame(history.history, _monitor(config, monitored))
    if not frame[monitor := "inner_loss" if monitored is not None else "val_loss"].iloc[best - 1] < start_loss:
        log.info("fine-tuning did not lower the %s (%.4f at the start); keeping the head alone", monitor, start_loss)
        model.set_weights(start_weights)
        best = 0
    else:  # fold the standardisation back into the classifier's Dense: the paper's architecture again
        classifier.get_layer(HEAD_DENSE).set_weights(list(fold_standardisation(*dense.get_weights(), mean, std)))
    for layer, flag in zip(classifier.layers, was_trainable):  # frozen base, trainable head, as built
        layer.trainable = flag
    return frame, best


def predict_views(
    classifier, paths: Sequence[str | Path], size: int, preprocess_mode: str, views: int, batch_size: int = 32
) -> np.ndarray:
    """P(ALL) of the classifier for views 0..views-1 of each image: (n, views).

    Images are decoded in threads a few batches ahead (`images.iter_batches`), never all at once.
    """
    out = []
    for batch in iter_batches(paths, size, batch_size):
        per_view = [p_all(forward(classifier, preprocess(orient(batch, v), preprocess_mode))) for v in range(views)]
        out.append(np.stack(per_view, axis=1))
    return np.concatenate(out) if out else np.zeros((0, views))
