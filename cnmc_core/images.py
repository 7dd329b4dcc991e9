"""Decoding images and bringing them to a model's input form, the same way for training and prediction.

The whole 450x450 frame is resized (never cropped to the cell: ALL cells are larger, and the size
is part of the signal). Decoding is bounded: an image with more pixels than `MAX_PIXELS` is refused
from its header, before any pixel is decoded.

`DARK_LEVEL` says which pixels are the black background around a C-NMC cell. What a C-NMC-like frame
looks like (the out-of-distribution check) is ood.py.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # about 6300 x 6300; C-NMC frames have 202,500
MIN_SIDE = 8  # smaller than this is not a cell image
DARK_LEVEL = 40  # a pixel whose brightest channel is below this counts as black background (C-NMC: 0-10)
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
        with warnings.catch_warnings(), Image.open(fp) as img:
            warnings.simplefilter("ignore")  # PIL's warnings on odd EXIF or large frames: we decide below
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"{name}: {w}x{h} pixels is too large (limit {MAX_PIXELS:,} pixels), refused before decoding; "
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
        raise ImageError(f"{name}: not an image file this tool can open (use BMP, PNG, JPEG or TIFF)") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: refused before decoding: more than {2 * MAX_PIXELS:,} pixels (a decompression bomb?); "
            "crop the single cell first"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in text.lower():
            raise ImageError(f"{name}: the file is truncated (an incomplete download or copy?); {text}") from None
        raise ImageError(f"{name}: cannot be decoded ({text})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit frames are scaled by their container's range: 0-65535, or 0-4095 for 12-bit camera
        # data (nothing above 4095), or 0-255 for 8-bit data stored wide. Never stretched to the image's own max.
        a = np.asarray(img, dtype=np.float32)  # float32, not 64: bounded memory for large 16-bit frames
        peak = float(a.max()) if a.size else 0.0
        top = 65535.0 if peak > 4095 else 4095.0 if peak > 255 else 255.0
        return Image.fromarray((a / top * 255).round().astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    img.load()
    # `img` is already a copy (exif_transpose made it), so an RGB frame needs no second one.
    return img if img.mode == "RGB" else img.convert("RGB")


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
    Written into one float32 array by ufuncs computing in float32 (bitwise the same numbers as
    casting first): at 299 px this takes a tenth of the time of the cast-then-compute expression.
    """
    if mode not in ("caffe", "tf", "none"):
        raise ValueError(f"unknown preprocess mode {mode!r}; expected caffe, tf or none")
    x = np.empty(batch.shape, np.float32)
    if mode == "caffe":
        np.subtract(batch[..., ::-1], _CAFFE_MEAN, out=x, dtype=np.float32)
    elif mode == "tf":
        np.divide(batch, np.float32(127.5), out=x, dtype=np.float32)
        np.subtract(x, np.float32(1.0), out=x)
    else:
        x[...] = batch
    return x


_CAFFE_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # BGR


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
