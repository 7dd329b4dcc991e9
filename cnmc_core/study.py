"""Running a study: scan, split by subject, then for each model features -> head -> evaluation -> artifacts.

A rerun of the same study skips every model whose artifacts are complete for the same config and
the same data (fingerprint), and reuses every cached feature file: a killed run resumes.
"""

from __future__ import annotations

import gc
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import __version__, compute
from .analysis import analyse_study
from .config import StudyConfig, model_config_hash
from .dataset import scan as scan_dataset
from .evaluation import classification_metrics
from .explain import build_study_explanations
from .registry import get_spec
from .splits import assign
from .store import StudyStore, remove_stale_temp_files
from .synthetic import is_synthetic

log = logging.getLogger(__name__)
Progress = Callable[[dict], None]


@dataclass
class StudyResult:
    store: StudyStore
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded: int = 0
    data_changed: bool = False


def _versions() -> dict:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "cnmc_core": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _devices() -> list[str]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return [g.name for g in gpus] or ["CPU"]


def split_summary(split: pd.DataFrame) -> dict:
    """Images per class and subjects per split, for study.json and the dashboard."""
    out = {}
    for name, part in split[split["split"] != "excluded"].groupby("split"):
        labels = part["label"].astype(str)
        out[name] = {
            "images": int(len(part)),
            "ALL": int((labels == "1").sum()),
            "HEM": int((labels == "0").sum()),
            "subjects": int(part.loc[part["subject"] != "", "subject"].nunique()),
        }
    out["excluded"] = int((split["split"] == "excluded").sum())
    return out


