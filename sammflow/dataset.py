"""Dataset discovery: frames on disk in SAMM layout, joined with the annotations.

Layout: ``ROOT/<subject>/<clip>/<subject>_<frame>.<jpg|png|bmp>``, e.g.
``DATA/006/006_1_2/006_05562.jpg``. The frame number is the file name's trailing integer
(absolute, as in the annotations; zero padding varies). Frame files are decoded by
``sammflow.frames``, whose readers this module re-exports for its callers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sammflow.annotations import Annotations, ClipAnnotation, RejectedRow
from sammflow.kinds import KINDS, Kind
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
    without scanning again. A composite (``merge``) keeps its ``parts``, one per kind.
    """

    root: Path
    annotations: Annotations
    clips_on_disk: dict[str, ClipFrames]
    issues: tuple[DatasetIssue, ...] = ()
    _scanned: tuple[tuple[_Folder, ...], tuple[DatasetIssue, ...], bool] | None = field(default=None, repr=False, compare=False)
    parts: tuple[Dataset, ...] = field(default=(), repr=False, compare=False)
    _issue_index: dict[str, list[DatasetIssue]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[DatasetIssue]] = {}
        for issue in self.issues:
            index.setdefault(issue.clip, []).append(issue)
        object.__setattr__(self, "_issue_index", index)

    @property
    def kind(self) -> str:
        """Dataset kind (``"samm"``), as its annotations say; a composite's kinds joined by ``+``."""
        return self.annotations.dataset

    @property
    def roots(self) -> tuple[Path, ...]:
        """The dataset folders: ``root``, or each part's for a composite."""
        return tuple(part.root for part in self.parts) or (self.root,)

    def resolved(self, params: AnnotationParams) -> Dataset:
        """The same folders joined with ``annotations.resolved(params)`` (shipped fixes, apex
        policy); ``self`` when that changes nothing. Issues are recomputed from the scan kept
        by ``load_dataset`` (a dataset built otherwise is scanned again); a composite resolves
        each of its parts."""
        if self.parts:
            parts = tuple(part.resolved(params) for part in self.parts)
            return self if all(a is b for a, b in zip(parts, self.parts)) else merge(parts)
        annotations = self.annotations.resolved(params)
        return self if annotations is self.annotations else self.with_annotations(annotations)

    def with_annotations(self, annotations: Annotations) -> Dataset:
        """The same folders joined with other annotations (from the scan kept by
        ``load_dataset``; a dataset built otherwise is scanned again)."""
        if self._scanned is None or annotations.dataset != self.annotations.dataset:
            return load_dataset(self.root, annotations, by_id=self._scanned is not None and self._scanned[2])
        folders, issues, by_id = self._scanned
        join = _join if by_id or annotations.dataset == "samm" else _join_kind
        return join(self.root, annotations, folders, issues, by_id)

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


def _check_root(root: Path, expected: str) -> None:
    """``FileNotFoundError`` / ``NotADirectoryError`` for a dataset folder that is missing or a file."""
    if not root.exists():
        raise FileNotFoundError(f"{show_path(root)}: dataset folder not found")
    if not root.is_dir():
        raise NotADirectoryError(f"{show_path(root)}: is a file, expected {expected}")


def _scan(root: Path) -> tuple[list[_Folder], list[DatasetIssue]]:
    """Every ``root/<subject>/<clip>/`` folder (those without frames too, saying why) and the
    problems met inside folders (see ``discover``)."""
    _check_root(root, "the dataset folder (subject/clip/frames)")
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
            if files is not None:
                folders.append(_frames_of(subject_dir.name, clip_dir.name, clip_dir, files, issues))
    return folders, issues


def _frame_files(files: list[Path]) -> list[Path]:
    """The image files among ``files`` (a broken symbolic link is kept: reading it says what it
    is; macOS ``._006_05562.jpg`` resource forks are not frames)."""
    return [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and (f.is_file() or f.is_symlink() and not f.exists())
            and not f.name.startswith(".")]


