"""Turning heatmaps into pictures: the colour map, overlays on the cell, colour scales, shrinking, PNG bytes.

Heatmaps come in as float (H, W) in [0, 1] in the image's coordinates (what `explain` gives); 1 is
the strongest evidence. Colours are Google's Turbo map (blue = none, red = strongest).

This module only draws: it computes no heatmap (explain.py) and reads or writes no file (store.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_OPACITY = 0.45  # the heatmap's share of an overlay's colour, unless the user picks another


def _turbo_lut() -> np.ndarray:
    """Google's Turbo colour map (a perceptually smoother jet): (256, 3) uint8, blue (0) to red (1)."""
    x = np.linspace(0.0, 1.0, 256)
    r = 0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))))
    g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))))
    b = 0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))))
    return (np.clip(np.stack([r, g, b], axis=1), 0, 1) * 255).round().astype(np.uint8)


TURBO = _turbo_lut()


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W, 3) Turbo colours."""
    return TURBO[(np.clip(heatmap, 0, 1) * 255).round().astype(np.uint8)]


def overlay(
    img: Image.Image, heatmap: np.ndarray, opacity: float = DEFAULT_OPACITY, colour_scale: bool = True
) -> Image.Image:
    """The heatmap in Turbo colours blended over the cell at `opacity` (0 = cell only, 1 = heatmap only).

    With `colour_scale`, a bar on the right shows which colour means low and high evidence.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1; got {opacity}")
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    if heatmap.shape != base.shape[:2]:
        raise ValueError(
            f"heatmap shape {heatmap.shape} does not match the image's {base.shape[:2]}; "
            "resize it with to_image_size"
        )
    blended = (1.0 - opacity) * base + opacity * colorize(heatmap).astype(np.float32)
    out = Image.fromarray(blended.round().astype(np.uint8))
    return with_colour_scale(out) if colour_scale else out


def with_colour_scale(img: Image.Image) -> Image.Image:
    """`img` with a vertical Turbo bar (high at the top) and its labels on the right."""
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
