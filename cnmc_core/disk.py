"""File-system primitives the store builds on: atomic writes, pid checks, folder locks. No layout here.

Every file this package writes goes through `atomic_path`: written under a temp name beside the
target, then renamed over it, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# A temp file beside its target: .<name>.<pid>.<random>.tmp[<suffix>] (mkstemp's names of earlier versions match too).
TEMP_RE = re.compile(r"\..+\.(\d+)\.[0-9a-z_]+\.tmp(\.[^.]*)?")
LOCK_NAME = ".lock"


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """A fresh temp path beside `path` to write to; when the block ends well, it replaces `path`.

    The temp name holds the pid and a random part, so concurrent writers never share one, and keeps
    the suffix (Keras, NumPy and PIL look at it). `durable`: fsync before the rename, so a power cut
    leaves the old file or the new one; caches that can be recomputed skip it for speed (the rename
    alone already means a killed process never leaves a half file). On failure the temp file goes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, write: Callable[[Any], None]) -> None:
    """Atomically write a UTF-8 text file through `write(file)` (newlines as given)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        write(f)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=str))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, lambda f: frame.to_csv(f, index=False))


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())


# A file read whole (JSON, CSV, .npy, and an .npz once unpacked) is at most this large. A study's own files are far
# smaller (a C-NMC-sized study's largest, predictions.csv, is about 1.3 MB); a larger one in a shared study would
# only take the reader's memory, so it is refused unread. (A feature-cache entry has its own, smaller bound.)
MAX_READ_BYTES = 256 * 2**20


def check_size(path: Path, limit: int = MAX_READ_BYTES) -> Path:
    """`path`, or ValueError with one line when the file is larger than `limit` bytes (nothing is read)."""
    size = os.stat(path).st_size
    if size > limit:
        raise ValueError(f"{size / 2**20:,.0f} MB is over the {limit / 2**20:,.0f} MB a study file may be; not read")
    return path


def read_json(path: Path) -> Any:
    with open(check_size(path), encoding="utf-8") as f:
        return json.load(f)


def _check_npy_header(f, holds: int, name: str) -> None:
    """Read an .npy header from `f` (at its start): ValueError unless it declares at most `holds` bytes of array.
    Else numpy allocates what the header says before it finds the data missing (a MemoryError, not a ValueError)."""
    try:
        version = np.lib.format.read_magic(f)  # 1.0 (what numpy writes) or 2.0; 3.0 is refused
    except ValueError:  # another kind of file (an .npz under an .npy's name, noise)
        raise ValueError(f"{name} is not an .npy (one array); not read") from None
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    read_header = headers.get(version)
    if read_header is None:
        raise ValueError(f"{name} has .npy format {version}; not read")
    shape, _, dtype = read_header(f)
    declared = math.prod(int(n) for n in shape) * dtype.itemsize  # (Python ints: no overflow)
    if declared > holds:
        raise ValueError(f"{name} declares {declared:,} bytes but holds {holds:,}; not read")


def read_npy(path: Path, limit: int = MAX_READ_BYTES) -> np.ndarray:
    """One array from an .npy (no pickles), at most `limit` bytes; ValueError, with one line, for anything else."""
    size = os.stat(check_size(path, limit)).st_size
    with open(path, "rb") as f:
        _check_npy_header(f, size, "it")
    return np.load(path, allow_pickle=False)


def read_npz(path: Path, limit: int = MAX_READ_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an .npz (no pickles). An .npz is a zip: a small file can unpack to gigabytes, and a member's
    header can declare an array larger than the member. So, before any array is read: the members' unpacked sizes
    (from the zip's directory; zipfile never unpacks a member beyond its size) add up to at most `limit`, and each
    member's header declares no more bytes than the member holds. Else ValueError, with one line."""
    if not zipfile.is_zipfile(check_size(path, limit)):  # (np.load would take an .npy for one, or call it a pickle)
        raise ValueError("it is not an .npz (a zip of arrays); not read")
    with np.load(path, allow_pickle=False) as z:
        members = z.zip.infolist()
        unpacked = sum(m.file_size for m in members)
        if unpacked > limit:
            raise ValueError(f"it unpacks to {unpacked / 2**20:,.0f} MB, over the {limit / 2**20:,.0f} MB a study "
                             "file may be; not read")
        for member in members:
            with z.zip.open(member) as f:
                _check_npy_header(f, member.file_size, f"its array {member.filename!r}")
        return {k: z[k] for k in z.files}


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files and folders (`TEMP_RE`: `.<name>.<pid>.<random>.tmp*`) left by processes that no longer
    run."""
    removed = 0
    for p in sorted(folder.rglob(".*.tmp*")) if folder.is_dir() else []:  # (a list: folders go while it is read)
        match = TEMP_RE.fullmatch(p.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an OS lock on `lock_file` for the block, waiting for it: for short read-modify-writes."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remember_folder(file: Path, folder: str | Path) -> None:
    """Add `folder` (resolved) to the JSON list of folders in `file`, under a lock (writers may run at once)."""
    resolved = str(Path(folder).resolve())
    with exclusive(file.with_name(f".{file.name}.lock")):
        known = [str(p) for p in remembered_folders(file)]
        if resolved not in known:
            write_json(file, {"folders": known + [resolved]})


def remembered_folders(file: Path) -> list[Path]:
    """The folders `remember_folder` recorded in `file` (none when it is missing or unreadable)."""
    try:
        folders = read_json(file)["folders"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s cannot be read (%s); it is ignored", file, type(e).__name__)
        return []
    if not isinstance(folders, list):
        log.warning("%s holds no list of folders; it is ignored", file)
        return []
    return [Path(f) for f in folders if isinstance(f, str) and Path(f).is_absolute()]


class FolderBusy(ValueError):
    """Another process holds the folder's lock: `holder` is {"pid", "since"} as it wrote them."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class FolderLock:
    """One writer per folder: an OS lock (flock) on `<folder>/.lock`, which holds the writer's pid and start time.

    Never waits: a second writer gets `FolderBusy`, with `busy_message` filled in ({pid}, {since}).
    The kernel drops the lock when its process dies, so a `.lock` left by a killed run is taken over,
    with a note in the log. Re-entrant within one thread (a writer calling another writer); another
    thread of the same process is a second writer like any other. On release the file is removed, and so is
    the folder if this lock created it and it is still empty (a run that failed before writing
    anything leaves nothing behind).
    """

    _depth: dict[tuple[Path, int], int] = {}  # (lock file, thread) -> how many times that thread holds it

    def __init__(self, folder: Path, busy_message: str = "{folder} is locked by process {pid} since {since}"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.busy_message = busy_message
        self.fd: int | None = None
        self.created_folder = False

    def __enter__(self) -> FolderLock:
        key = (self.path.absolute(), threading.get_ident())
        if key in FolderLock._depth:
            FolderLock._depth[key] += 1
            return self
        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                message = self.busy_message.format(folder=self.folder, pid=holder.get("pid", "(unknown)"),
                                                   since=holder.get("since", "(unknown)"))
                raise FolderBusy(message, holder) from None
            try:  # the previous holder may have removed the file between our open and flock: then again
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        old = _read_holder(fd)
        if old.get("pid") not in (None, os.getpid()):
            log.warning("%s: taking over the lock of process %s (since %s), which no longer runs",
                        self.folder.name, old.get("pid"), old.get("since", "?"))
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since}).encode(), 0)
        self.fd = fd
        FolderLock._depth[key] = 1
        return self

    def __exit__(self, *exc) -> None:
        key = (self.path.absolute(), threading.get_ident())
        FolderLock._depth[key] -= 1
        if FolderLock._depth[key]:
            return
        del FolderLock._depth[key]
        self.path.unlink(missing_ok=True)  # while still locked: a waiting opener's inode check sees it
        os.close(self.fd)
        self.fd = None
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_holder(folder: Path) -> dict | None:
    """{"pid", "since"} of the live process holding `folder`'s lock, or None. Takes no lock itself."""
    try:
        holder = json.loads((Path(folder) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    pid = holder.get("pid") if isinstance(holder, dict) else None
    return holder if isinstance(pid, int) and pid_alive(pid) else None
