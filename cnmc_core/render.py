"""Turning heatmaps into pictures: the colour map, overlays on the cell, colour scales, shrinking, PNG bytes.

Heatmaps come in as float (H, W) in [0, 1] in the image's coordinates (what `explain` gives); 1 is
the strongest evidence. Colours are matplotlib's magma (black = none, pale yellow = strongest): one
that rises evenly in lightness, never a rainbow (issue 14). An overlay tints each pixel in proportion
to its evidence, so where there is none the cell shows as it is. A flat map (the same value everywhere:
the score does not change with position) is never painted as one solid colour: `overlay` shows the
cell alone, marked as such (`is_flat`, `FLAT_NOTE`).

This module only draws: it computes no heatmap (explain.py) and reads or writes no file (store.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_OPACITY = 0.45  # the heatmap's share of an overlay's colour, unless the user picks another


# matplotlib's magma at ten even steps (as plotly.colors.sequential.Magma lists it), written out so that
# drawing needs neither library; `_magma_lut` interpolates them to 256 levels.
MAGMA_STOPS = ("#000004", "#180f3d", "#440f76", "#721f81", "#9e2f7f", "#cd4071", "#f1605d", "#fd9668", "#feca8d",
               "#fcfdbf")
FLAT_STD = 1e-3  # a heatmap whose standard deviation is below this is flat: it localises nothing
FLAT_NOTE = "no localisable evidence: the score does not change with position"


def _magma_lut() -> np.ndarray:
    """(256, 3) uint8, black (0) to pale yellow (1)."""
    stops = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in MAGMA_STOPS], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(stops))
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, at, stops[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


MAGMA = _magma_lut()


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W, 3) magma colours."""
    return MAGMA[(np.clip(heatmap, 0, 1) * 255).round().astype(np.uint8)]


def is_flat(heatmap: np.ndarray) -> bool:
    """True when the map is (nearly) the same everywhere, e.g. a Grad-CAM of exactly 1.0 at every pixel on a
    saturated cell, or all zeros: it says nothing about where the evidence is."""
    return bool(np.nanstd(np.asarray(heatmap, dtype=np.float64)) < FLAT_STD)


def flat_note(p_all: float | None = None) -> str:
    """FLAT_NOTE, with the model's P(ALL) when known: what to show instead of a flat map."""
    return FLAT_NOTE + (f" (P(ALL) {p_all:.3f})" if p_all is not None else "")


def overlay(
    img: Image.Image, heatmap: np.ndarray, opacity: float = DEFAULT_OPACITY, colour_scale: bool = True
) -> Image.Image:
    """The heatmap in magma colours over the cell: each pixel takes `opacity` x its evidence of the colour
    (0 = cell only; at 1 the strongest pixels are pure colour), so pixels without evidence keep the cell's own.

    With `colour_scale`, a bar on the right shows which colour means low and high evidence. A flat map
    (`is_flat`) is not drawn: the cell alone, with FLAT_NOTE written on it when there is room.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1; got {opacity}")
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    if heatmap.shape != base.shape[:2]:
        raise ValueError(
            f"heatmap shape {heatmap.shape} does not match the image's {base.shape[:2]}; "
            "resize it with to_image_size"
        )
    if is_flat(heatmap) and opacity > 0:
        return _flat(img.convert("RGB"))
    alpha = opacity * np.clip(heatmap, 0, 1)[..., None].astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * colorize(heatmap).astype(np.float32)
    out = Image.fromarray(blended.round().astype(np.uint8))
    return with_colour_scale(out) if colour_scale else out


def _flat(img: Image.Image) -> Image.Image:
    """The cell alone, with 'flat map: no localisable evidence' along its bottom when it is at least 120 px wide."""
    out = img.copy()
    w, h = out.size
    if w >= 120:
        font = ImageFont.load_default(size=max(9, min(16, w // 22)))
        draw = ImageDraw.Draw(out)
        draw.rectangle((0, h - font.size - 6, w, h), fill=(255, 255, 255))
        draw.text((w // 2, h - 3), "flat map: no localisable evidence", fill=(0, 0, 0), font=font, anchor="md")
    return out


def with_colour_scale(img: Image.Image) -> Image.Image:
    """`img` with a vertical magma bar (high at the top) and its labels on the right."""
    w, h = img.size
    font_size = max(9, min(24, h // 18))
    font = ImageFont.load_default(size=font_size)
    bar_w = max(8, w // 28)
    label_w = int(font_size * 2.6)
    pad = max(4, w // 60)
    canvas = Image.new("RGB", (w + pad + bar_w + pad + label_w, h), (255, 255, 255))
    canvas.paste(img, (0, 0))
    top, bottom = font_size // 2 + 1, h - font_size // 2 - 1
    ramp = colorize(np.linspace(1.0, 0.0, max(1, bottom - top))[:, None].repeat(bar_w, axis=1))
    canvas.paste(Image.fromarray(ramp), (w + pad, top))
    draw = ImageDraw.Draw(canvas)
    x = w + pad + bar_w + 3
    draw.text((x, top), "high", fill=(0, 0, 0), font=font, anchor="lm")
    draw.text((x, bottom), "low", fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def colour_bar(width: int = 320, height: int = 16) -> Image.Image:
    """A horizontal legend of the heatmap colours: 'no evidence' on the left, 'strongest' on the right."""
    font = ImageFont.load_default(size=12)
    label_w = 92
    canvas = Image.new("RGB", (width + 2 * label_w, height), (255, 255, 255))
    canvas.paste(Image.fromarray(colorize(np.linspace(0.0, 1.0, width)[None, :].repeat(height, axis=0))), (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w - 4, height // 2), "no evidence", fill=(0, 0, 0), font=font, anchor="rm")
    draw.text((label_w + width + 4, height // 2), "strongest", fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def shrink(img: Image.Image, heatmap: np.ndarray | None = None, max_side: int = 480):
    """The image (and its heatmap) at most `max_side` on the longer side, for display: (image, heatmap)."""
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    if scale == 1.0:
        return img, heatmap
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = img.resize(size, Image.BILINEAR)
    if heatmap is None:
        return small, None
    resized = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32)).resize(size, Image.BILINEAR)
    return small, np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def png_bytes(img: Image.Image) -> bytes:
    """The image encoded as a PNG file, in memory."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
