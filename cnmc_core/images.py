"""Decoding images and bringing them to a model's input form, the same way for training and prediction.

The whole 450x450 frame is resized (never cropped to the cell: ALL cells are larger, and the size
is part of the signal). Decoding is bounded: an image with more pixels than `MAX_PIXELS` is refused
from its header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; C-NMC frames have 202,500
MIN_SIDE = 8  # smaller than this is not a cell image
# open_image checks the header against MAX_PIXELS itself, with a clearer message than PIL's warning.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(ValueError):
    """An input that cannot be used as an image; the message is one line for a person."""


def open_image(source: str | Path | bytes) -> Image.Image:
    """Decode `source` (a path or the file's bytes) to an RGB PIL image, bounded in pixels.

    Handles what real files carry: EXIF rotation, alpha (composited on black, like the C-NMC
    background), palettes, grayscale, 16-bit and CMYK; an animated file gives its first frame.
    """
    name = Path(source).name if isinstance(source, (str, Path)) else "upload"
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageError(f"{name}: the file is empty")
            fp = io.BytesIO(source)
        else:
            if os.path.getsize(source) == 0:
                raise ImageError(f"{name}: the file is empty")
            fp = source
        with Image.open(fp) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"{name}: {w}x{h} pixels is too large (limit {MAX_PIXELS:,} pixels); "
                    "crop the single cell first"
                )
            if min(w, h) < MIN_SIDE:
                raise ImageError(f"{name}: {w}x{h} pixels is too small to hold a cell (need {MIN_SIDE}+ a side)")
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read (BMP, PNG, JPEG, TIFF…)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: cannot be decoded ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = a.max() if a.max() > 255 else 255.0
        return Image.fromarray((a / top * 255).round().astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    img.load()
    return img.convert("RGB")


def resize_frame(img: Image.Image, size: int) -> np.ndarray:
    """The whole frame to (size, size, 3) uint8, bilinear with antialiasing."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_for_model(source: str | Path | bytes, size: int) -> np.ndarray:
    """Decode and resize: uint8 array of shape (size, size, 3), RGB, before preprocess_input."""
    return resize_frame(open_image(source), size)


def preprocess(batch: np.ndarray, mode: str) -> np.ndarray:
    """A float32 copy of an RGB 0-255 batch (n, h, w, 3) in the form the model wants.

    caffe: RGB->BGR and ImageNet channel means subtracted (VGG, ResNet);
    tf: scaled to [-1, 1] (Inception, Xception); none: 0-255 as is (EfficientNet scales inside).
    """
    x = batch.astype(np.float32)
    if mode == "caffe":
        x = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
        return np.ascontiguousarray(x)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "none":
        return x
    raise ValueError(f"unknown preprocess mode {mode!r}; expected caffe, tf or none")


def iter_batches(
    paths: Iterable[str | Path], size: int, batch_size: int, workers: int | None = None
) -> Iterator[np.ndarray]:
    """Decode and resize images in a thread pool, yielding uint8 batches (n, size, size, 3) in order.

    Decoding of the next batches overlaps with whatever the caller does with this one (prefetch).
    """
    paths = list(paths)
    workers = workers or max(2, min(8, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        ahead = 2
        for i, chunk in enumerate(chunks):
            pending.append(pool.map(lambda p: load_for_model(p, size), chunk))
            if i >= ahead:
                yield np.stack(list(pending.pop(0)))
        for futures in pending:
            yield np.stack(list(futures))
