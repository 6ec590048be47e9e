"""Onset→apex animations of aligned crops, as GIF bytes."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import imageio.v3 as iio
import numpy as np

from sammflow.annotations import ClipAnnotation
from sammflow.params import GifParams


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


def encode_gif(frames: Sequence[np.ndarray], *, params: GifParams = GifParams()) -> bytes:
    """Encode frames as a looping GIF at ``params.size`` px (display size: never rescaled later).

    Parameters
    ----------
    frames : sequence of ndarray, uint8, (H, W) grey or (H, W, 3) RGB
        Aligned crops, all the same shape.

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
    size = params.size
    stack = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    # Pillow (imageio's GIF writer) merges consecutive identical frames, summing their durations
    return iio.imwrite("<bytes>", stack, extension=".gif", duration=int(round(1000.0 / params.fps)), loop=0)
