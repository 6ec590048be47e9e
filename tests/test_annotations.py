"""Reading and validating SAMM annotation files (``samm.csv`` and the official ``.xlsx``)."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import openpyxl
import pytest

from sammflow.annotations import AnnotationError, Annotations, ClipAnnotation, read_annotations
from sammflow.fixes import FIXES_VERSION
from sammflow.params import AnnotationParams

#: The real SAMM annotation file, byte-for-byte (``;``-separated, CRLF, 159 clips, 29 subjects).
REAL = Path(__file__).parent / "data" / "samm.csv"

HEADER = [
    "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
    "Duration", "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes",
]  # fmt: skip
REQUIRED_NAMES = ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame"]


def samm_row(
    clip: str = "006_1_2",
    subject: str = "006",
    onset: str = "5562",
    apex: str = "5588",
    offset: str = "5632",
    duration: str = "71",
    aus: str = "4+7",
    emotion: str = "Anger",
    objective: str = "3",
    notes: str = "",
) -> list[str]:
    """One row in SAMM's column order (defaults: the real 006_1_2)."""
    return [subject, clip, "1", onset, apex, offset, duration, "Micro - 1/2", aus, emotion, objective, notes]


#: Three good rows, one of them with a comma (and a second delimiter-like char) in its notes.
GOOD_ROWS = [
    samm_row(),
    samm_row("006_1_3", onset="3912", apex="3948", offset="3988", duration="77", aus="4", notes="While blinking, then; frowning"),
    samm_row("007_3_1", subject="007", onset="2001", apex="2040", offset="2080", duration="80", aus="R12", emotion="Contempt", objective="4"),
]


