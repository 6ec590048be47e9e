"""Dataset discovery: frames on disk in SAMM layout, joined with the annotations.

Layout: ``ROOT/<subject>/<clip>/<subject>_<frame>.<jpg|png|bmp>``, e.g.
``DATA/006/006_1_2/006_05562.jpg``. The frame number is the file name's trailing integer
(absolute, as in the annotations; zero padding varies). Frame files are decoded by
``sammflow.frames``, whose readers this module re-exports for its callers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sammflow.annotations import Annotations, ClipAnnotation
from sammflow.frames import MAX_FRAME_PIXELS, FrameError, frame_size, read_grey, undecodable
from sammflow.params import AnnotationParams
from sammflow.text import show_path

__all__ = ["ClipFrames", "Dataset", "DatasetIssue", "FrameError", "InputError", "MAX_FRAME_PIXELS", "discover", "frame_size",
           "load_dataset", "read_grey", "safe_path", "show_path", "undecodable"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_FRAME_NAME = re.compile(r"(\d+)$")


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
    its annotated subject (a clip name may be under several subject folders). ``_scanned``
    keeps what ``load_dataset`` found on disk, so ``resolved`` joins other annotations
    without scanning again.
    """

    root: Path
    annotations: Annotations
    clips_on_disk: dict[str, ClipFrames]
    issues: tuple[DatasetIssue, ...] = ()
    _scanned: tuple[tuple[_Folder, ...], tuple[DatasetIssue, ...]] | None = field(default=None, repr=False, compare=False)
    _issue_index: dict[str, list[DatasetIssue]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[DatasetIssue]] = {}
        for issue in self.issues:
            index.setdefault(issue.clip, []).append(issue)
        object.__setattr__(self, "_issue_index", index)

    @property
    def kind(self) -> str:
        """Dataset kind (``"samm"``), as its annotations say."""
        return self.annotations.dataset

    def resolved(self, params: AnnotationParams) -> Dataset:
        """The same folders joined with ``annotations.resolved(params)`` (shipped fixes, apex
        policy); ``self`` when that changes nothing. Issues are recomputed from the scan kept
        by ``load_dataset`` (a dataset built otherwise is scanned again)."""
        annotations = self.annotations.resolved(params)
        return self if annotations is self.annotations else self.with_annotations(annotations)

    def with_annotations(self, annotations: Annotations) -> Dataset:
        """The same folders joined with other annotations (from the scan kept by
        ``load_dataset``; a dataset built otherwise is scanned again)."""
        if self._scanned is None:
            return load_dataset(self.root, annotations)
        return _join(self.root, annotations, *self._scanned)

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
    return _join(root, annotations, tuple(folders), tuple(issues))


def _join(root: Path, annotations: Annotations, folders: tuple[_Folder, ...], scan_issues: tuple[DatasetIssue, ...]) -> Dataset:
    """The dataset of ``annotations`` and the folders ``_scan`` found (``load_dataset``)."""
    issues = list(scan_issues)
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
    return Dataset(root, annotations, clips, tuple(issues), _scanned=(folders, scan_issues))


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
