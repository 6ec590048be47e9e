"""Dataset discovery: frames on disk in SAMM layout, joined with the annotations.

Layout: ``ROOT/<subject>/<clip>/<subject>_<frame>.<jpg|png|bmp>``, e.g.
``DATA/006/006_1_2/006_05562.jpg``. The frame number is the file name's trailing integer
(absolute, as in the annotations; zero padding varies).
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from sammflow.annotations import Annotations, ClipAnnotation
from sammflow.text import show_path

__all__ = ["ClipFrames", "Dataset", "DatasetIssue", "FrameError", "InputError", "MAX_FRAME_PIXELS", "discover", "frame_size",
           "load_dataset", "read_grey", "safe_path", "show_path", "undecodable"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_FRAME_NAME = re.compile(r"(\d+)$")


class FrameError(ValueError):
    """A frame file that cannot be used (missing, unreadable, not an image)."""


class InputError(ValueError):
    """An input or output location unusable as a whole (dataset folder with no clips, output
    folder inside the dataset or not writable, a path outside the allowed root...). The
    message names the path and the cause; the command line prints it and exits 2."""


@dataclass(frozen=True)
class ClipFrames:
    """The frames of one clip folder, by absolute frame number."""

    subject: str
    clip: str
    folder: Path
    frames: dict[int, Path]

    @property
    def numbers(self) -> list[int]:
        return sorted(self.frames)

    def path(self, number: int) -> Path:
        """The file of frame ``number``; ``FrameError`` naming the clip if it is not on disk."""
        try:
            return self.frames[number]
        except KeyError:
            span = f"{min(self.frames)}–{max(self.frames)}" if self.frames else "none"
            raise FrameError(f"{self.clip}: frame {number} not found in {show_path(self.folder)} (frames on disk: {span})") from None

    def span(self, first: int, last: int) -> list[int]:
        """Frame numbers on disk within ``[first, last]``."""
        return [n for n in self.numbers if first <= n <= last]


@dataclass(frozen=True)
class DatasetIssue:
    """Something in the dataset that does not match the annotations.

    ``kind``: ``no_folder`` (an annotated clip has no usable folder: none, an empty one, one
    without frames, only folders under other subjects; the message says which),
    ``no_annotation``, ``missing_frame``, ``duplicate_frame``, ``bad_name``, ``unreadable``,
    ``duplicate_folder`` (one clip name under several subject folders) and
    ``subject_mismatch`` (an annotated clip found under another subject's folder, used).
    """

    clip: str
    kind: str
    message: str
    folder: Path | None = None  # the folder concerned, where one exists (an empty or unusable clip folder)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Dataset:
    """Annotations joined with the clip folders found under ``root``.

    ``clips_on_disk`` maps a clip id to its folder: for an annotated clip, the folder under
    its annotated subject (a clip name may be under several subject folders).
    """

    root: Path
    annotations: Annotations
    clips_on_disk: dict[str, ClipFrames]
    issues: tuple[DatasetIssue, ...] = ()
    _issue_index: dict[str, list[DatasetIssue]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[DatasetIssue]] = {}
        for issue in self.issues:
            index.setdefault(issue.clip, []).append(issue)
        object.__setattr__(self, "_issue_index", index)

    def issues_for(self, clip: str) -> list[DatasetIssue]:
        return self._issue_index.get(clip, [])

    @property
    def frame_count(self) -> int:
        return sum(len(c.frames) for c in self.clips_on_disk.values())

    def ready(self) -> list[tuple[ClipAnnotation, ClipFrames]]:
        """Annotated clips whose folder holds both the onset and the apex frame."""
        out = []
        for ann in self.annotations.clips:
            frames = self.clips_on_disk.get(ann.clip)
            if frames is not None and ann.onset in frames.frames and ann.apex in frames.frames:
                out.append((ann, frames))
        return out

    def check_usable(self) -> None:
        """``InputError`` if no annotated clip has a folder here: the wrong folder, or the wrong
        annotation file, rather than many individually broken clips."""
        if not self.annotations.clips:
            return  # every row rejected: each is reported as its own manifest row
        if any(c.clip in self.clips_on_disk for c in self.annotations.clips):
            return
        expected = ", ".join(f"{c.subject}/{c.clip}" for c in self.annotations.clips[:2])
        root = show_path(self.root)
        # folders that are there but unusable say more than "not found"
        causes = [i.message for i in self.issues if i.kind == "unreadable" or (i.kind == "no_folder" and i.folder is not None)]
        found = f"; {causes[0]}" if causes else ""
        if not self.clips_on_disk:
            raise InputError(f"{root}: no clip folders with frames found "
                             f"(expected {expected}, ... : <subject>/<clip>/<frames>){found}")
        seen = ", ".join(f"{show_path(c.subject)}/{show_path(c.clip)}" for c in list(self.clips_on_disk.values())[:2])
        raise InputError(f"{root}: none of the {len(self.annotations.clips)} annotated clips has a folder here "
                         f"(expected e.g. {expected}; found {seen}): wrong dataset folder or annotation file?{found}")

    def folder_problem(self, clip_id: str, subject: str | None = None) -> str | None:
        """Why an annotated clip has no usable folder (the message names the clip and the
        cause: no folder, an empty one, frames in another format, an unreadable folder, the
        clip name only under other subjects), or ``None`` if it has one. ``subject``: the
        clip's subject, if not the annotation's."""
        if clip_id in self.clips_on_disk:
            return None
        ann = self.annotations.by_clip.get(clip_id)
        subject = subject or (ann.subject if ann is not None else None)
        for issue in [*self.issues_for(clip_id), *(self.issues_for(subject) if subject else [])]:
            if issue.kind == "no_folder":
                return issue.message
            if issue.kind == "unreadable":  # "<folder>: cannot read ... folder <path> (<cause>)"
                return f"{clip_id}: {issue.message.split(': ', 1)[1]}"
        where = f"{subject}/{clip_id}" if subject else clip_id
        return f"{clip_id}: no folder {where} under {show_path(self.root)}"

    def clip(self, clip_id: str) -> tuple[ClipAnnotation, ClipFrames]:
        """The annotation and frames of one clip; ``KeyError`` with the reason if unusable."""
        ann = self.annotations.by_clip.get(clip_id)
        if ann is None:
            raise KeyError(f"{clip_id}: not a valid annotated clip")
        frames = self.clips_on_disk.get(clip_id)
        if frames is None:
            raise KeyError(self.folder_problem(clip_id))
        return ann, frames


@dataclass(frozen=True)
class _Folder:
    """A clip folder as found: its frames, or why it has none."""

    frames: ClipFrames
    empty_because: str = ""  # "" when it has frames


def _scan(root: Path) -> tuple[list[_Folder], list[DatasetIssue]]:
    """Every ``root/<subject>/<clip>/`` folder (those without frames too, saying why) and the
    problems met inside folders (see ``discover``)."""
    if not root.exists():
        raise FileNotFoundError(f"{show_path(root)}: dataset folder not found")
    if not root.is_dir():
        raise NotADirectoryError(f"{show_path(root)}: is a file, expected the dataset folder (subject/clip/frames)")
    try:
        subject_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        raise PermissionError(f"{show_path(root)}: cannot read the dataset folder ({exc.strerror or exc})") from exc
    folders: list[_Folder] = []
    issues: list[DatasetIssue] = []

    def listing(folder: Path, what: str) -> list[Path] | None:
        try:
            return sorted(folder.iterdir())
        except OSError as exc:
            message = f"{show_path(folder.name)}: cannot read {what} folder {show_path(folder)} ({exc.strerror or exc})"
            issues.append(DatasetIssue(folder.name, "unreadable", message))
            return None

    for subject_dir in subject_dirs:
        for clip_dir in (p for p in listing(subject_dir, "subject") or [] if p.is_dir()):
            files = listing(clip_dir, "clip")
            if files is None:
                continue
            clip = clip_dir.name
            frames: dict[int, Path] = {}
            unnumbered: list[Path] = []
            for file in files:
                if file.suffix.lower() not in IMAGE_SUFFIXES or not (file.is_file() or file.is_symlink() and not file.exists()):
                    continue  # a broken symbolic link is kept: reading it says what it is
                if file.name.startswith("."):  # macOS "._006_05562.jpg" resource forks: not frames
                    continue
                match = _FRAME_NAME.search(file.stem)
                if match is None:
                    unnumbered.append(file)
                    issues.append(DatasetIssue(clip, "bad_name", f"{show_path(clip)}: {show_path(file.name)} has no trailing frame number; ignored"))
                    continue
                number = int(match.group(1))
                if number in frames:
                    issues.append(DatasetIssue(clip, "duplicate_frame", f"{show_path(clip)}: frame {number} twice "
                                                                        f"({show_path(frames[number].name)}, {show_path(file.name)}); using the first"))
                    continue
                frames[number] = file
            found = ClipFrames(subject_dir.name, clip, clip_dir, frames)
            folders.append(_Folder(found, "" if frames else _why_no_frames(clip_dir, files, unnumbered)))
    return folders, issues


def _why_no_frames(folder: Path, files: list[Path], unnumbered: list[Path]) -> str:
    where = f"folder {show_path(folder)}"
    visible = [f for f in files if not f.name.startswith(".")]
    subfolders = [f for f in visible if f.is_dir()]
    others = [f for f in visible if not f.is_dir()]
    if unnumbered:
        return (f"{where} has no frames: {len(unnumbered)} image files, but none named with a trailing frame number "
                f"(e.g. {show_path(unnumbered[0].name)})")
    if others:
        kinds = ", ".join(sorted({f.suffix.lower() or f.name for f in others}))
        return f"{where} holds only {show_path(kinds)} files; sammflow reads {'/'.join(IMAGE_SUFFIXES)} frames"
    if subfolders:
        names = ", ".join(f"{show_path(f.name)}/" for f in subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
        which = "the subfolder" if len(subfolders) == 1 else "the subfolders"
        return f"{where} has no frames, only {which} {names} (frames must be directly in the clip folder)"
    return f"{where} has no frames (it is empty)"


def _duplicates(folders: list[_Folder]) -> dict[str, list[ClipFrames]]:
    """Clip names found under more than one subject folder, with their folders."""
    by_name: dict[str, list[ClipFrames]] = {}
    for folder in folders:
        by_name.setdefault(folder.frames.clip, []).append(folder.frames)
    return {name: found for name, found in by_name.items() if len(found) > 1}


def _short(frames: ClipFrames) -> str:
    return f"{show_path(frames.subject)}/{show_path(frames.clip)}"


def discover(root: str | Path) -> tuple[dict[str, ClipFrames], list[DatasetIssue]]:
    """Find clip folders ``root/<subject>/<clip>/`` and their frame files.

    Returns the clips with frames by id and the problems met (duplicate frame numbers, names
    without a trailing frame number, subject or clip folders that cannot be read, one clip
    name under several subject folders: the first subject's is returned, ``load_dataset``
    chooses by the annotated subject). Raises ``FileNotFoundError`` / ``NotADirectoryError`` /
    ``PermissionError`` for a bad root.
    """
    folders, issues = _scan(Path(root))
    for name, found in _duplicates(folders).items():
        issues.append(DatasetIssue(name, "duplicate_folder", f"{show_path(name)}: clip folders of that name under several subjects: "
                                                              f"{' and '.join(_short(f) for f in found)}"))
    clips: dict[str, ClipFrames] = {}
    for folder in folders:
        if folder.frames.frames:
            clips.setdefault(folder.frames.clip, folder.frames)
    return clips, issues


def _same_subject(folder: str, subject: str) -> bool:
    """A subject folder is the annotated subject's, also when written another way (``6`` for ``006``)."""
    return folder == subject or (folder.isdigit() and subject.isdigit() and int(folder) == int(subject))


def load_dataset(root: str | Path, annotations: Annotations) -> Dataset:
    """Discover ``root`` and report how it matches ``annotations``: annotated clips without a
    (usable) folder, folders without a row, onset/apex/offset frames missing on disk, one clip
    name under several subject folders (the annotated subject's folder is used)."""
    root = Path(root)
    folders, issues = _scan(root)
    by_name: dict[str, list[_Folder]] = {}
    for folder in folders:
        by_name.setdefault(folder.frames.clip, []).append(folder)
    clips: dict[str, ClipFrames] = {}

    def choose(clip: str, subject: str) -> _Folder | None:
        """The folder of clip ``clip`` of ``subject``; a ``no_folder`` issue if there is none to use."""
        found = by_name.get(clip, [])
        mine = [f for f in found if _same_subject(f.frames.subject, subject)]
        if len(mine) == 1:
            chosen = mine[0]
            if len(found) > 1:
                names = [_short(f.frames) for f in found]
                listed = " and ".join(names) if len(names) == 2 else ", ".join(names)
                count = "two" if len(names) == 2 else str(len(names))
                issues.append(DatasetIssue(clip, "duplicate_folder", f"{clip}: {count} clip folders of that name, {listed}; "
                                                                     f"using {_short(chosen.frames)} (annotated subject {subject})"))
        elif len(found) == 1 and not mine:
            chosen = found[0]
            issues.append(DatasetIssue(clip, "subject_mismatch", f"{clip}: annotated with subject {subject}, found in folder "
                                                                 f"{_short(chosen.frames)}; using it"))
        else:
            if not found and any(i.clip in (clip, subject) and i.kind == "unreadable" for i in issues):
                return None  # the unreadable folder is the cause, already reported
            message = f"{clip}: annotated but no folder {subject}/{clip} under {show_path(root)}"
            if found:
                others = ", ".join(_short(f.frames) for f in found)
                message = (f"{clip}: annotated with subject {subject}, but no folder {subject}/{clip} under {show_path(root)}; "
                           f"folders of that name are under other subjects: {others}")
                if mine:  # "6/006_1_2" and "006/006_1_2"
                    message = (f"{clip}: several folders are subject {subject}'s clip {clip}: "
                               f"{', '.join(_short(f.frames) for f in mine)}; rename all but one")
            issues.append(DatasetIssue(clip, "no_folder", message))
            return None
        if chosen.empty_because:
            issues.append(DatasetIssue(clip, "no_folder", f"{clip}: {chosen.empty_because}", chosen.frames.folder))
            return None
        clips[clip] = chosen.frames
        return chosen

    for ann in annotations.clips:
        chosen = choose(ann.clip, ann.subject)
        if chosen is None:
            continue
        for name in ("onset", "apex", "offset"):
            number = getattr(ann, name)
            if number not in chosen.frames.frames:
                issues.append(DatasetIssue(ann.clip, "missing_frame", f"{ann.clip}: {name} frame {number} not on disk"))
    for row in annotations.rejected:  # reported by the annotations; their folder still counts as seen
        found = [f for f in by_name.get(row.clip, []) if f.frames.frames]
        mine = [f for f in found if _same_subject(f.frames.subject, row.subject)]
        if (mine or found) and row.clip not in clips:
            clips[row.clip] = (mine or found)[0].frames
    annotated = set(annotations.by_clip) | {r.clip for r in annotations.rejected}
    for name in sorted(set(by_name) - annotated):
        with_frames = [f.frames for f in by_name[name] if f.frames.frames]
        if not with_frames:
            continue
        clips[name] = with_frames[0]
        if len(with_frames) > 1:
            issues.append(DatasetIssue(name, "duplicate_folder", f"{show_path(name)}: clip folders of that name under several "
                                                                 f"subjects: {' and '.join(_short(f) for f in with_frames)}"))
        issues.append(DatasetIssue(name, "no_annotation", f"{show_path(name)}: folder has no annotation row"))
    # a folder whose files are all unnumbered is one "has no frames" issue, not one per file
    unusable = {i.clip for i in issues if i.kind == "no_folder" and i.folder is not None}
    issues = [i for i in issues if not (i.kind == "bad_name" and i.clip in unusable)]
    return Dataset(root, annotations, clips, tuple(issues))


#: Frames larger than this are refused before decoding (a header can claim any size: a
#: "decompression bomb"). 8192 × 8192: above any camera's video frame (8K UHD is 7680 × 4320),
#: and below Pillow's own warning threshold, so Pillow never warns about a frame read here.
MAX_FRAME_PIXELS = 8192 * 8192


class _Quiet:
    """OpenCV's own log lines ("[ WARN:0@1.2] ... imdecode_ ...") name no file; sammflow
    reports every decode failure itself, naming the file. Silenced once, unless the user
    chose a level with ``OPENCV_LOG_LEVEL``."""

    done = False

    @classmethod
    def opencv(cls) -> None:
        if not cls.done:
            cls.done = True
            if "OPENCV_LOG_LEVEL" not in os.environ:
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def undecodable(path: str | Path, cause: str | None = None) -> FrameError:
    """The error for an image file that cannot be decoded, worded the same wherever it is found."""
    if cause:
        return FrameError(f"{show_path(path)}: not a decodable image ({cause})")
    return FrameError(f"{show_path(path)}: not a decodable image (corrupt, truncated, or not {Path(path).suffix[1:].upper()})")


def _too_large(path: str | Path, width: int, height: int) -> FrameError | None:
    if width * height <= MAX_FRAME_PIXELS:
        return None
    return FrameError(f"{show_path(path)}: image is {width}×{height} px, larger than any video frame: refusing to decode")


def _read_bytes(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise FrameError(f"{show_path(path)}: broken symbolic link (to {show_path(os.readlink(path))}, which does not exist)") from exc
        raise FrameError(f"{show_path(path)}: cannot read ({exc.strerror or exc})") from exc
    except OSError as exc:
        raise FrameError(f"{show_path(path)}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise FrameError(f"{show_path(path)}: empty file (0 bytes)")
    return data


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DECODE_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def read_grey(path: str | Path, *, reduce: int = 1) -> np.ndarray:
    """Decode an image file straight to grey.

    The result is exactly what ``cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)`` (or
    ``IMREAD_REDUCED_GRAYSCALE_<reduce>``) gives, EXIF orientation included, but damage is an
    error naming the file instead of a garbage frame and a library message on the terminal:
    JPEG is decoded by libjpeg-turbo through ``simplejpeg`` in strict mode (corrupt data
    raises); a PNG is checked (complete chunks, CRCs) and reduced to the chunks that decide its
    pixels, so libpng's warnings about metadata (colour profiles, text) cannot print either,
    then decoded by Pillow (8-bit grey: it raises on damaged image data) or, once its image
    data is checked too, by OpenCV. Any path works: the bytes are read here, by Python.

    Parameters
    ----------
    path : str or Path
        JPEG, PNG or BMP. Colour images are converted to grey, 16-bit ones scaled to 8 bits.
    reduce : {1, 2, 4, 8}
        Decode at 1/``reduce`` size (JPEG decodes this much faster).

    Returns
    -------
    ndarray, uint8, shape (H, W)

    Raises
    ------
    FrameError
        If the file is missing, unreadable (its cause, e.g. ``Permission denied``), empty,
        truncated, corrupt, not an image, or claims a size no video frame has; the message
        names the file.
    """
    if reduce not in _DECODE_FLAGS:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    data = _read_bytes(path)
    if data[:3] == b"\xff\xd8\xff":
        return _decode_jpeg(data, path, reduce)
    if data[:8] == _PNG_SIGNATURE:
        return _decode_png(data, path, reduce)
    if data[:2] == b"BM":
        _check_bmp(data, path)
    return _decode_opencv(data, path, reduce)


def frame_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as ``read_grey`` will return it (EXIF orientation applied),
    from its header when the format allows (JPEG, PNG, BMP).

    Raises
    ------
    FrameError
        As ``read_grey``: unreadable, empty, not an image, or too large to be a frame.
    """
    data = _read_bytes(path)
    if data[:3] == b"\xff\xd8\xff":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return read_grey(path).shape[:2]  # a JPEG libjpeg-turbo's header reader refuses: as OpenCV does
        size = (height, width)
        orientation = _jpeg_orientation(data)
    elif data[:8] == _PNG_SIGNATURE:
        header, orientation = _png_header(data, path)
        size = (header[1], header[0])
    elif data[:2] == b"BM":
        width, height = _check_bmp(data, path)
        size, orientation = (height, width), 1
    else:
        return read_grey(path).shape[:2]
    if (error := _too_large(path, size[1], size[0])) is not None:
        raise error
    return size[::-1] if orientation >= 5 else size


def _decode_opencv(data: bytes, path: str | Path, reduce: int) -> np.ndarray:
    _Quiet.opencv()
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS[reduce])
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise undecodable(path, str(exc).strip().splitlines()[-1]) from None
    if image is None:
        raise undecodable(path)
    return image


# ---------------------------------------------------------------- JPEG

#: libjpeg warnings about bytes around the image data, not the data: the image decodes whole
#: (OpenCV printed them and went on; read quietly).
_BENIGN_JPEG = re.compile(r"extraneous bytes before marker|unknown JFIF revision|bad ICC marker|Unknown Adobe color transform|"
                          r"Invalid SOS parameters for sequential JPEG", re.IGNORECASE)


def _decode_jpeg(data: bytes, path: str | Path, reduce: int) -> np.ndarray:
    if b"\xff\xd9" not in data[-1024:]:
        # a JPEG cut short: libjpeg fills the rest with grey and only warns
        raise FrameError(f"{show_path(path)}: truncated JPEG (no end-of-image marker)")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        # libjpeg-turbo's TurboJPEG API refuses a few unusual JPEGs libjpeg reads (odd chroma
        # sampling): OpenCV decodes those, and fails on what is not a JPEG at all
        return _decode_opencv(data, path, reduce)
    if (error := _too_large(path, width, height)) is not None:
        raise error
    # libjpeg scales by 8/8 … 1/8; this asks exactly for 1/reduce, as OpenCV's reduced modes do
    size = {"min_factor": reduce, "min_height": -(-height // reduce), "min_width": -(-width // reduce)} if reduce > 1 else {}
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, **size)
    except ValueError as exc:
        cause = re.sub(r"^tj\w+\(\): ", "", str(exc)).strip()
        if not _BENIGN_JPEG.search(cause):
            cause = cause.removeprefix("Corrupt JPEG data: ")
            raise FrameError(f"{show_path(path)}: corrupt JPEG data ({cause[:1].lower()}{cause[1:]})") from None
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=False, **size)
    return _orient(image[..., 0], _jpeg_orientation(data))


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image upright per its EXIF orientation (1–8), as ``cv2.imdecode`` does."""
    turned = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.T,
              6: lambda a: a.T[:, ::-1], 7: lambda a: a.T[::-1, ::-1], 8: lambda a: a.T[::-1]}.get(orientation)
    return np.ascontiguousarray(turned(image) if turned else image)


def _jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG (1 if none): the first APP1 ``Exif`` segment before the image data."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no EXIF
            return 1
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[pos + 10:pos + 2 + length])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 (orientation) of a TIFF/EXIF block's first IFD; 1 if absent or malformed."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, kind, _ = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112 and kind == 3:
                (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * i + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


# ---------------------------------------------------------------- PNG

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_chunks(data: bytes, path: str | Path) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk up to IEND; ``FrameError`` if a chunk is cut off."""
    chunks, pos = [], 8
    while True:
        if pos + 8 > len(data):
            what = f"after the {chunks[-1][0].decode('latin-1')} chunk" if chunks else "in its header"
            raise FrameError(f"{show_path(path)}: truncated PNG (the file ends {what})")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise FrameError(f"{show_path(path)}: truncated PNG (the {kind.decode('latin-1')} chunk is cut off)")
        chunks.append((kind, pos, end))
        if kind == b"IEND":
            return chunks
        pos = end


def _png_header(data: bytes, path: str | Path, chunks: list[tuple[bytes, int, int]] | None = None) -> tuple[tuple[int, ...], int]:
    """IHDR fields (width, height, depth, colour type, interlace) and the eXIf orientation."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise undecodable(path, "PNG without a header chunk")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if (error := _too_large(path, width, height)) is not None:
        raise error
    if not width or not height or depth not in _PNG_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise undecodable(path, "invalid PNG header")
    orientation = 1
    for kind, start, end in chunks if chunks is not None else _png_chunks(data, path):
        if kind == b"eXIf" and data[start + 8:start + 10] in (b"II", b"MM"):
            orientation = _tiff_orientation(data[start + 8:end - 4])
            break
    return (width, height, depth, colour, interlace), orientation


def _decode_png(data: bytes, path: str | Path, reduce: int) -> np.ndarray:
    """A PNG checked (``_checked_png``), then decoded: 8-bit grey ones (sammflow's own crops,
    most grey frames) by Pillow, which raises on damaged image data (its pixels are the file's,
    as OpenCV's are; a reduced size is OpenCV's: ``INTER_LINEAR_EXACT`` to the floor of
    1/``reduce``); the others by OpenCV once their image data is checked too."""
    from PIL import Image, ImageFile

    (width, height, depth, colour, interlace), orientation, cleaned = _checked_png(data, path)
    if (depth, colour, orientation) == (8, 0, 1) and min(width, height) >= reduce and not ImageFile.LOAD_TRUNCATED_IMAGES:
        try:
            with Image.open(io.BytesIO(cleaned)) as image:
                image.load()
                grey = np.array(image)
        except (OSError, ValueError, SyntaxError, zlib.error) as exc:
            cause = (str(exc) or type(exc).__name__).removesuffix(" when reading image file")
            if "truncated" in cause:
                raise FrameError(f"{show_path(path)}: truncated PNG data (the image data ends early)") from None
            raise FrameError(f"{show_path(path)}: corrupt PNG data ({cause})") from None
        if grey.shape != (height, width) or grey.dtype != np.uint8:  # pragma: no cover - Pillow reads 8-bit grey as "L"
            raise undecodable(path, f"read as {grey.dtype} {grey.shape}")
        return grey if reduce == 1 else cv2.resize(grey, (width // reduce, height // reduce), interpolation=cv2.INTER_LINEAR_EXACT)
    _check_png_data(cleaned, path, width, height, depth, colour, interlace)
    return _decode_opencv(cleaned, path, reduce)


def _checked_png(data: bytes, path: str | Path) -> tuple[tuple[int, ...], int, bytes]:
    """The PNG's header fields, its orientation, and the PNG reduced to the chunks that decide
    its pixels (IHDR, PLTE of a palette image, IDAT, a well-formed eXIf for the orientation,
    IEND), after checking what libpng would otherwise complain about on the terminal: every
    chunk complete, critical-chunk CRCs, the image data in one run."""
    chunks = _png_chunks(data, path)
    header, orientation = _png_header(data, path, chunks)
    colour = header[3]
    kept, idat, exif = [], [], False
    for kind, start, end in chunks:
        body = memoryview(data)[start + 8:end - 4]
        crc_ok = zlib.crc32(memoryview(data)[start + 4:end - 4]) == int.from_bytes(data[end - 4:end], "big")
        critical = not kind[0] & 0x20
        if kind == b"eXIf" and not exif and crc_ok and bytes(body[:2]) in (b"II", b"MM"):
            exif = True
            kept.append(data[start:end])
        if not critical or kind == b"IEND":
            continue
        if not crc_ok:
            raise FrameError(f"{show_path(path)}: corrupt PNG data (CRC error in the {kind.decode('latin-1')} chunk)")
        if kind == b"IDAT":
            if idat and idat[-1][1] != start:
                raise FrameError(f"{show_path(path)}: corrupt PNG data (image data split by other chunks)")
            idat.append((body, end))
            kept.append(data[start:end])
        elif kind == b"PLTE":
            if colour == 3:
                if len(body) % 3 or not 0 < len(body) <= 768:
                    raise undecodable(path, "invalid PNG palette")
                kept.append(data[start:end])
        elif kind != b"IHDR":
            raise undecodable(path, f"unknown critical PNG chunk {kind.decode('latin-1')!r}")
    if not idat:
        raise undecodable(path, "no IDAT chunk")
    if colour == 3 and not any(k[4:8] == b"PLTE" for k in kept):
        raise undecodable(path, "palette PNG without a palette")
    return header, orientation, b"".join([data[:33], *kept, b"\x00\x00\x00\x00IEND\xaeB`\x82"])


def _check_png_data(png: bytes, path: str | Path, width: int, height: int, depth: int, colour: int, interlace: int) -> None:
    """The image data of a checked PNG inflated once: its length against the header, the row
    filters (what libpng reports on the terminal as "Not enough image data", "bad adaptive
    filter value"...)."""
    idat = b"".join(png[start + 8:end - 4] for kind, start, end in _png_chunks(png, path) if kind == b"IDAT")
    bits = _PNG_CHANNELS[colour] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    rows = []  # (row count, bytes per row incl. filter byte) per pass
    for x0, y0, dx, dy in passes:
        cols, count = (width - x0 + dx - 1) // dx if width > x0 else 0, (height - y0 + dy - 1) // dy if height > y0 else 0
        if cols and count:
            rows.append((count, 1 + (cols * bits + 7) // 8))
    expected = sum(count * stride for count, stride in rows)
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(idat, expected + 1)
    except zlib.error as exc:
        raise FrameError(f"{show_path(path)}: corrupt PNG data (compressed image data: {str(exc).split(': ', 1)[-1]})") from None
    if len(raw) > expected or stream.unused_data or stream.unconsumed_tail:
        raise FrameError(f"{show_path(path)}: corrupt PNG data (more image data than its {width}×{height} size holds)")
    if len(raw) < expected or not stream.eof:
        raise FrameError(f"{show_path(path)}: truncated PNG data (the image data ends early)")
    pixels, pos = np.frombuffer(raw, np.uint8), 0
    for count, stride in rows:
        filters = pixels[pos:pos + count * stride:stride]
        if filters.max(initial=0) > 4:
            raise FrameError(f"{show_path(path)}: corrupt PNG data (invalid row filter {int(filters.max())})")
        pos += count * stride


# ---------------------------------------------------------------- BMP


def _check_bmp(data: bytes, path: str | Path) -> tuple[int, int]:
    """(width, height) of a BMP from its header; ``FrameError`` if too large or cut short."""
    if len(data) < 26:
        raise FrameError(f"{show_path(path)}: truncated BMP (the file ends in its header)")
    (offset, header) = struct.unpack_from("<II", data, 10)
    if header == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
        compression = 0
    elif len(data) >= 34:
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", data, 18)
    else:
        raise FrameError(f"{show_path(path)}: truncated BMP (the file ends in its header)")
    width, height = abs(width), abs(height)
    if (error := _too_large(path, width, height)) is not None:
        raise error
    if compression in (0, 3) and bits in (1, 4, 8, 16, 24, 32):  # uncompressed: the size is known
        needed = offset + ((width * bits + 31) // 32) * 4 * height
        if len(data) < needed:
            raise FrameError(f"{show_path(path)}: truncated BMP ({len(data)} of {needed} bytes)")
    return width, height


def safe_path(root: str | Path, user_path: str | Path) -> Path:
    """``user_path`` resolved inside ``root``, for paths typed by a user of a shared server.

    Parameters
    ----------
    root : str or Path
        The folder the user may reach (need not exist).
    user_path : str or Path
        Relative to ``root``, or absolute; ``~`` is expanded. Empty means ``root`` itself.

    Returns
    -------
    Path
        Absolute, with ``..`` and symbolic links resolved.

    Raises
    ------
    InputError
        If the path leads outside ``root`` (``..`` components, an absolute path elsewhere, a
        symbolic link pointing out) or is not a valid path (a NUL byte).
    """
    text = str(user_path)
    if "\x00" in text:
        raise InputError(f"{show_path(text)!r}: not a valid path (contains a NUL byte)")
    base = Path(root).expanduser().resolve()
    path = Path(text.strip()).expanduser() if text.strip() else Path()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if resolved != base and base not in resolved.parents:
        raise InputError(f"{show_path(text)}: outside the allowed folder {show_path(base)}")
    return resolved
