"""Scanning a C-NMC folder into a table of images: path, subject, label, group, checksum, reason.

Three layouts are recognised (DESIGN.md): Kaggle (`training_data/fold_*`), TCIA
(`C-NMC_training_data/fold_*`, labels CSV inside the prelim folder) and fold-only copies. The
folder given may be the C-NMC root or any folder above it up to two levels. Every file found is
listed; unusable ones carry a `reason` and are excluded later, never silently dropped.

A file is read whole only after cheaper checks pass: it lies inside the data folder (a symbolic
link out of it is listed as excluded, never followed), it is at most `MAX_FILE_BYTES` (50 MB; a
C-NMC frame is about 600 kB) and its first bytes are those of a BMP, PNG, JPEG or TIFF file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .disk import write_json
from .images import ImageError, open_image

log = logging.getLogger(__name__)

ALL, HEM = 1, 0  # ALL (malignant) is the positive class, as in the challenge's labels CSV
LABEL_NAMES = {ALL: "ALL", HEM: "HEM"}
IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
IGNORED_NAMES = {"thumbs.db", ".ds_store", "desktop.ini"}
MAX_FILE_BYTES = 50 * 2**20  # per-file maximum: a larger file is excluded unread
IMAGE_MAGIC = (b"BM", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")  # BMP, PNG, JPEG, TIFF
NAME_RE = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.[a-z]+$", re.IGNORECASE)
LAYOUTS = (
    "Kaggle: training_data/fold_{0,1,2}/{all,hem}/*.bmp",
    "TCIA: C-NMC_training_data/fold_{0,1,2}/{all,hem}/*.bmp",
    "fold-only: fold_{0,1,2}/{all,hem}/*.bmp",
)


class DatasetError(ValueError):
    """The folder is not a usable C-NMC copy; the message says what was looked for."""


@dataclass
class ImageRecord:
    path: str  # relative to the C-NMC root, with forward slashes
    subject: str  # "11" and "H11" are different people
    label: int | None  # 1 = ALL, 0 = HEM, None = unlabelled (final test)
    group: str  # fold_0, fold_1, fold_2, prelim or final
    sha1: str = ""  # of the file's bytes; keys the feature cache and the fingerprint
    reason: str = ""  # non-empty: why this file cannot be used


@dataclass
class Scan:
    root: Path
    layout: str
    records: list[ImageRecord] = field(default_factory=list)

    @property
    def usable(self) -> list[ImageRecord]:
        return [r for r in self.records if not r.reason]

    @property
    def excluded(self) -> list[ImageRecord]:
        return [r for r in self.records if r.reason]

    def fingerprint(self) -> str:
        """sha1 over (path, checksum) of every file found: any file added, removed or edited changes it."""
        h = hashlib.sha1()
        for r in sorted(self.records, key=lambda r: r.path):
            h.update(f"{r.path}\0{r.sha1}\0{r.reason}\n".encode())
        return h.hexdigest()


def parse_name(name: str) -> tuple[str, int] | None:
    """'UID_H11_3_2_hem.bmp' -> ('H11', 0); None when the name does not follow C-NMC's scheme."""
    m = NAME_RE.match(name)
    if not m:
        return None
    subject, _, _, cls = m.groups()
    return subject.upper(), ALL if cls.lower() == "all" else HEM


def find_root(data_dir: str | Path) -> tuple[Path, str]:
    """The C-NMC root under `data_dir` and its layout name, or a DatasetError naming the layouts."""
    base = Path(data_dir).expanduser()
    if not base.exists():
        raise DatasetError(f"data folder {str(base)!r} does not exist; pass the C-NMC folder with --data")
    if not base.is_dir():
        raise DatasetError(
            f"{str(base)!r} is a file; pass the C-NMC folder (the one holding training_data) with --data")
    candidates = [base] + sorted(p for p in base.iterdir() if p.is_dir())
    candidates += sorted(q for p in candidates[1:] for q in p.iterdir() if q.is_dir())
    for root in candidates:
        if _folds(root / "training_data"):
            return root, "kaggle"
        if _folds(root / "C-NMC_training_data"):
            return root, "tcia"
        if _folds(root):
            return root, "folds"
    raise DatasetError(
        f"no C-NMC images found in {str(base)!r}; looked for the layouts "
        + "; ".join(LAYOUTS)
        + " (download C-NMC 2019, or run `python -m cnmc_core demo` for synthetic data)"
    )


