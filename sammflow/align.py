"""Normalization: align every frame of a clip to the apex face crop.

The apex frame's face box is the template. In every frame the template is searched within
``margin`` pixels of the box (``cv2.TM_CCOEFF_NORMED``); the best match gives the frame's
offset (where the apex face content now sits) and its match score. The box moved by that
offset is cropped and resized to ``crop_size``×``crop_size``.

Coordinates: offsets are in original-frame pixels, ``(dx, dy)`` with +x right, +y down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sammflow.detect import FaceBox
from sammflow.params import INTERPOLATIONS, AlignParams


@dataclass(frozen=True)
class FrameMatch:
    """Where the apex face was found in one frame."""

    dx: float
    dy: float
    score: float


@dataclass(frozen=True)
class Alignment:
    """Per-frame alignment of one clip.

    Attributes
    ----------
    box : FaceBox
        The apex face box (frame px) every frame was matched against.
    frames : ndarray, int64, shape (N,)
        Absolute frame numbers, ascending.
    offsets : ndarray, float64, shape (N, 2)
        ``(dx, dy)`` in frame pixels: the crop of frame ``frames[i]`` is the box shifted by it.
    scores : ndarray, float64, shape (N,)
        TM_CCOEFF_NORMED score of the match, in [-1, 1] (1 = identical to the apex crop).
    """

    box: FaceBox
    frames: np.ndarray
    offsets: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.offsets.shape != (n, 2) or self.scores.shape != (n,):
            raise ValueError(f"Alignment: frames {self.frames.shape}, offsets {self.offsets.shape}, scores {self.scores.shape} disagree")

    @classmethod
    def from_matches(cls, box: FaceBox, matches: Mapping[int, FrameMatch]) -> Alignment:
        numbers = sorted(matches)
        return cls(
            box=box,
            frames=np.asarray(numbers, dtype=np.int64),
            offsets=np.asarray([(matches[n].dx, matches[n].dy) for n in numbers], dtype=np.float64).reshape(-1, 2),
            scores=np.asarray([matches[n].score for n in numbers], dtype=np.float64),
        )

    @property
    def min_score(self) -> float:
        return float(self.scores.min()) if len(self.scores) else float("nan")

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"frame": int(f), "dx": float(o[0]), "dy": float(o[1]), "score": float(s)}
            for f, o, s in zip(self.frames, self.offsets, self.scores)
        ]


def apex_template(apex: np.ndarray, box: FaceBox) -> np.ndarray:
    """The apex face crop (template), shape (box.height, box.width)."""
    _check_grey(apex, "apex frame")
    if box.x2 > apex.shape[1] or box.y2 > apex.shape[0]:
        raise ValueError(f"face box {box.x1, box.y1, box.x2, box.y2} exceeds the apex frame {apex.shape[1]}×{apex.shape[0]}")
    return apex[box.y1:box.y2, box.x1:box.x2]


def match_frame(frame: np.ndarray, template: np.ndarray, box: FaceBox, *, margin: int = 40) -> FrameMatch:
    """Find ``template`` in ``frame`` within ``margin`` px of ``box`` (whole-pixel).

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W)
    template : ndarray, uint8, shape (box.height, box.width)
    box : FaceBox
        Where the template came from, in frame pixels.

    Returns
    -------
    FrameMatch
        Offset ``(dx, dy)`` of the best match from ``box`` in frame px, and its score.
    """
    _check_grey(frame, "frame")
    h, w = frame.shape
    x0, y0 = max(0, box.x1 - margin), max(0, box.y1 - margin)
    x1, y1 = min(w, box.x2 + margin), min(h, box.y2 + margin)
    window = frame[y0:y1, x0:x1]
    if window.shape[0] < template.shape[0] or window.shape[1] < template.shape[1]:
        raise ValueError(f"frame {w}×{h} is smaller than the {template.shape[1]}×{template.shape[0]} face crop")
    result = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, score, _, (mx, my) = cv2.minMaxLoc(result)
    return FrameMatch(dx=float(x0 + mx - box.x1), dy=float(y0 + my - box.y1), score=float(score))


def crop_aligned(frame: np.ndarray, box: FaceBox, dx: float = 0.0, dy: float = 0.0, *, params: AlignParams = AlignParams()) -> np.ndarray:
    """Crop ``box`` shifted by ``(dx, dy)`` from ``frame`` and resize it.

    Sub-pixel offsets are interpolated bilinearly; pixels outside the frame replicate its border.

    Returns
    -------
    ndarray, uint8, shape (crop_size, crop_size)
    """
    _check_grey(frame, "frame")
    center = (box.x1 + dx + (box.width - 1) / 2.0, box.y1 + dy + (box.height - 1) / 2.0)
    patch = cv2.getRectSubPix(frame, (box.width, box.height), center)
    size = params.crop_size
    return cv2.resize(patch, (size, size), interpolation=INTERPOLATIONS[params.interpolation])


def align_frames(
    frames: Iterable[tuple[int, np.ndarray]],
    apex: np.ndarray,
    box: FaceBox,
    *,
    params: AlignParams = AlignParams(),
) -> tuple[dict[int, np.ndarray], Alignment]:
    """Align frames to the apex crop.

    Parameters
    ----------
    frames : iterable of (frame number, ndarray uint8 (H, W))
        Frames of one clip, consumed one at a time (a generator keeps memory flat).
    apex : ndarray, uint8, shape (H, W)
        The apex frame ``box`` was detected on.
    box : FaceBox
        Apex face box in frame pixels.

    Returns
    -------
    crops : dict of frame number → ndarray uint8 (crop_size, crop_size)
    alignment : Alignment
    """
    template = apex_template(apex, box)
    crops: dict[int, np.ndarray] = {}
    matches: dict[int, FrameMatch] = {}
    for number, frame in frames:
        match = match_frame(frame, template, box, margin=params.margin)
        crops[number] = crop_aligned(frame, box, match.dx, match.dy, params=params)
        matches[number] = match
    return crops, Alignment.from_matches(box, matches)


def _check_grey(image: np.ndarray, what: str) -> None:
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{what} must be a grey uint8 (H, W) array, got {image.dtype} {image.shape}")
