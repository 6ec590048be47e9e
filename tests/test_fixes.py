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
    samm = [f for f in FIXES if f.dataset == "samm"]
    assert [(f.clip, f.field, f.old, f.new) for f in samm] == [
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
    assert {(f.row, f.accept) for f in samm} == {(None, ())}  # keyed by clip id


def row_fixes(dataset: str) -> list[tuple[int, str, str, tuple[str, ...], str]]:
    return [(f.row, f.field, f.old, f.accept, f.new) for f in FIXES if f.dataset == dataset]


# Transcribed from MEB's meb/datasets/datasets.py at f731b0a, not from sammflow.fixes.
CASME2_MISSING_APEX = dict(zip(
    [29, 35, 43, 45, 51, 53, 60, 117, 118, 126, 136, 147, 155, 168, 170, 177, 202, 203, 234, 237, 238],
    [279, 68, 77, 81, 166, 100, 78, 187, 89, 80, 88, 134, 231, 53, 329, 111, 91, 103, 98, 153, 98]))
MMEW_APEX_OFFSET = dict(zip(
    [33, 35, 36, 37, 38, 39, 40, 41, 42, 142, 143, 145, 146, 148, 154, 156],
    zip([40, 15, 46, 20, 25, 20, 23, 28, 32, 56, 32, 27, 22, 29, 31, 38],
        [75, 54, 59, 98, 80, 93, 58, 61, 68, 88, 80, 85, 61, 108, 72, 106])))


def test_table_holds_mebs_22_fixes_of_casme2_by_data_row():
    """Row 60's offset (MEB does not record the wrong one), then 21 missing apexes: "/" or empty."""
    assert row_fixes("casme2") == [(60, "offset", "", (), "91")] + [
        (row, "apex", "/", ("",), str(apex)) for row, apex in CASME2_MISSING_APEX.items()]
    assert len(row_fixes("casme2")) == 22 and len({f[0] for f in row_fixes("casme2")}) == 21


def test_table_holds_mebs_7_fixes_of_casme3a_on_6_data_rows():
    assert row_fixes("casme3a") == [
        (128, "apex", "", (), "123"),
        (749, "onset", "", (), "2647"),
        (708, "offset", "", (), "34"),
        (796, "offset", "", (), "1845"),
        (798, "offset", "", (), "2403"),
        (750, "onset", "", (), "1"),
        (750, "apex", "", (), "1"),
    ]
    assert len({f[0] for f in row_fixes("casme3a")}) == 6


def test_table_holds_mebs_apex_and_offset_of_16_mmew_data_rows():
    fixes = row_fixes("mmew")
    assert len(fixes) == 32 and {(old, accept) for _, _, old, accept, _ in fixes} == {("", ())}
    table = {}
    for row, field, _, _, new in fixes:
        table.setdefault(row, {})[field] = int(new)
    assert table == {row: {"apex": apex, "offset": offset} for row, (apex, offset) in MMEW_APEX_OFFSET.items()}


def test_row_fixes_have_no_clip_and_one_fix_per_value():
    assert {f.dataset for f in FIXES} == {"samm", "casme2", "casme3a", "mmew"}
    assert all(f.clip == "" for f in FIXES if f.row is not None)
    assert len({(f.dataset, f.clip, f.row, f.field) for f in FIXES}) == len(FIXES)  # one fix per value


def test_every_fix_names_its_source_and_reason():
    meb = "MEB (tvaranka/meb) meb/datasets/datasets.py "
    for fix in FIXES:
        assert fix.source.startswith(meb) and fix.credit == "MEB", fix
    reasons = {(f.dataset, f.field): f.source.removeprefix(meb) for f in FIXES}
    assert reasons == {
        ("samm", "offset"): "SAMM.data_frame: 'Mistake in file, change offset'",
        ("samm", "apex"): "SAMM.data_frame: 'Missing apex in file, change based on optical flow'",
        ("samm", "action_units"): "SAMM.data_frame: 'Samples that have \"or\" in the AU. Change them based on optical flow'",
        ("casme2", "offset"): "Casme2.data_frame: 'Mistake in file, change offset to 91'",
        ("casme2", "apex"): "Casme2.data_frame: 'Missing apex in file, change based on optical flow'",
        ("casme3a", "onset"): "Casme3A.data_frame (no reason given)",
        ("casme3a", "apex"): "Casme3A.data_frame (no reason given)",
        ("casme3a", "offset"): "Casme3A.data_frame (no reason given)",
        ("mmew", "apex"): "Mmew.data_frame: 'Incorrect apex and offset, change them'",
        ("mmew", "offset"): "Mmew.data_frame: 'Incorrect apex and offset, change them'",
    }


def test_every_fix_expects_what_the_real_file_says():
    """The SAMM fixes were written against this file: each ``old`` is its value (013_1_9's
    offset, whose wrong value MEB does not record, already holds the fix's)."""
    rows = real_rows()
    for fix in FIXES:
        if fix.dataset != "samm":
            continue
        found = rows[fix.clip][fix.field]
        assert (found == fix.old) if fix.old else (found == fix.new), (fix.clip, found)


def test_fixes_for_finds_a_clips_fixes_and_nothing_else():
    assert [f.new for f in fixes_for("samm", "028_4_1")] == ["1105"]
    assert fixes_for("samm", "006_1_2") == []
    assert fixes_for("casme2", "028_4_1") == []
    fixes_for("samm", "028_4_1").clear()  # a copy: the table is not changed
    assert len(fixes_for("samm", "028_4_1")) == 1


def test_fixes_for_finds_a_data_rows_fixes_after_the_clips():
    assert [(f.field, f.new) for f in fixes_for("casme2", "sub05_EP19_06f", 60)] == [("offset", "91"), ("apex", "78")]
    assert [(f.field, f.new) for f in fixes_for("mmew", "S03_01_002", 33)] == [("apex", "40"), ("offset", "75")]
    assert [f.row for f in fixes_for("casme3a", "spNO.1_a", 750)] == [750, 750]
    assert fixes_for("casme2", "sub05_EP19_06f") == [] and fixes_for("casme2", "", 61) == []
    assert fixes_for("casme2", "", 29) == fixes_for("casme2", "sub01_EP02_01f", 29)  # by row, whatever the clip
    assert fixes_for("mmew", "", 29) == [] and fixes_for("casme3a", "", 33) == []  # each dataset's rows
    assert [f.clip for f in fixes_for("samm", "028_4_1", 29)] == ["028_4_1"]  # SAMM's are keyed by clip


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"field": "emotion"}, "field must be one of"),
    ({"new": "11o5"}, "must be a frame number"),
    ({"new": "-3"}, "must be a frame number"),
    ({"clip": ""}, "needs a clip or a data row, one of them"),
    ({"row": 3}, "needs a clip or a data row, one of them"),
    ({"dataset": ""}, "needs a dataset"),
    ({"clip": "", "row": -1}, "row must be a 0-based data-row index"),
    ({"clip": "", "row": True}, "row must be a 0-based data-row index"),
    ({"old": "", "accept": ("",)}, r"accept needs an old value"),
    ({"accept": ["/"]}, "accept must be a tuple of str"),
    ({"accept": ("1105",)}, "new '1105' is one of the values it corrects"),
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


