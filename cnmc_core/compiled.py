"""Each model's compiled Grad-CAM pass (explain.GradcamPass) kept in a machine-local cache as a TensorFlow
SavedModel, so that a process serving a model it has served before loads it in about half the time: the seven demo
models in 10.0 s against 17.7 s, the same answers to the bit (`benchmarks/bench_compiled_load.py`,
docs/benchmarks.md section 5). With an entry, the Keras classifier itself is read from disk only when something
needs it (Grad-CAM++ and Score-CAM, which tf-keras-vis computes on the Keras model).

Trust. A SavedModel is an executable TensorFlow graph, so an entry is only ever read from this machine's cache
(`cache_root()`: $CNMC_COMPILED_CACHE, else $XDG_CACHE_HOME/cnmc_core/compiled, else ~/.cache/cnmc_core/compiled;
made by this user, who alone may enter it; a folder others can write to, such as /tmp, is never used), written by
this program from a classifier it loaded itself in Keras's safe mode, and found under the sha256 of the bytes of the
`model.keras` it was loaded from (with TensorFlow's and Keras's versions and the layers read): a study, shared or
not, can neither place an entry nor make one answer for another file. Nothing is ever read from or written to a
study folder. `CNMC_COMPILED_CACHE=off` turns the cache off.

An entry that cannot be loaded (cut short, made by another version) is deleted with one log line and the model
loads the ordinary way. The cache holds at most MAX_BYTES: after each save the least recently used entries go.

Hand-written because neither Keras nor TensorFlow keeps traced functions across processes; SavedModel is
TensorFlow's own format for a traced function with its variables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .disk import remove_stale_temp_files, write_json
from .explain import Explainer, GradcamPass, gradcam_layer
from .models import base_fingerprint

log = logging.getLogger(__name__)

ENV = "CNMC_COMPILED_CACHE"
OFF = ("0", "off", "no", "false", "none")
FORMAT = 1  # bump when what an entry holds changes: older entries are then never found
MAX_BYTES = 4 * 1024**3  # the demo's seven entries take 574 MB


def cache_root() -> Path | None:
    """The machine-local cache folder, or None when the cache is off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cnmc_core" / "compiled"


def _private(root: Path) -> bool:
    """The cache folder is this user's and no one else may write in it: else an entry could be planted there (a
    folder such as /tmp), and the cache is neither read nor written."""
    st = root.stat()
    if st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return True
    log.warning("compiled-pass cache %s not used: it must be a folder of this user that others cannot write to", root)
    return False


