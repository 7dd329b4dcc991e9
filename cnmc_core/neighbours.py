"""Reference cells: the training cells nearest to an upload in one model's feature space, per class.

A review screen shows a cell beside cells of known class that look alike; here "alike" is what the model sees: its
pooled features (the HEAD_POOL layer, view 0), the same vectors the study cached for every training image
(features.py). The distance is Euclidean after standardising each feature by the training cells' spread (floored
at SCALE_FLOOR x the median spread, as ood.py does, so near-constant features cannot dominate); the search is exact:
scipy's cdist to every training cell of the class, then a stable sort (ties keep split.csv's order). One query per
page row: building a scikit-learn NearestNeighbors index each time measured slower (0.5 s against 13 ms for 534 cells
of 2,048 features) than this.

Only the study's cache is read, never recomputed: a study whose cache is gone (copied without `.cache/`, another
artifacts root) or whose base changed after the features were cached (fine-tuning) has no index, and
`load_index` says why in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from .features import FeatureCache
from .ood import SCALE_FLOOR
from .store import StudyStore

NEIGHBOURS = 3  # reference cells shown per class
CLASS_NAMES = {0: "HEM", 1: "ALL"}


@dataclass(frozen=True)
class Neighbour:
    path: str  # the training image's path as split.csv writes it (relative to the study's data folder)
    subject: str
    label: int  # 1 ALL, 0 HEM
    distance: float  # standardised Euclidean distance to the query


@dataclass
class FeatureIndex:
    """One model's training cells: their standardised features and who they are."""

    key: str
    paths: list[str]
    subjects: list[str]
    labels: np.ndarray  # int (n,): 1 ALL, 0 HEM
    mean: np.ndarray  # float64 (features,)
    scale: np.ndarray  # float64 (features,), floored
    z: np.ndarray  # float32 (n, features): (features - mean) / scale

    def standardise(self, feats: np.ndarray) -> np.ndarray:
        return ((np.asarray(feats, np.float64) - self.mean) / self.scale).astype(np.float32)

    def nearest(self, feats: np.ndarray, k: int = NEIGHBOURS) -> dict[str, list[Neighbour]]:
        """{"ALL": [...], "HEM": [...]}: the `k` training cells of each class nearest to `feats` (one pooled
        feature vector of this model), nearest first."""
        query = self.standardise(feats)[None]
        out = {}
        for label, name in sorted(CLASS_NAMES.items(), reverse=True):
            members = np.flatnonzero(self.labels == label)
            if not len(members):
                out[name] = []
                continue
            distances = cdist(query, self.z[members])[0]
            nearest = np.argsort(distances, kind="stable")[:k]
            out[name] = [Neighbour(self.paths[members[j]], self.subjects[members[j]], label, float(distances[j]))
                         for j in nearest]
        return out


def load_index(store: StudyStore, key: str, fingerprint: str, size: int) -> FeatureIndex | str:
    """The training cells of model `key` from the study's feature cache, which is keyed by the fingerprint of its
    base's weights (models.base_fingerprint) and its input size; or one line saying why there is none."""
    info = store.read_study()
    split = store.read_split()
    if "sha1" not in split:
        return "the study's split lists no checksums of its training cells"
    # A shared study is untrusted: only a real sha1 may name a cache file (never a path that leads elsewhere).
    train = split[(split["split"] == "train") & split["label"].astype(str).isin(("0", "1"))
                  & split["sha1"].astype(str).str.fullmatch(r"[0-9a-f]{40}")]
    if train.empty:
        return "the study's split lists no training cells with their checksums"
    policy = str((info.get("compute") or {}).get("dtype_policy") or "float32")
    cache = FeatureCache(store.feature_cache_root, key, fingerprint, int(size), policy)
    rows = [cache.get(str(s), 1) for s in train["sha1"]]
    have = [i for i, r in enumerate(rows) if r is not None]
    if len(have) < len(rows) // 2 or not have:
        return (f"the cached training features of {key} are not available here ({len(have)} of {len(rows)} found "
                "under the artifacts root's .cache/features; a study copied without them, or one whose base was "
                "fine-tuned after caching, has none): rerun the study's train command on this machine to cache them")
    kept = train.iloc[have]
    feats = np.concatenate([rows[i] for i in have]).astype(np.float64)  # (n, features), view 0
    mean, spread = feats.mean(axis=0), feats.std(axis=0)
    scale = np.maximum(spread, SCALE_FLOOR * max(float(np.median(spread)), 1e-12))
    return FeatureIndex(key, list(kept["path"].astype(str)), list(kept["subject"].astype(str)),
                        pd.to_numeric(kept["label"]).to_numpy(dtype=int), mean, scale,
                        ((feats - mean) / scale).astype(np.float32))