# --------------------------------------------------------------------------- fixes keyed by data row


MISSING_APEX = Fix("casme2", "", "apex", "/", "279", "MEB (tvaranka/meb) somewhere", row=29, accept=("",))


@pytest.mark.parametrize("missing", ["/", "", " / "])
def test_a_row_fix_applies_where_its_guard_holds(missing):
    values = {"clip": "sub01_EP02_01f", "onset": "1", "apex": missing, "offset": "300"}
    fixed, (outcome,) = apply_fixes(values, [MISSING_APEX])
    assert fixed == {**values, "apex": "279"} and outcome.status == "applied"
    shown = "(empty)" if not missing.strip() else "'/'"
    assert outcome.change == f"apex {shown} → 279 (MEB, data row 29)"
    assert outcome.message == f"fixed apex {shown} → 279 (MEB, data row 29)"


def test_a_row_fix_is_not_applied_where_the_row_holds_something_else():
    """Another version of the file: data row 29 has an apex, so it is not the row MEB corrected."""
    values = {"clip": "sub01_EP02_01f", "onset": "1", "apex": "120", "offset": "300"}
    fixed, (outcome,) = apply_fixes(values, [MISSING_APEX])
    assert fixed == values and outcome == FixOutcome(MISSING_APEX, "120", "not applied")
    assert outcome.message == ("fix apex '/' → 279 (MEB, data row 29) not applied: the file says 120, the fix expects "
                               "'/' or (empty) (already corrected, or another version of the file)")
    assert apply_fixes({"apex": "279"}, [MISSING_APEX])[1][0].status == "no-op"


