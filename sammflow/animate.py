"""Onset→apex animations of aligned crops, as GIF bytes, with frame numbers and onset / apex /
offset markers; and the text drawing every image with words in it uses (``text_font``,
``drawable``): Pillow's built-in font, which lacks arrows, ×, ≥ and accented letters, so text
is rewritten to characters it has before it is drawn (no font download, no system font).
"""

from __future__ import annotations

import functools
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

import cv2
import imageio.v3 as iio
import numpy as np

from sammflow.annotations import ClipAnnotation
from sammflow.params import GifParams

#: Replacements for characters the built-in font lacks (before the accent stripping and the "?" fallback).
REPLACEMENTS = {
    "→": "->", "←": "<-", "↔": "<->", "⇒": "=>", "↑": "up", "↓": "down", "×": "x", "≥": ">=", "≤": "<=", "≠": "!=", "≈": "~",
    "−": "-", "–": "-", "—": "-", "‐": "-", "µ": "u", "Δ": "d", "…": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ",
}
#: What a character the font has no glyph for (and no replacement) becomes.
MISSING = "?"


# ============================================================== text in images


_FONTS = threading.local()  # one FreeType face per thread (Streamlit renders pages in several)


def text_font(size: int) -> Any:
    """Pillow's built-in scalable font (shipped inside Pillow: offline) at ``size`` px.

    Draw only ``drawable(text)`` with it: it has ASCII and a few symbols (° · ± … ‘ ’ “ ”), not
    arrows, ×, ≥, ≤ or accented letters. One font object per size and thread.

    Returns
    -------
    PIL.ImageFont.FreeTypeFont
    """
    from PIL import ImageFont

    fonts = _FONTS.__dict__.setdefault("by_size", {})
    if size not in fonts:
        fonts[size] = ImageFont.load_default(size=size)
    return fonts[size]


def _mask(char: str) -> tuple[tuple[int, int], bytes]:
    mask = text_font(13).getmask(char)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=4096)
def has_glyph(char: str) -> bool:
    """Whether the built-in font draws ``char`` as itself (not as its missing-glyph box)."""
    return char == "\n" or _mask(char) != _mask("\uffff")


def drawable(text: str) -> str:
    """``text`` with every character the built-in font lacks replaced: → "->", × "x", ≥ ">=" …
    (``REPLACEMENTS``), accented letters without their accent (ä → a), anything else "?".

    Every function that draws text into an image (GIF labels, ``sammflow.figures``) passes its
    text through this, so that no figure shows an empty box where a glyph is missing.
    """
    out = []
    for char in text:
        if has_glyph(char):
            out.append(char)
            continue
        replacement = REPLACEMENTS.get(char)
        if replacement is None:
            stripped = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            replacement = stripped if stripped and all(has_glyph(c) for c in stripped) else MISSING
        out.append(replacement)
    return "".join(out)


# ============================================================== GIF frames


def gif_frame_numbers(available: Sequence[int], clip: ClipAnnotation, *, params: GifParams = GifParams()) -> list[int]:
    """Frames of the animation: onset to apex (or offset) every ``step`` frames, on disk only.

    The apex (and offset, when included) is always kept, so the animation ends on the peak.
    """
    last = clip.offset if params.to_offset else clip.apex
    on_disk = set(available)
    numbers = [n for n in range(clip.onset, last + 1, params.step) if n in on_disk]
    for must in (clip.apex, last):
        if must in on_disk and must not in numbers:
            numbers.append(must)
    return sorted(numbers)


def frame_marker(number: int, clip: ClipAnnotation) -> str:
    """``"onset"``, ``"apex"``, ``"offset"`` (joined by "/" where they coincide) or ``""``."""
    return "/".join(name for name, at in (("onset", clip.onset), ("apex", clip.apex), ("offset", clip.offset)) if at == number)


def label_size(side: int) -> int:
    """Font size of the labels of a ``side`` px frame: 13 px at 224, never below 10."""
    return max(10, round(side / 17))


def label_frame(image: np.ndarray, number: int, marker: str = "") -> np.ndarray:
    """A frame with its number in the top-left corner (white on black) and ``marker`` (onset,
    apex, offset) in the top-right corner (black on white), small and clear of the face centre.

    Parameters
    ----------
    image : ndarray, uint8, (S, S) grey or (S, S, 3) RGB
        At display size (the labels are sized for it: ``label_size``).
    number : int
        The frame number.
    marker : str
        ``frame_marker``'s text, or "" for none.

    Returns
    -------
    ndarray, uint8, same shape (a grey frame stays grey: the GIF palette is unchanged)
    """
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = text_font(label_size(image.shape[1]))
    dark, light = (0, 255) if image.ndim == 2 else ((0, 0, 0), (255, 255, 255))
    pad = max(2, font.size // 5)
    for text, right, box, ink in ((f"frame {number}", False, dark, light), (marker, True, light, dark)):
        if not text:
            continue
        text = drawable(text)
        left, top, end, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = end - left + 2 * pad, bottom - top + 2 * pad
        x = image.shape[1] - width if right else 0
        draw.rectangle((x, 0, x + width - 1, height - 1), fill=box)
        draw.text((x + pad - left, pad - top), text, fill=ink, font=font)
    return np.asarray(canvas)


def encode_gif(frames: Sequence[np.ndarray], *, params: GifParams = GifParams(), numbers: Sequence[int] | None = None,
               clip: ClipAnnotation | None = None) -> bytes:
    """Encode frames as a looping GIF at ``params.size`` px (display size: never rescaled later).

    Parameters
    ----------
    frames : sequence of ndarray, uint8, (H, W) grey or (H, W, 3) RGB
        Aligned crops, all the same shape.
    params : GifParams
        With ``labels`` (the default), each frame gets its number and, on the onset, apex and
        offset frames, that marker (``label_frame``), drawn at display size.
    numbers : sequence of int, optional
        The frame number of each of ``frames`` (``gif_frame_numbers``). Labels need them:
        without, no frame is labelled.
    clip : ClipAnnotation, optional
        Its onset, apex and offset are marked; without, only the numbers are drawn.

    Returns
    -------
    bytes
        GIF file content; ``len(frames)`` frames at ``params.fps``.
    """
    if not frames:
        raise ValueError("no frames to animate")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames differ in shape: {sorted(shapes)}")
    if numbers is not None and len(numbers) != len(frames):
        raise ValueError(f"{len(numbers)} frame numbers for {len(frames)} frames")
    size = params.size
    resized = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
    if params.labels and numbers is not None:
        resized = [label_frame(f, int(n), frame_marker(int(n), clip) if clip else "") for f, n in zip(resized, numbers)]
        # as RGB: Pillow writes labelled grey frames with changing modes (L, L, RGB) that readers
        # such as imageio cannot read back ("No packer found from P to L")
        resized = [np.dstack([f] * 3) if f.ndim == 2 else f for f in resized]
    stack = np.stack(resized)
    # Pillow (imageio's GIF writer) merges consecutive identical frames, summing their durations
    return iio.imwrite("<bytes>", stack, extension=".gif", duration=int(round(1000.0 / params.fps)), loop=0)
