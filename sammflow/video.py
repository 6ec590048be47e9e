"""A researcher's own video as a one-subject SAMM-layout dataset: the frames of each event, extracted once.

``extract`` decodes the video with OpenCV (its FFmpeg backend) and writes the frames each
event needs, lossless grey PNG, under a cache folder, with a ``samm.csv`` that
``sammflow.annotations`` reads like SAMM's own::

    <cache>/<video stem>-<hash>/
        samm.csv                        Subject;Filename;...;Onset Frame;Apex Frame;Offset Frame;...;Notes
        extracted.json                  what was extracted, from which file (the folder is complete)
        001/001_1/001_000120.png        subject 001, clip 001_1: frames onset..offset of event 1
        001/001_smile/001_000400.png    a named event's clip: 001_<name>

Frame numbers are **0-based frame indices of the video, as OpenCV counts them** (the first
decoded frame is 0), in the events, in the file names and in ``samm.csv``. The subject is
``001`` (SAMM's ids are 3-digit numbers; ``sammflow.kinds``); the video's name is in the
Notes column. The folder name's hash covers the video file's size and modification time
and the events, so a changed video or other events extract again, and an existing folder
is used as it is, without decoding.

Frames are read sequentially from the first (``CAP_PROP_POS_FRAMES`` seeking lands on a
keyframe, not the frame asked for, in some containers): exact, and the videos of a few
events are short. Each frame is decoded once, however many events hold it, and converted
to grey here, once (``cv2.COLOR_BGR2GRAY``, as ``cv2.imread(..., IMREAD_GRAYSCALE)`` does).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sammflow.text import one_line, show_path

#: File suffixes taken for videos (``is_video``).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")
#: The subject id of a video's clips (SAMM's subject ids are 3-digit numbers).
SUBJECT = "001"
#: The annotation file in an extracted folder.
ANNOTATIONS = "samm.csv"
#: Written last: a folder holding it is complete.
MARKER = "extracted.json"
#: The folder of the sammflow cache (``sammflow.cache.cache_dir()``) extracted videos are kept in, by the CLI and the dashboard.
CACHE_FOLDER = "videos"
#: SAMM's own columns, in its order.
SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration", "Micro",
               "Action Units", "Estimated Emotion", "Objective Classes", "Notes")
_FORMAT = 1  # bump when what an extracted folder holds changes: older folders are then extracted again
_MAX_THREADS = 8  # PNG encoders; more gain nothing once decoding is the bottleneck
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: ``read_events``' header names (lower case, letters and digits only) for each field.
_EVENT_COLUMNS = {
    "onset": ("onset", "onsetframe"), "offset": ("offset", "offsetframe"), "apex": ("apex", "apexframe"),
    "emotion": ("emotion", "estimatedemotion"), "name": ("name", "clip", "event", "filename"),
}

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class VideoEvent:
    """One annotated event of a video: frame indices, 0-based as OpenCV counts them.

    Attributes
    ----------
    onset, offset : int
        First and last frame of the event (``0 <= onset <= offset``).
    apex : int or None
        The apex frame (``onset <= apex <= offset``); ``None``: to be spotted (the pipeline's
        apex policy ``auto``).
    emotion : str
        Written to the Estimated Emotion column (labels come from it).
    name : str
        The clip's name (``001_<name>``, made filename-safe); ``""``: ``001_<event number>``.

    Raises
    ------
    ValueError
        One line naming the cause: a frame that is not a non-negative integer, onset after
        offset, apex outside onset..offset.
    """

    onset: int
    offset: int
    apex: int | None = None
    emotion: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        for field_name in ("onset", "offset", "apex"):
            value = getattr(self, field_name)
            if value is None and field_name == "apex":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{field_name} frame must be an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"{field_name} frame {value} is negative (frames are 0-based video frame indices)")
            object.__setattr__(self, field_name, int(value))
        if self.onset > self.offset:
            raise ValueError(f"onset frame {self.onset} is after offset frame {self.offset}")
        if self.apex is not None and self.apex < self.onset:
            raise ValueError(f"apex frame {self.apex} is before onset frame {self.onset}")
        if self.apex is not None and self.apex > self.offset:
            raise ValueError(f"apex frame {self.apex} is after offset frame {self.offset}")


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a video, by its suffix alone (``VIDEO_SUFFIXES``, any case).

    The file need not exist: a missing ``clip.mp4`` is still a video, so that its error
    says "video file not found" rather than "dataset folder not found".
    """
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def clip_names(events: Sequence[VideoEvent]) -> list[str]:
    """The clip id of each event, in order: ``001_<name>`` (filename-safe) or ``001_<event number>``.

    Raises
    ------
    ValueError
        If two events make the same clip id (naming both events).
    """
    names = [_clip_name(event, i) for i, event in enumerate(events)]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise ValueError(f"events {first[name] + 1} and {i + 1} both make clip {name}: give them different names")
        first[name] = i
    return names


