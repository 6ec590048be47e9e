"""Published corrections of annotation files: a versioned table shipped with sammflow.

Annotation files carry known mistakes (an apex after the offset, an "or" between two action
units). Others have published corrections in their code; this table repeats them, each with
its source, so a run can use them (``AnnotationParams.fix``, ``--fix-annotations``) and say
where every changed value comes from (``ClipAnnotation.fixes``, the manifest's ``apex_source``).

A fix names the value it expects to find (``old``): where the file says something else (it
was corrected, or it is another version of the file) the fix is not applied and a warning
says so. Fixes are applied to a row's text before the row is validated, so a row that was
impossible becomes a valid clip. ``FIXES_VERSION`` changes whenever the table does.

SAMM: MEB (Varanka et al., github.com/tvaranka/meb, ``meb/datasets/datasets.py``, class
``SAMM``, property ``data_frame``; read at commit 56a6f58) changes rows of
``SAMM_Micro_FACS_Codes_v2.xlsx`` by their 0-based data-row index; those rows are, in the
same order, the rows of ``samm.csv``: 56 = 013_1_9, 125 = 028_4_1, 132 = 032_3_1,
133 = 032_3_2, 15 = 007_6_1, 18 = 007_6_5, 41 = 011_4_2, 64 = 014_5_2, 154 = 035_7_2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Version of the table; part of what a run with fixes records.
FIXES_VERSION = "2026.11.1"
#: The fields a fix may change (canonical names of ``sammflow.annotations.COLUMNS``).
FIELDS = ("onset", "apex", "offset", "action_units")
#: What happened to a fix on one row (``FixOutcome.status``).
STATUSES = ("applied", "no-op", "not applied")

_FRAME_FIELDS = ("onset", "apex", "offset")


@dataclass(frozen=True)
class Fix:
    """One published correction of one value of one clip.

    Attributes
    ----------
    dataset : str
        Dataset kind, ``"samm"``.
    clip : str
        Clip id (``"028_4_1"``).
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
    """

    dataset: str
    clip: str
    field: str
    old: str
    new: str
    source: str

    def __post_init__(self) -> None:
        if not self.dataset or not self.clip:
            raise ValueError(f"fix {self.clip!r} of {self.dataset!r}: needs a dataset and a clip")
        if self.field not in FIELDS:
            raise ValueError(f"fix of {self.clip}: field must be one of {list(FIELDS)}, got {self.field!r}")
        if self.field in _FRAME_FIELDS and not (self.new.isascii() and self.new.isdigit()):
            raise ValueError(f"fix of {self.clip}: new {self.field} must be a frame number, got {self.new!r}")
        if not self.new.strip() or not self.source.strip():
            raise ValueError(f"fix of {self.clip}: needs a new value and a source")

    @property
    def credit(self) -> str:
        """Who published the fix, in a word (``"MEB"``)."""
        return self.source.split()[0]

    def expects(self, value: str) -> bool:
        """Whether ``value`` (the file's text) is what the fix corrects: always, for ``old=""``."""
        return not self.old or _same(self.field, value, self.old)


@dataclass(frozen=True)
class FixOutcome:
    """What one fix did to one row.

    ``status``: ``"applied"`` (the value was changed), ``"no-op"`` (the file already holds the
    new value) or ``"not applied"`` (the file holds neither the expected old value nor the new
    one). ``found`` is the file's value, as text.
    """

    fix: Fix
    found: str
    status: str

    @property
    def change(self) -> str:
        """The change, as listed in ``ClipAnnotation.fixes``: ``"apex 1143 → 1105 (MEB)"``."""
        return f"{self.fix.field} {_show(self.fix.field, self.found)} → {_show(self.fix.field, self.fix.new)} ({self.fix.credit})"

    @property
    def message(self) -> str:
        """One line naming the clip's field, the values and what happened."""
        fix = self.fix
        if self.status == "applied":
            return f"fixed {self.change}"
        if self.status == "no-op":
            return f"fix {fix.field} → {_show(fix.field, fix.new)} ({fix.credit}) not needed: the file already says so"
        return (f"fix {fix.field} {_show(fix.field, fix.old)} → {_show(fix.field, fix.new)} ({fix.credit}) not applied: the file says "
                f"{_show(fix.field, self.found)}, the fix expects {_show(fix.field, fix.old)} (already corrected, or another "
                f"version of the file)")


_S = "MEB (tvaranka/meb) meb/datasets/datasets.py SAMM.data_frame: "
_OFFSET = _S + "'Mistake in file, change offset'"
_APEX = _S + "'Missing apex in file, change based on optical flow'"
_AU = _S + "'Samples that have \"or\" in the AU. Change them based on optical flow'"

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
)

_BY_CLIP: dict[tuple[str, str], list[Fix]] = {}
for _fix in FIXES:
    _BY_CLIP.setdefault((_fix.dataset, _fix.clip), []).append(_fix)


def fixes_for(dataset: str, clip: str) -> list[Fix]:
    """The shipped fixes of one clip of ``dataset`` (``"samm"``), in table order; ``[]`` if none."""
    return list(_BY_CLIP.get((dataset, clip), ()))


def apply_fixes(values: Mapping[str, str], fixes: Iterable[Fix]) -> tuple[dict[str, str], tuple[FixOutcome, ...]]:
    """Apply ``fixes`` to one row's text values.

    Parameters
    ----------
    values : mapping of str to str
        The row's cells by canonical field name (``"apex"``: ``"1143"``).
    fixes : iterable of Fix
        Usually ``fixes_for(dataset, clip)``.

    Returns
    -------
    values : dict of str to str
        A copy of ``values`` with the applicable fixes' new values.
    outcomes : tuple of FixOutcome
        One per fix, in order: applied, a no-op (the value is already the new one), or not
        applied (the value is neither the expected old one nor the new one).
    """
    fixed = dict(values)
    outcomes = []
    for fix in fixes:
        found = fixed.get(fix.field, "")
        if _same(fix.field, found, fix.new):
            status = "no-op"
        elif fix.expects(found):
            status = "applied"
            fixed[fix.field] = fix.new
        else:
            status = "not applied"
        outcomes.append(FixOutcome(fix, found, status))
    return fixed, tuple(outcomes)


def _canonical(field: str, text: str) -> str:
    """Text compared by a fix: frame numbers as integers (a spreadsheet's ``1143.0``), action
    units without whitespace or case (``"R12 + R15"`` is ``"r12+r15"``)."""
    text = re.sub(r"\s+", "", text).casefold()
    if field in _FRAME_FIELDS and re.fullmatch(r"\d+(\.0*)?", text):
        return str(int(text.split(".")[0]))
    return text


def _same(field: str, a: str, b: str) -> bool:
    return _canonical(field, a) == _canonical(field, b)


def _show(field: str, value: str) -> str:
    """A value as written in messages: frame numbers bare, text quoted (it may hold spaces), nothing as "(empty)"."""
    if not value.strip():
        return "(empty)"
    return value.strip() if field in _FRAME_FIELDS else repr(value.strip())