def write_csv(
    path: Path,
    rows: list[list[str]],
    *,
    header: list[str] | None = None,
    delimiter: str = ";",
    above: tuple[str, ...] = (),
    encoding: str = "utf-8",
) -> Path:
    """Write a CRLF CSV the way SAMM's is written; ``above`` are title lines before the header."""
    buffer = io.StringIO(newline="")
    for line in above:
        buffer.write(line + "\r\n")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(HEADER if header is None else header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def read_rows(path: Path, rows: list[list[str]], *, params: AnnotationParams = AnnotationParams(), dataset: str = "samm",
              **kwargs) -> Annotations:
    return read_annotations(write_csv(path, rows, **kwargs), params=params, dataset=dataset)


def only_problem(result: Annotations, clip: str):
    problems = [p for p in result.problems if p.clip == clip]
    assert len(problems) == 1, problems
    return problems[0]


def message_after_path(exc: pytest.ExceptionInfo, path: Path) -> str:
    """The error message without the file path (tmp_path contains the test's name)."""
    text = str(exc.value)
    assert text.startswith(str(path)), text
    return text[len(str(path)):]


# --------------------------------------------------------------------------- the real file


@pytest.fixture(scope="module")
def real() -> Annotations:
    return read_annotations(REAL)


def test_real_file_is_the_untouched_samm_csv():
    """Guards the fixture itself: SAMM's header, ``;``, CRLF line ends, 159 data lines."""
    data = REAL.read_bytes()
    first_line = data.split(b"\r\n", 1)[0].decode()
    assert first_line == ";".join(HEADER)
    lines = data.split(b"\r\n")
    assert len(lines) == 160 and lines[-1].startswith(b"037;037_4_1;")  # no line end after the last row
    assert data.count(b"\n") == data.count(b"\r") == 159  # every line end is CRLF


def test_real_file_has_157_valid_clips_and_2_rejected(real):
    assert len(real.clips) == 157
    assert sorted(r.clip for r in real.rejected) == ["028_4_1", "032_3_1"]
    assert len({c.clip for c in real.clips}) == 157
    assert not {"028_4_1", "032_3_1"} & set(real.by_clip)


def test_real_file_only_problems_are_the_two_impossible_rows(real):
    """No warnings either: every Duration in the real file equals offset - onset + 1."""
    assert [(p.clip, p.field, p.severity) for p in real.problems] == [("028_4_1", "apex", "error"), ("032_3_1", "apex", "error")]


def test_real_file_rejects_028_4_1_apex_after_offset(real):
    (row,) = [r for r in real.rejected if r.clip == "028_4_1"]
    assert row.subject == "028"
    assert row.row == 127  # line 127 of samm.csv (header is line 1)
    assert row.values["apex"] == "1143" and row.values["offset"] == "1134"
    assert row.cause == "apex frame 1143 is after offset frame 1134"
    (problem,) = row.problems
    assert str(problem) == "028_4_1 (row 127): apex frame 1143 is after offset frame 1134"


def test_real_file_rejects_032_3_1_apex_before_onset(real):
    (row,) = [r for r in real.rejected if r.clip == "032_3_1"]
    assert row.subject == "032"
    assert row.row == 134
    assert row.values["onset"] == "4896" and row.values["apex"] == "1930"
    assert row.cause == "apex frame 1930 is before onset frame 4896"
    assert str(row.problems[0]).startswith("032_3_1 (row 134): ")


def test_real_file_subjects_are_three_digit_strings(real):
    everyone = set(real.subjects) | {r.subject for r in real.rejected}
    assert len(everyone) == 29
    assert all(re.fullmatch(r"\d{3}", s) for s in everyone), everyone
    assert real.subjects[0] == "006" and real.subjects == sorted(real.subjects)
    assert all(c.clip.startswith(c.subject + "_") for c in real.clips)


def test_real_file_crlf_does_not_leak_into_the_last_column(real):
    assert real.by_clip["006_1_3"].notes == "While blinking"
    assert real.by_clip["006_1_2"].notes == ""
    for clip in real.clips:
        assert not any("\r" in str(v) or "\n" in str(v) for v in clip.__dict__.values()), clip
    for row in real.rejected:
        assert not any("\r" in v for v in row.values.values()), row


def test_real_file_known_row_006_1_2(real):
    clip = real.by_clip["006_1_2"]
    assert (clip.subject, clip.onset, clip.apex, clip.offset) == ("006", 5562, 5588, 5632)
    assert (clip.action_units, clip.emotion, clip.objective_class) == ("4+7", "Anger", "3")
    assert (clip.inducement_code, clip.duration, clip.micro, clip.row) == ("1", "71", "Micro - 1/2", 2)


def test_real_file_to_records_are_plain_dicts(real):
    records = real.to_records()
    assert len(records) == 157
    assert records[0]["clip"] == "006_1_2" and records[0]["onset"] == 5562
    assert set(records[0]) >= {"subject", "clip", "onset", "apex", "offset", "action_units", "emotion", "objective_class", "notes"}


# --------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize("delimiter", [",", "\t"], ids=["comma", "tab"])
def test_other_delimiters_parse_like_semicolon(tmp_path, delimiter):
    semicolon = read_rows(tmp_path / "semi.csv", GOOD_ROWS)
    other = read_rows(tmp_path / "other.csv", GOOD_ROWS, delimiter=delimiter)
    assert other.to_records() == semicolon.to_records()
    assert other.by_clip["006_1_3"].notes == "While blinking, then; frowning"
    assert len(other.clips) == 3 and other.rejected == () and other.problems == ()


@pytest.mark.parametrize("delimiter", [",", "\t"], ids=["comma", "tab"])
def test_real_file_rewritten_with_other_delimiter_parses_identically(tmp_path, real, delimiter):
    rows = list(csv.reader(io.StringIO(REAL.read_text(), newline=""), delimiter=";"))
    path = tmp_path / "samm_other.csv"
    write_csv(path, rows[1:], header=rows[0], delimiter=delimiter)
    other = read_annotations(path)
    assert other.to_records() == real.to_records()
    assert [(r.clip, r.cause) for r in other.rejected] == [(r.clip, r.cause) for r in real.rejected]


def test_unknown_delimiter_raises_naming_file_and_required_columns(tmp_path):
    path = write_csv(tmp_path / "pipes.csv", GOOD_ROWS, delimiter="|")
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert str(path) in str(exc.value)
    assert "Subject, Filename, Onset Frame, Apex Frame, Offset Frame" in str(exc.value)
    assert "no header row" in str(exc.value)


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
@pytest.mark.parametrize("delimiter", [";", ",", "\t"], ids=["semicolon", "comma", "tab"])
def test_csv_header_below_title_lines(tmp_path, delimiter, quoted):
    """A spreadsheet saved as CSV keeps its title rows (here with commas in them) above the header.

    ``quoted`` adds a note that the CSV writer must quote (which alone can tip delimiter sniffing).
    """
    above = ("SAMM Micro-Movement Dataset, FACS codes", "Notes: frames are absolute, see the paper, 2016", "", "")
    rows = GOOD_ROWS if quoted else [GOOD_ROWS[0], GOOD_ROWS[2]]
    result = read_rows(tmp_path / "titled.csv", rows, delimiter=delimiter, above=above)
    assert [c.clip for c in result.clips] == [r[1] for r in rows]
    assert result.by_clip["006_1_2"].row == 6  # 4 title lines + header, so the first data row is line 6
    assert result.by_clip["007_3_1"].action_units == "R12" and result.problems == ()
    if quoted:
        assert result.by_clip["006_1_3"].notes == "While blinking, then; frowning"


# --------------------------------------------------------------------------- header and file level


@pytest.mark.parametrize("missing", REQUIRED_NAMES)
def test_missing_required_column_is_named(tmp_path, missing):
    keep = [i for i, name in enumerate(HEADER) if name != missing]
    path = write_csv(tmp_path / "samm.csv", [[r[i] for i in keep] for r in GOOD_ROWS], header=[HEADER[i] for i in keep])
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    message = message_after_path(exc, path)
    assert f"missing required column(s) {missing} in header row 1" in message
    assert all(other not in message for other in REQUIRED_NAMES if other != missing)


def test_two_missing_columns_are_both_named(tmp_path):
    keep = [i for i, name in enumerate(HEADER) if name not in ("Apex Frame", "Offset Frame")]
    path = write_csv(tmp_path / "samm.csv", [[r[i] for i in keep] for r in GOOD_ROWS], header=[HEADER[i] for i in keep])
    with pytest.raises(AnnotationError, match=r"missing required column\(s\) Apex Frame, Offset Frame"):
        read_annotations(path)


def test_header_names_are_matched_loosely_and_in_any_order(tmp_path):
    header = ["notes", "OFFSET_FRAME", "apex frame", "Onset-Frame", "filename", " subject ", "Objective Class", "AUs"]
    row = ["a note", "5632", "5588", "5562", "006_1_2", "6", "3", "4+7"]
    result = read_rows(tmp_path / "loose.csv", [row], header=header)
    clip = result.by_clip["006_1_2"]
    assert (clip.subject, clip.onset, clip.apex, clip.offset) == ("006", 5562, 5588, 5632)
    assert (clip.objective_class, clip.action_units, clip.notes) == ("3", "4+7", "a note")


def test_header_without_data_rows_raises(tmp_path):
    path = write_csv(tmp_path / "header_only.csv", [["", "", ""]])
    with pytest.raises(AnnotationError, match="header found but no data rows"):
        read_annotations(path)


@pytest.mark.parametrize("content", [b"", b"  \r\n\t\r\n \n"], ids=["empty", "whitespace"])
def test_empty_file_raises(tmp_path, content):
    path = tmp_path / "samm.csv"
    path.write_bytes(content)
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert message_after_path(exc, path) == ": file is empty"


def test_utf8_bom_and_crlf(tmp_path):
    path = write_csv(tmp_path / "bom.csv", GOOD_ROWS, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfSubject;")
    result = read_annotations(path)
    assert [c.subject for c in result.clips] == ["006", "006", "007"]  # 'Subject' column found despite the BOM
    assert result.by_clip["006_1_3"].notes == "While blinking, then; frowning"


def test_cp1252_notes_are_decoded(tmp_path):
    notes = "sourcils froncés – café, naïve"
    path = write_csv(tmp_path / "excel.csv", [samm_row(notes=notes)], encoding="cp1252")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")  # really not UTF-8
    assert read_annotations(path).by_clip["006_1_2"].notes == notes


def test_utf8_non_ascii_notes_are_decoded(tmp_path):
    notes = "sourcils froncés – 眉"
    assert read_rows(tmp_path / "utf8.csv", [samm_row(notes=notes)]).by_clip["006_1_2"].notes == notes


def test_missing_file_raises(tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found"):
        read_annotations(tmp_path / "nope.csv")


def test_folder_instead_of_file_raises(tmp_path):
    with pytest.raises(AnnotationError, match="is a folder"):
        read_annotations(tmp_path)


def test_binary_csv_raises(tmp_path):
    path = tmp_path / "samm.csv"
    path.write_bytes(b"\x00\x01\x02binary" * 50)
    with pytest.raises(AnnotationError, match="binary file"):
        read_annotations(path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-16-le", "utf-8-sig", "utf-8"])
def test_excel_unicode_text_and_other_unicode_encodings_are_read(tmp_path, encoding):
    """Excel's "Unicode text" export is UTF-16 LE with a BOM, tab-separated; UTF-16 without a
    BOM (some tools) and big-endian are read too."""
    notes = "sourcils froncés – 眉"
    text = write_csv(tmp_path / "x.csv", [*GOOD_ROWS, samm_row("006_1_4", notes=notes)], delimiter="\t").read_bytes().decode()
    data = {"utf-16": text.encode("utf-16"), "utf-16-le-bom": b"\xff\xfe" + text.encode("utf-16-le"),
            "utf-16-be-bom": b"\xfe\xff" + text.encode("utf-16-be"), "utf-16-le": text.encode("utf-16-le"),
            "utf-8-sig": text.encode("utf-8-sig"), "utf-8": text.encode()}[encoding]
    path = tmp_path / "Unicode text.txt"
    path.write_bytes(data)
    result = read_annotations(path)
    assert [c.clip for c in result.clips] == ["006_1_2", "006_1_3", "007_3_1", "006_1_4"] and not result.problems
    assert result.by_clip["006_1_4"].notes == notes and result.by_clip["006_1_3"].notes == "While blinking, then; frowning"


def test_unreadable_annotation_file_says_why(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "samm.csv", GOOD_ROWS)
    real = Path.read_bytes

    def denied(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert message_after_path(exc, path) == ": cannot read the annotation file (Permission denied)"


def test_non_utf8_path_is_named_printably(tmp_path):
    folder = tmp_path / os.fsdecode(b"annot\xe9es")
    folder.mkdir()
    path = folder / "samm.csv"
    path.write_bytes(b"")
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert str(exc.value) == f"{tmp_path}/annot\\xe9es/samm.csv: file is empty"
    str(exc.value).encode("utf-8")
    good = write_csv(folder / "good.csv", GOOD_ROWS)
    assert len(read_annotations(good).clips) == 3 and read_annotations(good).source == str(good)  # the real path, to open again


# --------------------------------------------------------------------------- row validation


@pytest.mark.parametrize(
    ("column", "field", "value", "message"),
    [
        ("Onset Frame", "onset", "abc", "Onset Frame 'abc' is not an integer"),
        ("Apex Frame", "apex", "5588.5", "Apex Frame '5588.5' is not an integer"),
        ("Offset Frame", "offset", "", "empty Offset Frame"),
        ("Onset Frame", "onset", "  ", "empty Onset Frame"),
        ("Apex Frame", "apex", "-3", "Apex Frame -3 is negative"),
        ("Offset Frame", "offset", "-1", "Offset Frame -1 is negative"),
    ],
)
def test_bad_frame_number_rejects_the_row(tmp_path, column, field, value, message):
    bad = samm_row("006_1_3")
    bad[HEADER.index(column)] = value
    result = read_rows(tmp_path / "samm.csv", [samm_row(), bad])
    assert [c.clip for c in result.clips] == ["006_1_2"]
    (rejected,) = result.rejected
    assert (rejected.clip, rejected.row, rejected.subject) == ("006_1_3", 3, "006")
    problem = only_problem(result, "006_1_3")
    assert (problem.field, problem.message, problem.severity) == (field, message, "error")
    assert rejected.cause == message


def test_onset_after_apex_rejected(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(onset="5600", apex="5588", offset="5632")])
    assert result.clips == ()
    assert result.rejected[0].cause == "apex frame 5588 is before onset frame 5600"


def test_apex_after_offset_rejected(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(onset="5562", apex="5700", offset="5632")])
    assert result.clips == ()
    assert result.rejected[0].cause == "apex frame 5700 is after offset frame 5632"


def test_offset_before_onset_reports_every_cause(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(onset="5632", apex="5600", offset="5562")])
    causes = [p.message for p in result.rejected[0].problems]
    assert causes == [
        "apex frame 5600 is before onset frame 5632",
        "apex frame 5600 is after offset frame 5562",
        "offset frame 5562 is before onset frame 5632",
    ]
    assert not any(p.field == "duration" for p in result.problems)  # no Duration check on an impossible span


def test_onset_equal_apex_equal_offset_is_valid(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(onset="10", apex="10", offset="10", duration="1")])
    clip = result.by_clip["006_1_2"]
    assert (clip.onset, clip.apex, clip.offset) == (10, 10, 10) and result.problems == ()


def test_duplicate_clip_second_row_rejected_naming_first(tmp_path):
    first = samm_row()
    second = samm_row(onset="1", apex="2", offset="3", duration="3")
    result = read_rows(tmp_path / "samm.csv", [first, GOOD_ROWS[1], second])
    assert [c.clip for c in result.clips] == ["006_1_2", "006_1_3"]
    assert result.by_clip["006_1_2"].onset == 5562  # the first row wins
    (rejected,) = result.rejected
    assert (rejected.clip, rejected.row) == ("006_1_2", 4)
    assert rejected.cause == "duplicate clip '006_1_2': already annotated in row 2"


def test_duration_mismatch_is_only_a_warning(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(duration="70")])
    clip = result.by_clip["006_1_2"]
    assert clip.duration == "70" and result.rejected == ()
    problem = only_problem(result, "006_1_2")
    assert (problem.field, problem.severity) == ("duration", "warning")
    assert problem.message == "Duration 70 != offset - onset + 1 = 71"