def _clip_name(event: VideoEvent, index: int) -> str:
    name = _SAFE.sub("_", event.name.strip()).strip("._")
    return f"{SUBJECT}_{name or index + 1}"


def _event_label(event: VideoEvent, index: int) -> str:
    return f"event {index + 1}" + (f" ({one_line(event.name)})" if event.name.strip() else "")


def read_events(path: str | os.PathLike[str]) -> list[VideoEvent]:
    """The events of one video from a CSV file.

    Parameters
    ----------
    path : str or Path
        A table separated by ``,``, ``;`` or tabs (UTF-8, optional BOM, or Windows-1252), with a
        header naming ``onset`` and ``offset`` and optionally ``apex``, ``emotion`` and
        ``name`` (or ``clip``); case and spacing are free (``Onset Frame``, ``OnsetFrame``,
        ``onset_frame``). Frames are 0-based video frame indices; an empty apex is ``None``
        (to be spotted). Empty rows are skipped.

    Returns
    -------
    list of VideoEvent
        In file order.

    Raises
    ------
    ValueError
        One line naming the file and the cause: missing or unreadable file, no header with
        onset and offset, no events, and for a bad row its row number (1-based line, header
        included) and what is wrong with it (an empty or non-integer frame, onset after
        offset, apex outside onset..offset, a name another row already has).
    """
    path = Path(path)
    where = show_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{where}: events file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{where}: is a folder, expected an events CSV file") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read the events file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    rows, columns = _event_table(text)
    if columns is None:
        first = next((r for r in rows if any(c.strip() for c in r[1])), (0, []))[1]
        raise ValueError(f"{where}: no header row with onset and offset columns (first row: {one_line(repr(first[:6]))})")
    events: list[VideoEvent] = []
    seen: dict[str, int] = {}
    for number, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        values = {key: (cells[i].strip() if i < len(cells) else "") for key, i in columns.items()}
        try:
            event = VideoEvent(onset=_frame(values, "onset"), offset=_frame(values, "offset"),
                               apex=_frame(values, "apex") if values.get("apex") else None,
                               emotion=values.get("emotion", ""), name=values.get("name", ""))
        except ValueError as exc:
            raise ValueError(f"{where}: row {number}: {exc}") from None
        clip = _clip_name(event, len(events))
        if clip in seen:
            raise ValueError(f"{where}: row {number}: clip {clip} is also row {seen[clip]}'s: give the events different names")
        seen[clip] = number
        events.append(event)
    if not events:
        raise ValueError(f"{where}: no events below the header")
    return events


