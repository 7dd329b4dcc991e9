"""Feature-space maps: what each frozen base makes of the cells, in two dimensions, with two honest numbers.

`project` takes the pooled features of the validation cells (the ones the study already caches) and returns a
`Projection`: a PCA map and a t-SNE map, each (cells, 2), plus for each map

- class separability: how well a k-nearest-neighbour vote on the map tells ALL from HEM in patients it never
  saw (subject-grouped cross-validation), and the silhouette by class;
- patient clustering: the share of each cell's nearest neighbours that come from the same patient (in the full
  feature space and on the map) against the share expected by chance, and the silhouette by patient.

Patient clustering is why every split here is by subject: when cells of one patient sit together, a random
image-level split puts a test cell's neighbours in the training set and flatters the model.

The study computes a projection once per model at its end (`build_projections`, a study-end hook) and keeps it
beside the model: the arrays (`to_arrays`, models/<key>/projection.npz) and a JSON of the scores with what the
maps were made from (the model's config hash, the cells, the feature-cache key); a page only reads them back
(`read_projection`). Maps whose model was retrained or whose cells changed are stale: not read, computed again.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import balanced_accuracy_score, silhouette_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .disk import read_json, read_npz, write_json, write_npz
from .features import FeatureCache, extract
from .models import base_fingerprint, feature_model, load_classifier
from .registry import MODELS, get_spec
from .store import PROJECTION_FILES, StudyStore

log = logging.getLogger(__name__)

METHODS = ("pca", "tsne")
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE"}
MAX_TSNE = 3000      # t-SNE cells at most: beyond this a stratified subsample keeps study time in minutes
NEIGHBOURS = 15      # k of the k-NN vote and of the same-patient neighbour share (fewer when cells are few)
CV_FOLDS = 5         # subject-grouped folds of the k-NN vote (fewer when subjects are few)
TSNE_INPUT_PCS = 50  # t-SNE runs on this many principal components, as scikit-learn advises for dense data
TSNE_ONE_THREAD_BELOW = 1000  # smaller maps run t-SNE on one thread (see _tsne)
MIN_CELLS = 10
SCORES_VERSION = 1

# One plain-words line per score, for the page and the report (keys of each method's block in `scores`).
CAPTIONS = {
    "knn_accuracy": "Class separability: a vote of each cell's nearest neighbours on this map, tested on patients "
                    "it never saw (balanced accuracy: 0.5 is chance, 1 is perfect).",
    "silhouette_class": "Silhouette by class: near 1 ALL and HEM form separate clumps, near 0 they overlap, "
                        "below 0 they are mixed.",
    "same_subject_share_map": "Patient clustering: the share of each cell's nearest neighbours on this map that "
                              "come from the same patient; far above chance, the map groups patients, not disease.",
    "same_subject_share_features": "The same share in the model's full feature space, before any flattening "
                                   "to 2-D.",
    "same_subject_chance": "The share expected by chance, from how many cells each patient has.",
    "silhouette_subject": "Silhouette by patient: above 0, each patient's cells huddle together on the map.",
}


@dataclass(frozen=True)
class Projection:
    """Maps of one model's pooled features, aligned row by row with the cells given to `project`."""

    coordinates: dict[str, np.ndarray]  # method -> (n, 2) float32; t-SNE rows outside its subsample are NaN
    labels: np.ndarray                  # (n,) int8, 1 = ALL, 0 = HEM
    subjects: np.ndarray                # (n,) str, the patient of each cell
    calls: np.ndarray                   # (n,) int8, the model's call (1 = ALL)
    scores: dict                        # JSON-able: seed, tsne_subsample, pca_variance, methods -> {score: value}

    @property
    def tsne_subsample(self) -> int | None:
        """How many cells the t-SNE map holds when it ran on a subsample; None when it holds them all."""
        return self.scores["tsne_subsample"]