def test_subject_6_is_normalised_to_006(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(subject="6"), samm_row("007_3_1", subject="07")])
    assert [c.subject for c in result.clips] == ["006", "007"]
    assert result.subjects == ["006", "007"]
    assert result.problems == ()  # '006_1_2' does start with the normalised subject


def test_subject_not_matching_clip_is_a_warning(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(subject="7")])
    assert result.by_clip["006_1_2"].subject == "007"
    problem = only_problem(result, "006_1_2")
    assert (problem.field, problem.severity) == ("subject", "warning")
    assert "does not start with its Subject '007'" in problem.message


@pytest.mark.parametrize(
    ("subject", "clip", "message"),
    [("abc", "006_1_2", "Subject 'abc' is not an integer"), ("", "006_1_2", "empty Subject"), ("006", "", "empty Filename (clip id)")],
)
def test_bad_subject_or_clip_rejected(tmp_path, subject, clip, message):
    result = read_rows(tmp_path / "samm.csv", [samm_row(clip, subject=subject), GOOD_ROWS[2]])
    assert [c.clip for c in result.clips] == ["007_3_1"]
    assert result.rejected[0].cause == message


def test_float_frame_numbers_accepted(tmp_path):
    result = read_rows(tmp_path / "samm.csv", [samm_row(onset="5562.0", apex="5588.00", offset="5632.", duration="71.0", objective="3.0")])
    clip = result.by_clip["006_1_2"]
    assert (clip.onset, clip.apex, clip.offset) == (5562, 5588, 5632)
    assert (clip.duration, clip.objective_class) == ("71", "3")
    assert result.problems == ()