def _event_table(text: str) -> tuple[list[tuple[int, list[str]]], dict[str, int] | None]:
    """The data rows ``(line number, cells)`` below the header and the header's columns, with
    the delimiter whose first non-empty row names onset and offset (``None``: none does)."""
    rows: list[tuple[int, list[str]]] = []
    for delimiter in (",", ";", "\t"):
        rows = list(enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), start=1))
        at = next((i for i, (_, cells) in enumerate(rows) if any(c.strip() for c in cells)), None)
        if at is None:
            return rows, None
        names = [re.sub(r"[^a-z0-9]", "", cell.lower()) for cell in rows[at][1]]
        columns = {}
        for key, spellings in _EVENT_COLUMNS.items():
            found = [i for i, name in enumerate(names) if name in spellings]
            if found:
                columns[key] = found[0]
        if "onset" in columns and "offset" in columns:
            return rows[at + 1:], columns
    return rows, None


def _frame(values: dict[str, str], key: str) -> int:
    raw = values.get(key, "")
    if not raw:
        raise ValueError(f"empty {key}")
    if not re.fullmatch(r"[+-]?\d+(\.0*)?", raw):  # a spreadsheet's 120.0 is 120
        raise ValueError(f"{key} {raw!r} is not an integer frame number")
    return int(float(raw)) if "." in raw else int(raw)


