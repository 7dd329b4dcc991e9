"""Cell images for the pages (the cells behind a confusion-matrix quadrant, the Dataset samples), read
only from a data folder that this machine's user chose.

A study names its images by paths relative to the folder it was trained from (split.csv,
predictions.csv), and study.json says where that folder was (`data.path`). A study handed over by
someone else can say anything there, so that folder is a hint, never a permission: an image is read
only when its real path (symlinks resolved) lies inside a trusted data folder (`store.trusted_data_roots`:
the folders studies were trained from on this machine, recorded outside every study, and those listed in
$CNMC_DATA_ROOTS). Images are decoded by `images.open_image`, the bounded decoder used for uploads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from ..images import ImageError, open_image
from ..store import DATA_ROOTS_ENV, StudyStore, trusted_data_roots
from .base import StudyData, section

THUMBNAIL_SIDE = 128  # pixels, square: the whole frame shrunk (never cropped)
TRUST_SETTING = DATA_ROOTS_ENV  # the setting a person adds their data folder to (pages name it)


@dataclass
class ImageSource:
    available: bool  # a trusted data folder is there, so thumbnails can be drawn
    hint: str  # the data folder study.json names: text for a person (from the study: show it literally)


def image_source(data: StudyData) -> ImageSource:
    """Whether the study's cell images can be shown here, and where the study says they were."""
    return ImageSource(bool(_data_folders(data.root, data.info)), str(section(data.info, "data").get("path") or ""))


def thumbnail(stamp: tuple, image: str, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A PNG of one of the study's images, `side` px square. `stamp`: the study's (base.stamp: root and name
    first); `image`: the image's path as split.csv writes it (the row's identity).

    None when the image is not inside a trusted data folder, is missing, or cannot be decoded.
    """
    root, name = stamp[0], stamp[1]
    try:
        info = StudyStore(root, name).read_study()
    except (OSError, ValueError):
        return None
    path = _image_file(root, info, image)
    if path is None:
        return None
    try:
        img = open_image(path)
    except (ImageError, OSError):
        return None
    out = io.BytesIO()
    img.resize((side, side), Image.BILINEAR).save(out, format="PNG")
    return out.getvalue()


def _trusted(root: str) -> list[Path]:
    return [folder for folder in trusted_data_roots(root) if folder.is_dir()]


def _data_folders(root: str, info: dict) -> list[Path]:
    """Where a study's relative image paths may be found, most likely first: the folder study.json names
    (only when it lies inside a trusted folder), then each trusted folder itself (a copy of the data)."""
    trusted = _trusted(root)
    hint = section(info, "data").get("path")
    folders = []
    if isinstance(hint, str) and hint:
        try:
            named = Path(hint).expanduser().resolve()
        except (OSError, RuntimeError):  # a symlink loop
            named = None
        if named is not None and named.is_dir() and any(named.is_relative_to(t) for t in trusted):
            folders.append(named)
    return folders + [t for t in trusted if t not in folders]


def _image_file(root: str, info: dict, image: str) -> Path | None:
    """The real file behind one relative image path of a study, or None when it is not inside a trusted folder."""
    relative = PurePosixPath(str(image))
    if not str(image) or relative.is_absolute() or ".." in relative.parts:
        return None
    trusted = _trusted(root)
    for folder in _data_folders(root, info):
        try:
            candidate = (folder / relative).resolve()
        except (OSError, RuntimeError):
            continue
        if any(candidate.is_relative_to(t) for t in trusted) and candidate.is_file():
            return candidate
    return None