def _folds(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("fold_*") if p.is_dir() and any((p / c).is_dir() for c in ("all", "hem")))


def scan(data_dir: str | Path, workers: int = 8, cache_dir: Path | None = None) -> Scan:
    """Find, label and check every image under a C-NMC folder. Never modifies the folder.

    Checking a file means reading it (its sha1) and decoding it. With `cache_dir`, the results of
    the last scan of this folder are kept there, and a file whose size and modification time are
    unchanged is not read again (as make and rsync decide); any other file is checked afresh.
    """
    root, layout = find_root(data_dir)
    real_root = root.resolve()
    cache = _ScanCache(cache_dir, root) if cache_dir is not None else None
    result = Scan(root=root, layout=layout)
    train_dir = {"kaggle": root / "training_data", "tcia": root / "C-NMC_training_data", "folds": root}[layout]
    files: list[tuple[Path, ImageRecord]] = []

    for fold in _folds(train_dir):
        for cls_dir in sorted(p for p in fold.iterdir() if p.is_dir()):
            for p in sorted(cls_dir.rglob("*")):
                if p.is_file():
                    files.append((p, _record_from_name(root, p, fold.name, cls_dir.name)))

    prelim = _find_prelim(root)
    if prelim:
        folder, labels_csv = prelim
        labels = _read_prelim_labels(labels_csv)
        for p in sorted(folder.iterdir()):
            if not p.is_file():
                continue
            rec = ImageRecord(_rel(root, p), subject="", label=None, group="prelim")
            if p.name in labels:
                rec.subject, rec.label = labels[p.name]
            elif p.name.lower() not in IGNORED_NAMES:
                rec.reason = f"not listed in {labels_csv.name}"
            files.append((p, rec))

    final = _find_dir(root, "C-NMC_test_final_phase_data")
    if final:
        for p in sorted(final.iterdir()):
            if p.is_file():
                files.append((p, ImageRecord(_rel(root, p), subject="", label=None, group="final")))

    def check(item: tuple[Path, ImageRecord]) -> ImageRecord:
        path, rec = item
        if path.name.lower() in IGNORED_NAMES:
            rec.reason = "system file (not an image)"
            return rec
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            rec.reason = f"not an image file ({path.suffix or 'no extension'})"
            return rec
        if not path.resolve().is_relative_to(real_root):
            rec.reason = "a symbolic link to a file outside the data folder (not followed)"
            return rec
        known = cache.lookup(rec.path, path) if cache else None
        if known is not None and (known[1] is not None or rec.reason):
            rec.sha1 = known[0]
            rec.reason = rec.reason or known[1]
            return rec
        try:
            problem = _precheck(path)
            if problem:
                rec.reason = rec.reason or problem
                if cache:
                    cache.remember(rec.path, "", problem)
                return rec
            data = path.read_bytes()
        except OSError as e:
            rec.reason = f"unreadable ({e.strerror or e})"
            return rec
        rec.sha1 = hashlib.sha1(data).hexdigest()
        if rec.reason:
            if cache:
                cache.remember(rec.path, rec.sha1, None)
            return rec
        try:
            open_image(data)
        except ImageError as e:
            rec.reason = str(e).split(": ", 1)[-1]
        if cache:
            cache.remember(rec.path, rec.sha1, rec.reason)
        return rec

    with ThreadPoolExecutor(max_workers=workers) as pool:
        result.records = list(pool.map(check, files))
    if cache:
        cache.save()

    for label in (ALL, HEM):
        if not any(r.label == label and r.group.startswith("fold") for r in result.usable):
            raise DatasetError(
                f"no usable {LABEL_NAMES[label]} training image in {str(train_dir)!r} "
                f"(expected fold_*/{LABEL_NAMES[label].lower()}/*.bmp); check the download"
            )
    log.info(
        "scanned %s (%s layout): %d images, %d excluded",
        root, layout, len(result.usable), len(result.excluded),
    )
    return result


