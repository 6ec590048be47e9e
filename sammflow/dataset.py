"""Dataset discovery: frames on disk in SAMM layout, joined with the annotations.

Layout: ``ROOT/<subject>/<clip>/<subject>_<frame>.<jpg|png|bmp>``, e.g.
``DATA/006/006_1_2/006_05562.jpg``. The frame number is the file name's trailing integer
(absolute, as in the annotations; zero padding varies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sammflow.annotations import Annotations, ClipAnnotation

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
            raise FrameError(f"{self.clip}: frame {number} not found in {self.folder} (frames on disk: {span})") from None

    def span(self, first: int, last: int) -> list[int]:
        """Frame numbers on disk within ``[first, last]``."""
        return [n for n in self.numbers if first <= n <= last]


@dataclass(frozen=True)
class DatasetIssue:
    """Something in the dataset that does not match the annotations."""

    clip: str
    kind: str  # no_folder | no_annotation | missing_frame | duplicate_frame | bad_name | unreadable
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Dataset:
    """Annotations joined with the clip folders found under ``root``."""

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
        if not self.clips_on_disk:
            unreadable = [i.message for i in self.issues if i.kind == "unreadable"]
            found = f"; {unreadable[0]}" if unreadable else ""
            raise InputError(f"{self.root}: no clip folders with frames found "
                             f"(expected {expected}, ... : <subject>/<clip>/<frames>){found}")
        seen = ", ".join(f"{c.subject}/{c.clip}" for c in list(self.clips_on_disk.values())[:2])
        raise InputError(f"{self.root}: none of the {len(self.annotations.clips)} annotated clips has a folder here "
                         f"(expected e.g. {expected}; found {seen}): wrong dataset folder or annotation file?")

    def clip(self, clip_id: str) -> tuple[ClipAnnotation, ClipFrames]:
        """The annotation and frames of one clip; ``KeyError`` with the reason if unusable."""
        ann = self.annotations.by_clip.get(clip_id)
        if ann is None:
            raise KeyError(f"{clip_id}: not a valid annotated clip")
        frames = self.clips_on_disk.get(clip_id)
        if frames is None:
            raise KeyError(f"{clip_id}: no folder under {self.root}")
        return ann, frames


def discover(root: str | Path) -> tuple[dict[str, ClipFrames], list[DatasetIssue]]:
    """Find clip folders ``root/<subject>/<clip>/`` and their frame files.

    Returns the clips by id and the problems met (duplicate frame numbers, names without a
    trailing frame number, subject or clip folders that cannot be read). Raises
    ``FileNotFoundError`` / ``NotADirectoryError`` / ``PermissionError`` for a bad root.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: is a file, expected the dataset folder (subject/clip/frames)")
    try:
        subject_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        raise PermissionError(f"{root}: cannot read the dataset folder ({exc.strerror or exc})") from exc
    clips: dict[str, ClipFrames] = {}
    issues: list[DatasetIssue] = []

    def listing(folder: Path, what: str) -> list[Path]:
        try:
            return sorted(folder.iterdir())
        except OSError as exc:
            message = f"{folder.name}: cannot read {what} folder {folder} ({exc.strerror or exc})"
            issues.append(DatasetIssue(folder.name, "unreadable", message))
            return []

    for subject_dir in subject_dirs:
        for clip_dir in (p for p in listing(subject_dir, "subject") if p.is_dir()):
            frames: dict[int, Path] = {}
            for file in listing(clip_dir, "clip"):
                if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                    continue
                if file.name.startswith("."):  # macOS "._006_05562.jpg" resource forks: not frames
                    continue
                match = _FRAME_NAME.search(file.stem)
                if match is None:
                    issues.append(DatasetIssue(clip_dir.name, "bad_name", f"{clip_dir.name}: {file.name} has no trailing frame number; ignored"))
                    continue
                number = int(match.group(1))
                if number in frames:
                    issues.append(
                        DatasetIssue(clip_dir.name, "duplicate_frame", f"{clip_dir.name}: frame {number} twice ({frames[number].name}, {file.name}); using the first")
                    )
                    continue
                frames[number] = file
            if frames:
                clips[clip_dir.name] = ClipFrames(subject_dir.name, clip_dir.name, clip_dir, frames)
    return clips, issues


def load_dataset(root: str | Path, annotations: Annotations) -> Dataset:
    """Discover ``root`` and report how it matches ``annotations``: annotated clips without a
    folder, folders without a row, onset/apex/offset frames missing on disk."""
    clips, issues = discover(root)
    for ann in annotations.clips:
        frames = clips.get(ann.clip)
        if frames is None:
            if not any(i.clip in (ann.clip, ann.subject) and i.kind == "unreadable" for i in issues):
                message = f"{ann.clip}: annotated but no folder {ann.subject}/{ann.clip} under {root}"
                issues.append(DatasetIssue(ann.clip, "no_folder", message))
            continue
        for name in ("onset", "apex", "offset"):
            number = getattr(ann, name)
            if number not in frames.frames:
                issues.append(DatasetIssue(ann.clip, "missing_frame", f"{ann.clip}: {name} frame {number} not on disk"))
    annotated = set(annotations.by_clip) | {r.clip for r in annotations.rejected}
    for clip_id in sorted(set(clips) - annotated):
        issues.append(DatasetIssue(clip_id, "no_annotation", f"{clip_id}: folder has no annotation row"))
    return Dataset(Path(root), annotations, clips, tuple(issues))


def undecodable(path: Path) -> FrameError:
    """The error for an image file that cannot be decoded, worded the same wherever it is found."""
    return FrameError(f"{path}: not a decodable image (corrupt, truncated, or not {path.suffix[1:].upper()})")


def read_grey(path: str | Path, *, reduce: int = 1) -> np.ndarray:
    """Decode an image file straight to grey.

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
        If the file is missing, empty, truncated or not an image; the message names the file.
    """
    path = Path(path)
    flags = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
    if reduce not in flags:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread on some platforms
    except OSError as exc:
        raise FrameError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise FrameError(f"{path}: empty file (0 bytes)")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        # OpenCV decodes a truncated JPEG into a half-grey frame with only a warning
        raise FrameError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(data, flags[reduce])
    if image is None:
        raise undecodable(path)
    return image


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
        raise InputError(f"{text!r}: not a valid path (contains a NUL byte)")
    base = Path(root).expanduser().resolve()
    path = Path(text.strip()).expanduser() if text.strip() else Path()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if resolved != base and base not in resolved.parents:
        raise InputError(f"{text}: outside the allowed folder {base}")
    return resolved