def test_the_fixes_of_one_data_row_stand_or_fall_together():
    """CASME II's row 60: MEB's offset fix has no old value; the row's missing-apex fix guards it."""
    row60 = fixes_for("casme2", "", 60)
    fixed, outcomes = apply_fixes({"onset": "10", "apex": "/", "offset": "95"}, row60)
    assert fixed == {"onset": "10", "apex": "78", "offset": "91"}
    assert [o.change for o in outcomes] == ["offset 95 → 91 (MEB, data row 60)", "apex '/' → 78 (MEB, data row 60)"]

    fixed, (offset, apex) = apply_fixes({"onset": "10", "apex": "70", "offset": "95"}, row60)
    assert fixed == {"onset": "10", "apex": "70", "offset": "95"}
    assert (offset.status, offset.blocked_by, apex.status, apex.blocked_by) == ("not applied", apex, "not applied", None)
    assert offset.message == ("fix offset → 91 (MEB, data row 60) not applied: data row 60 is not the row MEB corrected, "
                              "its apex is 70, not '/' or (empty) (another version of the file)")

    # a fix already in the file (a no-op) does not stop the row's others
    fixed, outcomes = apply_fixes({"onset": "10", "apex": "78", "offset": "95"}, row60)
    assert fixed["offset"] == "91" and [o.status for o in outcomes] == ["applied", "no-op"]


def test_fixes_keyed_by_clip_do_not_stop_each_other():
    other = Fix("samm", "028_4_1", "offset", "1134", "1140", "MEB x")
    fixed, outcomes = apply_fixes({"apex": "1140", "offset": "1134"}, [APEX, other])
    assert [o.status for o in outcomes] == ["not applied", "applied"] and fixed["offset"] == "1140"


def test_a_row_fix_without_an_old_value_changes_whatever_the_row_holds():
    """MMEW's and CAS(ME)³ A's fixes: MEB does not record what they correct, so nothing guards them."""
    fixed, outcomes = apply_fixes({"onset": "1", "apex": "90", "offset": "12"}, fixes_for("mmew", "S01_01_001", 33))
    assert fixed == {"onset": "1", "apex": "40", "offset": "75"}
    assert [o.change for o in outcomes] == ["apex 90 → 40 (MEB, data row 33)", "offset 12 → 75 (MEB, data row 33)"]


def test_a_casme2_table_is_fixed_by_data_row_end_to_end():
    """parse_table counts data rows (empty ones skipped) and fixes each by its index."""
    from sammflow.annotations import parse_table
    from sammflow.params import AnnotationParams

    header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
    table, line = [(1, header)], 2
    for index in range(62):
        if index == 10:
            table.append((line, [""] * len(header)))  # an empty row: not a data row
            line += 1
        apex = "/" if index in (29, 60) else "100"  # rows 35, 43, 45, 51 (MEB: missing apexes) have one here
        table.append((line, ["1", f"EP{index + 2:02d}_01f", "10", apex, "95" if index == 60 else "300", "12", "happiness"]))
        line += 1
    result = parse_table(table, source="x", params=AnnotationParams(fix=True), dataset="casme2")

    assert len(result.clips) == 62 and result.rejected == ()
    assert (result.clips[0].subject, result.clips[0].clip) == ("sub01", "sub01_EP02_01f")
    clip = result.clips[29]
    assert (clip.clip, clip.row, clip.apex, clip.apex_source) == ("sub01_EP31_01f", 32, 279, "fixed")
    assert clip.fixes == ("apex '/' → 279 (MEB, data row 29)",)
    clip = result.clips[60]
    assert (clip.onset, clip.apex, clip.offset, clip.apex_source) == (10, 78, 91, "fixed")
    assert clip.fixes == ("offset 95 → 91 (MEB, data row 60)", "apex '/' → 78 (MEB, data row 60)")
    # the rows whose apex the fixes expect missing are left alone, with a warning each (row 53's 100 is MEB's own)
    assert [(p.clip, p.severity) for p in result.problems] == [
        (f"sub01_EP{index + 2:02d}_01f", "warning") for index in (35, 43, 45, 51)]
    assert result.clips[53].apex == 100 and result.clips[53].fixes == ()
    assert [c.clip for c in result.clips if c.fixes] == ["sub01_EP31_01f", "sub01_EP62_01f"]