def _precheck(path: Path) -> str:
    """Why `path` is not worth reading whole ('' when it is): too large, or not an image by its first bytes."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        return f"{size / 2**20:.0f} MB is over the per-file maximum of {MAX_FILE_BYTES // 2**20} MB (not read)"
    if size:  # (an empty file is read, and named empty by the decoder)
        with open(path, "rb") as f:
            head = f.read(8)
        if not head.startswith(IMAGE_MAGIC):
            return "not an image file (its first bytes are not those of a BMP, PNG, JPEG or TIFF file)"
    return ""


class _ScanCache:
    """What the last scan of one folder found per file: {path: [size, mtime_ns, sha1, decode problem]}.

    The decode problem is "" (decodes fine), a reason, or None (not decoded: its name was already
    a reason). One JSON file per folder, named by the folder's resolved path, replaced atomically.
    """

    VERSION = 1

    def __init__(self, cache_dir: Path, root: Path):
        self.root = str(root.resolve())
        self.file = Path(cache_dir) / f"{hashlib.sha1(self.root.encode()).hexdigest()[:16]}.json"
        self.old: dict[str, list] = {}  # the last scan's entries
        self.new: dict[str, list] = {}  # this scan's entries
        # (size, mtime) taken before reading a file, so that a change during the read shows next time
        self.stats: dict[str, tuple[int, int] | None] = {}
        try:
            saved = json.loads(self.file.read_text(encoding="utf-8"))
            if saved.get("version") == self.VERSION and saved.get("root") == self.root:
                self.old = saved["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            self.old = {}  # missing or unreadable: every file is checked

    @staticmethod
    def _stat(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def lookup(self, rel: str, path: Path) -> tuple[str, str | None] | None:
        """(sha1, decode problem) when `path` is unchanged since it was last checked; else None."""
        entry, stat = self.old.get(rel), self._stat(path)
        self.stats[rel] = stat
        if not isinstance(entry, list) or len(entry) != 4 or stat is None or tuple(entry[:2]) != stat:
            return None  # new, changed, or an entry that is not ours
        self.new[rel] = entry
        return entry[2], entry[3]

    def remember(self, rel: str, sha1: str, problem: str | None) -> None:
        stat = self.stats.get(rel)
        if stat is not None:
            self.new[rel] = [*stat, sha1, problem]

    def save(self) -> None:
        try:
            write_json(self.file, {"version": self.VERSION, "root": self.root, "files": self.new})
        except OSError as e:  # a cache: the scan's results stand without it
            log.warning("scan cache not saved (%s)", e.strerror or e)


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _record_from_name(root: Path, path: Path, fold: str, cls_dir: str) -> ImageRecord:
    rec = ImageRecord(_rel(root, path), subject="", label=None, group=fold)
    if path.name.lower() in IGNORED_NAMES:
        return rec
    parsed = parse_name(path.name)
    folder_label = {"all": ALL, "hem": HEM}.get(cls_dir.lower())
    if parsed is None:
        rec.reason = "file name does not follow UID_<subject>_<image>_<cell>_<all|hem>"
        rec.label = folder_label
    else:
        rec.subject, rec.label = parsed
        if folder_label is not None and folder_label != rec.label:
            rec.reason = f"name says {LABEL_NAMES[rec.label]} but the file is in the {cls_dir}/ folder"
    return rec


def _find_dir(root: Path, name: str) -> Path | None:
    for p in [root / "validation_data" / name, root / "testing_data" / name, root / name]:
        if p.is_dir():
            return p
    found = sorted(p for p in root.rglob(name) if p.is_dir())
    return found[0] if found else None


def _find_prelim(root: Path) -> tuple[Path, Path] | None:
    """The prelim image folder and its labels CSV (beside it in Kaggle, inside it in TCIA)."""
    folder = _find_dir(root, "C-NMC_test_prelim_phase_data")
    if folder is None:
        return None
    name = "C-NMC_test_prelim_phase_data_labels.csv"
    for csv_path in (folder.parent / name, folder / name):
        if csv_path.is_file():
            return folder, csv_path
    log.warning("prelim images found in %s but no %s; they are not used", folder, name)
    return None


def _read_prelim_labels(path: Path) -> dict[str, tuple[str, int]]:
    """new_names -> (subject, label) from the prelim labels CSV (Patient_ID,new_names,labels)."""
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"Patient_ID", "new_names", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(
                f"{path.name} lacks the column(s) {', '.join(sorted(missing))}; expected Patient_ID,new_names,labels")
        for row in reader:
            parsed = parse_name(row["Patient_ID"].strip())
            label = row["labels"].strip()
            if parsed is None or label not in ("0", "1"):
                continue
            out[row["new_names"].strip()] = (parsed[0], int(label))
    return out