def run_study(
    data_dir: str | Path,
    config: StudyConfig,
    root: str | Path | None = None,
    name: str = "default",
    progress: Progress | None = None,
) -> StudyResult:
    """Train and evaluate every model of `config` on the C-NMC copy at `data_dir`."""
    config.validate()
    store = StudyStore(root, name)
    store.ensure_writable()
    remove_stale_temp_files(store.dir)
    emit = progress or (lambda info: None)

    emit({"stage": "scan", "message": f"scanning {data_dir}"})
    scan = scan_dataset(data_dir, cache_dir=store.scan_cache_root)
    mode, assignments = assign(scan, config.split, config.val_fold, config.val_fraction, config.seed)
    split = pd.DataFrame(
        [
            {"path": a.path, "subject": a.subject, "label": "" if a.label is None else a.label,
             "split": a.split, "reason": a.reason, "group": a.group, "sha1": a.sha1}
            for a in assignments
        ]
    )
    fingerprint = scan.fingerprint()
    strategy = compute.make_strategy(config.distribute)
    result = StudyResult(store=store, excluded=int((split["split"] == "excluded").sum()))

    previous = None
    if store.exists():
        try:
            previous = store.read_study()
        except (OSError, ValueError):
            previous = None
    if previous and previous.get("data", {}).get("fingerprint") not in (None, fingerprint):
        result.data_changed = True
        log.warning("the data changed since this study was last run: every model is retrained")

    info = {
        "name": name,
        "created": (previous or {}).get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
        "config": config.to_dict(),
        "input_sizes": {k: config.size_for(k) for k in config.models},
        "data": {
            "path": str(scan.root.resolve()),
            "layout": scan.layout,
            "split_mode": mode,
            "fingerprint": fingerprint,
            "synthetic": is_synthetic(scan.root),
            "summary": split_summary(split),
        },
        "versions": _versions(),
        "devices": _devices(),
        "compute": {"dtype_policy": compute.policy_name(config.precision), "xla": config.xla,
                    "replicas": compute.replicas(strategy)},
        "seed": config.seed,
        "models": list(config.models),
    }
    store.write_study(info)
    store.write_split(split)

    train = split[split["split"] == "train"].reset_index(drop=True)
    val = split[split["split"] == "val"].reset_index(drop=True)
    last = None  # the classifier trained last
    for i, key in enumerate(config.models):
        config_hash = model_config_hash(config, key, fingerprint, compute.replicas(strategy))
        if store.model_complete(key, config_hash):
            result.skipped.append(key)
            emit({"stage": "skip", "model": key, "index": i, "count": len(config.models)})
            continue
        emit({"stage": "model", "model": key, "index": i, "count": len(config.models)})
        last = None  # the previous model goes before the next is built: one model in memory at a time
        last = _train_one(key, config, config_hash, scan.root, train, val, store, strategy,
                          lambda d: emit({**d, "model": key, "index": i, "count": len(config.models)}))
        result.trained.append(key)

    emit({"stage": "statistics"})
    analyse_study(store)
    emit({"stage": "gallery"})
    # Grad-CAM gallery + out-of-distribution reference; never fails the study. The model trained
    # last is still in memory (unless built under a tf.distribute strategy: loaded plainly instead).
    in_memory = {result.trained[-1]: last} if result.trained and strategy is None else None
    last = None
    build_study_explanations(store, in_memory)

    info.update(status="complete", updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    store.write_study(info)
    emit({"stage": "done"})
    return result


def _train_one(
    key, config: StudyConfig, config_hash: str, data_root: Path, train: pd.DataFrame, val: pd.DataFrame,
    store: StudyStore, strategy, emit: Progress,
):
    """Train, evaluate and save model `key`; returns its classifier (float32, as saved)."""
    import keras

    from . import training
    from .features import FeatureCache, extract
    from .models import base_fingerprint, build_classifier, feature_model, save_classifier

    spec = get_spec(key)
    size = config.size_for(key)
    keras.utils.clear_session()  # (this also resets the dtype policy to float32)
    keras.utils.set_random_seed(config.seed)
    t0 = time.perf_counter()
    policy = compute.policy_name(config.precision)
    replicas = compute.replicas(strategy)
    with compute.scope(strategy):
        classifier = build_classifier(spec, size, config.weights, config.dropout)
        # What runs the base: the classifier, or with mixed precision its twin (the saved one stays float32).
        runner = classifier if policy == "float32" else compute.mixed_twin(
            classifier, lambda: build_classifier(spec, size, "none", config.dropout), policy)
        features = feature_model(runner)
    compute.set_xla(features, config.xla)
    cache = FeatureCache(store.feature_cache_root, key, base_fingerprint(classifier), size, policy)
    batch = config.feature_batch_size * replicas

    def paths(frame):
        return [data_root / p for p in frame["path"]]

    # Views (features.orient) of each image: those the head trains on, and those evaluation
    # averages over (tta). If fine-tuning changes the base, evaluation runs on images instead.
    sample_views = config.orientations if config.flip else 1
    eval_views = config.orientations if config.tta else 1
    fit_threshold = config.threshold == "train"
    train_views = max(sample_views, eval_views if fit_threshold else 1)
    val_views = eval_views
    t1 = time.perf_counter()
    train_feats = extract(
        features, spec.preprocess, size, paths(train), list(train["sha1"]), train_views, cache,
        batch, lambda d, n: emit({"stage": "features", "split": "train", "done": d, "total": n}),
    )
    val_feats = extract(
        features, spec.preprocess, size, paths(val), list(val["sha1"]), val_views, cache,
        batch, lambda d, n: emit({"stage": "features", "split": "val", "done": d, "total": n}),
    )  # (m, val_views, features)
    t2 = time.perf_counter()
    emit({"stage": "head"})
    y_train = train["label"].astype(int).to_numpy()
    y_val = val["label"].astype(int).to_numpy()
    head = training.train_head(train_feats, y_train, val_feats[:, 0], y_val, config)
    training.install_head(classifier, head)
    history, best_epoch = head.history, head.best_epoch
    t3 = time.perf_counter()

    tuned_best = 0  # the fine-tuning epoch kept; 0 = the base is still the one the features came from
    if config.finetune:
        if runner is not classifier:
            training.install_head(runner, head)
        with compute.scope(strategy):
            tuned, tuned_best = training.finetune(
                runner, head, spec.finetune_from, spec.preprocess, size, paths(train), y_train, paths(val), y_val, config,
                on_epoch=lambda e: emit({"stage": "finetune", "epoch": e, "epochs": config.finetune_epochs}),
                replicas=replicas,
            )
        if runner is not classifier:  # the mixed twin's weights (float32 variables) into the float32 classifier
            classifier.set_weights(runner.get_weights())
        tuned["epoch"] += len(history)
        history = pd.concat([history.assign(stage="head"), tuned.assign(stage="finetune")], ignore_index=True)
        best_epoch = len(head.history) + tuned_best if tuned_best else best_epoch
    if tuned_best:
        emit({"stage": "evaluate"})
        # The saved (float32) classifier itself is evaluated, whatever precision fine-tuned it.
        compute.set_xla(classifier, config.xla)
        val_probs = training.predict_views(classifier, paths(val), size, spec.preprocess, eval_views, batch)
        train_probs = (training.predict_views(classifier, paths(train), size, spec.preprocess, eval_views, batch)
                       if fit_threshold else None)
    else:
        val_probs = training.head_probabilities(val_feats[:, :eval_views], head)  # (m, eval_views)
        train_probs = training.head_probabilities(train_feats[:, :eval_views], head) if fit_threshold else None
    t4 = time.perf_counter()

    prob = val_probs.mean(axis=1)  # P(ALL); with tta the mean over the orientations
    # The threshold comes from the training split's own predictions; validation labels never reach it.
    threshold = training.choose_threshold(y_train, train_probs.mean(axis=1)) if fit_threshold else 0.5
    metrics = classification_metrics(y_val, prob, threshold)
    seconds = {"build": round(t1 - t0, 2), "features": round(t2 - t1, 2), "head": round(t3 - t2, 2)}
    if config.finetune:
        seconds["finetune"] = round(t4 - t3, 2)
    metrics.update(
        {
            "model": key,
            "name": spec.name,
            "input_size": size,
            "threshold_source": config.threshold,
            "best_epoch": best_epoch,
            "epochs_run": int(len(history)),
            "n_train": int(len(train)),
            "n_val": int(len(val)),
            "seconds": seconds,
            "compute": {"dtype_policy": policy, "xla": config.xla, "replicas": replicas},
            "config_hash": config_hash,
        }
    )
    predictions = pd.DataFrame({"path": val["path"], "subject": val["subject"], "label": y_val, "prob_all": prob})
    emit({"stage": "save"})
    store.write_model(key, metrics, predictions, history, lambda p: save_classifier(classifier, p))
    log.info(
        "%s: accuracy %.3f, AUC %s (%s val images)", spec.name, metrics["accuracy"],
        f"{metrics['roc_auc']:.3f}" if metrics["roc_auc"] is not None else "n/a", len(val),
    )
    del runner, features
    gc.collect()
    return classifier

