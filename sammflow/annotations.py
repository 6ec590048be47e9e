"""SAMM annotations: the ``;``-separated ``samm.csv`` and the official
``SAMM_Micro_FACS_Codes_v2.xlsx`` spreadsheet.

Every row is validated. Problems are returned as data (``AnnotationProblem``), each naming
the clip and the cause; rows with an error are kept apart in ``Annotations.rejected`` so
they are reported (and appear in manifests) but never used for processing.

``AnnotationParams`` says which values a run uses. With ``fix``, the published corrections
shipped in ``sammflow.fixes`` are applied to a row's text before it is validated (an
impossible row can become a valid clip). ``apex`` is the apex policy: ``"annotated"`` uses
the file's apex and rejects a row whose apex is missing or impossible; ``"auto"`` keeps such
a row, when its onset and offset are valid, as a clip whose apex is to be spotted
(``ClipAnnotation.spot``; meanwhile ``apex`` is the middle frame); ``"spot"`` does the same
and marks every other clip to be spotted too (its annotated apex stays as the reference).
Spotting (``sammflow.spot``) is what sets ``apex_source="spotted"``; until then such clips
say ``"annotated"``. ``Annotations.resolved`` re-reads the same rows with other params.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sammflow.fixes import FIXES_VERSION, FixOutcome, apply_fixes, fixes_for
from sammflow.kinds import KINDS, Kind, kind_of
from sammflow.labels import megc_label
from sammflow.params import AnnotationParams
from sammflow.text import show_path

#: Canonical column names, and what the SAMM files call them.
COLUMNS = {
    "subject": "Subject",
    "clip": "Filename",
    "inducement_code": "Inducement Code",
    "onset": "Onset Frame",
    "apex": "Apex Frame",
    "offset": "Offset Frame",
    "duration": "Duration",
    "micro": "Micro",
    "action_units": "Action Units",
    "emotion": "Estimated Emotion",
    "objective_class": "Objective Classes",
    "notes": "Notes",
}
FRAME_FIELDS = ("onset", "apex", "offset")
#: How far down a spreadsheet the header row is looked for (the official one has ~13 text rows above it).
HEADER_SEARCH_ROWS = 40
#: Dataset kinds whose annotation files this module reads (``sammflow.kinds``).
DATASETS = tuple(KINDS)
#: A table as read: ``(row_number, cells)`` per row, header (and any title rows) included.
Table = Sequence[tuple[int, Sequence[str]]]


class AnnotationError(ValueError):
    """The annotation file as a whole cannot be read (missing, empty, wrong format or columns)."""


@dataclass(frozen=True)
class AnnotationProblem:
    """One problem found in an annotation file.

    ``severity`` is ``"error"`` (the row is rejected) or ``"warning"`` (the row is used).
    ``row`` is the 1-based line/row number in the source file.
    """

    clip: str
    row: int
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.clip or '?'} (row {self.row}): {self.message}"


@dataclass(frozen=True)
class ClipAnnotation:
    """One validated micro-movement clip: absolute frame numbers, onset ≤ apex ≤ offset.

    ``apex_source`` says where ``apex`` comes from: ``"annotated"`` (the file), ``"fixed"``
    (a shipped fix, ``sammflow.fixes``; ``fixes`` lists what was changed), ``"middle"`` (the
    middle frame: ``--apex middle``) or ``"spotted"`` (``sammflow.spot``). ``clip`` is the
    clip's id, unique in its dataset (``sammflow.kinds``); ``folder`` the annotation's
    Filename, which names the clip's folder (``""``: the id itself); ``dataset`` the kind. A clip with ``spot`` set must have its apex spotted before use:
    until then ``apex`` is the frame detection and alignment take as reference (the annotated
    apex where it is valid, else the middle frame).
    """

    subject: str
    clip: str
    onset: int
    apex: int
    offset: int
    row: int = 0
    action_units: str = ""
    emotion: str = ""
    objective_class: str = ""
    inducement_code: str = ""
    duration: str = ""
    micro: str = ""
    notes: str = ""
    apex_source: str = "annotated"
    spot: bool = False
    fixes: tuple[str, ...] = ()
    dataset: str = "samm"
    folder: str = ""

    def __post_init__(self) -> None:
        if not self.onset <= self.apex <= self.offset:
            raise ValueError(f"{self.clip}: need onset <= apex <= offset, got {self.onset}, {self.apex}, {self.offset}")


@dataclass(frozen=True)
class RejectedRow:
    """A row that failed validation: its text values (after any shipped fixes) and why."""

    row: int
    clip: str
    subject: str
    values: dict[str, str]
    problems: tuple[AnnotationProblem, ...]
    dataset: str = "samm"

    @property
    def cause(self) -> str:
        return "; ".join(p.message for p in self.problems if p.severity == "error")


@dataclass(frozen=True)
class Annotations:
    """The result of reading an annotation file.

    Attributes
    ----------
    source : str
        The file read (its path, to open again).
    clips : tuple of ClipAnnotation
        The valid clips, in file order.
    rejected : tuple of RejectedRow
        The rows with an error.
    problems : tuple of AnnotationProblem
        Every problem, in file order: the errors of rejected rows and the warnings of used ones.
    dataset : str
        Dataset kind (``"samm"``): which shipped fixes and label mapping apply.
    params : AnnotationParams
        What the rows were resolved with (shipped fixes, apex policy).
    omitted : tuple of ClipAnnotation or RejectedRow
        Rows left out because they are not of the MEGC2019 classes (``params.megc2019``): not
        part of the run, but still annotated (their folders are not "without a row").
    fix_log : tuple of FixOutcome
        Every shipped fix met with ``params.fix``: applied, a no-op, or not applied (also a
        warning in ``problems``).
    table : tuple of (int, tuple of str)
        The rows as read, header included, for ``resolved``; not compared. Empty when the
        annotations were built by hand.
    """

    source: str
    clips: tuple[ClipAnnotation, ...] = ()
    rejected: tuple[RejectedRow, ...] = ()
    problems: tuple[AnnotationProblem, ...] = ()
    dataset: str = "samm"
    params: AnnotationParams = field(default_factory=AnnotationParams)
    fix_log: tuple[FixOutcome, ...] = ()
    table: tuple[tuple[int, tuple[str, ...]], ...] = field(default=(), repr=False, compare=False)
    omitted: tuple[ClipAnnotation | RejectedRow, ...] = field(default=(), repr=False, compare=False)
    by_clip: dict[str, ClipAnnotation] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_clip", {c.clip: c for c in self.clips})

    @property
    def left_out(self) -> int:
        """How many rows ``omitted`` holds."""
        return len(self.omitted)

    @property
    def subjects(self) -> list[str]:
        return sorted({c.subject for c in self.clips})

    def to_records(self) -> list[dict[str, Any]]:
        """Valid clips as plain dicts (one per clip, canonical column names)."""
        return [dict(c.__dict__) for c in self.clips]

    @property
    def fixes_version(self) -> str:
        """``sammflow.fixes.FIXES_VERSION`` when the shipped fixes were applied, else ``""``."""
        return FIXES_VERSION if self.params.fix else ""

    def resolved(self, params: AnnotationParams) -> Annotations:
        """The same rows parsed with other ``params`` (fixes, apex policy); ``self`` if they are equal.

        Raises
        ------
        ValueError
            If the params differ and these annotations have no ``table`` (built by hand).
        """
        if params == self.params:
            return self
        if not self.table:
            raise ValueError(f"{show_path(self.source)}: annotations built without their table cannot be resolved with other params")
        return parse_table(self.table, source=self.source, params=params, dataset=self.dataset)


def read_annotations(path: str | Path, *, params: AnnotationParams = AnnotationParams(), dataset: str = "samm") -> Annotations:
    """Read and validate a SAMM annotation file (CSV of any common delimiter, or .xlsx).

    Parameters
    ----------
    path : str or Path
        ``samm.csv`` (``;``-separated, CRLF, optional BOM) or ``SAMM_Micro_FACS_Codes_v2.xlsx``
        (the header row is found below the spreadsheet's title rows).
    params : AnnotationParams, optional
        Whether to apply the shipped fixes, and the apex policy (see the module docstring).
        The default reads the file as it is.
    dataset : str, optional
        Dataset kind, one of ``DATASETS``: which shipped fixes apply.

    Returns
    -------
    Annotations
        Valid clips, rejected rows and every problem found, each naming its clip and row.

    Raises
    ------
    AnnotationError
        If the file is missing, empty, not a table, or lacks a required column.
    ValueError
        If ``dataset`` is not one of ``DATASETS``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{show_path(path)}: annotation file not found")
    if path.is_dir():
        raise AnnotationError(f"{show_path(path)}: is a folder, expected an annotation file (.csv or .xlsx)")
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise AnnotationError(f"{show_path(path)}: legacy .xls spreadsheets are not supported; save it as .xlsx or CSV")
    if suffix in (".xlsx", ".xlsm"):
        table = _read_xlsx_rows(path, kind_of(dataset))
    else:
        table = _read_csv_rows(path, kind_of(dataset))
    return parse_table(table, source=str(path), params=params, dataset=dataset)


def parse_table(table: Table, *, source: str, params: AnnotationParams = AnnotationParams(), dataset: str = "samm") -> Annotations:
    """Validate rows already split into cells.

    Parameters
    ----------
    table : sequence of (int, sequence of str)
        ``(row_number, cells)`` per row, header row first (title rows above it are skipped).
    source : str
        The file the rows come from, named in errors.
    params : AnnotationParams, optional
        Shipped fixes and apex policy, as in ``read_annotations``.
    dataset : str, optional
        Dataset kind, one of ``DATASETS``.

    Returns
    -------
    Annotations
        As ``read_annotations``; it keeps ``table`` for ``Annotations.resolved``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    kind = KINDS[dataset]
    table = tuple((number, tuple(cells)) for number, cells in table)
    header_at = _find_header(table, kind)
    if header_at is None:
        header_at = _find_partial_header(table, kind)  # so the error below names the missing column(s)
    if header_at is None:
        first = table[0][1] if table else []
        raise AnnotationError(
            f"{show_path(source)}: no header row with the required columns "
            f"{', '.join(_title(kind, k) for k in kind.required)} of a {kind.title} table in the first {HEADER_SEARCH_ROWS} rows "
            f"(first row read as {len(first)} column(s): {_preview(first)})"
        )
    header_row, header = table[header_at]
    columns = _map_columns(header, kind)
    missing = [_title(kind, k) for k in kind.required if k not in columns]
    if missing:
        raise AnnotationError(f"{show_path(source)}: missing required column(s) {', '.join(missing)} in header row {header_row}")
    repeats: dict[tuple[str, str], int] = {}

    clips: list[ClipAnnotation] = []
    rejected: list[RejectedRow] = []
    problems: list[AnnotationProblem] = []
    fix_log: list[FixOutcome] = []
    seen: dict[str, int] = {}
    index = -1  # the 0-based index of the data row (what MEB's fixes name rows by)
    for row_number, cells in table[header_at + 1:]:
        if not any(c.strip() for c in cells):
            continue
        index += 1
        values = {key: (cells[i].strip() if i < len(cells) else "") for key, i in columns.items()}
        filename = values.get("clip", "")
        subject = kind.subject_id(values.get("subject", "")) or ""
        if subject and filename:
            repeat = repeats[subject, filename] = repeats.get((subject, filename), 0) + 1
            values["clip"] = kind.clip_id(subject, filename, repeat if kind.repeats else 1)
            if values["clip"] != filename:
                values["folder"] = filename  # the clip's folder, where its id is not the Filename
        clip_id = values["clip"] if "clip" in values else ""
        applied: list[FixOutcome] = []
        if params.fix and clip_id:
            values, outcomes = apply_fixes(values, fixes_for(dataset, clip_id, index))
            fix_log.extend(outcomes)
            applied = [o for o in outcomes if o.status == "applied"]
            problems.extend(AnnotationProblem(clip_id, row_number, o.fix.field, o.message, "warning")
                            for o in outcomes if o.status == "not applied")
        row_problems = _validate(values, row_number, seen, kind)
        # a row without a usable apex: spotted (or the middle frame, on request); a dataset that annotates none (SMIC) always
        wanted = params.apex in ("auto", "spot", "middle") or not kind.has_apex or values.get("apex", "").strip() in kind.no_apex
        reference = _reference_apex(values, row_problems) if wanted else None
        if reference is not None:
            wrong = "; ".join(p.message for p in row_problems if p.severity == "error")
            row_problems = [p for p in row_problems if p.severity != "error"]
            fate = (f"the middle frame {reference} is used" if params.apex == "middle" else
                    f"will be spotted (until then the middle frame {reference} is the reference)")
            if kind.has_apex:
                wrong = "no apex annotated" if values.get("apex", "").strip() in kind.no_apex else wrong
                row_problems.append(AnnotationProblem(clip_id, row_number, "apex", f"{wrong}: {fate}", "warning"))
        problems.extend(row_problems)
        if any(p.severity == "error" for p in row_problems):
            rejected.append(RejectedRow(row_number, clip_id, subject or values.get("subject", ""), values, tuple(row_problems), dataset))
            continue
        seen[clip_id] = row_number
        fixed_apex = reference is None and any(o.fix.field == "apex" for o in applied)
        middle = reference is not None and params.apex == "middle"
        origin = "middle" if middle else "fixed" if fixed_apex else "annotated"
        clips.append(_to_clip(values, row_number, kind, subject, filename, apex=reference,
                              spot=(reference is not None and not middle) or params.apex == "spot",
                              apex_source=origin, fixes=tuple(o.change for o in applied)))
    if not clips and not rejected:
        raise AnnotationError(f"{show_path(source)}: header found but no data rows")
    omitted: list[ClipAnnotation | RejectedRow] = []
    if params.megc2019:  # the composite's classes only: the rest is not part of this run at all
        omitted = [c for c in clips if megc_label(dataset, c.emotion) < 0]
        omitted += [r for r in rejected if megc_label(dataset, r.values.get("emotion", "")) < 0]
        gone = {item.clip for item in omitted}
        clips = [c for c in clips if c.clip not in gone]
        rejected = [r for r in rejected if r.clip not in gone]
        problems = [p for p in problems if p.clip not in gone]
    return Annotations(source=source, clips=tuple(clips), rejected=tuple(rejected), problems=tuple(problems), dataset=dataset,
                       params=params, fix_log=tuple(fix_log), table=table, omitted=tuple(omitted))


def _reference_apex(values: dict[str, str], problems: list[AnnotationProblem]) -> int | None:
    """The middle frame of a row whose only errors are about its apex (onset ≤ offset both
    valid): the apex to spot starts from it. ``None`` for a valid row or any other error."""
    errors = [p for p in problems if p.severity == "error"]
    if not errors or any(p.field != "apex" for p in errors):
        return None
    onset, offset = _parse_int(values.get("onset", "")), _parse_int(values.get("offset", ""))
    if onset is None or offset is None or not 0 <= onset <= offset:
        return None
    return (onset + offset) // 2


def _preview(cells: Sequence[str], limit: int = 60) -> str:
    text = repr(cells[0]) if len(cells) == 1 else repr(list(cells[:4]))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _title(kind: Kind, key: str) -> str:
    """How the kind's tables name a canonical column (SAMM's names for SAMM: ``Apex Frame``)."""
    return COLUMNS[key] if kind.name == "samm" and key in COLUMNS else kind.columns.get(key, (key,))[0]


def _map_columns(header: Sequence[str], kind: Kind) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        key = kind.column(name)
        if key and key not in columns:
            columns[key] = i
    return columns


def _find_header(table: Table, kind: Kind) -> int | None:
    for i, (_, cells) in enumerate(table[:HEADER_SEARCH_ROWS]):
        found = _map_columns(cells, kind)
        if all(k in found for k in kind.required):
            return i
    return None


def _find_partial_header(table: Table, kind: Kind) -> int | None:
    """The first row holding most (but not all) of the required columns: a header with a column missing."""
    for i, (_, cells) in enumerate(table[:HEADER_SEARCH_ROWS]):
        found = _map_columns(cells, kind)
        if 2 * sum(k in found for k in kind.required) > len(kind.required):
            return i
    return None


def _parse_int(text: str) -> int | None:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?\d+\.0*", text):  # spreadsheets store 5562 as 5562.0
        return int(float(text))
    return None


def _validate(values: dict[str, str], row: int, seen: dict[str, int], kind: Kind = KINDS["samm"]) -> list[AnnotationProblem]:
    clip = values.get("clip", "")
    problems: list[AnnotationProblem] = []

    def add(field_name: str, message: str, severity: str = "error") -> None:
        problems.append(AnnotationProblem(clip, row, field_name, message, severity))

    if not clip:
        add("clip", "empty Filename (clip id)")
    subject = kind.subject_id(values.get("subject", ""))
    if not values.get("subject"):
        add("subject", "empty Subject")
    elif subject is None:
        what = "an integer" if kind.name == "samm" else f"a {kind.title} subject id"
        add("subject", f"Subject {values['subject']!r} is not {what}")
    elif kind.name == "samm" and clip and not clip.startswith(subject):
        add("subject", f"clip id {clip!r} does not start with its Subject {subject!r}", "warning")
    frames: dict[str, int] = {}
    for name in FRAME_FIELDS:
        raw = values.get(name, "")
        number = _parse_int(raw)
        if name == "apex" and not kind.has_apex:
            add(name, f"{kind.title} annotates no apex")  # an apex problem: spotted (or the middle frame) by parse_table
        elif not raw:
            add(name, f"empty {_title(kind, name)}")
        elif number is None:
            add(name, f"{_title(kind, name)} {raw!r} is not an integer")
        elif number < 0:
            add(name, f"{_title(kind, name)} {number} is negative")
        else:
            frames[name] = number
    # each comparison whose two frames are valid: a row with a bad apex still has its span checked
    onset, apex, offset = (frames.get(name) for name in FRAME_FIELDS)
    if apex is not None and onset is not None and apex < onset:
        add("apex", f"apex frame {apex} is before onset frame {onset}")
    if apex is not None and offset is not None and apex > offset:
        add("apex", f"apex frame {apex} is after offset frame {offset}")
    if onset is not None and offset is not None:
        duration = _parse_int(values.get("duration", ""))
        if offset < onset:
            add("offset", f"offset frame {offset} is before onset frame {onset}")
        elif duration is not None and duration != offset - onset + 1:
            add("duration", f"Duration {duration} != offset - onset + 1 = {offset - onset + 1}", "warning")
    if clip and clip in seen:
        add("clip", f"duplicate clip {clip!r}: already annotated in row {seen[clip]}")
    return problems


def _to_clip(values: dict[str, str], row: int, kind: Kind, subject: str, filename: str, *, apex: int | None = None, spot: bool = False,
             apex_source: str = "annotated", fixes: tuple[str, ...] = ()) -> ClipAnnotation:
    """The clip of a valid row; ``apex``: the reference frame instead of the file's (a row to spot)."""

    def text(key: str) -> str:
        raw = values.get(key, "")
        number = _parse_int(raw) if key in ("inducement_code", "objective_class", "duration") else None
        return str(number) if number is not None else raw

    return ClipAnnotation(
        subject=subject,
        clip=values["clip"],
        onset=_parse_int(values["onset"]),  # type: ignore[arg-type]
        apex=_parse_int(values["apex"]) if apex is None else apex,  # type: ignore[arg-type]
        offset=_parse_int(values["offset"]),  # type: ignore[arg-type]
        row=row,
        action_units=text("action_units"),
        emotion=text("emotion"),
        objective_class=text("objective_class"),
        inducement_code=text("inducement_code"),
        duration=text("duration"),
        micro=text("micro"),
        notes=text("notes"),
        apex_source=apex_source,
        spot=spot,
        fixes=fixes,
        dataset=kind.name,
        folder="" if filename == values["clip"] else filename,
    )


