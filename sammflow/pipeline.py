"""One clip through the stages: apex face box → aligned crops → flow → flow map.

Each function takes a clip's annotation and frames and returns plain results; files are
written by ``sammflow.export``. Errors are raised as ``ClipError`` naming the clip and the
cause, so a batch can record them and go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sammflow.align import Alignment, align_frames
from sammflow.annotations import ClipAnnotation
from sammflow.dataset import ClipFrames, FrameError, frame_size, read_grey
from sammflow.detect import FaceBox, NoFaceError, detect_face, detect_faces
from sammflow.encode import encode_flow
from sammflow.flow import FlowField, compute_flow
from sammflow.spot import motion_curve, spot_apex
from sammflow.text import show_path
from sammflow.params import DetectParams, PipelineParams


class ClipError(RuntimeError):
    """A clip that cannot be processed; the message names the clip and the cause."""


@dataclass(frozen=True)
class NormalizedClip:
    """Aligned crops of (some of) a clip's frames.

    Attributes
    ----------
    crops : dict of frame number → ndarray uint8 (crop_size, crop_size)
    alignment : Alignment
        Per-frame offsets and match scores, and the apex face box.
    warnings : tuple of str
        Things worth knowing that did not stop the clip (face found on a neighbour frame...).
    """

    clip: ClipAnnotation
    crops: dict[int, np.ndarray]
    alignment: Alignment
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClipFlow:
    """Flow between the aligned onset and apex crops, and its encoded map."""

    normalized: NormalizedClip
    flow: FlowField
    flow_map: np.ndarray  # uint8 (size, size, 3) BGR, as exported

    @property
    def onset_crop(self) -> np.ndarray:
        """The aligned onset crop, uint8 (crop_size, crop_size)."""
        return self.normalized.crops[self.normalized.clip.onset]

    @property
    def apex_crop(self) -> np.ndarray:
        """The aligned apex crop, uint8 (crop_size, crop_size)."""
        return self.normalized.crops[self.normalized.clip.apex]

    @property
    def map_rgb(self) -> np.ndarray:
        """The flow map in RGB order (for display), uint8 (size, size, 3)."""
        return np.ascontiguousarray(self.flow_map[..., ::-1])


class BoxCache(Protocol):
    """Where apex face boxes found earlier are kept (``sammflow.cache.ClipStore``, on disk)."""

    def get_box(self, clip: ClipAnnotation, frames: ClipFrames, params: DetectParams) -> tuple[FaceBox, tuple[str, ...]] | None: ...

    def put_box(self, clip: ClipAnnotation, frames: ClipFrames, params: DetectParams, box: FaceBox, warnings: Iterable[str]) -> None: ...


def find_apex_face(
    clip: ClipAnnotation, frames: ClipFrames, apex: np.ndarray | None = None, *, params: DetectParams = DetectParams(), detector: Any = None,
    boxes: BoxCache | None = None,
) -> tuple[FaceBox, list[str]]:
    """MTCNN face box on the apex frame; if none, on the nearest frames (up to ``params.neighbours``
    either side).

    Parameters
    ----------
    apex : ndarray, uint8 (H, W), optional
        The decoded apex frame if the caller has it; otherwise the apex (and any neighbour)
        is decoded at the reduced size detection needs, which JPEG makes ≈ 2× faster.
    detector : MTCNN, optional
        From ``sammflow.detect.load_detector``; the process-wide one for ``params`` if omitted.
    boxes : BoxCache, optional
        Boxes found earlier: a box found there is returned without detection, a new one is put there.

    Returns
    -------
    box : FaceBox
        In full-resolution frame pixels.
    warnings : list of str

    Raises
    ------
    ClipError
        When no frame has a face, or the apex frame cannot be read.
    """
    if boxes is not None:
        cached = boxes.get_box(clip, frames, params)
        if cached is not None:
            return cached[0], list(cached[1])
    box, warnings = _find_apex_face(clip, frames, apex, params=params, detector=detector)
    if boxes is not None:
        boxes.put_box(clip, frames, params, box, warnings)
    return box, warnings


def find_apex_faces(
    items: Sequence[tuple[ClipAnnotation, ClipFrames]], *, params: DetectParams = DetectParams(), detector: Any = None,
    boxes: BoxCache | None = None,
) -> list[tuple[FaceBox, list[str]] | ClipError]:
    """``find_apex_face`` for several clips: their apex frames go through MTCNN together
    (``sammflow.detect.detect_faces``: equal-size frames as one batch), which costs less per
    frame than one at a time. Each clip gets what ``find_apex_face`` would give it.

    Returns
    -------
    list, one entry per item, in order
        ``(box, warnings)``, or the ``ClipError`` that clip raised (no face, unreadable apex).
    """
    results: list[tuple[FaceBox, list[str]] | ClipError | None] = [None] * len(items)
    todo: list[tuple[int, _ApexImage]] = []
    for index, (clip, frames) in enumerate(items):
        cached = boxes.get_box(clip, frames, params) if boxes is not None else None
        if cached is not None:
            results[index] = (cached[0], list(cached[1]))
            continue
        try:
            todo.append((index, _ApexImage.read(clip, frames, None, params)))
        except ClipError as exc:
            results[index] = exc
    found = detect_faces([apex.image for _, apex in todo], params=params, detector=detector,
                         frame_numbers=[apex.clip.apex for _, apex in todo]) if todo else []
    for (index, apex), first in zip(todo, found):
        try:
            box, warnings = apex.finish(first, params, detector)
        except ClipError as exc:
            results[index] = exc
            continue
        if boxes is not None:
            boxes.put_box(apex.clip, apex.frames, params, box, warnings)
        results[index] = (box, warnings)
    return results  # type: ignore[return-value]  # every slot is filled: from the store, an error or a detection


@dataclass(frozen=True)
class _ApexImage:
    """A clip's apex frame as detection sees it: decoded at the reduced size detection needs
    (JPEG makes that ≈ 2× faster), or the full frame the caller had."""

    clip: ClipAnnotation
    frames: ClipFrames
    image: np.ndarray
    full_shape: tuple[int, ...]
    reduce: int

    @classmethod
    def read(cls, clip: ClipAnnotation, frames: ClipFrames, apex: np.ndarray | None, params: DetectParams) -> _ApexImage:
        try:
            full_shape = _frame_shape(frames.path(clip.apex)) if apex is None else apex.shape
            reduce = _detection_reduce(full_shape, params) if apex is None else 1
            image = read_grey(frames.path(clip.apex), reduce=reduce) if apex is None else apex
        except FrameError as exc:
            raise ClipError(f"{clip.clip}: {exc}") from exc
        return cls(clip, frames, image, full_shape, reduce)

    def finish(self, first: FaceBox | NoFaceError, params: DetectParams, detector: Any) -> tuple[FaceBox, list[str]]:
        """The box in full-frame pixels from the apex's detection result ``first``; when it
        found no face, the nearest frames (up to ``params.neighbours`` either side) are tried."""
        clip, frames, reduce, full_shape = self.clip, self.frames, self.reduce, self.full_shape
        warnings: list[str] = []
        found = first
        if isinstance(first, NoFaceError):
            cause = str(first)
            nearby = [n for d in range(1, params.neighbours + 1) for n in (clip.apex - d, clip.apex + d) if n in frames.frames]
            for number in nearby:
                try:
                    neighbour = read_grey(frames.frames[number], reduce=reduce)
                    if neighbour.shape != self.image.shape:
                        continue
                    found = detect_face(neighbour, params=params, detector=detector, frame_number=number)
                except (NoFaceError, FrameError):
                    continue
                warnings.append(f"no face on apex frame {clip.apex} ({cause}); used the box found on frame {number}")
                break
            else:
                tried = f"nor on frames {nearby}" if nearby else "and no neighbour frames to try"
                small = f" (frames are only {full_shape[1]}×{full_shape[0]} px)" if min(full_shape[:2]) < _SMALL_FRAME else ""
                raise ClipError(f"{clip.clip}: {cause} on apex frame {clip.apex} {tried}{small}") from None
        assert isinstance(found, FaceBox)
        box = found if reduce == 1 else FaceBox.from_xyxy(
            np.array([found.x1, found.y1, found.x2, found.y2], dtype=float) * reduce, shape=full_shape, prob=found.prob, frame=found.frame)
        if box.touches_border(full_shape):
            warnings.append(f"face box {box.x1, box.y1, box.x2, box.y2} touches the frame border: the face may be cut off")
        return box, warnings


def _find_apex_face(
    clip: ClipAnnotation, frames: ClipFrames, apex: np.ndarray | None = None, *, params: DetectParams = DetectParams(), detector: Any = None
) -> tuple[FaceBox, list[str]]:
    image = _ApexImage.read(clip, frames, apex, params)
    try:
        first: FaceBox | NoFaceError = detect_face(image.image, params=params, detector=detector, frame_number=clip.apex)
    except NoFaceError as exc:
        first = exc
    return image.finish(first, params, detector)


#: Frames whose shorter side is below this are named as a likely cause when no face is found
#: (MTCNN needs faces of ≥ 20 px; SAMM's are ≈ 400 px in 2040×1088 frames).
_SMALL_FRAME = 160


def _frame_shape(path: Path) -> tuple[int, int]:
    """(H, W) of a frame from its header, without decoding it (``FrameError`` naming the file
    and the cause: unreadable, not an image, too large to be a video frame)."""
    return frame_size(path)


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _conversion_warnings(paths: list[Path]) -> list[str]:
    """What reading ``paths`` as 8-bit grey changed: 16-bit frames scaled down, colour frames
    among grey ones (from the file headers; unreadable files fail elsewhere with their cause)."""
    from PIL import Image, UnidentifiedImageError

    # every path was decoded by read_grey first, so none is larger than MAX_FRAME_PIXELS (below
    # Pillow's DecompressionBombWarning threshold); a file changed meanwhile is skipped
    deep, colour, grey = [], [], []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                head = fh.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16:
                deep.append(path)
            with Image.open(path) as image:
                (grey if image.mode in _GREY_MODES else colour).append(path)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            continue
    warnings = []
    if deep:
        warnings.append(f"{len(deep)} 16-bit frame(s) (e.g. {show_path(deep[0].name)}) scaled to 8 bits")
    if colour and grey:
        warnings.append(f"colour and grey frames mixed ({len(colour)} colour, e.g. {show_path(colour[0].name)}; {len(grey)} grey): all read as grey")
    return warnings


def _detection_reduce(shape: tuple[int, ...], params: DetectParams) -> int:
    """Largest JPEG decode reduction (1, 2 or 4) that still leaves ≥ ``max_side`` px to detect on."""
    if not params.max_side:
        return 1
    longest = max(shape[:2])
    for reduce in (4, 2):
        if longest / reduce >= params.max_side:
            return reduce
    return 1


def normalize_clip(
    clip: ClipAnnotation,
    frames: ClipFrames,
    *,
    params: PipelineParams = PipelineParams(),
    numbers: Iterable[int] | None = None,
    detector: Any = None,
    box: FaceBox | None = None,
) -> NormalizedClip:
    """Detect the apex face (unless ``box`` is given) and align frames to it.

    Parameters
    ----------
    numbers : iterable of int, optional
        Frame numbers to align (default: every frame of the clip folder). Each must be on disk.
    box : FaceBox, optional
        A known apex face box (from a cache); skips detection.

    Raises
    ------
    ClipError
        Missing/unreadable frame, no face, frame smaller than the crop.
    """
    try:
        warnings: list[str] = []
        if box is None:
            box, warnings = find_apex_face(clip, frames, params=params.detect, detector=detector)
        apex = read_grey(frames.path(clip.apex))
        wanted = frames.numbers if numbers is None else sorted(set(numbers))
        paths = [(n, frames.path(n)) for n in wanted]

        def load() -> Iterable[tuple[int, np.ndarray]]:
            for number, path in paths:
                image = apex if number == clip.apex else read_grey(path)
                if image.shape != apex.shape:
                    raise FrameError(f"{show_path(path)}: frame is {image.shape[1]}×{image.shape[0]}, the apex frame is {apex.shape[1]}×{apex.shape[0]}")
                yield number, image

        crops, alignment = align_frames(load(), apex, box, params=params.align)
        warnings = [*warnings, *_conversion_warnings([path for _, path in paths])]
        if max(box.width, box.height) < params.align.crop_size:
            factor = params.align.crop_size / max(box.width, box.height)
            warnings = [*warnings, f"face box {box.width}×{box.height} px is smaller than the {params.align.crop_size} px crop: "
                                   f"crops are upscaled ×{factor:.1f} (low-resolution frames?)"]
    except (FrameError, ValueError) as exc:
        message = str(exc)
        raise ClipError(message if message.startswith(f"{clip.clip}: ") else f"{clip.clip}: {message}") from exc
    return NormalizedClip(clip, crops, alignment, tuple(warnings))


def flow_from_crops(onset: np.ndarray, apex: np.ndarray, *, params: PipelineParams = PipelineParams()) -> tuple[FlowField, np.ndarray]:
    """Farnebäck flow between aligned onset and apex crops and its encoded map."""
    flow = compute_flow(onset, apex, params=params.flow)
    return flow, encode_flow(flow, params=params.encode)


def clip_flow(
    clip: ClipAnnotation, frames: ClipFrames, *, params: PipelineParams = PipelineParams(), detector: Any = None, box: FaceBox | None = None
) -> ClipFlow:
    """Raw frames → flow map, normalizing only the onset and apex frames."""
    normalized = normalize_clip(clip, frames, params=params, numbers=(clip.onset, clip.apex), detector=detector, box=box)
    flow, flow_map = flow_from_crops(normalized.crops[clip.onset], normalized.crops[clip.apex], params=params)
    return ClipFlow(normalized, flow, flow_map)


#: Fewest frames between onset and offset that a motion curve can have a peak among.
MIN_SPOT_FRAMES = 3


def spot_clip(
    clip: ClipAnnotation, frames: ClipFrames, *, params: PipelineParams = PipelineParams(), box: FaceBox, detector: Any = None
) -> tuple[ClipAnnotation, dict[int, float]]:
    """The clip with its apex spotted: the frame of peak facial motion between onset and offset
    (``sammflow.spot``).

    The frames on disk from onset to offset are aligned, as in ``normalize_clip``, to the crop
    of ``box`` on frame ``clip.apex``: the provisional apex, the reference until one is spotted.

    Returns
    -------
    clip : ClipAnnotation
        ``clip`` with the spotted ``apex``, ``apex_source="spotted"`` and ``spot=False``.
    curve : dict of frame number → float
        The motion from the onset of every frame aligned, crop px (``motion_curve``).

    Raises
    ------
    ClipError
        Fewer than 3 frames on disk between onset and offset, the onset frame missing, or
        any cause of ``normalize_clip``.
    """
    numbers = frames.span(clip.onset, clip.offset)
    if len(numbers) < MIN_SPOT_FRAMES:
        raise ClipError(f"{clip.clip}: only {len(numbers)} frame(s) on disk between onset {clip.onset} and offset {clip.offset}; "
                        f"spotting the apex needs at least {MIN_SPOT_FRAMES}")
    # the onset is asked for even when missing, so that normalize_clip names it
    normalized = normalize_clip(clip, frames, params=params, numbers=[clip.onset, *numbers], detector=detector, box=box)
    curve = motion_curve(normalized.crops, clip.onset)
    found = spot_apex(curve, clip.onset, clip.offset)
    return dataclasses.replace(clip, apex=found, apex_source="spotted", spot=False), curve