def _frames_of(subject: str, clip: str, folder: Path, files: list[Path], issues: list[DatasetIssue]) -> _Folder:
    """A clip folder's frames by number (the trailing integer of each name), or why it has none;
    names without a number and numbers seen twice are added to ``issues``."""
    frames: dict[int, Path] = {}
    unnumbered: list[Path] = []
    for file in _frame_files(files):
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
    return _Folder(ClipFrames(subject, clip, folder, frames), "" if frames else _why_no_frames(folder, files, unnumbered))


#: How deep below a frame folder the clip folders of any kind lie (SMIC: s1/micro/negative/s1_ne_01).
_LAYOUT_DEPTH = 4


def _scan_kind(root: Path, kind: Kind) -> tuple[list[_Folder], list[DatasetIssue]]:
    """The clip folders of a non-SAMM layout (``Kind.folder_of``), each as (subject, Filename) with
    its frames, and the problems met (see ``_scan``)."""
    _check_root(root, f"the {kind.title} dataset folder")
    folders: list[_Folder] = []
    issues: list[DatasetIssue] = []
    seen: set[Path] = set()
    for base in kind.frame_folders(root):
        for folder, subfolders, names in os.walk(base, onerror=lambda exc: issues.append(
                DatasetIssue(Path(exc.filename or "").name, "unreadable", f"{show_path(Path(exc.filename or '').name)}: cannot read "
                                                                          f"folder {show_path(exc.filename or '')} ({exc.strerror or exc})"))):
            here = Path(folder)
            parts = here.relative_to(base).parts
            if len(parts) >= _LAYOUT_DEPTH:
                subfolders[:] = []
            found = kind.folder_of(parts)
            if found is None or here in seen:
                continue
            files = sorted(here / name for name in names)
            if not _frame_files(files):
                continue
            seen.add(here)
            folders.append(_frames_of(found[0], found[1], here, files, issues))
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


def load_dataset(root: str | Path, annotations: Annotations, *, by_id: bool = False) -> Dataset:
    """Discover ``root`` and report how it matches ``annotations``: annotated clips without a
    (usable) folder, folders without a row, onset/apex/offset frames missing on disk, one clip
    name under several subject folders (the annotated subject's folder is used).

    The layout is the annotations' kind's (``sammflow.kinds``): SAMM's ``<subject>/<clip>/``,
    or another dataset's, where clips are matched by (subject, Filename). ``by_id``: the
    folders are ``<subject>/<clip id>/`` whatever the kind (a ``normalize`` output).
    """
    root = Path(root)
    if annotations.dataset != "samm" and not by_id:
        folders, issues = _scan_kind(root, KINDS[annotations.dataset])
        return _join_kind(root, annotations, tuple(folders), tuple(issues))
    folders, issues = _scan(root)
    return _join(root, annotations, tuple(folders), tuple(issues), by_id)