#: Byte-order marks, longest first (a UTF-32 LE mark starts like a UTF-16 LE one).
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def _unicode_encoding(data: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) of UTF-16/32 or BOM-marked UTF-8 text: Excel's "Unicode text"
    export is UTF-16 LE with a BOM; some tools write UTF-16 without one, recognisable by a
    zero byte in every other place (the high byte of ASCII characters)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    head = data[:4096]
    if len(head) >= 8 and len(head) % 2 == 0:
        even, odd = head[0::2], head[1::2]
        if odd.count(0) >= 0.9 * len(odd) and even.count(0) == 0:
            return "utf-16-le", 0
        if even.count(0) >= 0.9 * len(even) and odd.count(0) == 0:
            return "utf-16-be", 0
    return None


def _decode_text(data: bytes, path: Path) -> str:
    unicode = _unicode_encoding(data)
    if unicode is not None:
        encoding, skip = unicode
        try:
            return data[skip:].decode(encoding)
        except UnicodeDecodeError as exc:
            raise AnnotationError(f"{show_path(path)}: starts as {encoding.upper()} text but is not ({exc.reason} at byte {exc.start + skip})") from None
    if b"\x00" in data[:4096]:
        raise AnnotationError(f"{show_path(path)}: binary file, expected a CSV annotation table")
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AnnotationError(f"{show_path(path)}: cannot decode as text")  # pragma: no cover - latin-1 decodes anything