def _file_state(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def entry_key(model_file: Path, layer: str, extra: Sequence[str]) -> str:
    """The sha256 of the model file's bytes, the versions and the layers: the name of its cache entry."""
    import keras
    import tensorflow as tf

    h = hashlib.sha256()
    with open(model_file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps([FORMAT, tf.__version__, keras.__version__, layer, list(extra)]).encode())
    return h.hexdigest()


def load_pass(model_file: Path, layer: str, extra: Sequence[str], load_classifier: Callable[[Path], object]
              ) -> tuple[object | None, GradcamPass | SavedPass, str | None]:
    """One model's pass: (its Keras classifier, or None when the pass came from the cache and the classifier is
    left on disk; the pass; the key to cache a fresh pass under with `save`, or None). Raises what
    `load_classifier(model_file)` raises."""
    before = _file_state(model_file) if model_file.is_file() else None
    saved, key = load(model_file, layer, extra)
    if saved is not None:
        return None, saved, None
    classifier = load_classifier(model_file)
    gradcam_pass = GradcamPass(classifier, layer, extra_layers=extra)
    if key is not None and _file_state(model_file) != before:
        key = None  # the file was replaced while it was read: never cache one file's pass under another's bytes
    return classifier, gradcam_pass, key


class SavedPass:
    """A pass read from the cache, called as explain.GradcamPass is: preprocessed inputs (n, size, size, 3) ->
    (Grad-CAM maps before the ReLU, scores, [pooled features]). Also gives what the Keras model would: the input
    size, the map's layer and its channels, and the base's fingerprint (which keys the study's feature cache)."""

    def __init__(self, module, meta: dict, key: str):
        self._module = module  # (kept: the function's variables live as long as the module does)
        self.key = key
        self.size, self.layer = int(meta["size"]), str(meta["layer"])
        self.channels, self.fingerprint = int(meta["channels"]), str(meta["fingerprint"])

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        cams, scores, extra = self._module.run(np.asarray(x, dtype=np.float32))
        return cams.numpy(), scores.numpy(), [np.asarray(e) for e in extra]


def load(model_file: Path, layer: str, extra: Sequence[str]) -> tuple[SavedPass | None, str | None]:
    """(the cached pass of this model file, or None; the entry's key, or None when the cache is off or the file
    cannot be read). Never raises: a bad entry is deleted and None returned."""
    root = cache_root()
    if root is None:
        return None, None
    try:
        key = entry_key(model_file, layer, extra)
    except OSError:
        return None, None  # (the ordinary load says what is wrong with the file)
    if root.is_dir() and not _private(root):
        return None, None
    entry = root / key
    if not (entry / "meta.json").is_file():
        return None, key
    try:
        import tensorflow as tf

        meta = json.loads((entry / "meta.json").read_text())
        saved = SavedPass(tf.saved_model.load(str(entry / "saved")), meta, key)
        os.utime(entry)  # most recently used
        return saved, key
    except Exception as e:  # noqa: BLE001 - cut short, another version: the model loads the ordinary way
        log.warning("compiled-pass cache entry %s could not be read (%s); removed", key[:12], type(e).__name__)
        shutil.rmtree(entry, ignore_errors=True)
        return None, key


def save(gradcam_pass: GradcamPass, classifier, key: str, layer: str) -> bool:
    """Write `gradcam_pass` (already traced) of `classifier` as the entry `key`; then keep the cache under
    MAX_BYTES. Never raises: a failure is one log line (only speed is lost)."""
    root = cache_root()
    if root is None:
        return False
    entry = root / key
    if (entry / "meta.json").is_file():
        return True
    tmp = root / f".{key[:16]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # (disk.TEMP_RE: a killed save's is removed)
    try:
        import tensorflow as tf

        if not root.is_dir():
            root.mkdir(parents=True, mode=0o700)  # its owner's only: an entry is a graph that runs
        if not _private(root):
            return False
        remove_stale_temp_files(root)  # what saves killed midway left (an entry is hundreds of MB)
        module = tf.Module()
        module.run = gradcam_pass.function
        module.variables_kept = list(classifier.weights)
        tf.saved_model.save(module, str(tmp / "saved"))
        resolved = gradcam_layer(classifier, layer)
        write_json(tmp / "meta.json", {
            "format": FORMAT, "size": int(classifier.input_shape[1]), "layer": resolved.name,
            "channels": int(resolved.output.shape[-1]), "fingerprint": base_fingerprint(classifier),
        })
        os.rename(tmp, entry)  # whole or not at all (another process may have made it: then it stays)
    except Exception as e:  # noqa: BLE001
        log.warning("compiled pass not cached (%s: %s)", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    evict(root, MAX_BYTES)
    return True


def evict(root: Path, limit: int) -> list[str]:
    """Remove the least recently used entries until the cache holds at most `limit` bytes; returns the keys removed.
    (Saves in progress are left alone; what a killed save left is removed by `save`, remove_stale_temp_files.)"""
    entries = []
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue  # (a save in progress; one a killed process left is removed by the next save)
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        entries.append((entry.stat().st_mtime, size, entry))
    total, removed = sum(size for _, size, _ in entries), []
    for _, size, entry in sorted(entries):
        if total <= limit:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry.name)
    return removed


class LazyModels(dict):
    """key -> Keras classifier, where a model whose pass came from the cache is read from disk on first use.
    (A dict, so that keys, len and `in` need nothing loaded; values are read through __getitem__.)"""

    def __init__(self):
        super().__init__()
        self._loaders: dict[str, Callable[[], object]] = {}
        self._lock = threading.Lock()  # one Predictor serves every session of the dashboard

    def defer(self, key: str, loader: Callable[[], object]) -> None:
        super().__setitem__(key, None)
        self._loaders[key] = loader

    def loaded(self, key: str) -> bool:
        return super().get(key) is not None

    def __getitem__(self, key: str):
        if super().__getitem__(key) is None:
            with self._lock:
                if super().__getitem__(key) is None:
                    super().__setitem__(key, self._loaders.pop(key)())
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]


class SavedExplainer(Explainer):
    """An Explainer whose Grad-CAM is a SavedPass: its Keras classifier (for Grad-CAM++ and Score-CAM) is read
    from disk only when first needed."""

    def __init__(self, saved: SavedPass, preprocess_mode: str, load_classifier: Callable[[], object]):
        self._setup(saved.layer, saved.channels, saved.size, preprocess_mode, saved, load_classifier)
