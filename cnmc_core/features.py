"""Pooled features of the frozen base, computed once per image and cached on disk.

With the base frozen (BatchNorm in inference mode) the base is a fixed function, so the features
of an image and of its rotations and mirrors never change: the head can train on them instead of
on images.

Views, in a fixed order (`orient`): view v is the image rotated by 90 degrees x (v // 2), then
mirrored left-right if v is odd. So view 0 is the image, view 1 its mirror (the paper's flip), and
views 0-7 are the eight symmetries of the square (a cell has no orientation).

Cache layout: `<cache>/<model>-<base sha1[:16]>-<size>px-v1[-<mixed policy>]/<sha1[:2]>/<sha1>.npy`,
each file an array (views, features) float32 holding views 0, 1, ... in that order; a file with
fewer views than asked is computed again with all of them. The key is the model, the exact base
weights, the input size, the precision and the image's content, so a changed file or other
weights can never pick up stale features. Files are written atomically (temp + rename): a killed
run leaves only complete files, and a rerun computes only what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .disk import atomic_path, read_npy
from .images import iter_batches, preprocess
from .runtime import forward

log = logging.getLogger(__name__)
CACHE_VERSION = "v1"  # bump when the image pipeline changes in a way that changes features
# One cached image is at most 8 views x 2,048 float32 features (64 kB) in every registry model; a larger file, or
# one whose header declares more than it holds, is taken for a missing entry, never read (shared studies).
MAX_ENTRY_BYTES = 1 * 2**20


def orient(batch: np.ndarray, view: int) -> np.ndarray:
    """View `view` (0-7) of a batch (n, h, w, channels): rot90 x (view // 2), then a mirror if odd."""
    out = np.rot90(batch, k=view // 2, axes=(1, 2))
    return out[:, :, ::-1] if view % 2 else out


class FeatureCache:
    def __init__(self, root: Path, model_key: str, base_sha1: str, input_size: int, policy: str = "float32"):
        # `policy`: the Keras dtype policy the base computed under; mixed-precision features are kept apart.
        suffix = "" if policy == "float32" else f"-{policy}"
        self.dir = Path(root) / f"{model_key}-{base_sha1[:16]}-{input_size}px-{CACHE_VERSION}{suffix}"

    def path(self, sha1: str) -> Path:
        return self.dir / sha1[:2] / f"{sha1}.npy"

    def get(self, sha1: str, views: int) -> np.ndarray | None:
        p = self.path(sha1)
        try:  # a shared study's cache is read by the pages (reference cells): checked like any study file
            arr = read_npy(p, limit=MAX_ENTRY_BYTES)
        except (OSError, ValueError):
            return None
        return arr[:views] if arr.ndim == 2 and arr.shape[0] >= views else None

    def put(self, sha1: str, feats: np.ndarray) -> None:
        # Not fsynced (durable=False): a cache entry lost to a power cut is only computed again.
        with atomic_path(self.path(sha1), durable=False) as tmp:
            np.save(tmp, feats.astype(np.float32), allow_pickle=False)


def _put_all(cache: FeatureCache, items: list[tuple[str, np.ndarray]]) -> None:
    for sha1, feats in items:
        cache.put(sha1, feats)


def extract(
    feature_model,
    preprocess_mode: str,
    input_size: int,
    paths: Sequence[str | Path],
    sha1s: Sequence[str],
    views: int,
    cache: FeatureCache,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Features of every image: array (n, views, features), views 0 .. views-1 of `orient` (1 to 8).

    Only images missing from the cache are decoded and run through the model, in batches whose
    decoding overlaps the forward pass. `progress(done, total)` is called after each batch.
    """
    if not 1 <= views <= 8:
        raise ValueError(f"views must be from 1 to 8; got {views}")
    n = len(paths)
    out: list[np.ndarray | None] = [cache.get(s, views) for s in sha1s]
    todo = [i for i in range(n) if out[i] is None]
    # Identical files (same sha1) are computed once.
    first_of: dict[str, int] = {}
    todo = [i for i in todo if first_of.setdefault(sha1s[i], i) == i]
    done = n - len(todo)
    if progress:
        progress(done, n)
    if todo:
        log.info("computing features of %d of %d images (%d cached)", len(todo), n, done)
    # Every forward pass has the same shape, 2 x batch_size images, so the model is traced once
    # (tracing a large model costs about as much as a few batches): a view and its mirror of
    # `batch_size` images, or with one view `2 x batch_size` images. The last batch is padded
    # with copies of its first image, whose outputs are dropped. (An odd number of views above
    # one would add a second shape; studies use 1, 2 or 8.)
    per_pass = min(views, 2)
    decode_size = 2 * batch_size // per_pass
    batches = iter_batches([paths[i] for i in todo], input_size, decode_size)
    # Cache files are written by one thread of their own while the next batch runs through the model.
    with ThreadPoolExecutor(max_workers=1) as writer:
        writes: list[Future] = []
        for start, batch in zip(range(0, len(todo), decode_size), batches):
            b = len(batch)  # uint8 (b, size, size, 3)
            if b < decode_size:
                batch = np.concatenate([batch, np.repeat(batch[:1], decode_size - b, axis=0)])
            parts = []
            for first in range(0, views, 2):
                x = np.concatenate([orient(batch, v) for v in range(first, min(first + 2, views))])
                parts.append(forward(feature_model, preprocess(x, preprocess_mode)))
            f = np.concatenate(parts)  # (views * decode_size, features), view-major
            chunk = todo[start:start + b]
            for j, i in enumerate(chunk):
                out[i] = f[j::decode_size]  # (views, features)
            writes.append(writer.submit(_put_all, cache, [(sha1s[i], out[i]) for i in chunk]))
            while writes and writes[0].done():
                writes.pop(0).result()  # a failed write (disk full) stops the run here
            done += b
            if progress:
                progress(done, n)
        for w in writes:
            w.result()
    for i in range(n):
        if out[i] is None:  # a duplicate of an image computed above
            out[i] = out[first_of[sha1s[i]]]
    return np.stack(out) if out else np.zeros((0, views, 0), np.float32)