def project(features: np.ndarray, labels, subjects, calls, seed: int = 0, max_tsne: int = MAX_TSNE) -> Projection:
    """PCA and t-SNE maps of `features` (n cells, d features) with their separability and clustering scores.

    `labels` and `calls` are (n,) 0/1 (1 = ALL), `subjects` (n,) patient ids. The same `seed` gives the same
    result. When n > `max_tsne`, t-SNE runs on a class-stratified subsample of `max_tsne` cells (the other rows
    of its map are NaN, and `tsne_subsample` says how many it holds); PCA always maps every cell.
    """
    features, labels, subjects, calls = _validated(features, labels, subjects, calls, seed, max_tsne)
    n = len(labels)
    # Standardise every feature first: pooled activations differ in scale by orders of magnitude between
    # channels, and PCA and t-SNE use Euclidean distances, so unscaled, a few loud channels would be the map.
    # (Channels that never fire have zero variance; StandardScaler leaves them at 0 instead of dividing by 0.)
    standardised = StandardScaler().fit_transform(features).astype(np.float32)  # (n, d)
    n_pcs = min(TSNE_INPUT_PCS, n, standardised.shape[1])
    pca = PCA(n_components=n_pcs, random_state=seed)
    components = pca.fit_transform(standardised).astype(np.float32)  # (n, n_pcs), the first two are the PCA map
    coordinates = {"pca": np.ascontiguousarray(components[:, :2])}

    subsample = stratified_subsample(labels, max_tsne, seed) if n > max_tsne else np.arange(n)
    if len(subsample) < n:
        log.info("t-SNE on a class-stratified subsample of %d of %d cells", len(subsample), n)
    # t-SNE on the leading principal components, not on thousands of raw features: the same neighbourhoods
    # minus the noise, and several times faster (scikit-learn's own advice for dense data).
    tsne_map = np.full((n, 2), np.nan, np.float32)
    tsne_map[subsample] = _tsne(components[subsample], seed)
    coordinates["tsne"] = tsne_map

    methods = {"pca": _scores(coordinates["pca"], standardised, labels, subjects)}
    methods["tsne"] = _scores(tsne_map[subsample], standardised[subsample], labels[subsample], subjects[subsample])
    ratio = pca.explained_variance_ratio_
    scores = {
        "version": SCORES_VERSION,
        "seed": int(seed),
        "tsne_subsample": int(len(subsample)) if len(subsample) < n else None,
        "pca_variance": [float(ratio[0]), float(ratio[1])],  # the share of the variance each PCA axis keeps
        "methods": methods,
    }
    return Projection(coordinates, labels, subjects, calls, scores)


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of about `size` cells with the class shares of `labels`; every class keeps one cell at least."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = size * counts / counts.sum()
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share)[: size - quota.sum()]] += 1  # the rounding left-over to the largest remainders
    quota = np.clip(quota, 1, counts)
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def _tsne(points: np.ndarray, seed: int) -> np.ndarray:
    """(m, 2) float32 t-SNE of `points` (m, p); perplexity lowered below m / 3 when cells are few."""
    perplexity = min(30.0, (len(points) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    # On a few hundred cells each of t-SNE's 1000 parallel gradient steps is too short to share out, and on a
    # busy machine OpenMP's waiting threads made it 5-10 times slower (2 s -> 25 s for 300 cells, measured).
    threads = 1 if len(points) < TSNE_ONE_THREAD_BELOW else None
    with threadpool_limits(limits=threads, user_api="openmp"):
        return tsne.fit_transform(points).astype(np.float32)


def _scores(coords: np.ndarray, standardised: np.ndarray, labels: np.ndarray, subjects: np.ndarray) -> dict:
    """The scores of one map `coords` (m, 2) of the cells whose standardised features are `standardised` (m, d)."""
    n, n_subjects = len(labels), len(np.unique(subjects))
    k = min(NEIGHBOURS, n - 1)
    knn_accuracy, folds, knn_k = _knn_accuracy(coords, labels, subjects)
    codes = np.unique(subjects, return_inverse=True)[1]
    sizes = np.bincount(codes)
    return {
        "n_cells": n,
        "n_subjects": n_subjects,
        "knn_accuracy": knn_accuracy,
        "knn_k": knn_k,
        "cv_folds": folds,
        "silhouette_class": _silhouette(coords, labels),
        "neighbours": k,
        "same_subject_share_map": _same_subject_share(coords, codes, k),
        "same_subject_share_features": _same_subject_share(standardised, codes, k),
        # A random other cell is from a cell's own patient with probability (n_s - 1) / (n - 1), averaged over
        # cells: about the sum of squared patient shares, exact for small studies too.
        "same_subject_chance": float((sizes * (sizes - 1)).sum() / (n * (n - 1))),
        "silhouette_subject": _silhouette(coords, codes),
    }


def _knn_accuracy(coords: np.ndarray, labels: np.ndarray, subjects: np.ndarray) -> tuple[float | None, int, int]:
    """Balanced accuracy of out-of-fold k-NN votes on the map, folds grouped by subject; (accuracy, folds, k).

    Grouping by subject makes it measure class, not patient: every cell is voted on by cells of other patients
    only, exactly as a new patient would be. Balanced accuracy keeps chance at 0.5 whatever the class balance
    (C-NMC holds two ALL cells per HEM cell). None when fewer than two subjects or classes leave nothing to test.
    """
    n_folds = min(CV_FOLDS, len(np.unique(subjects)))
    if n_folds < 2 or len(np.unique(labels)) < 2:
        return None, 0, 0
    folds = list(GroupKFold(n_splits=n_folds).split(coords, labels, groups=subjects))
    k = min(NEIGHBOURS, min(len(train) for train, _ in folds))
    predicted = cross_val_predict(KNeighborsClassifier(n_neighbors=k), coords, labels, cv=folds)
    return float(balanced_accuracy_score(labels, predicted)), n_folds, k


def _same_subject_share(points: np.ndarray, codes: np.ndarray, k: int) -> float:
    """Mean share of each cell's k nearest neighbours in `points` (itself excluded) from the same subject."""
    neighbours = NearestNeighbors(n_neighbors=k).fit(points).kneighbors(return_distance=False)  # (m, k)
    return float((codes[neighbours] == codes[:, None]).mean())


def _silhouette(points: np.ndarray, groups: np.ndarray) -> float | None:
    """scikit-learn's silhouette of `groups` on `points`; None where it is undefined (one group, or one per cell)."""
    if not 2 <= len(np.unique(groups)) <= len(groups) - 1:
        return None
    return float(silhouette_score(points, groups))


def to_arrays(projection: Projection) -> dict[str, np.ndarray]:
    """The projection's arrays for one .npz (no pickles); `projection.scores` goes to JSON beside it."""
    arrays = {f"coords_{method}": projection.coordinates[method] for method in METHODS}
    arrays.update(labels=projection.labels, subjects=projection.subjects.astype(str), calls=projection.calls)
    return arrays


def from_arrays(arrays: Mapping[str, np.ndarray], scores: Mapping) -> Projection:
    """A Projection back from `to_arrays`'s arrays (e.g. an opened .npz) and its `scores` (the JSON beside it)."""
    expected = {f"coords_{m}" for m in METHODS} | {"labels", "subjects", "calls"}
    missing = sorted(expected - set(arrays))
    if missing:
        raise ValueError(f"projection arrays lack {missing}: got {sorted(arrays)}; write them with to_arrays()")
    if not isinstance(scores, Mapping) or not {"tsne_subsample", "methods"} <= set(scores):
        raise ValueError("projection scores must be the JSON object of Projection.scores "
                         "(with 'tsne_subsample' and 'methods'); build the projection again")
    labels, subjects, calls = (np.asarray(arrays[name]) for name in ("labels", "subjects", "calls"))
    n = labels.shape[0] if labels.ndim == 1 else -1
    coordinates = {m: np.asarray(arrays[f"coords_{m}"], np.float32) for m in METHODS}
    expected_shapes = {"labels": (n,), "subjects": (n,), "calls": (n,), **{m: (n, 2) for m in METHODS}}
    shapes = {"labels": labels.shape, "subjects": subjects.shape, "calls": calls.shape,
              **{m: c.shape for m, c in coordinates.items()}}
    wrong = {name: shape for name, shape in shapes.items() if shape != expected_shapes[name]}
    if wrong:
        raise ValueError(f"projection arrays disagree with {n} labels: shapes {wrong}; build the projection again")
    return Projection(coordinates, labels.astype(np.int8), subjects.astype(str), calls.astype(np.int8), dict(scores))


def _validated(features, labels, subjects, calls, seed, max_tsne):
    """Arrays of the right shapes and types, or a ValueError saying what was wrong."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] < 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError("features must be a numeric array (cells, features) with 2 features at least; "
                         f"got {features.dtype} {features.shape}")
    n = features.shape[0]
    if n < MIN_CELLS:
        raise ValueError(f"a feature-space map needs at least {MIN_CELLS} cells; got {n}")
    if not np.isfinite(features).all():
        raise ValueError(f"features hold {int((~np.isfinite(features)).sum())} NaN or infinite values; "
                         "extract them again")
    out = []
    for name, values in (("labels", labels), ("calls", calls)):
        values = np.asarray(values)
        if values.shape != (n,) or not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be {n} values of 0 or 1 (1 = ALL), one per feature row; "
                             f"got shape {values.shape} with values {np.unique(values)[:5].tolist()}")
        out.append(values.astype(np.int8))
    subjects = np.asarray(subjects).astype(str)
    if subjects.shape != (n,):
        raise ValueError(f"subjects must hold one patient id per feature row ({n}); got shape {subjects.shape}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if isinstance(max_tsne, bool) or not isinstance(max_tsne, (int, np.integer)) or max_tsne < MIN_CELLS:
        raise ValueError(f"max_tsne must be an integer of at least {MIN_CELLS}; got {max_tsne!r}")
    if len(np.unique(out[0])) < 2:
        warnings.warn("every cell has the same class: class separability is undefined (None)", stacklevel=3)
    return features.astype(np.float32), out[0], subjects, out[1]


# ---- the study's maps: computed once at its end, kept beside each model, read by the pages --------------------

def cells_digest(paths) -> str:
    """sha1 of the cells' paths in order: the saved maps are current only for exactly these rows."""
    return hashlib.sha1("\n".join(map(str, paths)).encode()).hexdigest()


def read_projection(store: StudyStore, key: str, config_hash: str | None, paths) -> Projection | None:
    """Model `key`'s saved maps when they were made from this model (`config_hash`) and these cells (`paths`, the
    rows of its predictions.csv, in order); None when there are none, or they are stale or unreadable."""
    arrays_file, info_file = (store.model_file(key, name) for name in PROJECTION_FILES)
    try:
        info = read_json(info_file)
        current = (isinstance(info, dict) and info.get("version") == SCORES_VERSION
                   and info.get("config_hash") == config_hash and info.get("cells") == cells_digest(paths))
        return from_arrays(read_npz(arrays_file), info.get("scores")) if current else None
    except (OSError, ValueError):  # (a symlink out of the study is a StoreError, a ValueError: refused, as none)
        return None


def build_projections(store: StudyStore, load: Callable[[str], object] | None = None, data_root: Path | None = None,
                      keys: list[str] | None = None, max_tsne: int = MAX_TSNE) -> dict[str, str]:
    """The study-end hook: compute and save the maps of each complete model whose saved maps are missing or stale.

    Features come from the study's feature cache; cells missing from it are computed from the images under
    `data_root` (none are read when it is None). `load(key)` gives a model's classifier (default: from disk).
    Returns {key: ""} for each model mapped now, {key: why not} for each that could not be; current maps are kept.
    """
    info = store.read_study()
    keys = keys or [k for k in info.get("models", []) if k in MODELS and store.model_complete(k)]
    split = store.read_split()
    sha1_of = dict(zip(split["path"].astype(str), split["sha1"].astype(str))) if "sha1" in split else {}
    seed = info.get("seed") if isinstance(info.get("seed"), int) else 0
    done = {}
    for key in keys:
        metrics, predictions = store.read_metrics(key), store.read_predictions(key)
        paths = predictions["path"].astype(str).tolist()
        if read_projection(store, key, metrics.get("config_hash"), paths) is not None:
            continue
        try:
            features, cache_key = _validation_features(store, key, metrics, paths, sha1_of, load, data_root)
            calls = (predictions["prob_all"].to_numpy() >= float(metrics.get("threshold", 0.5))).astype(int)
            projection = project(features, predictions["label"].astype(int).to_numpy(),
                                 predictions["subject"].astype(str).to_numpy(), calls, seed=seed, max_tsne=max_tsne)
        except ValueError as e:
            done[key] = str(e).splitlines()[0]
            log.warning("%s: no feature-space maps (%s)", key, done[key])
            continue
        save_projection(store, key, projection, metrics.get("config_hash"), paths, cache_key)
        done[key] = ""
    return done


def save_projection(store: StudyStore, key: str, projection: Projection, config_hash: str | None, paths,
                    features_key: str) -> None:
    """Model `key`'s maps of the cells `paths`: the arrays first, then the JSON of the scores and of what they were
    made from (its presence marks the maps complete, so a crash between the two leaves no maps, never half)."""
    arrays_file, info_file = (store.model_file(key, name) for name in PROJECTION_FILES)
    info_file.unlink(missing_ok=True)
    write_npz(arrays_file, **to_arrays(projection))
    write_json(info_file, {"version": SCORES_VERSION, "config_hash": config_hash, "cells": cells_digest(paths),
                           "features": features_key, "scores": projection.scores})


def _validation_features(store: StudyStore, key: str, metrics: dict, paths: list[str], sha1_of: dict,
                         load, data_root: Path | None) -> tuple[np.ndarray, str]:
    """(pooled features (n, d) of view 0 of each cell, the feature-cache folder they come from).

    From the cache the study filled (under its precision), else the float32 cache, computing what it lacks.
    """
    spec = get_spec(key)
    sha1s = [sha1_of.get(p) for p in paths]
    if None in sha1s:
        raise ValueError(f"split.csv gives no checksum for {sha1s.count(None)} of {len(paths)} validation cells; "
                         "rerun the study's command")
    classifier = load(key) if load else load_classifier(store.model_file(key, "model.keras"))
    size, fingerprint = int(metrics.get("input_size") or spec.input_size), base_fingerprint(classifier)
    policy = (metrics.get("compute") or {}).get("dtype_policy", "float32")
    for name in dict.fromkeys((policy if isinstance(policy, str) else "float32", "float32")):
        cache = FeatureCache(store.feature_cache_root, key, fingerprint, size, name)
        cached = [cache.get(s, 1) for s in sha1s]  # (1, d) each: view 0, the cell as it is
        if all(c is not None for c in cached):
            return np.concatenate(cached), cache.dir.name
    missing = sum(c is None for c in cached)
    if data_root is None:
        raise ValueError(f"the features of {missing} of {len(paths)} validation cells are not cached here, and "
                         "their images are not available to compute them")
    folder = Path(data_root).resolve()
    files = [(folder / p).resolve() for p in paths]
    if not all(f.is_relative_to(folder) for f in files):  # a shared study's paths must stay in the data folder
        raise ValueError(f"predictions.csv of {key} names files outside the data folder; refusing to read them")
    features = extract(feature_model(classifier), spec.preprocess, size, files, sha1s, 1, cache)
    return features[:, 0], cache.dir.name