def video_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What the container says about a video, without decoding it (for the dashboard).

    Returns
    -------
    dict
        ``frames`` (int: the container's frame count, an estimate for some formats; 0 when it
        has none), ``fps`` (float, 0.0 if unknown), ``width``, ``height`` (int, px).

    Raises
    ------
    ValueError
        One line naming the file and the cause: not found, not readable, empty, not a video
        OpenCV can open.
    """
    _checked_file(Path(path), show_path(path))
    with _opened(Path(path), show_path(path)) as capture:
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = capture.get(cv2.CAP_PROP_FPS)
        return {"frames": int(frames) if 0 < frames < 2**53 else 0, "fps": float(fps) if fps > 0 else 0.0,
                "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}


def extract(video: str | os.PathLike[str], events: Sequence[VideoEvent], *, cache: str | os.PathLike[str],
            progress: Progress | None = None) -> Path:
    """The frames of each event of ``video`` as a SAMM-layout folder with its ``samm.csv`` (see the module docstring).

    An event without an apex gets an empty Apex Frame cell: read the folder with the apex
    policy ``auto`` (``AnnotationParams(apex="auto")``, ``--apex auto``), which spots it; the
    default policy ``annotated`` rejects such a row. The command line must therefore use
    ``auto`` for videos.

    Parameters
    ----------
    video : str or Path
        A video file OpenCV's FFmpeg backend reads (any path: one OpenCV cannot take is
        opened through a symbolic link in the temporary folder).
    events : sequence of VideoEvent
        Frame indices 0-based, as OpenCV counts them.
    cache : str or Path
        The folder extracted videos are kept in (``sammflow.cache.cache_dir() / "videos"``).
    progress : callable(done, total, label), optional
        Called after each decoded frame: frames read so far, frames to read (the last
        event's offset + 1), the video's file name.

    Returns
    -------
    Path
        ``<cache>/<video stem>-<hash>``: ``001/<clip>/001_<frame:06d>.png`` (uint8 grey,
        H×W as the video), ``samm.csv``, ``extracted.json``. The same folder, not decoded
        again, for the same file (size, modification time) and events.

    Raises
    ------
    ValueError
        One line naming the video and the cause: not found, not readable, not a video
        OpenCV can open, no frames, an event after the video's last frame, no events, two
        events making the same clip.
    """
    where = show_path(video)  # as the user gave it
    video = Path(video).absolute()
    events = tuple(events)
    if not events:
        raise ValueError(f"{where}: no events to extract")
    try:
        names = clip_names(events)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    stat = _checked_file(video, where)
    key = hashlib.sha256(json.dumps({"format": _FORMAT, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                     "events": [asdict(e) for e in events]}, sort_keys=True).encode()).hexdigest()[:16]
    stem = _SAFE.sub("_", video.stem).strip("._")[:80] or "video"  # a folder name stays far below the 255-byte limit
    cache = Path(cache)
    folder = cache / f"{stem}-{key}"
    if (folder / MARKER).is_file():
        return folder
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=cache))
    except OSError as exc:
        raise ValueError(f"{show_path(cache)}: cannot write to the video cache folder ({exc.strerror or exc})") from None
    try:
        info = _write_frames(video, where, events, names, staging, progress)
        _write_annotations(staging / ANNOTATIONS, video, events, names)
        record = {"format": _FORMAT, "video": where, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **info,
                  "events": [{"clip": n, **asdict(e)} for n, e in zip(names, events)]}
        (staging / MARKER).write_text(json.dumps(record, indent=1), encoding="utf-8")
        if folder.exists() and not (folder / MARKER).is_file():
            shutil.rmtree(folder)  # not complete (its marker was removed): this hash's folder is made again
        try:  # the folder appears whole or not at all
            os.replace(staging, folder)
        except OSError:
            if not (folder / MARKER).is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another process extracted the same events meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _checked_file(video: Path, where: str) -> os.stat_result:
    """The video file's status; ``ValueError`` naming it (as ``where``) if it cannot be read."""
    try:
        stat = video.stat()
        if video.is_dir():
            raise ValueError(f"{where}: is a folder, expected a video file")
        with open(video, "rb"):
            pass
    except FileNotFoundError:
        raise ValueError(f"{where}: video file not found") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read the video file ({exc.strerror or exc})") from None
    if stat.st_size == 0:
        raise ValueError(f"{where}: empty file (0 bytes), not a video")
    return stat


def _write_frames(video: Path, where: str, events: Sequence[VideoEvent], names: Sequence[str], folder: Path,
                  progress: Progress | None) -> dict[str, Any]:
    """Decode ``video`` from its first frame to the last event's offset and write each event's
    frames into ``folder/001/<clip>/``; the video's size and rate as read.

    PNG encoding costs more than decoding (≈ 60 ms against 20 ms for a 2040×1088 frame), so
    frames are encoded and written by a few threads while the next ones decode (OpenCV
    releases the GIL); at most two per thread wait, bounding memory."""
    targets: dict[int, list[Path]] = {}  # frame index → the clip folders holding it
    for event, name in zip(events, names):
        clip_dir = folder / SUBJECT / name
        clip_dir.mkdir(parents=True)
        for number in range(event.onset, event.offset + 1):
            targets.setdefault(number, []).append(clip_dir)
    total = max(targets) + 1
    label = show_path(video.name)
    threads = max(1, min(_MAX_THREADS, os.cpu_count() or 1))
    pending: deque[Future[None]] = deque()
    with _opened(video, where) as capture, ThreadPoolExecutor(threads, thread_name_prefix="sammflow-video") as pool:
        try:
            claimed = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            fps = capture.get(cv2.CAP_PROP_FPS)
            width = height = 0
            for index in range(total):
                if not capture.grab():  # the end of the video (or of what decodes)
                    _raise_past_end(where, events, index, claimed)
                if index in targets:
                    ok, image = capture.retrieve()
                    if not ok or image is None:
                        raise ValueError(f"{where}: frame {index} could not be decoded (damaged video?)")
                    grey = _grey(image)
                    height, width = grey.shape
                    pending.append(pool.submit(_write_png, grey, [d / f"{SUBJECT}_{index:06d}.png" for d in targets[index]]))
                    while len(pending) > 2 * threads:
                        pending.popleft().result()
                if progress:
                    progress(index + 1, total, label)
            while pending:
                pending.popleft().result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return {"frames_read": total, "fps": float(fps) if fps > 0 else 0.0, "width": width, "height": height}


def _write_png(grey: np.ndarray, files: Sequence[Path]) -> None:
    """One frame as lossless PNG in each of ``files`` (encoded once). Written by Python, not
    ``cv2.imwrite``: any folder name works; plain writes, as the folder is private until renamed."""
    ok, encoded = cv2.imencode(".png", grey)
    if not ok:  # pragma: no cover - a uint8 grey image always encodes
        raise ValueError(f"{show_path(files[0])}: could not be encoded as PNG")
    data = encoded.tobytes()
    for file in files:
        try:
            file.write_bytes(data)
        except OSError as exc:
            raise ValueError(f"{show_path(file)}: cannot write the frame ({exc.strerror or exc})") from None


def _raise_past_end(where: str, events: Sequence[VideoEvent], count: int, claimed: float) -> None:
    if count == 0:
        raise ValueError(f"{where}: no frames could be decoded (not a video, or damaged)")
    last = count - 1
    hint = f" (decoding stopped there, but the file claims {int(claimed)} frames: damaged or cut short?)" if count < claimed < 2**53 else ""
    for i, event in enumerate(events):
        if event.offset > last:
            raise ValueError(f"{where}: {_event_label(event, i)}: offset {event.offset} is after the video's last frame {last}{hint}")
    raise AssertionError("called with every event inside the video")  # pragma: no cover


def _grey(image: np.ndarray) -> np.ndarray:
    """A decoded frame as uint8 grey H×W (OpenCV's BGR / BGRA → grey weights)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return image.reshape(image.shape[:2]).copy()  # its own memory: it is written by another thread
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def _write_annotations(path: Path, video: Path, events: Sequence[VideoEvent], names: Sequence[str]) -> None:
    """``samm.csv`` in SAMM's own format (``;``, CRLF): one row per event, an empty Apex Frame for one to spot."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(SAMM_HEADER)
    notes = f"video {show_path(video.name)}, frames are 0-based video frame indices"
    for event, name in zip(events, names):
        apex = "" if event.apex is None else str(event.apex)
        writer.writerow([SUBJECT, name, "", event.onset, apex, event.offset, event.offset - event.onset + 1, "", "",
                         one_line(event.emotion), "", notes])
    path.write_bytes(buffer.getvalue().encode("utf-8"))


class _Quiet:
    """FFmpeg prints its own lines ("moov atom not found") and OpenCV its warnings, naming no
    file; this module reports each failure itself, naming the video. FFmpeg reads its level
    when OpenCV first loads it, so it is set before the first capture, unless the user chose
    one (``OPENCV_FFMPEG_LOGLEVEL``)."""

    done = False

    @classmethod
    def ffmpeg(cls) -> None:
        if not cls.done:
            cls.done = True
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def _openable(path: Path) -> bool:
    """Whether OpenCV can be given this path as it is: valid UTF-8 (another name crashes it)
    and no ``%`` (an image-sequence pattern to OpenCV)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "%" not in text


@contextmanager
def _opened(video: Path, where: str) -> Iterator[cv2.VideoCapture]:
    """An open ``cv2.VideoCapture`` of ``video`` (released on exit); ``ValueError`` naming the
    file (as ``where``) if OpenCV cannot open it."""
    _Quiet.ffmpeg()
    video = video.absolute()  # never read as a protocol ("concat:...") by FFmpeg
    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    with (nullcontext(None) if _openable(video) else tempfile.TemporaryDirectory(prefix="sammflow-video-")) as links:
        name = os.fspath(video)
        if links is not None:
            suffix = video.suffix if re.fullmatch(r"\.[A-Za-z0-9]+", video.suffix) else ""
            name = os.path.join(links, f"video{suffix}")
            os.symlink(video, name)
        level = None if "OPENCV_LOG_LEVEL" in os.environ else cv2.utils.logging.getLogLevel()
        if level is not None:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            capture = cv2.VideoCapture(name, backend)
        finally:
            if level is not None:
                cv2.utils.logging.setLogLevel(level)
        try:
            if not capture.isOpened():
                raise ValueError(f"{where}: cannot be opened as a video (not a format OpenCV's FFmpeg reads, or damaged)")
            yield capture
        finally:
            capture.release()