def _join_kind(root: Path, annotations: Annotations, folders: tuple[_Folder, ...], scan_issues: tuple[DatasetIssue, ...],
               by_id: bool = False) -> Dataset:
    """The dataset of a non-SAMM kind's ``annotations`` and the folders ``_scan_kind`` found: each
    clip's frames are those of the folder of its (subject, Filename); several clips may share
    one (CAS(ME)³ A: micro-expressions of one video)."""
    kind = KINDS[annotations.dataset]
    issues = list(scan_issues)
    by_key = {(f.frames.subject.lower(), f.frames.clip.lower()): f for f in folders}
    clips: dict[str, ClipFrames] = {}
    used: set[tuple[str, str]] = set()
    for ann in annotations.clips:
        key = (ann.subject.lower(), (ann.folder or ann.clip).lower())
        found = by_key.get(key)
        if found is None:
            where = "/".join(kind.clip_folder(ann.subject, ann.folder or ann.clip, ann.emotion))
            issues.append(DatasetIssue(ann.clip, "no_folder", f"{ann.clip}: annotated but no folder {where} under {show_path(root)}"))
            continue
        used.add(key)
        if found.empty_because:
            issues.append(DatasetIssue(ann.clip, "no_folder", f"{ann.clip}: {found.empty_because}", found.frames.folder))
            continue
        clips[ann.clip] = ClipFrames(ann.subject, ann.clip, found.frames.folder, found.frames.frames)
        for name in ("onset", "apex", "offset"):
            number = getattr(ann, name)
            if number not in found.frames.frames:
                issues.append(DatasetIssue(ann.clip, "missing_frame", f"{ann.clip}: {name} frame {number} not on disk"))
    for row in (*annotations.rejected, *annotations.omitted):  # annotated, though not processed: their folders are not "without a row"
        name = (row.values.get("folder") or row.values.get("clip", "")) if isinstance(row, RejectedRow) else (row.folder or row.clip)
        used.add((row.subject.lower(), name.lower()))
    for key, found in sorted(by_key.items()):
        if key not in used and found.frames.frames:
            name = f"{found.frames.subject}/{found.frames.clip}"
            issues.append(DatasetIssue(name, "no_annotation", f"{show_path(name)}: folder has no annotation row"))
    return Dataset(root, annotations, clips, tuple(issues), _scanned=(folders, scan_issues, by_id))


def _join(root: Path, annotations: Annotations, folders: tuple[_Folder, ...], scan_issues: tuple[DatasetIssue, ...],
          by_id: bool = False) -> Dataset:
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
    annotated = set(annotations.by_clip) | {r.clip for r in annotations.rejected} | {o.clip for o in annotations.omitted}
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
    return Dataset(root, annotations, clips, tuple(issues), _scanned=(folders, scan_issues, by_id))


def merge(parts: Sequence[Dataset]) -> Dataset:
    """One dataset of several of different kinds: the MEGC2019 composite, say.

    Every subject and clip id is prefixed by its kind (``samm-006``, ``casme2-sub01_EP02_01f``),
    so a subject of one dataset is never taken for another's (leave-one-subject-out folds
    never mix two people) and clip ids stay unique; each clip keeps its kind (``dataset``),
    its labels and its frames. Rows come in the parts' order, each part in its file's order.

    Raises
    ------
    InputError
        No parts, a composite among them, or two of one kind.
    """
    if not parts:
        raise InputError("a composite needs at least one dataset")
    kinds = [part.kind for part in parts]
    if any(part.parts for part in parts) or len(set(kinds)) != len(kinds):
        raise InputError(f"a composite takes one dataset of each kind, got {', '.join(kinds)}")
    clips, rejected, problems, issues = [], [], [], []
    on_disk: dict[str, ClipFrames] = {}
    for part in parts:
        prefix = f"{part.kind}-"
        for ann in part.annotations.clips:
            clips.append(dataclasses.replace(ann, subject=prefix + ann.subject, clip=prefix + ann.clip))
        for row in part.annotations.rejected:
            rejected.append(dataclasses.replace(row, subject=prefix + row.subject, clip=prefix + row.clip))
        problems += [dataclasses.replace(p, clip=prefix + p.clip) for p in part.annotations.problems]
        issues += [dataclasses.replace(i, clip=prefix + i.clip, message=f"{part.kind}: {i.message}") for i in part.issues]
        for clip_id, frames in part.clips_on_disk.items():
            on_disk[prefix + clip_id] = dataclasses.replace(frames, subject=prefix + frames.subject, clip=prefix + clip_id)
    first = parts[0].annotations
    annotations = Annotations(source=";".join(part.annotations.source for part in parts), clips=tuple(clips), rejected=tuple(rejected),
                              problems=tuple(problems), dataset="+".join(kinds), params=first.params)
    return Dataset(parts[0].root, annotations, on_disk, tuple(issues), parts=tuple(parts))


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
