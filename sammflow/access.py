"""What a dashboard user may reach: dataset, annotation and output paths, confined to allowed roots.

No Streamlit here: ``sammflow.ui`` calls these for every path that comes from a widget or a
URL query parameter, and tests call them directly.

Datasets of every kind, videos, composites
-------------------------------------------
A ``DatasetRef`` says which dataset a session looks at: a folder of any kind
(``sammflow.kinds``: ``kind`` ``""``/``"auto"`` recognises it from the annotation file's name,
then the folder's layout; the annotation file, if not given, is the kind's file found in the
folder), a **video** extracted into the cache (``extract_video``: its frames and a
``samm.csv``, by ``sammflow.video.extract``), or a **composite** of one folder per kind
(``composite_ref``: ``KIND=PATH[,annotations=FILE]`` per line, opened with
``sammflow.dataset.merge``). ``resolved_ref`` confines its paths and settles the kind and the
annotation file; ``ref_key`` is the in-memory cache key of what it reads.

Paths and links: what a page user can reach
-------------------------------------------
The dashboard may run on a shared lab server, where whoever opens the page (or a link someone
crafted) is not whoever started the server. So every path that comes from a widget or a URL
query parameter — the dataset folder (``?data=``), the annotation file (``?ann=``), a video
and its events file (``?video=``, ``?events=``), each folder and annotation file of a
composite (``?composite=``), the export output folder — is expanded (``~``), made absolute
(relative to the working folder), resolved (``..`` and symbolic links followed,
``Path.resolve``) and must then lie inside one of the **allowed roots** (``allowed_roots``), *before* anything is read, listed or even
checked for existence there. Otherwise the page shows an ``st.error`` naming the path, the rule
and the allowed roots, and reads nothing. The allowed roots are:

* ``$SAMMFLOW_ROOTS``: folders separated by ``:`` (``os.pathsep``), set by whoever starts
  the server, e.g. ``SAMMFLOW_ROOTS=/data/micro:/scratch/flows``; if it is unset or empty,
  the **working folder** the server was started from (``streamlit run app.py`` is started in
  the sammflow checkout, whose ``out/`` holds the default exports);
* always, the locations the server was started with, which the person starting it chose:
  ``$SAMMFLOW_DATA`` (that folder), ``$SAMMFLOW_ANNOTATIONS`` (that file only, not its
  folder), the export base folder (``$SAMMFLOW_OUT``, else ``./out``: see below), and the
  generated demo dataset's folder in the cache, and the cache's folder of extracted videos
  (``video_cache``: sammflow writes there, from videos inside the roots).

Not the home folder by default: on a lab server it holds the server account's credentials
(``~/.ssh``, ``~/.netrc``, cloud tokens), and an annotation-file error quotes the file's first
line. Datasets elsewhere need ``SAMMFLOW_ROOTS``. Only the paths a page user gives are
confined: symbolic links *inside* a dataset folder were put there by the dataset's owner and
are followed. The export folder must further resolve outside every dataset folder (the open
one, ``$SAMMFLOW_DATA``, the demo), and be new, empty, or an earlier sammflow output; one
export at a time writes to a folder (the same ``flock`` as the command line's jobs).

The export's default folder is one per dataset and parameter set,
``<base>/<dataset name>-<parameter hash>`` (``default_out_dir``; the demo's name is ``demo``),
so a second dataset or another parameter set never lands in the folder of the first. The
base is ``$SAMMFLOW_OUT`` when it is set, else ``./out`` (gitignored in the checkout): the
variable names the base, not the folder itself, and the base is an allowed root, so every
default folder is inside one. Before an export, ``export_plan`` says what the chosen folder
holds (nothing, an earlier export of the same parameters to resume, or one of other
parameters that the export would replace, with the files that replacing deletes), so the
page can offer those choices instead of the command line's ``--force``.

Other values from a link (clip ids, frame numbers, parameter values, choices) only select
among the options a widget offers: Streamlit drops a URL value that is not one of them, and
``link_choice`` says so on the page (``?clip=../../etc`` → "not a ready clip of this
dataset"). The compute functions check clip ids against the dataset too (``ClipError``),
and the disk cache turns clip ids into a single safe path component.

Uploads: the dashboard has no upload widget (it reads datasets where they are), so no file
is ever decoded from a request; ``server.maxUploadSize`` in ``.streamlit/config.toml`` only
caps what Streamlit's upload endpoint would accept. An annotation file larger than
``MAX_ANNOTATION_BYTES`` is refused before it is parsed.

Bad input is an ``st.error`` naming the path or clip and the cause, never a traceback: an
unusable dataset folder or annotation file in the sidebar (no page runs), a clip whose frames
cannot be decoded on the page that needed them (the other clips still show), and anything
unexpected in a page (``run_page``: the cause on the page, the traceback in the server log).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sammflow.annotations import AnnotationError, ClipAnnotation, read_annotations
from sammflow.cache import cache_dir, file_signature
from sammflow.dataset import Dataset, InputError, load_dataset, merge, safe_path
from sammflow.demo import DemoConfig, generate_demo, read_ground_truth
from sammflow.kinds import KINDS, guess_kind, parse_spec, resolve as resolve_kind
from sammflow.outfolder import check_output_dir, existing_output
from sammflow.video import ANNOTATIONS as VIDEO_ANNOTATIONS, CACHE_FOLDER as VIDEO_CACHE, VIDEO_SUFFIXES, VideoEvent, extract, is_video, read_events, video_info

#: Environment variables read by the dashboard.
ENV_DATA = "SAMMFLOW_DATA"  # dataset folder (default: the generated demo)
ENV_ANNOTATIONS = "SAMMFLOW_ANNOTATIONS"  # annotation file (default: the kind's file in DATA, sammflow.kinds)
ENV_DEMO_CONFIG = "SAMMFLOW_DEMO_CONFIG"  # JSON of DemoConfig fields, e.g. a small demo for tests
ENV_OUT = "SAMMFLOW_OUT"  # base folder of the batch export's default folders (one per dataset and parameter hash)
ENV_DEVICE = "SAMMFLOW_DEVICE"  # torch device of MTCNN (default cpu)
ENV_ROOTS = "SAMMFLOW_ROOTS"  # folders a page user may open or export to (see the module docstring)

#: Annotation tables are tens of KB (SAMM's xlsx ≈ 100 KB): a bigger file is the wrong file.
MAX_ANNOTATION_BYTES = 20 * 1024 * 1024

#: The kind box's first choice, and a ``DatasetRef.kind`` that is not settled yet.
AUTO = "auto"
#: The extracted videos' folder in the cache (``video_cache``), the command line's too.
VIDEOS = VIDEO_CACHE

Loader = Callable[[str, str, tuple[Any, ...], str], Dataset]


@dataclass(frozen=True)
class DatasetRef:
    """Which dataset the session looks at: the in-memory cache key of everything per clip
    (``ref_key``).

    Attributes
    ----------
    root : str
        The dataset folder, as typed; a composite's: its first part's.
    annotations : str
        The annotation file; ``""``: the kind's file found in ``root`` (``sammflow.kinds.resolve``).
    demo : bool
        The generated demo dataset.
    kind : str
        A kind of ``sammflow.kinds.KINDS``; ``""`` or ``"auto"``: recognised (``resolved_ref``);
        a composite's: its parts' kinds joined by ``+`` (``"samm+casme2"``).
    parts : tuple of DatasetRef
        A composite's datasets, one per kind (``composite_ref``).
    video : str
        The video file ``root`` was extracted from (``extract_video``).
    fps : float
        The video's frame rate (0.0: not a video, or unknown): its clips' rate is not its kind's.
    """

    root: str
    annotations: str = ""
    demo: bool = False
    kind: str = ""
    parts: tuple[DatasetRef, ...] = ()
    video: str = ""
    fps: float = 0.0

    @property
    def label(self) -> str:
        """``"demo dataset"``, ``"composite: SAMM + CASME II"``, the video's or the folder's name."""
        if self.demo:
            return "demo dataset"
        if self.parts:
            return kind_title(self.kind)
        return Path(self.video or self.root).name


def kind_title(kind: str) -> str:
    """A dataset kind as the papers write it: ``"SAMM"``, ``"CASME II"``; a composite's
    (``"samm+casme2"``) ``"composite: SAMM + CASME II"``; ``"auto"`` for one not settled yet."""
    names = [name for name in kind.split("+") if name]
    titles = [KINDS[name].title if name in KINDS else name for name in names]
    if len(titles) > 1:
        return "composite: " + " + ".join(titles)
    return titles[0] if titles else AUTO


def allowed_roots() -> list[Path]:
    """The folders (and files) a page user may open or export to; read on every run.

    Returns
    -------
    list of Path
        Resolved, without duplicates: the ``$SAMMFLOW_ROOTS`` folders (``:``-separated; the
        working folder if unset or empty), then ``$SAMMFLOW_DATA``, ``$SAMMFLOW_ANNOTATIONS``
        (the file itself), the export base folder (``out_base``: ``$SAMMFLOW_OUT``, else
        ``./out``), the demo dataset's folder and the extracted videos' (``video_cache``).
        See the module docstring for why.
    """
    listed = [e.strip() for e in os.environ.get(ENV_ROOTS, "").split(os.pathsep) if e.strip()]
    entries = listed or [str(Path.cwd())]
    entries += [os.environ.get(name, "").strip() for name in (ENV_DATA, ENV_ANNOTATIONS)]
    entries.append(str(out_base()))
    try:
        entries.append(str(demo_root(demo_config())))
    except ValueError:  # a bad $SAMMFLOW_DEMO_CONFIG: the sidebar reports it when the demo is chosen
        pass
    entries.append(str(video_cache()))
    roots: list[Path] = []
    for entry in filter(None, entries):
        try:
            root = Path(entry).expanduser().resolve()
        except (OSError, RuntimeError):  # an unknown ~user, a symbolic-link loop: nothing to allow
            continue
        if root not in roots:
            roots.append(root)
    return roots


def allowed_path(text: str | Path, what: str) -> Path:
    """A path given by a page user (a widget, a URL query parameter), confined to the allowed roots.

    Checked before anything is read, listed or tested for existence at the path, so the answer
    is the same whether or not something exists outside the roots.

    Parameters
    ----------
    text : str or Path
        As typed: ``~`` is expanded, a relative path is taken from the working folder.
    what : str
        What the path is for, to start the message with (``"Dataset folder"``).

    Returns
    -------
    Path
        Absolute, with ``..`` and symbolic links resolved, inside one of ``allowed_roots()``.

    Raises
    ------
    InputError
        A ``ValueError`` whose message names the path, the rule and the allowed roots.
    """
    typed = str(text).strip()
    try:
        if "\x00" in typed:
            raise ValueError("it contains a NUL character")
        path = Path(typed).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        roots = allowed_roots()
        for root in roots:
            try:
                return safe_path(root, path)
            except InputError:
                continue
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"{what} {typed!r} is not a usable path ({exc}).") from None
    listed = "\n".join(f"- `{r}`" for r in roots) or "- none"
    raise InputError(f"{what} `{typed}` is outside the folders this dashboard may open.\n\n"
                     f"Paths are resolved (`..` and symbolic links followed) and must lie inside one of:\n{listed}\n\n"
                     f"Whoever starts the dashboard can allow more folders with `{ENV_ROOTS}` (separated by `{os.pathsep}`).")


def checked_ref(ref: DatasetRef) -> DatasetRef:
    """``ref`` with its dataset folder and annotation file (if given) resolved inside the
    allowed roots; a composite's, each part's.

    Parameters
    ----------
    ref : DatasetRef

    Returns
    -------
    DatasetRef

    Raises
    ------
    InputError
        An empty folder, or a path outside the allowed roots (``allowed_path``).
    """
    if ref.parts:
        parts = tuple(checked_ref(part) for part in ref.parts)
        return dataclasses.replace(ref, root=parts[0].root, parts=parts)
    if not ref.root.strip():
        raise InputError("No dataset folder given: type the folder that holds <subject>/<clip>/ frames, or choose the demo dataset.")
    root = allowed_path(ref.root, "Dataset folder")
    ann = str(allowed_path(ref.annotations, "Annotation file")) if ref.annotations.strip() else ""
    return dataclasses.replace(ref, root=str(root), annotations=ann)


def resolved_ref(ref: DatasetRef) -> DatasetRef:
    """``ref`` checked (``checked_ref``) and settled: its kind and its annotation file known.

    The dataset folder must exist; the kind, if ``""`` or ``"auto"``, is recognised from the
    annotation file's name, then the folder's files and layout (``sammflow.kinds.resolve``);
    the annotation file, if not given, is the kind's file in the folder, confined like a typed
    one. Nothing is read but the folder's listing. Settled refs come back as they are.

    Returns
    -------
    DatasetRef
        ``kind`` one of ``KINDS`` (a composite's: its parts' joined by ``+``), ``annotations``
        an existing file of at most ``MAX_ANNOTATION_BYTES``.

    Raises
    ------
    ValueError
        With a message naming the path and the problem, for ``st.error``: outside the allowed
        roots, missing folder, an unknown kind, no annotation file (naming the kind and the file
        names it looks for), an annotation file that is missing, a folder or too big; a
        composite's problem names its dataset, and two datasets of one kind are refused.
    """
    if ref.parts:
        parts = []
        for part in ref.parts:
            try:
                parts.append(_resolved_folder(part, composite=True))
            except ValueError as exc:
                raise type(exc)(f"Composite dataset `{part.kind}={part.root}`: {exc}") from None
        kinds = [part.kind for part in parts]
        if len(set(kinds)) != len(kinds):
            raise InputError(f"A composite takes one dataset of each kind, got {', '.join(kinds)}.")
        return dataclasses.replace(ref, root=parts[0].root, annotations="", kind="+".join(kinds), parts=tuple(parts))
    return _resolved_folder(ref)


def _resolved_folder(ref: DatasetRef, *, composite: bool = False) -> DatasetRef:
    """``resolved_ref`` of one folder (``composite``: a composite's, whose kind its line names)."""
    if ref.kind not in ("", AUTO, *KINDS):
        raise InputError(f"Unknown dataset kind {ref.kind!r}: one of {AUTO}, {', '.join(KINDS)}.")
    ref = checked_ref(ref)
    root = Path(ref.root)
    if not root.exists():
        raise ValueError(f"Dataset folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"Not a folder: {root} (expected the dataset folder holding <subject>/<clip>/ frames)")
    kind, found = resolve_kind(root, Path(ref.annotations) if ref.annotations else None, ref.kind)
    if found is None:
        raise ValueError(_no_annotation_file(root, kind, chosen=ref.kind not in ("", AUTO), composite=composite))
    ann = Path(ref.annotations) if ref.annotations else allowed_path(found, "Annotation file")
    if not ann.exists():
        raise ValueError(f"Annotation file not found: {ann}")
    if ann.is_dir():
        raise ValueError(f"Not a file: {ann} is a folder (expected the annotation file, {_file_names(kind)})")
    size = file_signature(ann)[0]
    if size > MAX_ANNOTATION_BYTES:
        raise ValueError(f"Annotation file {ann} is {size / 2**20:.0f} MB; an annotation table is at most "
                         f"{MAX_ANNOTATION_BYTES // 2**20} MB (SAMM's is about 0.1 MB): wrong file?")
    return dataclasses.replace(ref, annotations=str(ann), kind=kind)


def _file_names(kind: str) -> str:
    """The annotation file names a kind looks for, in words: ``samm.csv, SAMM_Micro_FACS_Codes*.xlsx, …``."""
    return " or ".join(", ".join(f"`{p}`" for p in KINDS[kind].annotation_files).rsplit(", ", 1))


def _no_annotation_file(root: Path, kind: str, *, chosen: bool, composite: bool = False) -> str:
    """Why no annotation file was found in ``root``: the kind, how it was settled, the file names
    it looks for, and what the folder looks like instead."""
    title = KINDS[kind].title
    looks = guess_kind(root)
    if composite:
        how = "the kind its line names"
    elif chosen:
        how = "the kind chosen in the sidebar"
    elif looks is not None:
        how = "the kind recognised from the folder's layout"
    else:
        listed = "; ".join(f"{k.title}: {_file_names(name)}" for name, k in KINDS.items())
        return (f"No annotation file in {root}: none of the kinds' files is there ({listed}), and its folders are not "
                "any kind's layout. Type the annotation file's path, or choose the kind.")
    message = f"No {title} annotation file in {root} ({how}; expected {_file_names(kind)})."
    if chosen and looks not in (None, kind):
        other = resolve_kind(root, None, looks)[1]
        holds = f"holds {other.name}, a {KINDS[looks].title} annotation file" if other else f"looks like {KINDS[looks].title}"
        message += f" This folder {holds}: " + (f"write {looks}={root}." if composite else f"choose {KINDS[looks].title} or {AUTO}.")
    if composite:
        return message + f" Add `,annotations=FILE` to its line, or give it another kind ({', '.join(KINDS)})."
    return message + " Type the annotation file's path, or choose another kind."


def ref_key(ref: DatasetRef) -> str:
    """The in-memory cache key of a resolved dataset (``resolved_ref``): each folder's kind,
    path and annotation file, with the signatures of the file and the folder (``signature``)."""
    return ";".join(f"{part.kind}|{part.root}|{part.annotations}|{signature(part.root, part.annotations)}"
                    for part in ref.parts or (ref,))


def composite_ref(text: str) -> DatasetRef:
    """A composite dataset as the sidebar's box holds it: one ``KIND=PATH[,annotations=FILE]``
    per line (``sammflow.kinds.parse_spec``, the command line's ``--dataset``); empty lines and
    lines starting with ``#`` are skipped. Nothing is read: ``resolved_ref`` checks the paths.

    Returns
    -------
    DatasetRef
        ``parts`` in the order of the lines, ``kind`` their kinds joined by ``+``.

    Raises
    ------
    InputError
        No line, a line that is not such a spec, or a second line of one kind (naming its number).
    """
    parts: list[DatasetRef] = []
    lines = [line.strip() for line in text.splitlines()]
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith("#"):
            continue
        try:
            kind, path, annotations = parse_spec(line)
        except ValueError as exc:
            raise InputError(f"Composite, line {number}: {exc}.") from None
        if any(part.kind == kind for part in parts):
            raise InputError(f"Composite, line {number}: a second {kind} dataset; a composite takes one dataset of each kind.")
        parts.append(DatasetRef(str(path), str(annotations or ""), kind=kind))
    if not parts:
        raise InputError("No datasets given: type one KIND=PATH[,annotations=FILE] per line, e.g. `samm=/data/SAMM` and "
                         f"`casme2=/data/CASME2` (kinds: {', '.join(KINDS)}).")
    return DatasetRef(parts[0].root, "", kind="+".join(part.kind for part in parts), parts=tuple(parts))


def video_cache() -> Path:
    """The folder extracted videos are kept in: ``cache_dir()/videos`` (an allowed root)."""
    return cache_dir() / VIDEOS


@dataclass(frozen=True)
class VideoSource:
    """A video opened as a dataset (``extract_video``): the extracted folder's ref and the events."""

    ref: DatasetRef
    events: tuple[VideoEvent, ...]

    @property
    def to_spot(self) -> list[int]:
        """The events (1-based) given without an apex: theirs is spotted (apex policy ``auto``)."""
        return [i for i, event in enumerate(self.events, start=1) if event.apex is None]


def video_facts(video: str) -> dict[str, Any]:
    """What a video's container says (``sammflow.video.video_info``: frames, fps, width,
    height), the path confined first; ``ValueError`` naming the file and the cause."""
    path = allowed_path(video, "Video file")
    if not is_video(path):
        raise InputError(f"Video file `{video}`: not a video's name (one of {', '.join(VIDEO_SUFFIXES)}).")
    if not path.is_file():
        raise InputError(f"Video file not found: {path}" if not path.exists() else f"Not a file: {path} (expected a video file)")
    return video_info(path)


def video_events(events: str = "", onset: int | None = None, offset: int | None = None, apex: int | None = None) -> tuple[VideoEvent, ...]:
    """A video's events: those of an events CSV (a path, confined), else the one of ``onset``,
    ``offset`` and ``apex`` (frame indices, 0-based as OpenCV counts them; ``apex`` ``None``:
    spotted).

    Raises
    ------
    ValueError
        Outside the allowed roots, an events file ``sammflow.video.read_events`` refuses, or no
        onset / offset, or frames that are not an event (naming the cause).
    """
    if events.strip():
        return tuple(read_events(allowed_path(events, "Events file")))
    if onset is None or offset is None:
        raise InputError("Give the event's onset and offset frames (0-based frame indices of the video), or an events CSV file.")
    try:
        return (VideoEvent(onset=int(onset), offset=int(offset), apex=None if apex is None else int(apex)),)
    except ValueError as exc:
        raise InputError(f"Video event: {exc}.") from None


def extract_video(video: str, events: Sequence[VideoEvent], progress: Callable[[int, int, str], None] | None = None) -> VideoSource:
    """A video file as a dataset: the frames of its events, extracted once into ``video_cache()``
    (``sammflow.video.extract``: a SAMM-layout folder with its ``samm.csv``, kept, so the same
    video and events are not decoded again).

    Parameters
    ----------
    video : str
        As typed: confined to the allowed roots (``allowed_path``) before anything is read.
    events : sequence of VideoEvent
        ``video_events``.
    progress : callable(done, total, label), optional
        Per decoded frame.

    Returns
    -------
    VideoSource
        Its ``ref`` (kind ``samm``, with the video's frame rate) opens like any folder.

    Raises
    ------
    ValueError
        Outside the allowed roots, not a video file name, or what ``extract`` says (not found,
        not a video OpenCV reads, an event past the video's end), naming the file.
    """
    path = allowed_path(video, "Video file")
    if not is_video(path):
        raise InputError(f"Video file `{video}`: not a video's name (one of {', '.join(VIDEO_SUFFIXES)}).")
    folder = extract(path, events, cache=video_cache(), progress=progress)
    ref = DatasetRef(str(folder), str(folder / VIDEO_ANNOTATIONS), kind="samm", video=str(path), fps=video_info(path)["fps"])
    return VideoSource(ref, tuple(events))


def demo_config() -> DemoConfig:
    """The demo dataset's configuration.

    Returns
    -------
    DemoConfig
        ``DemoConfig()``, or the fields given as a JSON object in ``$SAMMFLOW_DEMO_CONFIG``
        (tests use a small one).

    Raises
    ------
    ValueError
        If the variable is not a JSON object of valid ``DemoConfig`` fields.
    """
    raw = os.environ.get(ENV_DEMO_CONFIG, "").strip()
    if not raw:
        return DemoConfig()
    try:
        return DemoConfig(**json.loads(raw))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{ENV_DEMO_CONFIG}={raw!r} is not a JSON object of DemoConfig fields ({exc})") from exc


def demo_root(config: DemoConfig) -> Path:
    """The demo dataset's folder in the cache (``cache_dir()/demo-<config hash>``)."""
    return cache_dir() / f"demo-{config.hash}"


def demo_ready(root: Path, config: DemoConfig) -> bool:
    """Whether ``root`` holds the demo dataset of ``config``, complete."""
    try:
        return read_ground_truth(root)["config_hash"] == config.hash
    except (OSError, ValueError, KeyError, TypeError):
        return False


def signature(root: str, annotations: str) -> tuple[Any, ...]:
    """Changes when the annotation file or the dataset's top folder changes (a cache key)."""
    return (*file_signature(annotations), *file_signature(root))


def load(root: str, annotations: str, signature: tuple[Any, ...], kind: str = "") -> Dataset:
    """Read the annotations and discover the frames (``signature`` only keys a cache around it).

    ``kind``: a kind of ``sammflow.kinds.KINDS``; ``""`` or ``"auto"``: from the annotation
    file's name, then the folder's layout (``sammflow.kinds.resolve``)."""
    kind, _ = resolve_kind(Path(root), Path(annotations), kind)
    return load_dataset(root, read_annotations(annotations, dataset=kind))


def open_dataset(ref: DatasetRef, loader: Loader = load) -> Dataset:
    """Check a dataset's paths and read it: the sidebar's dataset, with messages for ``st.error``.

    Parameters
    ----------
    ref : DatasetRef
        Its paths are confined to the allowed roots first, its kind and annotation file settled
        (``resolved_ref``); a composite's parts are read one by one and merged
        (``sammflow.dataset.merge``).
    loader : callable(root, annotations, signature, kind) -> Dataset
        ``load``, or a cached wrapper of it (the dashboard's).

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        With a message naming the path and the problem (outside the allowed roots, missing
        folder, no or an unreadable annotation file, no annotated clip in the folder ...), for
        ``st.error``.
    """
    ref = resolved_ref(ref)
    if not ref.parts:
        return _read(ref, loader)
    parts = []
    for part in ref.parts:
        try:
            parts.append(_read(part, loader))
        except ValueError as exc:
            raise ValueError(f"Composite dataset `{part.kind}={part.root}`: {exc}") from None
    try:
        return merge(parts)
    except InputError as exc:
        raise ValueError(f"Cannot make the composite: {exc}") from None


def _read(ref: DatasetRef, loader: Loader) -> Dataset:
    """One resolved folder read through ``loader``, checked to hold some of its annotated clips."""
    root, ann = Path(ref.root), Path(ref.annotations)
    try:
        dataset = loader(str(root), str(ann), signature(str(root), str(ann)), ref.kind)
    except AnnotationError as exc:
        raise ValueError(f"Cannot use the annotation file: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise ValueError(f"Cannot read the dataset: {exc}") from exc
    clips = dataset.annotations.clips
    if clips and not any(c.clip in dataset.clips_on_disk for c in clips):
        # the wrong folder, annotation file or kind, not many individually broken clips
        expected = ", ".join(_clip_folder(c) for c in clips[:2])
        found = f"found {len(dataset.clips_on_disk)} other clip folders" if dataset.clips_on_disk else "found no clip folders with frames"
        raise ValueError(f"None of the {len(clips)} annotated clips has a folder in {root} (expected e.g. {expected}; {found}; "
                         f"read as {kind_title(dataset.kind)}). Wrong dataset folder, annotation file or kind?")
    return dataset


def _clip_folder(clip: ClipAnnotation) -> str:
    """Where a clip's frames are expected, in the layout of its kind: ``006/006_1_1/``, ``sub01/EP02_01f/``."""
    return "/".join(KINDS[clip.dataset].clip_folder(clip.subject, clip.folder or clip.clip, clip.emotion)) + "/"


def export_folder(dataset_root: str | Path | Iterable[str | Path], out_dir: str | Path) -> Path:
    """The batch export's output folder, checked: the rules of the module docstring.

    Parameters
    ----------
    dataset_root : str or Path, or several
        The open dataset's folder (a composite's: each of its folders, ``Dataset.roots``).
    out_dir : str or Path
        As typed in the page.

    Returns
    -------
    Path
        Resolved; it may not exist yet.

    Raises
    ------
    InputError
        Outside the allowed roots; inside or containing a dataset folder (the open one,
        ``$SAMMFLOW_DATA``, the demo, the extracted videos); a file; a non-empty folder that
        sammflow did not make.
    """
    typed = str(out_dir).strip()
    if not typed:
        raise InputError("No output folder given: type the folder the flow maps should be written to.")
    out = allowed_path(typed, "Output folder")
    opened = [dataset_root] if isinstance(dataset_root, (str, Path)) else list(dataset_root)
    datasets = [*map(str, opened), os.environ.get(ENV_DATA, "").strip(), str(video_cache())]
    try:
        datasets.append(demo_root(demo_config()))
    except ValueError:
        pass
    for root in filter(None, datasets):
        check_output_dir(Path(typed).expanduser(), Path(root))
    existing_output(out, "flows", label=typed)
    return out


def out_base() -> Path:
    """The folder under which the batch export's default folders go (an allowed root).

    Returns
    -------
    Path
        ``$SAMMFLOW_OUT`` (``~`` expanded), else ``./out`` in the working folder.
    """
    return Path(os.environ.get(ENV_OUT, "").strip() or Path.cwd() / "out").expanduser()


def dataset_name(ref: DatasetRef) -> str:
    """The dataset's part of its default export folder name: ``demo``, a composite's kinds
    (``samm-casme2``), or the video's or dataset folder's name, reduced to one safe path
    component (letters, digits, ``.``, ``_``, ``-``)."""
    if ref.demo:
        return "demo"
    raw = "-".join(part.kind for part in ref.parts) if ref.parts else (Path(ref.video).stem if ref.video else Path(ref.root).name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")[:60]
    return name or "dataset"


def default_out_dir(ref: DatasetRef, params_hash: str) -> Path:
    """The batch export's default folder: one per dataset and parameter set.

    Parameters
    ----------
    ref : DatasetRef
        The open dataset.
    params_hash : str
        ``PipelineParams.hash`` (the parameters that change output bytes).

    Returns
    -------
    Path
        ``out_base() / "<dataset name>-<params hash>"``, e.g. ``out/SAMM-3f2a9c1b7d4e``.
    """
    return out_base() / f"{dataset_name(ref)}-{params_hash}"


# ---------------------------------------------------------------- the demo, built in the background


class DemoBuild:
    """One generation of the demo dataset, in a thread of its own.

    The dashboard's sessions only watch it (``fraction``, ``text``, ``wait``): closing the tab
    that started it, or every tab, does not stop it, and a tab opened meanwhile shows its
    progress instead of starting over. ``sammflow.demo.generate_demo`` builds the dataset aside
    and renames it into place, so the folder is the complete demo or absent.
    """

    def __init__(self, root: Path, config: DemoConfig) -> None:
        self.root, self.config = root, config
        self.done, self.total, self.clip = 0, config.subjects * config.clips_per_subject * config.frames, ""
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sammflow-demo-{config.hash}", daemon=True)

    def _progress(self, done: int, total: int, clip: str) -> None:
        self.done, self.total, self.clip = done, total, clip

    def _run(self) -> None:
        try:
            generate_demo(self.root, self.config, progress=self._progress)
        except BaseException as exc:  # noqa: BLE001 - reported to whoever watches (ensure_demo): OSError, ValueError ...
            self.error = exc
        finally:
            self.seconds = time.monotonic() - self.started
            with _BUILDS_LOCK:
                if _BUILDS.get(self.root) is self:
                    del _BUILDS[self.root]  # a finished build is not reused: the folder is ready, or a retry starts anew
            self._finished.set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s; whether the build has finished (successfully or not)."""
        return self._finished.wait(timeout)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def text(self) -> str:
        """Progress in words: ``"Creating the demo dataset: clip 011_2_2, frame 100 of 216 (12 s)"``."""
        elapsed = time.monotonic() - self.started
        if not self.done:
            return f"Creating the demo dataset… ({elapsed:.0f} s)"
        return f"Creating the demo dataset: clip {self.clip}, frame {self.done} of {self.total} ({elapsed:.0f} s)"


_BUILDS: dict[Path, DemoBuild] = {}
_BUILDS_LOCK = threading.Lock()


def demo_build(config: DemoConfig) -> DemoBuild | None:
    """The process's generation of the demo of ``config``: the one running, or a new one started.

    Returns
    -------
    DemoBuild or None
        ``None`` when the demo is ready (nothing to build).
    """
    root = demo_root(config)
    with _BUILDS_LOCK:
        build = _BUILDS.get(root)
        if build is not None:
            return build
        if demo_ready(root, config):
            return None
        build = _BUILDS[root] = DemoBuild(root, config)
        build._thread.start()
    return build