def test_blank_lines_and_short_rows(tmp_path):
    """Blank lines are skipped (row numbers stay physical); a row missing trailing cells is still read."""
    short = samm_row("006_1_3", onset="3912", apex="3948", offset="3988", duration="77")[:6]
    result = read_rows(tmp_path / "samm.csv", [samm_row(), ["", "", ""], [], short])
    assert [c.clip for c in result.clips] == ["006_1_2", "006_1_3"]
    clip = result.by_clip["006_1_3"]
    assert (clip.row, clip.onset, clip.notes, clip.duration) == (5, 3912, "", "")


# --------------------------------------------------------------------------- xlsx


def write_xlsx(path: Path, rows: list[list], *, header: list[str] = HEADER, title_rows: int = 13, sheets_before: int = 0) -> Path:
    """A workbook shaped like ``SAMM_Micro_FACS_Codes_v2.xlsx``: title, notes and blank rows above the header."""
    book = openpyxl.Workbook()
    sheet = book.active
    for n in range(sheets_before):
        sheet.title = f"Read me {n}"
        sheet.append(["This workbook lists the SAMM micro-movements."])
        sheet = book.create_sheet()
    sheet.title = "FACS codes"
    above: list[list] = [["SAMM Micro-Movement Dataset"], ["FACS coded by three coders"], []]
    above += [[f"Note {n}: frames are absolute frame numbers"] if n % 3 else [] for n in range(title_rows - len(above))]
    for row in above[:title_rows]:
        sheet.append(row)
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def numeric(cell: str):
    """How a spreadsheet stores a cell: numbers as int/float, the rest as text, blanks as empty."""
    if re.fullmatch(r"\d+", cell):
        return int(cell)
    return cell or None


