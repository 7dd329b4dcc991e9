"""The paper's head on pooled features, in NumPy: what training, evaluation and the study share without Keras.

The head is Dropout -> Dense(2, sigmoid) on the base's pooled features (models.py builds it inside
the classifier; training.py trains it). Here: its targets and sample weights, its weights folded
back from standardised to raw features, its probabilities on cached features, the decision
threshold chosen on the training split, and the colour jitter of fine-tuning's images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from .models import p_all

log = logging.getLogger(__name__)


@dataclass
class HeadResult:
    kernel: np.ndarray  # (features, 2) Dense kernel for raw (unstandardised) features
    bias: np.ndarray  # (2,)
    history: pd.DataFrame  # epoch, loss, accuracy, val_loss, val_accuracy
    best_epoch: int  # 1-based epoch whose weights were kept (training.train_head says which rule chose it)
    mean: np.ndarray | None = None  # (features,) the head trained on (x - mean) / std; None = raw features
    std: np.ndarray | None = None  # (features,)


def history_frame(history: dict, restored: str | None) -> tuple[pd.DataFrame, int]:
    """Keras's History.history -> (one row per epoch: epoch, loss, accuracy, val_loss, val_accuracy[, inner_loss,
    inner_accuracy]; the 1-based epoch whose weights were kept: the lowest of column `restored`, or the last when
    None, the paper's rule: Keras's default restore_best_weights=False)."""
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"] + ["inner_loss", "inner_accuracy"] * ("inner_loss"
                                                                                                    in history)
    frame = pd.DataFrame({"epoch": np.arange(1, len(history["loss"]) + 1), **{c: history[c] for c in columns}})
    return frame, len(frame) if restored is None else int(frame[restored].idxmin()) + 1


def inner_mask(inner: np.ndarray | None, n: int) -> np.ndarray | None:
    """`inner` (bool per training cell, `splits.inner_slice`) when it holds cells on both sides, else None."""
    if inner is None:
        return None
    inner = np.asarray(inner, bool)
    if inner.shape != (n,):
        raise ValueError(f"inner must be one bool per training cell: {inner.shape} for {n} cells")
    return inner if 0 < inner.sum() < n else None


def one_hot(labels: np.ndarray) -> np.ndarray:
    """labels 0 (HEM) / 1 (ALL) -> float32 (n, 2) one-hot [HEM, ALL]."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.eye(2, dtype=np.float32)[labels]


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-image weights n / (2 * n_class): each class weighs n / 2 in total, whatever its size."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    return (len(labels) / (2.0 * np.maximum(counts, 1)))[labels].astype(np.float32)


def fold_standardisation(kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """Dense weights for standardised features -> the same Dense on raw ones: W'x + b' == W((x - mean) / std) + b."""
    return kernel / std[:, None], bias - (mean / std) @ kernel


def head_probabilities(feats: np.ndarray, head: HeadResult) -> np.ndarray:
    """P(ALL) of the head (dropout off) for each view: feats (n, views, features) -> (n, views)."""
    with np.errstate(over="ignore"):  # a huge logit gives exactly 0 or 1, as the model does
        out = [
            # The classifier's output at inference is sigmoid(features @ W + b); one view at a time.
            p_all(1.0 / (1.0 + np.exp(-(feats[:, v].astype(np.float64) @ head.kernel + head.bias))))
            for v in range(feats.shape[1])
        ]
    return np.stack(out, axis=1) if out else np.zeros((len(feats), 0))


def choose_threshold(labels: np.ndarray, prob_all: np.ndarray) -> float:
    """The P(ALL) threshold that maximises balanced accuracy (Youden's J = TPR - FPR) on these predictions.

    Give it the training split's predictions, never the validation split's: a threshold chosen on
    the data it is then scored on flatters the score. The threshold lies halfway between the
    lowest score called ALL and the next lower one, so it does not sit on a training example.
    One class only, or nothing better than chance: 0.5, with a warning.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(prob_all, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        log.warning("threshold: the training split holds one class only; keeping 0.5")
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)  # thresholds: descending scores, [0] = inf
    j = tpr - fpr
    best = int(np.argmax(j))
    if j[best] <= 0:
        log.warning("threshold: no threshold beats chance on the training predictions; keeping 0.5")
        return 0.5
    lower = thresholds[best + 1] if best + 1 < len(thresholds) else thresholds[best]
    return float((thresholds[best] + lower) / 2)


def color_jitter(batch: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, h, w, 3) -> float32 0-255: per image, channel gains and a brightness in [1-s, 1+s].

    Multiplicative, so the black background stays black, as in every C-NMC frame.
    """
    n = len(batch)
    gain = rng.uniform(1 - strength, 1 + strength, (n, 1, 1, 3)) * rng.uniform(1 - strength, 1 + strength, (n, 1, 1, 1))
    return np.clip(batch.astype(np.float32) * gain.astype(np.float32), 0, 255)
