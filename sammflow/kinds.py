"""Dataset kinds: the layout, annotation columns and naming of each public micro-expression dataset.

Every dataset is read the same way once its kind is known: the annotation table's columns
are found by the kind's names for them (``columns``), each row's subject and clip get the
kind's ids (``subject_id``, ``clip_id``), and each clip's frames are looked for in the
folder the kind's layout gives for it (``clip_folder``), numbered by the trailing integer
of their file names (``img46.jpg``, ``reg_image000123.bmp``, ``355.jpg``, ``006_05562.jpg``).

========  ==========================================================  ===============================================
kind      frames (under the dataset folder)                           annotations
========  ==========================================================  ===============================================
samm      ``006/006_1_2/006_05562.jpg``                               ``samm.csv`` or ``SAMM_Micro_FACS_Codes_v2.xlsx``
casme2    ``[CASME2_RAW_selected/]sub01/EP02_01f/img46.jpg``          ``CASME2-coding-*.xlsx`` (Subject is a number)
smic      ``[HS/]s1/micro/negative/s1_ne_01/image000123.jpg``         ``smic.xlsx``: subject, material, emotion, onset,
                                                                      offset (no apex)
casme3a   ``[part_A/]spNO.1/a/color/355.jpg``                         ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx``,
                                                                      sheet "label" (one video folder, several rows)
mmew      ``[Micro_Expression/]happiness/S03_01_002/1.jpg``           ``MMEW_Micro_Exp.xlsx`` (frames 1-based per clip)
========  ==========================================================  ===============================================

A clip's id is unique within its dataset: the annotation's Filename where it already starts
with the subject id (SAMM's ``006_1_2``, SMIC's ``s1_ne_01``), else ``<subject>_<Filename>``
(CASME II's ``sub01_EP02_01f``: the same Filename recurs under other subjects), and for a
Filename repeated within one subject (CAS(ME)³ A: several micro-expressions in one video)
``_2``, ``_3`` … after the first. Nothing here reads a file: ``sammflow.annotations`` and
``sammflow.dataset`` do, with these rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _normalise(name: str) -> str:
    """A header or file name compared loosely: lower case, runs of other characters as one space."""
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


@dataclass(frozen=True)
class Kind:
    """One dataset kind (see the module docstring).

    Attributes
    ----------
    name : str
        ``samm``, ``casme2``, ``smic``, ``casme3a``, ``mmew``.
    title : str
        As the papers write it.
    fps : float
        Frame rate of its clips.
    columns : dict of canonical column → names it has in this dataset's tables
    has_apex : bool
        Whether the annotations give an apex (SMIC's do not: every apex is spotted).
    annotation_files : tuple of str
        Glob patterns of its annotation file, looked for in the dataset folder.
    tops : tuple of str
        Folders the release puts the clips under, which the dataset folder may or may not include.
    sheet : str
        The spreadsheet's sheet holding the table, if it has several.
    subject_width : int
        Zero-padding of numeric subject ids (SAMM ``006``: 3; CASME II ``sub01``: 2).
    subject_prefix : str
        Prefix of subject ids (CASME II: ``sub``).
    repeats : bool
        One Filename may hold several annotated clips of one subject (CAS(ME)³ A's videos).
    no_apex : tuple of str
        Apex cells that say the annotators gave no apex (CASME II's ``/``): such a row's apex is
        spotted, as for a dataset without apexes, not rejected.
    """

    name: str
    title: str
    fps: float
    columns: dict[str, tuple[str, ...]]
    has_apex: bool = True
    annotation_files: tuple[str, ...] = ()
    tops: tuple[str, ...] = ()
    sheet: str = ""
    subject_width: int = 0
    subject_prefix: str = ""
    repeats: bool = False
    no_apex: tuple[str, ...] = ()
    aliases: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", {_normalise(n): key for key, names in self.columns.items() for n in names})

    def column(self, header: str) -> str | None:
        """The canonical column a header names in this dataset's tables (``None``: not one of them)."""
        return self.aliases.get(_normalise(header))

    @property
    def required(self) -> tuple[str, ...]:
        """The columns a table must have."""
        return ("subject", "clip", "onset", "apex", "offset") if self.has_apex else ("subject", "clip", "onset", "offset")

    def subject_id(self, raw: str) -> str | None:
        """The subject id of an annotation's Subject cell (``None``: not a valid one).

        A number is padded (SAMM ``6`` → ``006``) and prefixed (CASME II ``1`` → ``sub01``);
        a text id is kept (SMIC ``s1``, CAS(ME)³ ``spNO.1``, MMEW ``S03``); a spreadsheet's
        ``6.0`` is the number 6.
        """
        text = raw.strip()
        if re.fullmatch(r"\d+(\.0*)?", text):
            number = int(float(text))
            return f"{self.subject_prefix}{number:0{self.subject_width}d}"
        if self.subject_prefix and re.fullmatch(rf"{re.escape(self.subject_prefix)}\d+", text, flags=re.IGNORECASE):
            return f"{self.subject_prefix}{int(text[len(self.subject_prefix):]):0{self.subject_width}d}"
        if not text or self.subject_width and not self.subject_prefix:  # SAMM: numbers only
            return None
        return text if re.fullmatch(r"[\w.\-]+", text) else None

    def clip_id(self, subject: str, filename: str, repeat: int = 1) -> str:
        """A clip's id: ``filename`` where it starts with ``subject``, else ``<subject>_<filename>``;
        ``_<repeat>`` for the second and later rows of one Filename of one subject."""
        base = filename if filename.startswith(subject) else f"{subject}_{filename}"
        return base if repeat == 1 else f"{base}_{repeat}"

    def clip_folder(self, subject: str, filename: str, emotion: str = "") -> tuple[str, ...]:
        """Where a clip's frames are, relative to the dataset folder (without the ``tops``)."""
        return (subject, filename)

    def frame_folders(self, root: Path) -> list[Path]:
        """The folders the layout's clip paths start from: ``root`` and any of ``tops`` in it."""
        return [root, *(root / top for top in self.tops if (root / top).is_dir())]

    def output_stem(self, subject: str, clip: str) -> str:
        """The file name (no suffix) of a clip's outputs: ``sub{S}_{C}`` for SAMM (the original
        scripts' names), the clip id (which holds the subject) for the others."""
        return clip

    def folder_of(self, parts: Sequence[str]) -> tuple[str, str] | None:
        """(subject, Filename) of a folder of frames at ``parts`` below a frame folder (``None``:
        not a clip folder of this layout): for datasets' folders without annotation rows."""
        return (parts[0], parts[1]) if len(parts) == 2 else None


class _Samm(Kind):
    def clip_id(self, subject: str, filename: str, repeat: int = 1) -> str:
        return filename  # SAMM's Filename is its clip id (006_1_2); one that lacks the subject is only warned about

    def output_stem(self, subject: str, clip: str) -> str:
        return f"sub{subject}_{clip}"


class _Smic(Kind):
    def clip_folder(self, subject: str, filename: str, emotion: str = "") -> tuple[str, ...]:
        return (subject, "micro", emotion.strip().lower(), filename)

    def folder_of(self, parts: Sequence[str]) -> tuple[str, str] | None:
        return (parts[0], parts[3]) if len(parts) == 4 and parts[1] == "micro" else None


class _Casme3a(Kind):
    def clip_folder(self, subject: str, filename: str, emotion: str = "") -> tuple[str, ...]:
        return (subject, filename, "color")

    def folder_of(self, parts: Sequence[str]) -> tuple[str, str] | None:
        return (parts[0], parts[1]) if len(parts) == 3 and parts[2] == "color" else None


class _Mmew(Kind):
    def clip_folder(self, subject: str, filename: str, emotion: str = "") -> tuple[str, ...]:
        return (emotion.strip().lower(), filename)

    def folder_of(self, parts: Sequence[str]) -> tuple[str, str] | None:
        # Micro_Expression/<emotion>/<Filename>: the subject is the Filename's start (S03_01_002)
        return (re.split(r"[_\-]", parts[1])[0], parts[1]) if len(parts) == 2 else None


_COMMON = {
    "subject": ("Subject",), "clip": ("Filename",), "onset": ("OnsetFrame", "Onset Frame", "Onset"),
    "apex": ("ApexFrame", "Apex Frame", "Apex"), "offset": ("OffsetFrame", "Offset Frame", "Offset"),
    "action_units": ("Action Units", "AU", "AUs"), "emotion": ("Estimated Emotion", "Emotion"),
    "objective_class": ("Objective Classes", "Objective Class"), "notes": ("Notes", "remarks"),
}

#: Every kind, by name.
KINDS: dict[str, Kind] = {
    "samm": _Samm("samm", "SAMM", 200.0, {
        **_COMMON, "clip": ("Filename", "Clip"), "inducement_code": ("Inducement Code",), "duration": ("Duration",),
        "micro": ("Micro",), "action_units": ("Action Units", "AU", "AUs")},
        annotation_files=("samm.csv", "SAMM_Micro_FACS_Codes*.xlsx", "samm*.csv", "samm*.xlsx"), subject_width=3),
    "casme2": Kind("casme2", "CASME II", 200.0, _COMMON, annotation_files=("CASME2-coding*.xlsx", "CASME2*.xlsx", "casme2*.csv"),
                   tops=("CASME2_RAW_selected", "CASME2_RAW", "Cropped"), subject_width=2, subject_prefix="sub", no_apex=("/",)),
    "smic": _Smic("smic", "SMIC", 100.0, {**_COMMON, "clip": ("Filename", "material", "clip")}, has_apex=False,
                  annotation_files=("smic*.xlsx", "SMIC*.xlsx", "smic*.csv"), tops=("HS", "SMIC_all_cropped/HS")),
    "casme3a": _Casme3a("casme3a", "CAS(ME)³ part A", 30.0, {**_COMMON, "objective_class": ("Objective class", "Objective Classes")},
                        annotation_files=("cas(me)3_part_A*.xlsx", "cas(me)3*A*.xlsx", "casme3*a*.xlsx"), tops=("part_A", "ME_A"),
                        sheet="label", repeats=True),
    "mmew": _Mmew("mmew", "MMEW", 90.0, _COMMON, annotation_files=("MMEW_Micro_Exp*.xlsx", "MMEW*.xlsx", "mmew*.csv"),
                  tops=("Micro_Expression",)),
}


def output_stem(dataset: str, subject: str, clip: str) -> str:
    """The file name (no suffix) of a clip's outputs in a dataset of kind ``dataset``
    (``Kind.output_stem``: ``sub006_006_1_2`` for SAMM, ``sub01_EP02_01f`` for CASME II); in a
    composite, where ids carry their kind (``samm-006``), the kind first: ``samm-sub006_006_1_2``."""
    prefix = f"{dataset}-"
    if clip.startswith(prefix) and subject.startswith(prefix):
        return prefix + KINDS[dataset].output_stem(subject[len(prefix):], clip[len(prefix):])
    return KINDS[dataset].output_stem(subject, clip)


def parse_spec(spec: str) -> tuple[str, Path, Path | None]:
    """A composite's dataset as the command line writes it, ``KIND=PATH[,annotations=FILE]``:
    (kind, dataset folder, annotation file or ``None``); ``ValueError`` saying what is expected."""
    kind, equals, rest = spec.partition("=")
    if not equals or kind.strip() not in KINDS or not rest.strip():
        raise ValueError(f"{spec!r}: expected KIND=PATH[,annotations=FILE] with KIND one of {', '.join(KINDS)}")
    path, _, option = rest.partition(",annotations=")
    if "," in path and not option:
        raise ValueError(f"{spec!r}: the only option after the path is annotations=FILE")
    return kind.strip(), Path(path.strip()), Path(option.strip()) if option.strip() else None


def kind_of(name: str) -> Kind:
    """The kind named ``name``; ``ValueError`` listing the kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {name!r}") from None


def guess_kind(root: Path, annotations: Path | None = None) -> str | None:
    """The kind of a dataset folder, from its annotation file's name (``annotations``, or one
    found in ``root``) and then its layout; ``None`` if nothing says."""
    names = [annotations.name] if annotations is not None else []
    if root.is_dir():
        try:
            names += sorted(p.name for p in root.iterdir() if p.is_file())
        except OSError:
            pass
    for name in names:
        for kind in KINDS.values():
            if any(Path(name.lower()).match(pattern.lower()) for pattern in kind.annotation_files):
                return kind.name
    return _guess_from_layout(root)


def _guess_from_layout(root: Path) -> str | None:
    """The kind whose top folders or subject folders ``root`` holds."""
    try:
        children = {p.name for p in root.iterdir() if p.is_dir()}
    except OSError:
        return None
    for kind in KINDS.values():
        if children & set(kind.tops):
            return kind.name
    if any(re.fullmatch(r"sub\d+", c) for c in children):
        return "casme2"
    if any(re.fullmatch(r"spNO\.\d+", c) for c in children):
        return "casme3a"
    if any(re.fullmatch(r"s\d+", c) and (root / c / "micro").is_dir() for c in children):
        return "smic"
    if any(re.fullmatch(r"\d{3}", c) for c in children):
        return "samm"
    return None


def resolve(root: Path, annotations: Path | None = None, kind: str = "") -> tuple[str, Path | None]:
    """The kind of a dataset and its annotation file, each as given or else found.

    Parameters
    ----------
    root : Path
        The dataset folder.
    annotations : Path, optional
        The annotation file; default: the kind's file in ``root`` (``find_annotations``).
    kind : str, optional
        A kind name; ``""`` or ``"auto"``: ``guess_kind`` (SAMM when nothing says).

    Returns
    -------
    (str, Path or None)
        The kind, and the annotation file (``None``: none given and none found).
    """
    name = kind if kind and kind != "auto" else (guess_kind(root, annotations) or "samm")
    kind_of(name)
    return name, annotations if annotations is not None else find_annotations(root, name)


def find_annotations(root: Path, kind: str) -> Path | None:
    """The kind's annotation file in ``root`` (the first match of its patterns), if there is one."""
    try:
        files = sorted(p for p in root.iterdir() if p.is_file())
    except OSError:
        return None
    for pattern in KINDS[kind].annotation_files:
        for path in files:
            if Path(path.name.lower()).match(pattern.lower()):
                return path
    return None