def test_xlsx_with_title_rows_and_numeric_cells(tmp_path):
    rows = [
        [6, "006_1_2", 1, 5562, 5588.0, 5632, 71, "Micro - 1/2", "4+7", "Anger", 3, None],
        [6, "006_1_3", 1, 3912.0, 3948, 3988, 77, "Micro - 1/2", 4, "Anger", 3, "While blinking"],
        [28, "028_4_1", 4, 1000, 1143, 1134, 135, "Micro - 1/2", "12", "Happiness", 1, None],
    ]
    result = read_annotations(write_xlsx(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", rows))
    assert [c.clip for c in result.clips] == ["006_1_2", "006_1_3"]
    clip = result.by_clip["006_1_2"]
    assert (clip.subject, clip.onset, clip.apex, clip.offset) == ("006", 5562, 5588, 5632)
    assert (clip.action_units, clip.emotion, clip.objective_class, clip.duration, clip.notes) == ("4+7", "Anger", "3", "71", "")
    assert clip.row == 15  # 13 title rows, header on row 14: the spreadsheet's own row number
    assert result.by_clip["006_1_3"].action_units == "4"  # an AU typed as a number
    (rejected,) = result.rejected
    assert (rejected.clip, rejected.subject, rejected.row) == ("028_4_1", "028", 17)
    assert rejected.cause == "apex frame 1143 is after offset frame 1134"


def test_real_rows_as_xlsx_parse_like_the_csv(tmp_path, real):
    lines = list(csv.reader(io.StringIO(REAL.read_text(), newline=""), delimiter=";"))
    rows = [[numeric(cell) for cell in line] for line in lines[1:]]
    assert rows[0][0] == 6  # Subject stored as a number, as Excel does
    result = read_annotations(write_xlsx(tmp_path / "samm.xlsx", rows))

    def without_row(records):
        return [{k: v for k, v in r.items() if k != "row"} for r in records]

    assert without_row(result.to_records()) == without_row(real.to_records())
    assert [c.row - 13 for c in result.clips] == [c.row for c in real.clips]
    assert sorted((r.clip, r.cause) for r in result.rejected) == sorted((r.clip, r.cause) for r in real.rejected)


def test_xlsx_header_on_a_later_sheet(tmp_path):
    path = write_xlsx(tmp_path / "samm.xlsx", [[6, "006_1_2", 1, 5562, 5588, 5632]], sheets_before=1, title_rows=2)
    result = read_annotations(path)
    assert result.by_clip["006_1_2"].row == 4


def test_xlsx_without_header_row_raises(tmp_path):
    book = openpyxl.Workbook()
    for n in range(5):
        book.active.append([f"title {n}", n, n * 2.5])
    path = tmp_path / "samm.xlsx"
    book.save(path)
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert "no header row with the required columns Subject, Filename, Onset Frame, Apex Frame, Offset Frame" in message_after_path(exc, path)


def test_xlsx_missing_column_is_named(tmp_path):
    header = [h for h in HEADER if h != "Offset Frame"]
    path = write_xlsx(tmp_path / "samm.xlsx", [[6, "006_1_2", 1, 5562, 5588, 71]], header=header)
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert "missing required column(s) Offset Frame in header row 14" in message_after_path(exc, path)


def test_legacy_xls_raises_with_advice(tmp_path):
    path = tmp_path / "SAMM_Micro_FACS_Codes_v2.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504)  # an OLE2 (BIFF) header
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert "save it as .xlsx or CSV" in message_after_path(exc, path)


def test_xlsx_that_is_not_a_zip_raises(tmp_path):
    path = write_csv(tmp_path / "samm.xlsx", GOOD_ROWS)  # a CSV given the .xlsx extension
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert "not a readable .xlsx spreadsheet" in message_after_path(exc, path)


def test_csv_that_is_really_an_xlsx_raises(tmp_path):
    path = tmp_path / "samm.csv"
    write_xlsx(tmp_path / "real.xlsx", [[6, "006_1_2", 1, 5562, 5588, 5632]]).rename(path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(AnnotationError) as exc:
        read_annotations(path)
    assert "looks like an .xlsx spreadsheet" in message_after_path(exc, path)


# --------------------------------------------------------------------------- shipped fixes (AnnotationParams.fix)


FIX = AnnotationParams(fix=True)


@pytest.fixture(scope="module")
def fixed() -> Annotations:
    return read_annotations(REAL, params=FIX)


def test_real_file_as_read_records_its_params_and_no_fixes(real):
    assert (real.dataset, real.params, real.fix_log, real.fixes_version) == ("samm", AnnotationParams(), (), "")
    assert {(c.apex_source, c.spot, c.fixes) for c in real.clips} == {("annotated", False, ())}
    assert real.by_clip["032_3_2"].apex == 5127 and real.by_clip["007_6_1"].action_units == "(R6 or R12)+R15"


def test_real_file_with_fixes_has_159_valid_clips_and_no_problems(fixed):
    assert len(fixed.clips) == 159 and fixed.rejected == () and fixed.problems == ()
    assert fixed.params == FIX and fixed.fixes_version == FIXES_VERSION
    assert [c.clip for c in fixed.clips] == sorted([c.clip for c in fixed.clips], key=lambda c: fixed.by_clip[c].row)


def test_real_file_with_fixes_repairs_the_two_impossible_rows(fixed):
    clip = fixed.by_clip["028_4_1"]
    assert (clip.onset, clip.apex, clip.offset, clip.apex_source, clip.spot) == (1071, 1105, 1134, "fixed", False)
    assert clip.fixes == ("apex 1143 → 1105 (MEB)",) and clip.row == 127
    clip = fixed.by_clip["032_3_1"]
    assert (clip.onset, clip.apex, clip.offset, clip.apex_source) == (4896, 4945, 4970, "fixed")


def test_real_file_with_fixes_moves_the_apex_of_032_3_2(fixed):
    clip = fixed.by_clip["032_3_2"]
    assert (clip.apex, clip.apex_source, clip.fixes) == (5130, "fixed", ("apex 5127 → 5130 (MEB)",))


def test_real_file_with_fixes_replaces_the_or_action_units(fixed):
    assert {c: fixed.by_clip[c].action_units for c in ("007_6_1", "007_6_5", "011_4_2", "014_5_2", "035_7_2")} == {
        "007_6_1": "R12 + R15", "007_6_5": "R12 + R15", "011_4_2": "L14", "014_5_2": "R14", "035_7_2": "R14A"}
    clip = fixed.by_clip["011_4_2"]
    assert (clip.apex_source, clip.fixes) == ("annotated", ("action_units 'L12 or L14' → 'L14' (MEB)",))
    assert not any(" or " in c.action_units for c in fixed.clips)


def test_real_file_with_fixes_leaves_013_1_9_alone_and_logs_the_no_op(fixed, real):
    assert fixed.by_clip["013_1_9"] == real.by_clip["013_1_9"]  # offset 5739 already; fixes () and "annotated"
    assert [(o.fix.clip, o.status) for o in fixed.fix_log if o.status != "applied"] == [("013_1_9", "no-op")]
    assert sum(o.status == "applied" for o in fixed.fix_log) == 8


def test_real_file_with_fixes_changes_nothing_else(fixed, real):
    touched = {"028_4_1", "032_3_1", "032_3_2", "007_6_1", "007_6_5", "011_4_2", "014_5_2", "035_7_2"}
    assert [c for c in fixed.clips if c.clip not in touched] == [c for c in real.clips if c.clip not in touched]


def test_a_fix_that_does_not_find_its_value_is_a_warning_and_not_applied(tmp_path):
    """Another version of the file: 028_4_1's apex is not the 1143 the fix corrects."""
    row = samm_row("028_4_1", subject="028", onset="1071", apex="1140", offset="1134", duration="64", aus="A14C")
    result = read_rows(tmp_path / "samm.csv", [samm_row(), row], params=FIX)
    (warning, error) = [p for p in result.problems if p.clip == "028_4_1"]
    assert (warning.field, warning.severity, warning.row) == ("apex", "warning", 3)
    assert warning.message == ("fix apex 1143 → 1105 (MEB) not applied: the file says 1140, the fix expects 1143 "
                               "(already corrected, or another version of the file)")
    assert error.message == "apex frame 1140 is after offset frame 1134"  # still rejected: the fix was not used
    assert [r.clip for r in result.rejected] == ["028_4_1"] and result.rejected[0].values["apex"] == "1140"
    assert [o.status for o in result.fix_log] == ["not applied"]


def test_a_fix_already_in_the_file_is_a_silent_no_op(tmp_path):
    row = samm_row("028_4_1", subject="028", onset="1071", apex="1105", offset="1134", duration="64")
    result = read_rows(tmp_path / "samm.csv", [row], params=FIX)
    clip = result.by_clip["028_4_1"]
    assert (clip.apex, clip.apex_source, clip.fixes, result.problems) == (1105, "annotated", (), ())
    assert [o.status for o in result.fix_log] == ["no-op"]


def test_fixes_apply_to_spreadsheet_numbers(tmp_path):
    rows = [[28, "028_4_1", 4, 1071, 1143.0, 1134, 64, "Micro - 1/2", "A14C", "Contempt", 7, None]]
    result = read_annotations(write_xlsx(tmp_path / "samm.xlsx", rows), params=FIX)
    assert result.by_clip["028_4_1"].apex == 1105 and result.rejected == ()


def test_an_unknown_dataset_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"dataset must be one of \['samm', 'casme2', 'smic', 'casme3a', 'mmew'\], got 'casme'"):
        read_rows(tmp_path / "samm.csv", GOOD_ROWS, params=FIX, dataset="casme")


# --------------------------------------------------------------------------- apex policy (AnnotationParams.apex)


#: A good row, then rows whose only errors are about the apex, then rows with other errors too.
POLICY_ROWS = [
    samm_row(),  # 5562 ≤ 5588 ≤ 5632
    samm_row("006_1_3", onset="100", apex="300", offset="200", duration="101"),  # apex after offset
    samm_row("006_1_4", onset="100", apex="50", offset="200", duration="101"),  # apex before onset
    samm_row("006_1_5", onset="100", apex="", offset="200", duration="101"),  # no apex
    samm_row("006_1_6", onset="100", apex="1x", offset="200", duration="101"),  # not a number
    samm_row("006_1_7", onset="100", apex="-5", offset="200", duration="101"),  # negative
    samm_row("006_1_8", onset="300", apex="", offset="200", duration=""),  # no apex, and offset before onset
    samm_row("006_1_9", onset="", apex="150", offset="200", duration=""),  # no onset
    samm_row("006_2_1", onset="100", apex="", offset="200", duration="101", subject="abc"),  # no apex, and a bad subject
]
APEX_ONLY = {"006_1_3": 150, "006_1_4": 150, "006_1_5": 150, "006_1_6": 150, "006_1_7": 150}


@pytest.fixture()
def policy_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "samm.csv", POLICY_ROWS)


def test_annotated_policy_rejects_every_row_with_a_bad_apex(policy_csv):
    result = read_annotations(policy_csv, params=AnnotationParams(apex="annotated"))
    assert result == read_annotations(policy_csv)
    assert [c.clip for c in result.clips] == ["006_1_2"] and not result.clips[0].spot
    assert [r.clip for r in result.rejected] == [r[1] for r in POLICY_ROWS[1:]]
    assert result.rejected[0].cause == "apex frame 300 is after offset frame 200"


def test_a_row_without_apex_still_has_its_span_checked(policy_csv):
    rejected = {r.clip: r for r in read_annotations(policy_csv).rejected}
    assert rejected["006_1_8"].cause == "empty Apex Frame; offset frame 200 is before onset frame 300"
    assert rejected["006_1_9"].cause == "empty Onset Frame"


def test_auto_policy_keeps_rows_whose_only_error_is_the_apex_as_clips_to_spot(policy_csv):
    result = read_annotations(policy_csv, params=AnnotationParams(apex="auto"))
    assert [c.clip for c in result.clips] == ["006_1_2", *APEX_ONLY]
    assert [r.clip for r in result.rejected] == ["006_1_8", "006_1_9", "006_2_1"]
    assert not result.by_clip["006_1_2"].spot and result.by_clip["006_1_2"].apex == 5588
    for name, middle in APEX_ONLY.items():
        clip = result.by_clip[name]
        assert (clip.onset, clip.apex, clip.offset, clip.spot, clip.apex_source) == (100, middle, 200, True, "annotated"), clip
    warnings = {p.clip: p for p in result.problems if p.severity == "warning"}
    assert set(warnings) == set(APEX_ONLY)
    assert warnings["006_1_3"].field == "apex" and warnings["006_1_3"].row == 3
    assert warnings["006_1_3"].message == ("apex frame 300 is after offset frame 200: will be spotted "
                                           "(until then the middle frame 150 is the reference)")
    assert warnings["006_1_5"].message.startswith("empty Apex Frame: will be spotted")
    assert warnings["006_1_6"].message.startswith("Apex Frame '1x' is not an integer: will be spotted")
    assert warnings["006_1_7"].message.startswith("Apex Frame -5 is negative: will be spotted")
    assert not any(p.severity == "error" and p.clip in APEX_ONLY for p in result.problems)


def test_auto_policy_middle_frame_rounds_down(tmp_path):
    row = samm_row(onset="10", apex="", offset="13", duration="4")
    result = read_rows(tmp_path / "samm.csv", [row], params=AnnotationParams(apex="auto"))
    assert result.by_clip["006_1_2"].apex == 11


def test_spot_policy_marks_every_clip_and_keeps_the_annotated_apex_as_reference(policy_csv):
    result = read_annotations(policy_csv, params=AnnotationParams(apex="spot"))
    auto = read_annotations(policy_csv, params=AnnotationParams(apex="auto"))
    assert [c.clip for c in result.clips] == [c.clip for c in auto.clips]
    assert all(c.spot and c.apex_source == "annotated" for c in result.clips)
    assert result.by_clip["006_1_2"].apex == 5588
    assert [c.apex for c in result.clips[1:]] == list(APEX_ONLY.values())
    assert result.problems == auto.problems and result.rejected == auto.rejected


def test_auto_policy_on_the_real_file_spots_the_two_impossible_rows(real):
    result = read_annotations(REAL, params=AnnotationParams(apex="auto"))
    assert len(result.clips) == 159 and result.rejected == ()
    spotted = [(c.clip, c.apex, c.spot) for c in result.clips if c.spot]
    assert spotted == [("028_4_1", (1071 + 1134) // 2, True), ("032_3_1", (4896 + 4970) // 2, True)]
    assert [(p.clip, p.severity) for p in result.problems] == [("028_4_1", "warning"), ("032_3_1", "warning")]


def test_fixes_come_before_the_apex_policy(fixed):
    """A fixed apex is valid, so nothing is left to spot under "auto"; "spot" keeps it as the reference."""
    auto = read_annotations(REAL, params=AnnotationParams(fix=True, apex="auto"))
    assert auto.clips == fixed.clips
    spot = read_annotations(REAL, params=AnnotationParams(fix=True, apex="spot"))
    clip = spot.by_clip["028_4_1"]
    assert (clip.apex, clip.apex_source, clip.spot) == (1105, "fixed", True)


def test_a_fixed_apex_that_is_still_impossible_is_spotted_not_fixed(tmp_path):
    """Another file version where onset is after MEB's apex: the fix is applied but the apex is
    still wrong, so "auto" spots it from the middle frame and the source stays "annotated"."""
    row = samm_row("028_4_1", subject="028", onset="1110", apex="1143", offset="1134", duration="25")
    annotated = read_rows(tmp_path / "a.csv", [row], params=FIX)
    assert annotated.rejected[0].cause == "apex frame 1105 is before onset frame 1110"
    clip = read_rows(tmp_path / "b.csv", [row], params=AnnotationParams(fix=True, apex="auto")).by_clip["028_4_1"]
    assert (clip.apex, clip.spot, clip.apex_source, clip.fixes) == (1122, True, "annotated", ("apex 1143 → 1105 (MEB)",))


# --------------------------------------------------------------------------- resolved


def test_resolved_with_the_same_params_is_the_same_object(real, fixed):
    assert real.resolved(AnnotationParams()) is real
    assert fixed.resolved(AnnotationParams(fix=True)) is fixed


def test_resolved_with_other_params_reparses_the_kept_table(real, fixed):
    again = real.resolved(FIX)
    assert again is not real and again == fixed and again.params == FIX and again.source == real.source
    back = again.resolved(AnnotationParams())
    assert back == real and back.to_records() == real.to_records()
    assert len(real.table) == 160 and real.table[0][1][:2] == ("Subject", "Filename")  # the rows as read, header first


def test_resolved_xlsx_keeps_its_row_numbers(tmp_path):
    rows = [[28, "028_4_1", 4, 1071, 1143, 1134, 64, "Micro - 1/2", "A14C", "Contempt", 7, None]]
    result = read_annotations(write_xlsx(tmp_path / "samm.xlsx", rows))
    assert result.rejected[0].row == 15
    assert result.resolved(AnnotationParams(apex="auto")).by_clip["028_4_1"].row == 15


def test_annotations_built_by_hand_resolve_only_to_their_own_params():
    by_hand = Annotations("x", clips=(ClipAnnotation("006", "006_1_2", 1, 2, 3),))
    assert by_hand.resolved(AnnotationParams()) is by_hand
    with pytest.raises(ValueError, match="x: annotations built without their table cannot be resolved"):
        by_hand.resolved(FIX)


def test_dataset_resolved_joins_the_same_folders_without_scanning_again(tmp_path, monkeypatch):
    import sammflow.dataset as dataset_module

    root = tmp_path / "DATA"
    for clip, frames in {"006_1_2": (5562, 5588, 5632), "028_4_1": (1071, 1105, 1134)}.items():
        folder = root / clip[:3] / clip
        folder.mkdir(parents=True)
        for n in frames:
            (folder / f"{clip[:3]}_{n:05d}.jpg").write_bytes(b"")  # found by name; never decoded here
    rows = [samm_row(), samm_row("028_4_1", subject="028", onset="1071", apex="1143", offset="1134", duration="64")]
    dataset = dataset_module.load_dataset(root, read_annotations(write_csv(tmp_path / "samm.csv", rows)))
    assert dataset.kind == "samm" and [a.clip for a, _ in dataset.ready()] == ["006_1_2"]

    def no_scan(*_):
        raise AssertionError("resolved scanned the disk again")

    monkeypatch.setattr(dataset_module, "_scan", no_scan)
    assert dataset.resolved(AnnotationParams()) is dataset
    fixed = dataset.resolved(FIX)
    assert fixed.root == dataset.root and fixed.clips_on_disk == dataset.clips_on_disk and fixed.kind == "samm"
    assert fixed.annotations == dataset.annotations.resolved(FIX)
    assert [a.clip for a, _ in fixed.ready()] == ["006_1_2", "028_4_1"] and fixed.issues == ()
    spot = dataset.resolved(AnnotationParams(apex="auto"))  # the middle frame 1102 is not on disk
    assert [i.message for i in spot.issues] == ["028_4_1: apex frame 1102 not on disk"]
    assert spot.resolved(AnnotationParams()).issues == dataset.issues == ()
