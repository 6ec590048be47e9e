"""Face detection with MTCNN (``sammflow.mtcnn``: facenet-pytorch's detector without
facenet-pytorch): one box per clip, on the apex frame.

On CPU the networks run on OpenCV's dnn module, so no process that detects on CPU imports
torch (≈ 2.5 s and ≈ 0.4 GB); on "cuda" or "mps" torch runs them, imported when the detector
is built. MTCNN's ``None`` results (and the object-dtype arrays of facenet-pytorch's own
detector, which ``detector=`` still accepts) are converted here, once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
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


#: Largest number of frames that go through MTCNN together in ``detect_faces`` (memory grows
#: with it, ≈ 3 MB a 640×341 frame; the time per frame levels off from about 10).
BATCH = 16


@functools.lru_cache(maxsize=4)
def load_detector(device: str = "cpu", min_face: int = 40) -> Any:
    """Build (once per device and ``min_face``) the MTCNN detector of ``sammflow.mtcnn``:
    facenet-pytorch's networks and results without importing facenet-pytorch. On "cpu" it
    runs on OpenCV (no torch import); elsewhere on torch. Its weights ship inside the
    facenet-pytorch wheel; nothing is downloaded."""
    from sammflow.mtcnn import MTCNN

    if device != "cpu":
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return MTCNN(min_face_size=min_face, device=device)


class LoadingDetector:
    """A detector being built (``load_detector``: reading the weights, and on a GPU torch's
    import, seconds) in a thread, standing in for it meanwhile: ``detect`` waits for it. So a
    batch job or a page starts its worker processes and decodes the first apex frames meanwhile.

    Its detections run on one thread (the worker processes hold the other cores): torch's
    thread count is set for the calling thread only, OpenCV's for the process while any
    detection runs (``_one_opencv_thread``).
    ``error`` turns a build failure (CUDA asked for but missing) into the caller's exception type.
    """

    def __init__(self, params: DetectParams, error: type[Exception] = RuntimeError) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._error = error
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sammflow-detector")
        #: Done when the detector is built (or failed to be: ``detect`` raises that error).
        self.ready = self._thread.submit(load_detector, params.device, params.min_face)

    def detect(self, *args: Any, **kwargs: Any) -> Any:
        try:
            detector = self.ready.result()
        except RuntimeError as exc:
            raise self._error(str(exc)) from exc
        if getattr(detector, "engine", None) != "torch":
            with _one_opencv_thread():
                return detector.detect(*args, **kwargs)
        import torch  # imported by load_detector

        threads = torch.get_num_threads()  # torch's thread count is the calling thread's own
        torch.set_num_threads(1)
        try:
            return detector.detect(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    def close(self) -> None:
        """Wait for the thread."""
        self._thread.shutdown(wait=True)

    def __enter__(self) -> LoadingDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_opencv_threads_lock = threading.Lock()
_opencv_threads_users = 0
_opencv_threads_before = 0


@contextlib.contextmanager
def _one_opencv_thread() -> Iterator[None]:
    """OpenCV on one thread while any caller is inside (its thread count is the process's, so
    concurrent detections share one setting): the first in saves the count, the last out
    restores it. On a machine whose cores the worker processes hold, OpenCV's own threads
    would only wait for them."""
    global _opencv_threads_users, _opencv_threads_before
    with _opencv_threads_lock:
        if _opencv_threads_users == 0:
            _opencv_threads_before = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _opencv_threads_users += 1
    try:
        yield
    finally:
        with _opencv_threads_lock:
            _opencv_threads_users -= 1
            if _opencv_threads_users == 0:
                cv2.setNumThreads(_opencv_threads_before)


def detect_face(frame: np.ndarray, *, params: DetectParams = DetectParams(), detector: Any = None, frame_number: int | None = None) -> FaceBox:
    """The most probable face in ``frame``.

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W) grey or (H, W, 3) RGB
        A full-resolution frame. Grey frames are stacked to 3 channels for MTCNN.
    params : DetectParams
        ``max_side`` sets the downscale used for detection; the box is mapped back.
    detector : MTCNN, optional
        A detector from ``load_detector`` (or anything with facenet's ``detect``); built for
        ``params.device`` if omitted.
    frame_number : int, optional
        Recorded in the box.

    Returns
    -------
    FaceBox
        In ``frame`` pixels, clipped to the frame.

    Raises
    ------
    NoFaceError
        If no face has probability ≥ ``params.min_prob``.
    """
    image, scale = _detection_image(frame, params)
    detector = detector if detector is not None else load_detector(params.device, params.min_face)
    boxes, probs = detector.detect(image)
    return _best_face(boxes, probs, params=params, scale=scale, shape=frame.shape, frame_number=frame_number)


def detect_faces(
    frames: Sequence[np.ndarray],
    *,
    params: DetectParams = DetectParams(),
    detector: Any = None,
    frame_numbers: Sequence[int | None] | None = None,
) -> list[FaceBox | NoFaceError]:
    """``detect_face`` on each frame, frames of one size going through MTCNN together: the
    same box for each frame as ``detect_face`` gives it (a batched result that rounding could
    turn into another box is recomputed alone: ``_settled``).

    Under torch (a GPU), batching cuts the per-frame time (one pass of each network per pyramid
    level for up to ``BATCH`` frames: ≈ 14 against 24 ms for a 640×341 frame on one CPU
    thread); the OpenCV engine (CPU) runs the frames of a batch one by one.

    Parameters
    ----------
    frames : sequence of ndarray, uint8, (H, W) grey or (H, W, 3) RGB
        Full-resolution frames, of any sizes.
    params : DetectParams
    detector : MTCNN, optional
        A detector from ``load_detector``, or anything whose ``detect`` takes a list of
        equal-size RGB images and returns per-image boxes and probabilities (facenet's
        ``MTCNN`` does); built for ``params.device`` if omitted.
    frame_numbers : sequence of int or None, optional
        Recorded in the boxes, one per frame.

    Returns
    -------
    list of FaceBox or NoFaceError
        One per frame, in order: its box, or the ``NoFaceError`` that ``detect_face`` would
        have raised (returned, not raised).
    """
    numbers = [None] * len(frames) if frame_numbers is None else list(frame_numbers)
    if len(numbers) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(numbers)} frame numbers")
    results: list[FaceBox | NoFaceError | None] = [None] * len(frames)
    prepared: dict[tuple[int, ...], list[tuple[int, np.ndarray, float]]] = {}
    for index, frame in enumerate(frames):
        try:
            image, scale = _detection_image(frame, params)
        except NoFaceError as exc:
            results[index] = exc
            continue
        prepared.setdefault(image.shape, []).append((index, image, scale))
    if prepared and detector is None:
        detector = load_detector(params.device, params.min_face)
    for group in prepared.values():
        for start in range(0, len(group), BATCH):
            chunk = group[start:start + BATCH]
            all_boxes, all_probs = detector.detect([image for _, image, _ in chunk])
            for (index, image, scale), boxes, probs in zip(chunk, all_boxes, all_probs):
                if not _settled(boxes, probs, params=params, scale=scale):
                    boxes, probs = detector.detect(image)  # alone, as detect_face sees it
                try:
                    results[index] = _best_face(boxes, probs, params=params, scale=scale, shape=frames[index].shape,
                                                frame_number=numbers[index])
                except NoFaceError as exc:
                    results[index] = exc
    return results  # type: ignore[return-value]  # every slot is filled


#: How far a batched detection must be from every decision that rounding makes, for its result
#: to be the one the frame gets alone: box coordinates from a half pixel (where they round),
#: probabilities from ``min_prob`` and from each other. The networks' arithmetic in a batch
#: differs from one frame's in the last float bits (≤ 1e-4 px measured on the boxes).
SETTLED_PX = 1e-3
SETTLED_PROB = 1e-4


def _settled(boxes: Any, probs: Any, *, params: DetectParams, scale: float) -> bool:
    """Whether a batched result cannot round differently from the same frame's alone: then
    ``detect_faces`` gives exactly ``detect_face``'s box (so a clip's box never depends on the
    clips it was detected with); otherwise the frame is detected again alone."""
    faces = _faces(boxes, probs)
    if faces is None:
        return True
    boxes, probs = faces
    if not np.isfinite(probs).all():
        return False
    ranked = np.sort(probs)[::-1]
    if np.abs(probs - params.min_prob).min() < SETTLED_PROB or (len(ranked) > 1 and ranked[0] - ranked[1] < SETTLED_PROB):
        return False
    best = boxes[int(np.argmax(probs))] / scale
    return bool(np.abs(best - np.floor(best) - 0.5).min() >= SETTLED_PX)


def _detection_image(frame: np.ndarray, params: DetectParams) -> tuple[np.ndarray, float]:
    """The RGB image MTCNN sees (``frame`` downscaled to ``params.max_side``), and the scale.

    Raises ValueError for a frame that is not uint8 grey or RGB, NoFaceError if the image is
    smaller than the smallest face looked for (MTCNN's pyramid would be empty).
    """
    if frame.ndim not in (2, 3) or frame.dtype != np.uint8 or (frame.ndim == 3 and frame.shape[2] != 3):
        raise ValueError(f"frame must be uint8 (H, W) or (H, W, 3), got {frame.dtype} {frame.shape}")
    scale = 1.0
    small = frame
    longest = max(frame.shape[:2])
    if params.max_side and longest > params.max_side:
        scale = params.max_side / longest
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if min(small.shape[:2]) < params.min_face:
        raise NoFaceError(f"no face can be found: the detection image is {small.shape[1]}×{small.shape[0]} px, "
                          f"smaller than the smallest face looked for (--min-face {params.min_face})")
    return np.ascontiguousarray(np.dstack([small] * 3) if small.ndim == 2 else small), scale


def _best_face(boxes: Any, probs: Any, *, params: DetectParams, scale: float, shape: tuple[int, ...], frame_number: int | None) -> FaceBox:
    """The most probable of one image's MTCNN faces (facenet's ``detect`` convention: ``None``
    or object arrays), mapped back to frame pixels; NoFaceError if none reaches ``min_prob``."""
    faces = _faces(boxes, probs)
    if faces is None:
        raise NoFaceError("no face found")
    boxes, probs = faces
    keep = np.flatnonzero(np.nan_to_num(probs, nan=0.0) >= params.min_prob)
    if keep.size == 0:
        best = np.nanmax(probs) if np.isfinite(probs).any() else 0.0
        raise NoFaceError(f"no face with probability >= {params.min_prob} (best {best:.2f})")
    best = keep[np.argmax(probs[keep])]
    return FaceBox.from_xyxy(boxes[best] / scale, shape=shape, prob=float(probs[best]), frame=frame_number)


def _faces(boxes: Any, probs: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """One image's MTCNN result as float arrays, boxes (n, 4) and probabilities (n,) (a
    missing probability NaN); ``None`` where it found no face (facenet's ``None``). numpy 2:
    facenet's own MTCNN may return object arrays."""
    if boxes is None or probs is None:
        return None
    return (np.asarray(boxes, dtype=float).reshape(-1, 4),
            np.asarray([np.nan if p is None else p for p in np.ravel(probs)], dtype=float))
