"""A plain on-disk cache of the per-clip work that is slow to redo: the apex face box
(MTCNN), aligned crops, and per-frame MTCNN boxes.

The dashboard reads through it (``apex_box``, ``aligned_crops``, ``mtcnn_track``, and
``spotted_clip`` / ``motion``: a clip's spotted apex and motion curve, from the stored box;
``crops_with_box``, the part of ``aligned_crops`` after the box, runs in the grid's worker
processes: ``sammflow.tiles``), so a restart, or a change of a flow or encoding parameter,
never re-detects nor re-aligns; its batch export passes the same store to the job
(``boxes=``), so a box found by a page is not found again. Results are the pipeline's own
types (``NormalizedClip``). It imports neither Streamlit nor torch: the detector
(``sammflow.detect.load_detector``) is only loaded on a cache miss.

Layout, under ``cache_dir()`` (``$SAMMFLOW_CACHE``, else ``$XDG_CACHE_HOME/sammflow``, else
``~/.cache/sammflow``)::

    clips/<dataset key>/<clip>/<DetectParams hash>/box.json        apex box + warnings
    clips/<dataset key>/<clip>/<DetectParams hash>/mtcnn.json      per-frame MTCNN boxes
    clips/<dataset key>/<clip>/<DetectParams hash>/<AlignParams hash>/f<frame>.png / .json

Every entry records the size and modification time of the frame files it came from and
is ignored when they differ, so an edited dataset is never served stale results; a crop
also records the frame it was aligned to (the apex: a spotted apex is another frame with the
same box). Files
are written atomically (``sammflow.files.write_atomic``): a crash leaves no half entry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sammflow.align import Alignment, FrameMatch
from sammflow.annotations import ClipAnnotation
from sammflow.dataset import ClipFrames, Dataset, FrameError, read_grey
from sammflow.detect import FaceBox, NoFaceError, detect_face
from sammflow.files import read_json, write_atomic
from sammflow.text import show_path
from sammflow.params import DetectParams, PipelineParams, stable_hash
from sammflow.pipeline import ClipError, NormalizedClip, find_apex_face, normalize_clip, spot_clip
from sammflow.spot import motion_curve

#: Environment variable naming the cache folder.
ENV_CACHE = "SAMMFLOW_CACHE"
#: Aligned-crop folders (one per clip × detection × alignment parameters) kept by ``prune``.
DEFAULT_MAX_ENTRIES = 2000
_FORMAT = 2  # bump when the meaning of a cached file changes: old entries are then ignored


def cache_dir() -> Path:
    """The cache folder: ``$SAMMFLOW_CACHE``, else ``$XDG_CACHE_HOME/sammflow``, else ``~/.cache/sammflow``.

    Returns
    -------
    Path
        Not created here; writers create what they need.
    """
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sammflow"


def dataset_key(root: str | Path) -> str:
    """A folder name for a dataset: its name plus a hash of its absolute path.

    Parameters
    ----------
    root : str or Path
        The dataset folder.

    Returns
    -------
    str
        e.g. ``"SAMM-3f1c2a9b0d4e"``; two datasets with the same name never share entries.
    """
    resolved = Path(root).expanduser().resolve()
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in resolved.name)[:40] or "root"
    return f"{name}-{stable_hash(str(resolved))}"


def file_signature(path: str | Path) -> list[int]:
    """What a cache entry was made from.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of int
        ``[size, mtime_ns]``; ``[-1, -1]`` if the file cannot be read.
    """
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


class ClipStore:
    """The cache files of one dataset.

    Parameters
    ----------
    dataset_root : str or Path
        The dataset the entries belong to (its path picks the sub-folder).
    base : Path, optional
        Cache folder; ``cache_dir()`` if omitted.
    """

    def __init__(self, dataset_root: str | Path, base: Path | None = None) -> None:
        self.base = Path(base) if base is not None else cache_dir()
        self.root = self.base / "clips" / dataset_key(dataset_root)

    # ------------------------------------------------------------ paths

    def detect_dir(self, clip: str, detect_hash: str) -> Path:
        """Folder of a clip's entries that depend on the detection parameters only."""
        return self.root / _safe(clip) / detect_hash

    def align_dir(self, clip: str, detect_hash: str, align_hash: str) -> Path:
        """Folder of a clip's aligned crops for one detection × alignment parameter set."""
        return self.detect_dir(clip, detect_hash) / align_hash

    # ------------------------------------------------------------ entries

    def get_box(self, clip: ClipAnnotation, frames: ClipFrames, params: DetectParams) -> tuple[FaceBox, tuple[str, ...]] | None:
        """The cached apex box of a clip (``sammflow.pipeline.BoxCache``).

        Parameters
        ----------
        clip : ClipAnnotation
        frames : ClipFrames
            An entry made from another apex file, or from this one before it changed, is ignored.
        params : DetectParams
            Entries are kept per ``params.hash``.

        Returns
        -------
        (FaceBox, tuple of str) or None
            The box and its warnings; ``None`` if missing, stale or unreadable.
        """
        apex_path = frames.frames.get(clip.apex)
        data = _read_entry(self.detect_dir(clip.clip, params.hash) / "box.json")
        if apex_path is None or not data or data.get("apex") != [str(apex_path), *file_signature(apex_path)]:
            return None
        try:
            return FaceBox(**data["box"]), tuple(data.get("warnings", ()))
        except (KeyError, TypeError, ValueError):
            return None

    def put_box(self, clip: ClipAnnotation, frames: ClipFrames, params: DetectParams, box: FaceBox, warnings: Iterable[str]) -> None:
        """Store a clip's apex box and its warnings (see ``get_box``); a failed write is ignored."""
        apex_path = frames.frames.get(clip.apex)
        if apex_path is None:
            return
        # the apex file's path too: an annotation edit that moves the apex invalidates the box
        content = {"format": _FORMAT, "apex": [str(apex_path), *file_signature(apex_path)], "box": box.to_dict(), "warnings": list(warnings)}
        _write_json(self.detect_dir(clip.clip, params.hash) / "box.json", content)

    def get_crop(self, clip: str, detect_hash: str, align_hash: str, number: int, frame_path: Path, box: FaceBox, *,
                 apex: Path) -> tuple[np.ndarray, FrameMatch] | None:
        """A cached aligned crop and its match record.

        Parameters
        ----------
        clip : str
        detect_hash, align_hash : str
        number : int
            Absolute frame number.
        frame_path : Path
            The frame's file; the entry is ignored if the file changed.
        box : FaceBox
            The apex box the crop must have been aligned to.
        apex : Path
            The frame whose crop it was aligned to (the apex: annotated, fixed or spotted); an
            entry aligned to another frame, or to this one before it changed, is ignored.

        Returns
        -------
        (ndarray uint8 (crop_size, crop_size), FrameMatch) or None
            ``None`` if missing, stale or unreadable.
        """
        folder = self.align_dir(clip, detect_hash, align_hash)
        meta = _read_entry(folder / f"f{number}.json")
        if (not meta or meta.get("frame") != file_signature(frame_path) or meta.get("box") != _box_key(box)
                or meta.get("apex") != _apex_key(apex)):
            return None
        try:
            data = np.fromfile(folder / f"f{number}.png", dtype=np.uint8)
        except OSError:
            return None
        crop = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
        try:
            match = FrameMatch(**meta["match"])
        except (KeyError, TypeError):
            return None
        return (crop, match) if crop is not None else None

    def put_crop(self, clip: str, detect_hash: str, align_hash: str, number: int, frame_path: Path, box: FaceBox,
                 crop: np.ndarray, match: FrameMatch, *, apex: Path) -> None:
        """Store an aligned crop (lossless PNG) and its match record (see ``get_crop``); a failed
        write is ignored."""
        folder = self.align_dir(clip, detect_hash, align_hash)
        ok, png = cv2.imencode(".png", crop)  # lossless: a cached crop equals a recomputed one
        if not ok:  # pragma: no cover - a uint8 grey image always encodes
            return
        # the PNG first: a .json (the marker of a complete entry) never points to a missing image
        try:
            write_atomic(folder / f"f{number}.png", png.tobytes())
        except OSError:
            return  # a read-only or full cache folder costs a recompute next time, never the result
        _write_json(folder / f"f{number}.json", {"format": _FORMAT, "frame": file_signature(frame_path), "box": _box_key(box),
                                                    "apex": _apex_key(apex), "match": dataclasses.asdict(match)})

    def get_json(self, clip: str, detect_hash: str, name: str, sources: Any) -> Any:
        """A value stored with ``put_json``.

        Parameters
        ----------
        clip : str
        detect_hash : str
        name : str
        sources : JSON-able
            What the value was made from (e.g. frame signatures); must equal the stored one.

        Returns
        -------
        object or None
        """
        data = _read_entry(self.detect_dir(clip, detect_hash) / f"{name}.json")
        if not data or data.get("sources") != sources:
            return None
        return data.get("value")

    def put_json(self, clip: str, detect_hash: str, name: str, sources: Any, value: Any) -> None:
        """Store a JSON-able value with what it was made from (see ``get_json``)."""
        _write_json(self.detect_dir(clip, detect_hash) / f"{name}.json", {"format": _FORMAT, "sources": sources, "value": value})

    def touch(self, clip: str, detect_hash: str, align_hash: str) -> None:
        """Mark an aligned-crop folder as recently used (``prune`` removes the least recent)."""
        try:
            os.utime(self.align_dir(clip, detect_hash, align_hash))
        except OSError:
            pass

    def prune(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> int:
        """Remove the least recently used aligned-crop folders beyond ``max_entries``.

        Returns
        -------
        int
            Number of folders removed.
        """
        return prune(self.base, max_entries)


def prune(base: Path | None = None, max_entries: int = DEFAULT_MAX_ENTRIES) -> int:
    """Remove the least recently used aligned-crop folders of every dataset beyond ``max_entries``.

    Parameters
    ----------
    base : Path, optional
        Cache folder; ``cache_dir()`` if omitted.
    max_entries : int
        Aligned-crop folders (clip × detection × alignment parameters) to keep.

    Returns
    -------
    int
        Number of folders removed.
    """
    clips = (Path(base) if base is not None else cache_dir()) / "clips"
    entries = [p for p in clips.glob("*/*/*/*") if p.is_dir()]
    if len(entries) <= max_entries:
        return 0

    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    entries.sort(key=used, reverse=True)
    for old in entries[max_entries:]:
        shutil.rmtree(old, ignore_errors=True)
    return len(entries) - max_entries


# ---------------------------------------------------------------- read-through


def clip_of(dataset: Dataset, clip_id: str) -> tuple[ClipAnnotation, ClipFrames]:
    """The annotation and frames of a clip.

    Parameters
    ----------
    dataset : Dataset
    clip_id : str

    Returns
    -------
    (ClipAnnotation, ClipFrames)

    Raises
    ------
    ClipError
        Saying why the clip cannot be used (not annotated, no folder).
    """
    try:
        return dataset.clip(clip_id)
    except KeyError as exc:
        raise ClipError(str(exc.args[0] if exc.args else exc)) from None


def apex_box(dataset: Dataset, clip_id: str, params: DetectParams, *, store: ClipStore) -> tuple[FaceBox, tuple[str, ...]]:
    """The clip's apex face box: from the store, else detected (``find_apex_face``) and stored.

    Parameters
    ----------
    dataset : Dataset
    clip_id : str
    params : DetectParams
    store : ClipStore

    Returns
    -------
    box : FaceBox
    warnings : tuple of str

    Raises
    ------
    ClipError
        Unknown clip, missing or unreadable apex frame, no face.
    """
    clip, frames = clip_of(dataset, clip_id)
    try:
        frames.path(clip.apex)
    except FrameError as exc:
        raise ClipError(str(exc)) from exc
    # exactly as the batch jobs do (apex decoded at detection size), so boxes equal theirs
    box, warnings = find_apex_face(clip, frames, params=params, boxes=store)
    return box, tuple(warnings)


def aligned_crops(dataset: Dataset, clip_id: str, params: PipelineParams, numbers: Iterable[int], *, store: ClipStore,
                  clip: ClipAnnotation | None = None) -> NormalizedClip:
    """Aligned crops of some frames of a clip, read through the store.

    Cached frames are read back; the others are aligned in one pass (``normalize_clip`` with
    the stored apex box) and stored.

    Parameters
    ----------
    dataset : Dataset
    clip_id : str
    params : PipelineParams
        ``detect`` and ``align`` matter (their hashes: quality thresholds and the device do not).
    numbers : iterable of int
        Absolute frame numbers.
    store : ClipStore
    clip : ClipAnnotation, optional
        The clip as processed, when not the dataset's own annotation: one whose apex was
        spotted (``spotted_clip``). Its frames are aligned to its apex's crop, with the face
        box of the dataset's apex, as the export does.

    Returns
    -------
    NormalizedClip
        ``crops`` and ``alignment`` of exactly ``numbers``; ``warnings`` are the detection's.

    Raises
    ------
    ClipError
        Unknown clip, a frame not on disk or unreadable, no face, frame smaller than the crop.
    """
    annotated, frames = clip_of(dataset, clip_id)
    box, warnings = apex_box(dataset, clip_id, params.detect, store=store)
    return crops_with_box(clip or annotated, frames, box, warnings, params, numbers, store=store)


def crops_with_box(clip: ClipAnnotation, frames: ClipFrames, box: FaceBox, warnings: Iterable[str], params: PipelineParams,
                   numbers: Iterable[int], *, store: ClipStore, cached_only: bool = False) -> NormalizedClip | None:
    """``aligned_crops`` once the apex box is known: the part a worker process runs
    (``sammflow.tiles``), reading and writing the same store entries.

    Parameters
    ----------
    clip : ClipAnnotation
        The clip as processed: its frames are aligned to its apex's crop.
    frames : ClipFrames
    box : FaceBox
        The apex box (``apex_box``: from the dataset's apex).
    warnings : iterable of str
        The detection's, carried into the result.
    params : PipelineParams
    numbers : iterable of int
    store : ClipStore
    cached_only : bool
        Return ``None`` instead of aligning when a frame is not in the store (a cheap look
        before handing the work to a worker).

    Returns
    -------
    NormalizedClip or None
        As ``aligned_crops``; ``None`` only with ``cached_only``.

    Raises
    ------
    ClipError
        A frame not on disk or unreadable, frame smaller than the crop.
    """
    dh, ah = params.detect.hash, params.align.hash
    try:
        apex = frames.path(clip.apex)  # the template: the dataset's apex is on disk (apex_box), a spotted one too
    except FrameError as exc:
        raise ClipError(str(exc)) from exc
    crops: dict[int, np.ndarray] = {}
    matches: dict[int, FrameMatch] = {}
    missing = []
    for number in sorted({int(n) for n in numbers}):
        if number not in frames.frames:
            raise ClipError(f"{clip.clip}: frame {number} not on disk in {show_path(frames.folder)}")
        hit = store.get_crop(clip.clip, dh, ah, number, frames.frames[number], box, apex=apex)
        if hit is None:
            missing.append(number)
        else:
            crops[number], matches[number] = hit
    if missing and cached_only:
        return None
    if missing:
        normalized = normalize_clip(clip, frames, params=params, numbers=missing, box=box)
        for number, match in normalized.alignment.matches().items():
            crops[number], matches[number] = normalized.crops[number], match
            store.put_crop(clip.clip, dh, ah, number, frames.frames[number], box, normalized.crops[number], match, apex=apex)
    store.touch(clip.clip, dh, ah)
    return NormalizedClip(clip, crops, Alignment.from_matches(box, matches), tuple(warnings))


def spotted_clip(dataset: Dataset, clip_id: str, params: PipelineParams, *, store: ClipStore) -> tuple[ClipAnnotation, dict[int, float]]:
    """A clip as it is processed: with its apex spotted (``sammflow.pipeline.spot_clip``) if it
    is to be (``ClipAnnotation.spot``), from the face box of its provisional apex in the store.

    Parameters
    ----------
    dataset : Dataset
        Resolved with the run's ``AnnotationParams`` (``Dataset.resolved``).
    clip_id : str
    params : PipelineParams
        ``detect`` and ``align`` matter.
    store : ClipStore

    Returns
    -------
    clip : ClipAnnotation
        The dataset's own annotation, or, for a clip to be spotted, ``spot_clip``'s: the
        spotted ``apex``, ``apex_source="spotted"``.
    curve : dict of frame number → float
        The motion curve the apex was spotted on (``sammflow.spot.motion_curve``, crop px);
        empty for a clip that is not to be spotted.

    Raises
    ------
    ClipError
        Unknown clip, no face, fewer than 3 frames between onset and offset, a frame unreadable.
    """
    clip, frames = clip_of(dataset, clip_id)
    if not clip.spot:
        return clip, {}
    box, _ = apex_box(dataset, clip_id, params.detect, store=store)
    return spot_clip(clip, frames, params=params, box=box)


def motion(dataset: Dataset, clip_id: str, params: PipelineParams, *, store: ClipStore) -> tuple[ClipAnnotation, dict[int, float]]:
    """A clip's facial motion from its onset, frame by frame, between onset and offset.

    For a clip to be spotted, the curve its apex was spotted on (``spotted_clip``); for the
    others, ``sammflow.spot.motion_curve`` over its crops aligned to its apex (read through the
    store): the same measure, so the annotated apex can be compared with the curve's peak.

    Returns
    -------
    clip : ClipAnnotation
        As ``spotted_clip``.
    curve : dict of frame number → float
        Crop px; 0.0 at the onset; every frame on disk in ``[onset, offset]``.

    Raises
    ------
    ClipError
        As ``spotted_clip`` and ``aligned_crops``.
    """
    clip, curve = spotted_clip(dataset, clip_id, params, store=store)
    if curve:
        return clip, curve
    _, frames = clip_of(dataset, clip_id)
    numbers = [clip.onset, *frames.span(clip.onset, clip.offset)]
    aligned = aligned_crops(dataset, clip_id, params, numbers, store=store)
    try:
        return clip, motion_curve(aligned.crops, clip.onset)
    except ValueError as exc:  # crops of different shapes cannot happen for one clip; named all the same
        raise ClipError(f"{clip.clip}: {exc}") from exc


def mtcnn_track(dataset: Dataset, clip_id: str, params: DetectParams, *, store: ClipStore,
                progress: Callable[[int, int], None] | None = None) -> dict[int, FaceBox | None]:
    """MTCNN's own box on every frame of a clip (``None`` where it finds no face): how much a
    per-frame detection jitters, the "before" of the alignment diagnostics. Cached per clip.

    Parameters
    ----------
    progress : callable(done, total), optional
        Called after each detected frame (not when the whole track comes from the cache).

    Raises
    ------
    ClipError
        Unknown clip or an unreadable frame.
    """
    clip, frames = clip_of(dataset, clip_id)
    sources = {str(n): file_signature(p) for n, p in sorted(frames.frames.items())}
    cached = store.get_json(clip.clip, params.hash, "mtcnn", sources)
    if cached is not None:
        return {int(n): (FaceBox(**b) if b else None) for n, b in cached.items()}
    track: dict[int, FaceBox | None] = {}
    for i, (number, path) in enumerate(sorted(frames.frames.items())):
        try:
            track[number] = detect_face(read_grey(path), params=params, frame_number=number)
        except NoFaceError:
            track[number] = None
        except FrameError as exc:
            raise ClipError(f"{clip.clip}: {exc}") from exc
        if progress:
            progress(i + 1, len(frames.frames))
    store.put_json(clip.clip, params.hash, "mtcnn", sources, {str(n): (b.to_dict() if b else None) for n, b in track.items()})
    return track


# ---------------------------------------------------------------- helpers


def _safe(name: str) -> str:
    """A clip id as a single path component (clip ids come from user files)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "_"


def _box_key(box: FaceBox) -> list[int]:
    return [box.x1, box.y1, box.x2, box.y2]


def _apex_key(apex: Path) -> list[Any]:
    # the template a crop was aligned to: a spotted or fixed apex is another frame, with the same box
    return [str(apex), *file_signature(apex)]


def _read_entry(path: Path) -> dict[str, Any] | None:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    return data


def _write_json(path: Path, content: dict[str, Any]) -> None:
    try:
        write_atomic(path, json.dumps(content).encode())
    except OSError:
        # a read-only or full cache folder costs a recompute next time, never the result
        pass
