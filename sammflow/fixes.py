"""Published corrections of annotation files: a versioned table shipped with sammflow.

Annotation files carry known mistakes (an apex after the offset, an "or" between two action
units, a missing apex). Others have published corrections in their code; this table repeats
them, each with its source, so a run can use them (``AnnotationParams.fix``,
``--fix-annotations``) and say where every changed value comes from (``ClipAnnotation.fixes``,
the manifest's ``apex_source``).

A fix is keyed by clip id (``Fix.clip``) or, where its source names rows only by position, by
the row's 0-based data-row index in its table (``Fix.row``: rows after the header, empty rows
not counted, as ``sammflow.annotations.parse_table`` counts them). A fix names the value it
expects to find (``old``, and any other accepted values in ``accept``): where the file says
something else (it was corrected, or it is another version of the file) the fix is not applied
and a warning says so. Fixes are applied to a row's text before the row is validated, so a row
that was impossible becomes a valid clip. ``FIXES_VERSION`` changes whenever the table does.

Sources: MEB (Varanka et al., github.com/tvaranka/meb, ``meb/datasets/datasets.py``, the
``data_frame`` property of each dataset class), which changes rows of each spreadsheet by
their 0-based pandas row index (``df.loc[i, ...]``).

SAMM (class ``SAMM``; read at commit 56a6f58; named ``Samm`` at f731b0a, same fixes): rows of
``SAMM_Micro_FACS_Codes_v2.xlsx`` that are, in the same order, the rows of ``samm.csv``, so
they are keyed here by clip id: 56 = 013_1_9, 125 = 028_4_1, 132 = 032_3_1, 133 = 032_3_2,
15 = 007_6_1, 18 = 007_6_5, 41 = 011_4_2, 64 = 014_5_2, 154 = 035_7_2.

CASME II (``Casme2``, ``CASME2-coding-updated.xlsx``), CAS(ME)³ part A (``Casme3A``,
``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx``) and MMEW (``Mmew``, ``MMEW_Micro_Exp.xlsx``),
read at commit f731b0a (2024-05-31): we could not read those spreadsheets, so these fixes are
keyed by data-row index, not clip id. That index is MEB's: pandas' ``read_excel`` keeps an
empty row inside a table as a row of NaN, we skip it, so the two agree only for tables without
empty rows (MEB's CASME II and CAS(ME)³ loaders fail on one: its Subject cannot be formatted,
its Filename cannot be renumbered; MEB reads CAS(ME)³ A's first sheet, we its "label" sheet,
assumed to be the same). The risk: in another version of a file (rows added, removed or
sorted) a fix keyed by position lands on the wrong clip. The guard: a fix changes a value only
when the file holds the value it expects, and the fixes of one data row stand or fall
together, so one fix that finds the row is not the one its source corrected stops the row's
others (``FixOutcome.blocked_by``). CASME II's 21 missing apexes expect ``"/"`` or an
empty cell (MEB: "Missing apex in file"), and guard row 60's offset (MEB does not record the
wrong value). MEB records no old value for CAS(ME)³ A's 7 changes and MMEW's 32: those rows
have no guard, and are changed whatever they hold, so use them only with the files MEB read.
Every change names its row (``"apex '/' → 279 (MEB, data row 29)"``), so it can be checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass

#: Version of the table; part of what a run with fixes records.
FIXES_VERSION = "2026.11.2"
#: The fields a fix may change (canonical names of ``sammflow.annotations.COLUMNS``).
FIELDS = ("onset", "apex", "offset", "action_units")
#: What happened to a fix on one row (``FixOutcome.status``).
STATUSES = ("applied", "no-op", "not applied")

_FRAME_FIELDS = ("onset", "apex", "offset")


def _canonical(field: str, text: str) -> str:
    """Text compared by a fix: frame numbers as integers (a spreadsheet's ``1143.0``), action
    units without whitespace or case (``"R12 + R15"`` is ``"r12+r15"``)."""
    text = re.sub(r"\s+", "", text).casefold()
    if field in _FRAME_FIELDS and re.fullmatch(r"\d+(\.0*)?", text):
        return str(int(text.split(".")[0]))
    return text


def _same(field: str, a: str, b: str) -> bool:
    return _canonical(field, a) == _canonical(field, b)


@dataclass(frozen=True)
class Fix:
    """One published correction of one value of one clip, or of one data row of a table.

    Attributes
    ----------
    dataset : str
        Dataset kind (``sammflow.kinds``): ``"samm"``, ``"casme2"``, ``"casme3a"``, ``"mmew"``.
    clip : str
        Clip id (``"028_4_1"``); ``""`` for a fix keyed by ``row``.
    field : str
        Canonical field name: ``"onset"``, ``"apex"``, ``"offset"`` or ``"action_units"``.
    old : str
        The value the fix expects to find, as text. ``""`` means "whatever the value": used
        where the source does not say what it corrects (MEB's offset of 013_1_9).
    new : str
        The corrected value, as text (a frame number: a non-negative integer).
    source : str
        Who published it and where, with their reason: ``"MEB (tvaranka/meb) ...: 'Missing
        apex in file, change based on optical flow'"``. Its first word (``"MEB"``) is the
        ``credit`` shown beside a changed value.
    row : int or None, keyword-only
        The 0-based data-row index in the dataset's table, for a fix whose source names rows
        only by position (``clip`` is then ``""``); ``None`` for a fix keyed by ``clip``.
    accept : tuple of str, keyword-only
        Other values the fix corrects as well as ``old`` (which must then be given), compared
        the same way; ``""`` here is an empty cell (CASME II's missing apex: ``old="/"``,
        ``accept=("",)``).
    """

    dataset: str
    clip: str
    field: str
    old: str
    new: str
    source: str
    _: KW_ONLY
    row: int | None = None
    accept: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError(f"fix of {self.where or '?'}: needs a dataset")
        if bool(self.clip) == (self.row is not None):
            raise ValueError(f"fix of {self.dataset}: needs a clip or a data row, one of them (got clip {self.clip!r}, row {self.row!r})")
        name = f"{self.dataset} {self.where}"
        if self.row is not None and (isinstance(self.row, bool) or not isinstance(self.row, int) or self.row < 0):
            raise ValueError(f"fix of {self.dataset}: row must be a 0-based data-row index, got {self.row!r}")
        if self.field not in FIELDS:
            raise ValueError(f"fix of {name}: field must be one of {list(FIELDS)}, got {self.field!r}")
        if self.field in _FRAME_FIELDS and not (self.new.isascii() and self.new.isdigit()):
            raise ValueError(f"fix of {name}: new {self.field} must be a frame number, got {self.new!r}")
        if not self.new.strip() or not self.source.strip():
            raise ValueError(f"fix of {name}: needs a new value and a source")
        if not isinstance(self.accept, tuple) or not all(isinstance(v, str) for v in self.accept):
            raise ValueError(f"fix of {name}: accept must be a tuple of str, got {self.accept!r}")
        if self.accept and not self.old:
            raise ValueError(f"fix of {name}: accept needs an old value (old '' already accepts any)")
        if any(_same(self.field, v, self.new) for v in self.expected):
            raise ValueError(f"fix of {name}: new {self.new!r} is one of the values it corrects")

    @property
    def credit(self) -> str:
        """Who published the fix, in a word (``"MEB"``)."""
        return self.source.split()[0]

    @property
    def where(self) -> str:
        """What the fix is keyed by, in words: the clip id, or ``"data row 29"``."""
        return self.clip if self.row is None else f"data row {self.row}"

    @property
    def label(self) -> str:
        """Shown in brackets after a change: ``"MEB"``, or ``"MEB, data row 29"`` for a row's fix."""
        return self.credit if self.row is None else f"{self.credit}, {self.where}"

    @property
    def expected(self) -> tuple[str, ...]:
        """The values the fix corrects (``()``: any value)."""
        return (self.old, *self.accept) if self.old else ()

    def expects(self, value: str) -> bool:
        """Whether ``value`` (the file's text) is what the fix corrects: always, for ``old=""``."""
        return not self.old or any(_same(self.field, value, v) for v in self.expected)


@dataclass(frozen=True)
class FixOutcome:
    """What one fix did to one row.

    ``status``: ``"applied"`` (the value was changed), ``"no-op"`` (the file already holds the
    new value) or ``"not applied"`` (the file holds neither a value the fix expects nor the new
    one, or, for a row's fix, ``blocked_by`` is another fix of the row that found it is not the
    row its source corrected). ``found`` is the file's value, as text.
    """

    fix: Fix
    found: str
    status: str
    blocked_by: FixOutcome | None = None

    @property
    def change(self) -> str:
        """The change, as listed in ``ClipAnnotation.fixes``: ``"apex 1143 → 1105 (MEB)"``,
        ``"apex '/' → 279 (MEB, data row 29)"``."""
        fix = self.fix
        return f"{fix.field} {_show(fix.field, self.found)} → {_show(fix.field, fix.new)} ({fix.label})"

    @property
    def message(self) -> str:
        """One line naming the field, the values and what happened."""
        fix = self.fix
        if self.status == "applied":
            return f"fixed {self.change}"
        if self.status == "no-op":
            return f"fix {fix.field} → {_show(fix.field, fix.new)} ({fix.label}) not needed: the file already says so"
        if self.blocked_by is not None:
            other = self.blocked_by
            return (f"{_head(fix)} not applied: {fix.where} is not the row {fix.credit} corrected, its {other.fix.field} is "
                    f"{_show(other.fix.field, other.found)}, not {_expected(other.fix)} (another version of the file)")
        return (f"{_head(fix)} not applied: the file says {_show(fix.field, self.found)}, the fix expects {_expected(fix)} "
                f"(already corrected, or another version of the file)")


def _row_fixes(dataset: str, field_name: str, rows: tuple[int, ...], new: tuple[int, ...], source: str, *,
               old: str = "", accept: tuple[str, ...] = ()) -> tuple[Fix, ...]:
    """One fix per row, from the two lists MEB writes: ``df.loc[rows, field] = new``."""
    if len(rows) != len(new):
        raise ValueError(f"{dataset} {field_name}: {len(rows)} rows but {len(new)} values")
    return tuple(Fix(dataset, "", field_name, old, str(v), source, row=r, accept=accept) for r, v in zip(rows, new))


_MEB = "MEB (tvaranka/meb) meb/datasets/datasets.py "
_S = _MEB + "SAMM.data_frame: "
_OFFSET = _S + "'Mistake in file, change offset'"
_APEX = _S + "'Missing apex in file, change based on optical flow'"
_AU = _S + "'Samples that have \"or\" in the AU. Change them based on optical flow'"
_C2 = _MEB + "Casme2.data_frame: "
_C3A = _MEB + "Casme3A.data_frame (no reason given)"
_MMEW = _MEB + "Mmew.data_frame: 'Incorrect apex and offset, change them'"
_MMEW_ROWS = (33, 35, 36, 37, 38, 39, 40, 41, 42, 142, 143, 145, 146, 148, 154, 156)

#: Every shipped fix (see the module docstring for where each comes from).
FIXES: tuple[Fix, ...] = (
    Fix("samm", "013_1_9", "offset", "", "5739", _OFFSET),  # the xlsx's wrong value is not recorded by MEB
    Fix("samm", "028_4_1", "apex", "1143", "1105", _APEX),  # apex after offset 1134
    Fix("samm", "032_3_1", "apex", "1930", "4945", _APEX),  # apex before onset 4896
    Fix("samm", "032_3_2", "apex", "5127", "5130", _APEX),
    Fix("samm", "007_6_1", "action_units", "(R6 or R12)+R15", "R12 + R15", _AU),
    Fix("samm", "007_6_5", "action_units", "(R6 or R12) + R15", "R12 + R15", _AU),
    Fix("samm", "011_4_2", "action_units", "L12 or L14", "L14", _AU),
    Fix("samm", "014_5_2", "action_units", "R12 or R14", "R14", _AU),
    Fix("samm", "035_7_2", "action_units", "R14A or 17A or 24A", "R14A", _AU),
    # CASME II: row 60's wrong offset is not recorded; its missing apex (below) guards it
    Fix("casme2", "", "offset", "", "91", _C2 + "'Mistake in file, change offset to 91'", row=60),
    *_row_fixes("casme2", "apex",
                (29, 35, 43, 45, 51, 53, 60, 117, 118, 126, 136, 147, 155, 168, 170, 177, 202, 203, 234, 237, 238),
                (279, 68, 77, 81, 166, 100, 78, 187, 89, 80, 88, 134, 231, 53, 329, 111, 91, 103, 98, 153, 98),
                _C2 + "'Missing apex in file, change based on optical flow'", old="/", accept=("",)),
    # CAS(ME)³ A, after MEB's _separate_duplicate_materials (which renames, never reorders, rows);
    # row 128's apex was 160 in MEB before 7590dbc ("Modify apex of casme3a sample_n_128 to 123 from 160")
    Fix("casme3a", "", "apex", "", "123", _C3A, row=128),
    Fix("casme3a", "", "onset", "", "2647", _C3A, row=749),
    *_row_fixes("casme3a", "offset", (708, 796, 798), (34, 1845, 2403), _C3A),
    Fix("casme3a", "", "onset", "", "1", _C3A, row=750),
    Fix("casme3a", "", "apex", "", "1", _C3A, row=750),
    # MMEW: MEB sets each row's apex and offset together
    *_row_fixes("mmew", "apex", _MMEW_ROWS, (40, 15, 46, 20, 25, 20, 23, 28, 32, 56, 32, 27, 22, 29, 31, 38), _MMEW),
    *_row_fixes("mmew", "offset", _MMEW_ROWS, (75, 54, 59, 98, 80, 93, 58, 61, 68, 88, 80, 85, 61, 108, 72, 106), _MMEW),
)

_BY_CLIP: dict[tuple[str, str], list[Fix]] = {}
_BY_ROW: dict[tuple[str, int], list[Fix]] = {}
for _fix in FIXES:
    if _fix.row is None:
        _BY_CLIP.setdefault((_fix.dataset, _fix.clip), []).append(_fix)
    else:
        _BY_ROW.setdefault((_fix.dataset, _fix.row), []).append(_fix)


def fixes_for(dataset: str, clip: str, index: int | None = None) -> list[Fix]:
    """The shipped fixes of one row of a table of ``dataset`` (``"samm"``), in table order; ``[]`` if none.

    Parameters
    ----------
    dataset : str
        Dataset kind.
    clip : str
        The row's clip id: the fixes keyed by it.
    index : int, optional
        The row's 0-based data-row index in its table: the fixes keyed by it (``Fix.row``),
        after the clip's. ``None``: by clip only.
    """
    by_row = _BY_ROW.get((dataset, index), ()) if index is not None else ()
    return [*_BY_CLIP.get((dataset, clip), ()), *by_row]


def apply_fixes(values: Mapping[str, str], fixes: Iterable[Fix]) -> tuple[dict[str, str], tuple[FixOutcome, ...]]:
    """Apply ``fixes`` to one row's text values.

    Parameters
    ----------
    values : mapping of str to str
        The row's cells by canonical field name (``"apex"``: ``"1143"``).
    fixes : iterable of Fix
        Usually ``fixes_for(dataset, clip, index)``: at most one per field.

    Returns
    -------
    values : dict of str to str
        A copy of ``values`` with the applicable fixes' new values.
    outcomes : tuple of FixOutcome
        One per fix, in order: applied, a no-op (the value is already the new one), or not
        applied (the value is neither one the fix expects nor the new one). The fixes keyed
        by one data row stand or fall together: where one is not applied, none of them is
        (``FixOutcome.blocked_by``), as the row is not the one their source corrected.
    """
    outcomes = []
    for fix in fixes:
        found = values.get(fix.field, "")
        status = "no-op" if _same(fix.field, found, fix.new) else "applied" if fix.expects(found) else "not applied"
        outcomes.append(FixOutcome(fix, found, status))
    blocking: dict[tuple[str, int | None], FixOutcome] = {}  # a data row's first fix not applied
    for outcome in outcomes:
        if outcome.status == "not applied" and outcome.fix.row is not None:
            blocking.setdefault((outcome.fix.dataset, outcome.fix.row), outcome)
    fixed = dict(values)
    for i, outcome in enumerate(outcomes):
        block = blocking.get((outcome.fix.dataset, outcome.fix.row))
        if outcome.status == "applied" and block is not None:
            outcomes[i] = FixOutcome(outcome.fix, outcome.found, "not applied", blocked_by=block)
        elif outcome.status == "applied":
            fixed[outcome.fix.field] = outcome.fix.new
    return fixed, tuple(outcomes)


def _show(field: str, value: str) -> str:
    """A value as written in messages: frame numbers bare, text quoted (it may hold spaces; a
    missing apex's ``'/'``), nothing as "(empty)"."""
    value = value.strip()
    if not value:
        return "(empty)"
    return value if field in _FRAME_FIELDS and re.fullmatch(r"\d+(\.\d*)?", value) else repr(value)


def _expected(fix: Fix) -> str:
    """The values a fix expects, as written in messages: ``"1143"``, ``"'/' or (empty)"``."""
    return " or ".join(_show(fix.field, v) for v in fix.expected)


def _head(fix: Fix) -> str:
    """A fix as named in messages: ``"fix apex 1143 → 1105 (MEB)"``, ``"fix offset → 91 (MEB, data row 60)"``."""
    old = f" {_show(fix.field, fix.old)}" if fix.old else ""
    return f"fix {fix.field}{old} → {_show(fix.field, fix.new)} ({fix.label})"
