"""Running a study: scan, split by subject, then for each model features -> head -> evaluation -> artifacts.

A rerun of the same study skips every model whose artifacts are complete for the same config and
the same data (fingerprint), and reuses every cached feature file: a killed run resumes.
"""

from __future__ import annotations

import gc
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn

from . import __version__, crossval, runtime
from .analysis import analyse_study
from .config import StudyConfig, model_config_hash
from .dataset import scan as scan_dataset
from .disk import remove_stale_temp_files, write_json
from .evaluation import classification_metrics
from .explain import study_classifier
from .features import FeatureCache, extract
from .gallery import build_gallery
from .head import choose_threshold, head_probabilities
from .models import base_fingerprint, build_classifier, feature_model, save_classifier
from .ood import build_reference, reference_frames
from .prepare import colour_reference
from .progress import ProgressEvent
from .projection import build_projections
from .registry import get_spec
from .splits import DUPLICATE, assign, inner_slice, stopping_record
from .store import StudyLock, StudyStore, record_data_root
from .synthetic import is_synthetic

log = logging.getLogger(__name__)
Progress = Callable[[ProgressEvent], None]


@dataclass
class StudyResult:
    store: StudyStore
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded: int = 0
    data_changed: bool = False


def _versions() -> dict:
    import keras
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
    out["duplicates"] = int(split["reason"].astype(str).str.startswith(DUPLICATE).sum())  # (across splits)
    return out


def run_study(
    data_dir: str | Path,
    config: StudyConfig,
    root: str | Path | None = None,
    name: str = "default",
    progress: Progress | None = None,
) -> StudyResult:
    """Train and evaluate every model of `config` on the C-NMC copy at `data_dir`.

    Holds the study's lock (`StudyLock`) throughout: a second writer of the same study is refused.
    A run that fails after writing study.json marks it "failed" with the error; one that fails
    before writing anything leaves no study folder behind.
    """
    config.validate()
    store = StudyStore(root, name)
    with StudyLock(store):  # (taking it also proves the folder writable, before hours of work)
        remove_stale_temp_files(store.dir)
        return _run_locked(Path(data_dir), config, store, progress or (lambda event: None))


