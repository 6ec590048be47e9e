"""Face detection with facenet-pytorch's MTCNN: one box per clip, on the apex frame.

torch is imported only here, and only when a detector is built, so processes that never
detect (flow tuning, export from cached crops, the app's overview) never pay its ≈ 5 s
start-up. MTCNN's ``None`` results and object-dtype arrays are converted here, once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sammflow.params import DetectParams


class NoFaceError(RuntimeError):
    """MTCNN found no face above the probability threshold."""


@dataclass(frozen=True)
class FaceBox:
    """A face box in original-frame pixels, ``x2``/``y2`` exclusive (slice bounds)."""

    x1: int
    y1: int
    x2: int
    y2: int
    prob: float = 1.0
    frame: int | None = None  # the frame it was detected on

    def __post_init__(self) -> None:
        if self.x2 <= self.x1 or self.y2 <= self.y1:
            raise ValueError(f"empty face box ({self.x1}, {self.y1}, {self.x2}, {self.y2})")

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def touches_border(self, shape: tuple[int, ...]) -> bool:
        return self.x1 <= 0 or self.y1 <= 0 or self.x2 >= shape[1] or self.y2 >= shape[0]

    def iou(self, other: FaceBox) -> float:
        ix = max(0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        return inter / (self.width * self.height + other.width * other.height - inter)

    def to_dict(self) -> dict[str, Any]:
        return {"x1": self.x1, "y1": self.y1, "x2": self.x2, "y2": self.y2, "prob": self.prob, "frame": self.frame}

    @classmethod
    def from_xyxy(cls, xyxy: Any, *, shape: tuple[int, ...], prob: float = 1.0, frame: int | None = None) -> FaceBox:
        """Round a float ``(x1, y1, x2, y2)`` box (as MTCNN gives) and clip it to a frame of ``shape``."""
        x1, y1, x2, y2 = (float(v) for v in np.asarray(xyxy, dtype=float).ravel()[:4])
        h, w = shape[:2]
        return cls(
            x1=int(np.clip(round(x1), 0, w - 1)),
            y1=int(np.clip(round(y1), 0, h - 1)),
            x2=int(np.clip(round(x2), 1, w)),
            y2=int(np.clip(round(y2), 1, h)),
            prob=float(prob),
            frame=frame,
        )


@functools.lru_cache(maxsize=4)
def load_detector(device: str = "cpu", min_face: int = 40) -> Any:
    """Build (once per device and ``min_face``) facenet-pytorch's MTCNN; its weights ship
    inside the wheel, nothing is downloaded."""
    import torch
    from facenet_pytorch import MTCNN

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    detector = MTCNN(keep_all=True, device=device, post_process=False, min_face_size=min_face)

    return detector


def detect_face(frame: np.ndarray, *, params: DetectParams = DetectParams(), detector: Any = None, frame_number: int | None = None) -> FaceBox:
    """The most probable face in ``frame``.

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W) grey or (H, W, 3) RGB
        A full-resolution frame. Grey frames are stacked to 3 channels for MTCNN.
    params : DetectParams
        ``max_side`` sets the downscale used for detection; the box is mapped back.
    detector : MTCNN, optional
        A detector from ``load_detector``; built for ``params.device`` if omitted.

    Returns
    -------
    FaceBox
        In ``frame`` pixels, clipped to the frame.

    Raises
    ------
    NoFaceError
        If no face has probability ≥ ``params.min_prob``.
    """
    if frame.ndim not in (2, 3) or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 (H, W) or (H, W, 3), got {frame.dtype} {frame.shape}")
    detector = detector if detector is not None else load_detector(params.device, params.min_face)
    scale = 1.0
    small = frame
    longest = max(frame.shape[:2])
    if params.max_side and longest > params.max_side:
        scale = params.max_side / longest
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if min(small.shape[:2]) < params.min_face:  # MTCNN's pyramid would be empty (torch.cat of nothing)
        raise NoFaceError(f"no face can be found: the detection image is {small.shape[1]}×{small.shape[0]} px, "
                          f"smaller than the smallest face looked for (--min-face {params.min_face})")
    rgb = np.ascontiguousarray(np.dstack([small] * 3) if small.ndim == 2 else small)
    boxes, probs = detector.detect(rgb)
    if boxes is None or probs is None:
        raise NoFaceError("no face found")
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)  # numpy 2: MTCNN may return object arrays
    probs = np.asarray([np.nan if p is None else p for p in np.ravel(probs)], dtype=float)
    keep = np.flatnonzero(np.nan_to_num(probs, nan=0.0) >= params.min_prob)
    if keep.size == 0:
        best = np.nanmax(probs) if np.isfinite(probs).any() else 0.0
        raise NoFaceError(f"no face with probability >= {params.min_prob} (best {best:.2f})")
    best = keep[np.argmax(probs[keep])]
    return FaceBox.from_xyxy(boxes[best] / scale, shape=frame.shape, prob=float(probs[best]), frame=frame_number)