def _read_csv_rows(path: Path, kind: Kind) -> list[tuple[int, list[str]]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{show_path(path)}: cannot read the annotation file ({exc.strerror or exc})") from exc
    if not data.strip():
        raise AnnotationError(f"{show_path(path)}: file is empty")
    if data[:4] == b"PK\x03\x04":
        raise AnnotationError(f"{show_path(path)}: looks like an .xlsx spreadsheet; give it the .xlsx extension")
    text = _decode_text(data, path)
    if not text.strip():
        raise AnnotationError(f"{show_path(path)}: file is empty")
    if "\x00" in text[:4096]:
        raise AnnotationError(f"{show_path(path)}: binary file, expected a CSV annotation table")
    sample = "\n".join(text.splitlines()[:HEADER_SEARCH_ROWS])
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=";,\t").delimiter
    except csv.Error:
        delimiter = ";"  # SAMM's own; a one-column file then fails with a clear header message
    # The Sniffer needs ~90% of the sample's lines to agree, so title lines above the header
    # (a spreadsheet saved as CSV) defeat it: prefer the delimiter that splits out the header.
    for candidate in dict.fromkeys((delimiter, ";", ",", "\t")):
        head = csv.reader(io.StringIO(text, newline=""), delimiter=candidate)
        if _find_header(list(enumerate(itertools.islice(head, HEADER_SEARCH_ROWS), start=1)), kind) is not None:
            delimiter = candidate
            break
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return [(i, row) for i, row in enumerate(reader, start=1)]


def _read_xlsx_rows(path: Path, kind: Kind) -> list[tuple[int, list[str]]]:
    import openpyxl  # only spreadsheet users pay for the import

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException ...
        raise AnnotationError(f"{show_path(path)}: not a readable .xlsx spreadsheet ({type(exc).__name__}: {exc})") from exc
    try:
        # the kind's own sheet first (CAS(ME)³'s "label"), then the others in order
        for sheet in sorted(book.worksheets, key=lambda sheet: sheet.title != kind.sheet):
            rows = [
                (i, ["" if v is None else _cell_text(v) for v in row])
                for i, row in enumerate(sheet.iter_rows(values_only=True), start=1)
            ]
            if _find_header(rows, kind) is not None:
                return rows
        first = book.worksheets[0] if book.worksheets else None
        if first is None:
            raise AnnotationError(f"{show_path(path)}: spreadsheet has no sheets")
        return [(i, ["" if v is None else _cell_text(v) for v in row]) for i, row in enumerate(first.iter_rows(values_only=True), start=1)]
    finally:
        book.close()


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