def _run_locked(data_dir: Path, config: StudyConfig, store: StudyStore, emit: Progress) -> StudyResult:
    emit(ProgressEvent("scan", message=f"scanning {data_dir}"))
    scan = scan_dataset(data_dir, cache_dir=store.scan_cache_root)
    try:  # the local user trained from this folder: the dashboard may show its images (store.trusted_data_roots)
        record_data_root(store.root, scan.root)
    except OSError as e:
        log.warning("could not record the data folder as trusted (%s)", e.strerror or e)
    mode, assignments = assign(scan, config.split, config.val_fold, config.val_fraction, config.seed)
    split = pd.DataFrame(
        [
            {"path": a.path, "subject": a.subject, "label": "" if a.label is None else a.label,
             "split": a.split, "reason": a.reason, "group": a.group, "sha1": a.sha1}
            for a in assignments
        ]
    )
    fingerprint = scan.fingerprint()
    strategy = runtime.make_strategy(config.distribute)
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
        "name": store.name,
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
        "compute": {"dtype_policy": runtime.policy_name(config.precision), "xla": config.xla,
                    "replicas": runtime.replicas(strategy)},
        "seed": config.seed,
        "models": list(config.models),
    }
    store.write_study(info)
    try:
        _run_models(config, store, scan.root, split, fingerprint, strategy, result, emit)
    except BaseException as e:  # (an interrupt too): study.json says so, instead of "running" forever
        error = (str(e).splitlines() or [""])[0] or type(e).__name__
        info.update(status="failed", error=error, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            store.write_study(info)
        except OSError:
            pass  # (the disk may be what failed) the original error is what matters
        raise
    info.update(status="complete", updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    store.write_study(info)
    emit(ProgressEvent("done"))
    return result


def _run_models(config: StudyConfig, store: StudyStore, data_root: Path, split: pd.DataFrame, fingerprint: str,
                strategy, result: StudyResult, emit: Progress) -> None:
    """split.csv, every model not yet complete, the statistics and the study-end extras."""
    store.write_split(split)
    train = split[split["split"] == "train"].reset_index(drop=True)
    val = split[split["split"] == "val"].reset_index(drop=True)
    last = None  # the classifier trained last
    for i, key in enumerate(config.models):
        config_hash = model_config_hash(config, key, fingerprint, runtime.replicas(strategy))
        where = {"model": key, "index": i, "count": len(config.models)}
        if store.model_complete(key, config_hash):
            result.skipped.append(key)
            emit(ProgressEvent("skip", **where))
            continue
        emit(ProgressEvent("model", **where))
        last = None  # the previous model goes before the next is built: one model in memory at a time
        last = _train_one(key, config, config_hash, data_root, train, val, store, strategy,
                          lambda event, where=where: emit(replace(event, **where)))
        result.trained.append(key)

    emit(ProgressEvent("statistics"))
    analyse_study(store)
    emit(ProgressEvent("gallery"))
    # Grad-CAM gallery + out-of-distribution reference; never fails the study. The model trained
    # last is still in memory (unless built under a tf.distribute strategy: loaded plainly instead).
    in_memory = {result.trained[-1]: last} if result.trained and strategy is None else None
    last = None
    build_study_explanations(store, in_memory, data_root)


def build_study_explanations(store: StudyStore, in_memory: dict | None = None, data_root: Path | None = None) -> None:
    """At the end of a study: the Grad-CAM gallery, the out-of-distribution reference, the stain reference and
    the feature-space maps of each model (projection.py; features the cache lacks are computed from `data_root`).

    All are extras: a failure is logged in one line and never fails the study. `in_memory`:
    classifiers still in memory, by key, exactly as saved (the study passes the one it trained
    last, saving a load from disk).
    """
    loaded: dict = dict(in_memory or {})  # each model is loaded once for both (loading costs more than the work here)

    def load(key: str):
        if key not in loaded:
            loaded[key] = study_classifier(store, key)
        return loaded[key]

    def stain_reference(store: StudyStore, load=None) -> None:  # for the smear preparation of uploads
        write_json(store.colour_reference, colour_reference(reference_frames(store)[0]))

    def maps(store: StudyStore, load=None) -> None:
        build_projections(store, load, data_root)

    for what, build in (("Grad-CAM gallery", build_gallery), ("out-of-distribution reference", build_reference),
                        ("stain reference", stain_reference), ("feature-space maps", maps)):
        try:
            build(store, load=load)
        except Exception as e:  # noqa: BLE001 - the study's results are complete without these
            first_line = str(e).splitlines()[0] if str(e) else ""
            log.warning("%s not built (%s: %s); the study's results are complete without it",
                        what, type(e).__name__, first_line)
    loaded.clear()
    gc.collect()


def _train_one(
    key, config: StudyConfig, config_hash: str, data_root: Path, train: pd.DataFrame, val: pd.DataFrame,
    store: StudyStore, strategy, emit: Progress,
):
    """Train, evaluate and save model `key`; returns its classifier (float32, as saved)."""
    import keras

    from . import training

    spec = get_spec(key)
    size = config.size_for(key)
    keras.utils.clear_session()  # (this also resets the dtype policy to float32)
    keras.utils.set_random_seed(config.seed)
    t0 = time.perf_counter()
    policy = runtime.policy_name(config.precision)
    replicas = runtime.replicas(strategy)
    with runtime.scope(strategy):
        classifier = build_classifier(spec, size, config.weights, config.dropout)
        # What runs the base: the classifier, or with mixed precision its twin (the saved one stays float32).
        runner = classifier if policy == "float32" else runtime.mixed_twin(
            classifier, lambda: build_classifier(spec, size, "none", config.dropout), policy)
        features = feature_model(runner)
    runtime.set_xla(features, config.xla)
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
        batch, lambda d, n: emit(ProgressEvent("features", split="train", done=d, total=n)),
    )
    val_feats = extract(
        features, spec.preprocess, size, paths(val), list(val["sha1"]), val_views, cache,
        batch, lambda d, n: emit(ProgressEvent("features", split="val", done=d, total=n)),
    )  # (m, val_views, features)
    t2 = time.perf_counter()
    emit(ProgressEvent("head"))
    y_train = train["label"].astype(int).to_numpy()
    y_val = val["label"].astype(int).to_numpy()
    inner = inner_slice(train["subject"], y_train, seed=config.seed) if config.stopping == "inner" else None
    head = training.train_head(train_feats, y_train, val_feats[:, 0], y_val, config, inner)
    training.install_head(classifier, head)
    history, best_epoch = head.history, head.best_epoch
    cv = crossval.run(store, key, train, train_feats, y_train, config, eval_views)  # None unless --split cv
    t3 = time.perf_counter()

    tuned_best = 0  # the fine-tuning epoch kept; 0 = the base is still the one the features came from
    if config.finetune:
        if runner is not classifier:
            training.install_head(runner, head)
        with runtime.scope(strategy):
            tuned, tuned_best = training.finetune(
                runner, head, spec.finetune_from, spec.preprocess, size, paths(train), y_train, paths(val), y_val,
                config, on_epoch=lambda e: emit(ProgressEvent("finetune", epoch=e, epochs=config.finetune_epochs)),
                replicas=replicas, inner=inner,
            )
        if runner is not classifier:  # the mixed twin's weights (float32 variables) into the float32 classifier
            classifier.set_weights(runner.get_weights())
        tuned["epoch"] += len(history)
        history = pd.concat([history.assign(stage="head"), tuned.assign(stage="finetune")], ignore_index=True)
        best_epoch = len(head.history) + tuned_best if tuned_best else best_epoch
    if tuned_best:
        emit(ProgressEvent("evaluate"))
        # The saved (float32) classifier itself is evaluated, whatever precision fine-tuned it.
        runtime.set_xla(classifier, config.xla)
        val_probs = training.predict_views(classifier, paths(val), size, spec.preprocess, eval_views, batch)
        train_probs = (training.predict_views(classifier, paths(train), size, spec.preprocess, eval_views, batch)
                       if fit_threshold else None)
    else:
        val_probs = head_probabilities(val_feats[:, :eval_views], head)  # (m, eval_views)
        train_probs = head_probabilities(train_feats[:, :eval_views], head) if fit_threshold else None
    t4 = time.perf_counter()

    prob = val_probs.mean(axis=1)  # P(ALL); with tta the mean over the orientations
    # The threshold comes from the training split's own predictions; validation labels never reach it.
    oof = cv[0]["prob_all"].to_numpy() if cv and not tuned_best else None  # (cv is of the head, not fine-tuning)
    threshold = choose_threshold(y_train, train_probs.mean(axis=1) if oof is None else oof) if fit_threshold else 0.5
    metrics = classification_metrics(y_val, prob, threshold)
    seconds = {"build": round(t1 - t0, 2), "features": round(t2 - t1, 2), "head": round(t3 - t2, 2)}
    if config.finetune:
        seconds["finetune"] = round(t4 - t3, 2)
    metrics.update(
        {
            "model": key,
            "name": spec.name,
            "input_size": size,
            "threshold_source": config.threshold + (" (out-of-fold)" if fit_threshold and oof is not None else ""),
            "best_epoch": best_epoch,
            "stopping": stopping_record(config.stopping, train["subject"], inner), **({"cv": cv[1]} if cv else {}),
            "epochs_run": int(len(history)),
            "n_train": int(len(train)),
            "n_val": int(len(val)),
            "seconds": seconds,
            "compute": {"dtype_policy": policy, "xla": config.xla, "replicas": replicas},
            "config_hash": config_hash,
        }
    )
    predictions = pd.DataFrame({"path": val["path"], "subject": val["subject"], "label": y_val, "prob_all": prob})
    emit(ProgressEvent("save"))
    store.write_model(key, metrics, predictions, history, lambda p: save_classifier(classifier, p))
    log.info(
        "%s: accuracy %.3f, AUC %s (%s val images)", spec.name, metrics["accuracy"],
        f"{metrics['roc_auc']:.3f}" if metrics["roc_auc"] is not None else "n/a", len(val),
    )
    del runner, features
    gc.collect()
    return classifier

