"""The shipped table of published annotation fixes (``sammflow.fixes``) and applying it to rows."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from sammflow.fixes import FIELDS, FIXES, FIXES_VERSION, Fix, FixOutcome, apply_fixes, fixes_for

REAL = Path(__file__).parent / "data" / "samm.csv"


def real_rows() -> dict[str, dict[str, str]]:
    """The rows of the real samm.csv by clip, canonical names for the fields fixes touch."""
    with open(REAL, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    names = {"onset": "Onset Frame", "apex": "Apex Frame", "offset": "Offset Frame", "action_units": "Action Units"}
    return {r["Filename"]: {k: r[v] for k, v in names.items()} for r in rows}


def test_version_is_a_dated_string():
    assert re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", FIXES_VERSION)


def test_table_holds_the_nine_meb_fixes_of_samm():
    assert [(f.clip, f.field, f.old, f.new) for f in FIXES] == [
        ("013_1_9", "offset", "", "5739"),
        ("028_4_1", "apex", "1143", "1105"),
        ("032_3_1", "apex", "1930", "4945"),
        ("032_3_2", "apex", "5127", "5130"),
        ("007_6_1", "action_units", "(R6 or R12)+R15", "R12 + R15"),
        ("007_6_5", "action_units", "(R6 or R12) + R15", "R12 + R15"),
        ("011_4_2", "action_units", "L12 or L14", "L14"),
        ("014_5_2", "action_units", "R12 or R14", "R14"),
        ("035_7_2", "action_units", "R14A or 17A or 24A", "R14A"),
    ]
    assert {f.dataset for f in FIXES} == {"samm"}
    assert len({(f.dataset, f.clip, f.field) for f in FIXES}) == len(FIXES)  # one fix per value


def test_every_fix_names_its_source_and_reason():
    for fix in FIXES:
        assert fix.source.startswith("MEB (tvaranka/meb) meb/datasets/datasets.py SAMM.data_frame: '"), fix
        assert fix.credit == "MEB"
    reasons = {f.field: f.source.split(": ", 1)[1] for f in FIXES}
    assert reasons == {"offset": "'Mistake in file, change offset'",
                       "apex": "'Missing apex in file, change based on optical flow'",
                       "action_units": "'Samples that have \"or\" in the AU. Change them based on optical flow'"}


def test_every_fix_expects_what_the_real_file_says():
    """The table was written against this file: each ``old`` is its value (013_1_9's offset,
    whose wrong value MEB does not record, already holds the fix's)."""
    rows = real_rows()
    for fix in FIXES:
        found = rows[fix.clip][fix.field]
        assert (found == fix.old) if fix.old else (found == fix.new), (fix.clip, found)


def test_fixes_for_finds_a_clips_fixes_and_nothing_else():
    assert [f.new for f in fixes_for("samm", "028_4_1")] == ["1105"]
    assert fixes_for("samm", "006_1_2") == []
    assert fixes_for("casme2", "028_4_1") == []
    fixes_for("samm", "028_4_1").clear()  # a copy: the table is not changed
    assert len(fixes_for("samm", "028_4_1")) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"field": "emotion"}, "field must be one of"),
    ({"new": "11o5"}, "must be a frame number"),
    ({"new": "-3"}, "must be a frame number"),
    ({"clip": ""}, "needs a dataset and a clip"),
    ({"source": " "}, "needs a new value and a source"),
])
def test_a_malformed_fix_is_refused(kwargs, message):
    values = {"dataset": "samm", "clip": "028_4_1", "field": "apex", "old": "1143", "new": "1105", "source": "MEB somewhere"} | kwargs
    with pytest.raises(ValueError, match=message):
        Fix(**values)


# --------------------------------------------------------------------------- apply_fixes


APEX = Fix("samm", "028_4_1", "apex", "1143", "1105", "MEB (tvaranka/meb) somewhere")


def test_apply_changes_the_expected_value_and_says_so():
    values = {"clip": "028_4_1", "onset": "1071", "apex": "1143", "offset": "1134"}
    fixed, (outcome,) = apply_fixes(values, [APEX])
    assert fixed == {**values, "apex": "1105"} and values["apex"] == "1143"  # a copy
    assert outcome == FixOutcome(APEX, "1143", "applied")
    assert outcome.change == "apex 1143 → 1105 (MEB)"
    assert outcome.message == "fixed apex 1143 → 1105 (MEB)"


def test_apply_matches_a_spreadsheets_float_and_ignores_whitespace_and_case():
    assert apply_fixes({"apex": "1143.0"}, [APEX])[1][0].status == "applied"
    au = Fix("samm", "007_6_1", "action_units", "(R6 or R12)+R15", "R12 + R15", "MEB x")
    fixed, (outcome,) = apply_fixes({"action_units": " (r6 or R12) + R15"}, [au])
    assert (outcome.status, fixed["action_units"]) == ("applied", "R12 + R15")
    assert outcome.change == "action_units '(r6 or R12) + R15' → 'R12 + R15' (MEB)"


def test_a_value_already_fixed_is_a_no_op():
    fixed, (outcome,) = apply_fixes({"apex": "1105"}, [APEX])
    assert fixed == {"apex": "1105"} and outcome.status == "no-op"
    assert outcome.message == "fix apex → 1105 (MEB) not needed: the file already says so"


def test_a_value_the_fix_does_not_expect_is_left_and_reported():
    fixed, (outcome,) = apply_fixes({"apex": "1140"}, [APEX])
    assert fixed == {"apex": "1140"} and outcome.status == "not applied"
    assert outcome.message == ("fix apex 1143 → 1105 (MEB) not applied: the file says 1140, the fix expects 1143 "
                               "(already corrected, or another version of the file)")
    _, (empty,) = apply_fixes({"apex": ""}, [APEX])
    assert "the file says (empty), the fix expects 1143" in empty.message


def test_a_fix_without_an_old_value_applies_whatever_the_value():
    offset = Fix("samm", "013_1_9", "offset", "", "5739", "MEB x")
    assert offset.expects("1234") and offset.expects("")
    fixed, (outcome,) = apply_fixes({"offset": "5740"}, [offset])
    assert fixed["offset"] == "5739" and outcome.change == "offset 5740 → 5739 (MEB)"
    assert apply_fixes({"offset": "5739"}, [offset])[1][0].status == "no-op"


def test_fields_are_the_annotation_columns():
    from sammflow.annotations import COLUMNS

    assert set(FIELDS) <= set(COLUMNS)
