"""Decoding images and bringing them to a model's input form, the same way for training and prediction.

The whole 450x450 frame is resized (never cropped to the cell: ALL cells are larger, and the size
is part of the signal). Decoding is bounded: an image with more pixels than `MAX_PIXELS` is refused
from its header, before any pixel is decoded.

`frame_statistics` and `unusual_frame_reasons` are the image half of the out-of-distribution check:
C-NMC frames hold one stained cell, centred, on black; a smear field, a photo or a blank frame does not.
"""

from __future__ import annotations

import io
import os
import warnings
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
        raise ImageError(f"{name}: not an image file PIL can read (BMP, PNG, JPEG, TIFF…)") from None
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


# --- the image half of the out-of-distribution check ------------------------------------------------
STATS_SIDE = 128  # frame statistics are computed on the whole frame resized to this side (fast, size-independent)
DARK_LEVEL = 40  # a pixel whose brightest channel is below this counts as black background (C-NMC: 0-10)
BORDER = 0.1  # the outer ring (this share of the side on each edge) must be background in a C-NMC frame
# Used when a study has no reference of its own (made before references existed): C-NMC-like frames.
DEFAULT_IMAGE_REFERENCE = {"background": [0.5, 0.97], "border_background": 0.97, "centre_offset": 0.05}


def frame_statistics(img: Image.Image) -> dict:
    """What makes a frame C-NMC-like, measured on the whole frame resized to STATS_SIDE.

    background: share of near-black pixels; border_background: the same on the outer ring;
    centre_offset: distance of the foreground's centroid from the centre, in frame sides;
    colour: mean RGB of the foreground (None without foreground); contrast: luminance std (0-255).
    """
    a = resize_frame(img, STATS_SIDE).astype(np.float32)  # (side, side, 3)
    dark = a.max(axis=-1) < DARK_LEVEL
    ring = np.ones_like(dark)
    b = max(1, int(round(STATS_SIDE * BORDER)))
    ring[b:-b, b:-b] = False
    fg = ~dark
    if fg.any():
        yy, xx = np.nonzero(fg)
        centre = (STATS_SIDE - 1) / 2
        offset = float(np.hypot(yy.mean() - centre, xx.mean() - centre) / STATS_SIDE)
        colour = [round(float(c), 1) for c in a[fg].mean(axis=0)]
    else:
        offset, colour = 0.0, None
    luminance = a @ np.array([0.299, 0.587, 0.114], np.float32)
    return {
        "background": round(float(dark.mean()), 4),
        "border_background": round(float(dark[ring].mean()), 4),
        "centre_offset": round(offset, 4),
        "colour": colour,
        "contrast": round(float(luminance.std()), 2),
    }


def image_reference(stats: list[dict]) -> dict:
    """The ranges of `frame_statistics` over training frames, widened by margins: what 'C-NMC-like' means here."""
    if not stats:
        return dict(DEFAULT_IMAGE_REFERENCE)
    bg = np.array([s["background"] for s in stats])
    border = np.array([s["border_background"] for s in stats])
    offset = np.array([s["centre_offset"] for s in stats])
    colours = np.array([s["colour"] for s in stats if s["colour"] is not None], dtype=np.float64).reshape(-1, 3)
    ref = {
        "n": len(stats),
        "background": [round(float(np.quantile(bg, 0.01)), 4), round(float(np.quantile(bg, 0.99)), 4)],
        "border_background": round(float(np.quantile(border, 0.01)), 4),
        "centre_offset": round(float(np.quantile(offset, 0.99)), 4),
    }
    if len(colours):
        tint = _tint(colours)
        ref["colour_mean"] = [round(float(c), 2) for c in colours.mean(axis=0)]
        ref["colour_std"] = [round(float(c), 2) for c in colours.std(axis=0)]
        ref["tint_mean"] = [round(float(c), 2) for c in tint.mean(axis=0)]
        ref["tint_std"] = [round(float(c), 2) for c in tint.std(axis=0)]
    return ref


def _tint(colours: np.ndarray) -> np.ndarray:
    """(n, 3) mean RGB -> (n, 2) R-G and B-G: the stain's hue, whatever the brightness."""
    colours = np.asarray(colours, dtype=np.float64).reshape(-1, 3)
    return np.stack([colours[:, 0] - colours[:, 1], colours[:, 2] - colours[:, 1]], axis=1)


def unusual_frame_reasons(stats: dict, reference: dict | None = None) -> list[str]:
    """Why a frame does not look like the training frames (empty list: it does), one phrase each.

    Margins around the reference ranges: background -0.15/+0.02, border -0.05 (and never below
    0.9), centre offset +0.07, foreground colour and tint (R-G, B-G) 4 standard deviations (each at least 10 levels).
    """
    ref = reference or DEFAULT_IMAGE_REFERENCE
    reasons = []
    if stats["contrast"] < 2.0:
        return ["the frame is one flat colour: there is no cell in it"]
    if stats["colour"] is None or stats["background"] > 0.995:
        return ["the frame is (almost) all black: no cell was found"]
    lo, hi = ref["background"]
    if stats["background"] < max(0.02, lo - 0.15):
        reasons.append(
            f"only {stats['background']:.0%} of the frame is black background (training cells: {lo:.0%}-{hi:.0%}): "
            "it looks like a smear field, a photo, or a crop without the black surround"
        )
    elif stats["background"] > min(0.995, hi + 0.02):
        reasons.append(f"the cell fills only {1 - stats['background']:.1%} of the frame, less than any training cell")
    if stats["border_background"] < min(0.9, ref["border_background"] - 0.05):
        reasons.append(
            f"the frame's edges are {1 - stats['border_background']:.0%} non-black: training frames show one cell alone on black"
        )
    if stats["centre_offset"] > ref["centre_offset"] + 0.07:
        reasons.append(f"the cell is off-centre by {stats['centre_offset']:.0%} of the frame; training cells are centred")
    if "colour_mean" in ref:
        mean = np.array(ref["colour_mean"] + ref["tint_mean"])
        std = np.maximum(np.array(ref["colour_std"] + ref["tint_std"]), 10.0)
        colour = np.array(stats["colour"])
        z = np.abs(np.concatenate([colour, _tint(colour)[0]]) - mean) / std
        if z.max() > 4.0:
            rgb = ", ".join(f"{c:.0f}" for c in stats["colour"])
            ref_rgb = ", ".join(f"{c:.0f}" for c in mean[:3])
            reasons.append(f"its colours (mean RGB {rgb}) are unlike the stained training cells (mean RGB {ref_rgb})")
    return reasons
