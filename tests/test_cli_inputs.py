"""The bad-input catalogue, on the command line (issue 6): every bad annotation file, frame and
path gets a message naming the clip or file and the cause, the other clips are still
processed, the manifest row says why, the exit code is non-zero with a one-line summary, and
no traceback ever reaches the user.

Frame and annotation-row problems share one export run (``catalogue``): a copy of each demo
clip damaged one way per case, plus bad rows, processed together by two worker processes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

import sammflow.export
from sammflow.cli import main
from sammflow.annotations import read_annotations
from sammflow.dataset import discover, load_dataset
from sammflow.export import export_flows

HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration", "Micro",
          "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]


@dataclass
class Run:
    code: int
    out: str
    err: str
    rows: list[dict[str, str]]

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(*args: str | Path) -> Run:
    """``python -m sammflow ARGS`` in this process (torch is imported once per session)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    argv = [str(a) for a in args]
    manifest = Path(argv[2]) / "manifest.csv" if len(argv) > 2 else None
    rows = list(csv.DictReader(open(manifest, newline="", encoding="utf-8"))) if manifest and manifest.is_file() else []
    return Run(code, out.getvalue(), err.getvalue(), rows)


def assert_clean_failure(run: Run, code: int) -> None:
    assert run.code == code, (run.code, run.err)
    assert "Traceback" not in run.err + run.out


def demo_rows(root: Path) -> list[list[str]]:
    with open(root / "samm.csv", newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh, delimiter=";"))[1:]


def write_table(path: Path, rows: list[list[str]], *, delimiter: str = ";", header: list[str] = HEADER, above: tuple[str, ...] = (),
                bom: bool = False) -> Path:
    buffer = io.StringIO(newline="")
    for line in above:
        buffer.write(line + "\r\n")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode())
    return path


def copy_annotations(root: Path, tmp_path: Path) -> Path:
    """The dataset's samm.csv, copied out of it (for runs on a dataset folder that is damaged or missing)."""
    return Path(shutil.copy(root / "samm.csv", tmp_path / "samm.csv"))


def frame(folder: Path, number: int) -> Path:
    """The file of frame ``number`` (zero padding varies, as in SAMM)."""
    return next(p for p in folder.iterdir() if int(p.stem.rsplit("_", 1)[1]) == number)


def rewrite(folder: Path, change) -> None:
    """Apply ``change(grey image) -> image`` to every frame of a clip folder."""
    for path in sorted(folder.glob("*.jpg")):
        cv2.imwrite(str(path), change(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))


def blank(path: Path) -> None:
    cv2.imwrite(str(path), np.full((1088, 2040), 90, np.uint8))


def _to_png16(folder: Path) -> None:
    for path in sorted(folder.glob("*.jpg")):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path.with_suffix(".png")), grey.astype(np.uint16) * 257)
        path.unlink()


def _mix_colour(folder: Path, onset: int, apex: int) -> None:
    """The onset frame and every other frame saved as colour JPEGs; the apex stays grey."""
    for number in range(onset, onset + 20, 2):
        path = next((p for p in folder.iterdir() if int(p.stem.rsplit("_", 1)[1]) == number), None)
        if path is not None and number != apex:
            cv2.imwrite(str(path), cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _scale(factor: float):
    return lambda image: cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


# case: (damage(folder, onset, apex), expected status, text expected in the row's error (failed) or warnings (ok))
FRAME_CASES = {
    "onset_frame_missing": (lambda d, o, a: frame(d, o).unlink(), "failed", "onset frame {onset} not on disk"),
    "apex_frame_missing": (lambda d, o, a: frame(d, a).unlink(), "failed", "apex frame {apex} not on disk"),
    "zero_byte_jpeg": (lambda d, o, a: frame(d, o).write_bytes(b""), "failed", "empty file (0 bytes)"),
    "truncated_jpeg": (lambda d, o, a: _truncate(frame(d, a)), "failed", "truncated JPEG"),
    "text_file_named_jpg": (lambda d, o, a: frame(d, o).write_text("Subject;Filename\n"), "failed", "not a decodable image"),
    "frames_of_different_sizes": (lambda d, o, a: cv2.imwrite(str(frame(d, o)), cv2.imread(str(frame(d, o)))[:1000, :1800]),
                                  "failed", "frame is 1800×1000, the apex frame is 2040×1088"),
    "colour_and_grey_mixed": (lambda d, o, a: _mix_colour(d, o, a), "ok", "colour and grey frames mixed (1 colour, e.g. "),
    "png_16_bit": (lambda d, o, a: _to_png16(d), "ok", "2 16-bit frame(s) (e.g. "),
    "frames_smaller_than_the_crop": (lambda d, o, a: rewrite(d, _scale(0.12)), "ok", "smaller than the 224 px crop: crops are upscaled"),
    "frames_too_small_for_a_face": (lambda d, o, a: rewrite(d, _scale(0.05)), "failed", "(frames are only 102×54 px)"),
    "no_face_on_apex_neighbour_used": (lambda d, o, a: blank(frame(d, a)), "ok", "no face on apex frame {apex} ("),
    "no_face_near_apex": (lambda d, o, a: [blank(frame(d, n)) for n in range(a - 3, a + 4)], "failed",
                          "no face found on apex frame {apex} nor on frames"),
    "face_box_touching_border": (lambda d, o, a: rewrite(d, lambda image: image[:, 900:]), "ok", "touches the frame border"),
    "clip_folder_missing": (lambda d, o, a: shutil.rmtree(d), "failed", "no folder {subject}/{clip} under"),
}
# case: (row change, expected status, expected error text)
ROW_CASES = {
    "frame_number_not_a_number": ({3: "4660a"}, "invalid_annotation", "Onset Frame '4660a' is not an integer"),
    "frame_number_empty": ({4: ""}, "invalid_annotation", "empty Apex Frame"),
    "onset_after_apex": ({3: "4666"}, "invalid_annotation", "apex frame 4664 is before onset frame 4666"),
    "apex_after_offset": ({4: "4669", 5: "4667"}, "invalid_annotation", "apex frame 4669 is after offset frame 4667"),
    "subject_without_folder": ({0: "099", 1: "099_1_1"}, "failed", "no folder 099/099_1_1 under"),
}


@pytest.fixture(scope="module")
def catalogue(demo_root, tmp_path_factory):
    """One export over every frame and row problem at once (clip id = demo clip + a letter)."""
    root = tmp_path_factory.mktemp("catalogue") / "DATA"
    root.mkdir()
    base = demo_rows(demo_root)
    rows, expected = [], {}
    for row in base:  # the untouched clips
        shutil.copytree(demo_root / row[0] / row[1], root / row[0] / row[1])
        rows.append(row)
    for i, (case, (damage, status, text)) in enumerate(FRAME_CASES.items()):
        subject, clip, _, onset, apex = base[i % len(base)][:5]
        row = [subject, f"{clip}{chr(97 + i)}", *base[i % len(base)][2:]]
        shutil.copytree(demo_root / subject / clip, root / subject / row[1])
        damage(root / subject / row[1], int(onset), int(apex))
        rows.append(row)
        expected[case] = (row[1], status, text.format(onset=int(onset), apex=int(apex), subject=subject, clip=row[1]))
    for i, (case, (change, status, text)) in enumerate(ROW_CASES.items()):
        row = [*base[0][:1], f"{base[0][1]}r{i}", *base[0][2:]]  # 006_1_1: onset 4660, apex 4664, offset 4669
        for index, value in change.items():
            row[index] = value
        rows.append(row)
        expected[case] = (row[1], status, text)
    rows.append(list(base[1]))  # a duplicate clip row
    expected["duplicate_clip_row"] = (base[1][1], "invalid_annotation", f"duplicate clip '{base[1][1]}': already annotated in row 3")
    write_table(root / "samm.csv", rows)
    run = run_cli("export", root, root.parent / "out", "-q", "-j", "2")
    return run, expected, root


@pytest.mark.slow
@pytest.mark.parametrize("case", [*FRAME_CASES, *ROW_CASES, "duplicate_clip_row"])
def test_each_bad_clip_gets_its_row_and_cause(catalogue, case):
    run, expected, _ = catalogue
    clip, status, text = expected[case]
    rows = [r for r in run.rows if r["clip"] == clip and r["status"] == status]
    assert len(rows) == 1, [(r["clip"], r["status"], r["error"]) for r in run.rows if r["clip"] == clip]
    row = rows[0]
    if status == "ok":
        assert row["error"] == "" and text in row["warnings"], row["warnings"]
        assert (catalogue[2].parent / "out" / row["output"]).is_file()
    else:
        assert text in row["error"] and clip in row["error"], row["error"]
        assert f"{status}: {row['error']}" in run.err_lines  # one line on stderr, naming the clip and the cause
        assert row["output"] == ""


@pytest.mark.slow
def test_catalogue_run_goes_on_and_ends_with_a_one_line_summary(catalogue):
    run, expected, root = catalogue
    assert_clean_failure(run, 1)
    ok = [r for r in run.rows if r["status"] == "ok"]
    failed = [r for r in run.rows if r["status"] != "ok"]
    assert len(run.rows) == len(demo_rows(root))  # one manifest row per annotation row, duplicates included
    assert {r["clip"] for r in ok} >= {r[1] for r in demo_rows(root)[:4]}  # the untouched clips are all done
    assert run.out.strip().splitlines() == [f"{len(ok)} of {len(run.rows)} clips ok, {len(failed)} failed → {root.parent / 'out'}"]
    assert run.err_lines == [f"{r['status']}: {r['error']}" for r in failed]  # nothing else: no warnings twice, no traceback
    assert not [p for p in (root.parent / "out").rglob("*.tmp")]


@pytest.mark.slow
def test_normalize_names_a_corrupt_middle_frame_and_goes_on(demo_copy, tmp_path):
    rows = demo_rows(demo_copy)
    subject, clip, _, onset, apex = rows[0][:5]
    middle = frame(demo_copy / subject / clip, int(onset) + 1)
    middle.write_bytes(b"<html>not a frame</html>")
    run = run_cli("normalize", demo_copy, tmp_path / "aligned", "-q", "-j", "1")
    assert_clean_failure(run, 1)
    row = next(r for r in run.rows if r["clip"] == clip)
    assert row["status"] == "failed" and str(middle) in row["error"] and "not a decodable image" in row["error"]
    assert sum(r["status"] == "ok" for r in run.rows) == 3
    assert not (tmp_path / "aligned" / subject / clip).exists()  # no partial crops of the failed clip


# ---------------------------------------------------------------- annotation files


def _xlsx_with_title_rows(path: Path, rows: list[list[str]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["SAMM Micro-Movement FACS codes"])
    sheet.append([])
    sheet.append(HEADER)
    for row in rows:
        sheet.append([int(v) if v.isdigit() and i in (3, 4, 5, 6) else v for i, v in enumerate(row)])
    book.save(path)
    return path


BAD_FILES = {
    "wrong_delimiter": (lambda p, rows: write_table(p.with_suffix(".csv"), rows, delimiter="|"), "no header row with the required columns"),
    "missing_required_column": (lambda p, rows: write_table(p.with_suffix(".csv"), [r[:4] + r[5:] for r in rows],
                                                            header=HEADER[:4] + HEADER[5:]),
                                "missing required column(s) Apex Frame"),
    "legacy_xls": (lambda p, rows: write_table(p.with_suffix(".xls"), rows), "legacy .xls spreadsheets are not supported"),
    "xlsx_that_is_a_csv": (lambda p, rows: write_table(p.with_suffix(".xlsx"), rows), "not a readable .xlsx spreadsheet"),
    "empty_file": (lambda p, rows: (p.with_suffix(".csv").write_bytes(b""), p.with_suffix(".csv"))[1], "file is empty"),
    "header_only": (lambda p, rows: write_table(p.with_suffix(".csv"), []), "header found but no data rows"),
    "binary_file": (lambda p, rows: (p.with_suffix(".csv").write_bytes(bytes(range(256)) * 4), p.with_suffix(".csv"))[1], "binary file"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_unusable_annotation_file_is_one_line_and_exit_2(case, demo_root, tmp_path):
    make, message = BAD_FILES[case]
    path = make(tmp_path / "annotations", demo_rows(demo_root))
    run = run_cli("export", demo_root, tmp_path / "out", "-a", path, "-q")
    assert_clean_failure(run, 2)
    assert run.err_lines == [run.err_lines[0]] and run.err_lines[0].startswith(f"error: {path}: ")
    assert message in run.err
    assert not (tmp_path / "out").exists()  # nothing written for an unusable input


GOOD_FILES = {
    "csv_with_title_rows_bom_and_crlf": lambda p, rows: write_table(p.with_suffix(".csv"), rows, above=("SAMM codes", "v2;;"), bom=True),
    "xlsx_with_title_rows": lambda p, rows: _xlsx_with_title_rows(p.with_suffix(".xlsx"), rows),
    "comma_delimited": lambda p, rows: write_table(p.with_suffix(".csv"), rows, delimiter=","),
}


@pytest.mark.parametrize("case", GOOD_FILES)
def test_spreadsheet_quirks_are_read(case, demo_root, tmp_path):
    path = GOOD_FILES[case](tmp_path / "annotations", demo_rows(demo_root)[:1])
    run = run_cli("export", demo_root, tmp_path / "out", "-a", path, "-q", "-j", "1")
    assert run.code == 0, run.err
    assert [(r["clip"], r["status"]) for r in run.rows] == [(demo_rows(demo_root)[0][1], "ok")]


# ---------------------------------------------------------------- paths


def _file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file"


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _not_ours(tmp: Path) -> Path:
    (tmp / "thesis").mkdir()
    (tmp / "thesis" / "chapter1.tex").write_text("do not touch")
    return tmp / "thesis"


def _other_annotations(tmp: Path) -> Path:
    rows = [["020", f"020_{i}_1", "1", "100", "110", "120", "21", "Micro - 1/2", "4", "Anger", "3", ""] for i in range(1, 5)]
    return write_table(tmp / "other.csv", rows)


# case: make(tmp_path, dataset copy) -> (DATA, OUT[, annotations]), message
BAD_PATHS = {
    "dataset_folder_missing": (lambda t, d: (t / "nowhere", t / "out"), "dataset folder not found"),
    "dataset_is_a_file": (lambda t, d: (_file(t), t / "out"), "is a file, expected the dataset folder"),
    "dataset_folder_empty": (lambda t, d: (_empty(t), t / "out"), "no clip folders with frames found"),
    "dataset_folder_one_level_too_deep": (lambda t, d: (d / "006", t / "out"), "no clip folders with frames found"),
    "annotations_of_another_dataset": (lambda t, d: (d, t / "out", _other_annotations(t)),
                                       "none of the 4 annotated clips has a folder here"),
    "output_inside_dataset": (lambda t, d: (d, d / "maps"), "output folder is inside the dataset folder"),
    "output_is_the_dataset": (lambda t, d: (d, d), "output folder is inside the dataset folder"),
    "dataset_inside_output": (lambda t, d: (d, d.parent), "output folder contains the dataset folder"),
    "output_is_a_file": (lambda t, d: (d, _file(t)), "is a file, expected an output folder"),
    "output_below_a_file": (lambda t, d: (d, _file(t) / "out"), "cannot create the output folder (Not a directory)"),
    "output_folder_not_ours": (lambda t, d: (d, _not_ours(t)), "folder is not empty (chapter1.tex) and was not made by sammflow"),
}


@pytest.mark.parametrize("case", BAD_PATHS)
def test_unusable_paths_are_one_line_and_exit_2(case, demo_copy, tmp_path):
    make, message = BAD_PATHS[case]
    before = {p: p.read_bytes() for p in demo_copy.rglob("*") if p.is_file()}
    data, out, *annotations = make(tmp_path, demo_copy)
    run = run_cli("export", data, out, "-a", *(annotations or [demo_copy / "samm.csv"]), "-q", "-j", "1")
    assert_clean_failure(run, 2)
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith("error: ") and message in run.err_lines[0], run.err
    assert {p: p.read_bytes() for p in demo_copy.rglob("*") if p.is_file()} == before  # the dataset is never touched
    if case == "output_folder_not_ours":
        assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]


def test_paths_with_spaces_and_non_ascii(demo_root, tmp_path):
    data = Path(shutil.copytree(demo_root, tmp_path / "shared drive ü" / "SAMM données ø"))
    annotations = write_table(tmp_path / "annotations é 2024.csv", demo_rows(demo_root)[:1])
    out = tmp_path / "résultats 2024" / "maps ✓"
    run = run_cli("export", data, out, "-a", annotations, "-q", "-j", "1")
    assert run.code == 0, run.err
    assert [r["status"] for r in run.rows] == ["ok"] and (out / run.rows[0]["output"]).is_file()


needs_non_root = pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes through chmod 000; simulated in the next test")


@needs_non_root
def test_unreadable_dataset_folder_really(demo_copy, tmp_path):
    demo_copy.chmod(0o300)
    try:
        run = run_cli("export", demo_copy, tmp_path / "out", "-a", copy_annotations(demo_copy, tmp_path), "-q")
    finally:
        demo_copy.chmod(0o755)
    assert_clean_failure(run, 2)
    assert "cannot read the dataset folder" in run.err


def test_unreadable_dataset_and_clip_folders_simulated(demo_copy, tmp_path, monkeypatch):
    original = Path.iterdir
    locked = {demo_copy}

    def iterdir(self):
        if self in locked:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    csv_path = copy_annotations(demo_copy, tmp_path)
    run = run_cli("export", demo_copy, tmp_path / "out", "-a", csv_path, "-q")
    assert_clean_failure(run, 2)
    assert run.err_lines == [f"error: {demo_copy}: cannot read the dataset folder (Permission denied)"]
    # one unreadable clip folder: that clip fails with the cause, the others are processed
    subject, clip = demo_rows(demo_copy)[1][:2]
    locked.clear()
    locked.add(demo_copy / subject / clip)
    run = run_cli("export", demo_copy, tmp_path / "out", "-a", csv_path, "-q", "-j", "1")
    assert_clean_failure(run, 1)
    assert run.err_lines == [f"failed: {clip}: cannot read clip folder {demo_copy / subject / clip} (Permission denied)"]
    assert sum(r["status"] == "ok" for r in run.rows) == 3


@needs_non_root
def test_unwritable_output_folder_really(demo_root, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    run = run_cli("export", demo_root, tmp_path / "locked", "-q")
    assert_clean_failure(run, 2)
    assert "cannot write to the output folder" in run.err


def test_unwritable_output_folder_simulated(demo_root, tmp_path, monkeypatch):
    import sammflow.files

    real = sammflow.files.tempfile.mkstemp

    def refuse(**kwargs):  # what creating a file in a folder without write permission does
        if Path(kwargs["dir"]).is_relative_to(tmp_path / "out"):
            raise PermissionError(13, "Permission denied", str(kwargs["dir"]))
        return real(**kwargs)

    monkeypatch.setattr(sammflow.files.tempfile, "mkstemp", refuse)
    run = run_cli("export", demo_root, tmp_path / "out", "-q")
    assert_clean_failure(run, 2)
    assert run.err_lines == [f"error: {tmp_path / 'out'}: cannot write to the output folder (Permission denied)"]


def test_full_disk_stops_the_batch_with_one_line(demo_root, tmp_path, monkeypatch):
    real = sammflow.export.write_atomic
    written = []

    def fill_up(path, data):
        if path.suffix == ".png" and written:
            raise OSError(28, "No space left on device", str(path))
        written.append(path) if path.suffix == ".png" else None
        real(path, data)

    monkeypatch.setattr(sammflow.export, "write_atomic", fill_up)
    run = run_cli("export", demo_root, tmp_path / "out", "-q", "-j", "1")
    assert_clean_failure(run, 2)
    assert run.err_lines == [f"error: {tmp_path / 'out'}: cannot write outputs (No space left on device); "
                             "finished clips are kept, re-run to resume"]
    assert [r["status"] for r in run.rows] == ["ok", "pending", "pending", "pending"]


# ---------------------------------------------------------------- no traceback, ever


def test_unexpected_error_in_a_clip_is_a_row_with_the_traceback_in_the_log(demo_root, tmp_path, monkeypatch):
    real = sammflow.export.clip_flow
    victim = demo_rows(demo_root)[2][1]

    def buggy(clip, frames, **kwargs):
        if clip.clip == victim:
            return {}["a bug"]
        return real(clip, frames, **kwargs)

    monkeypatch.setattr(sammflow.export, "clip_flow", buggy)
    run = run_cli("export", demo_root, tmp_path / "out", "-q", "-j", "1")
    assert_clean_failure(run, 1)
    log = tmp_path / "out" / "sammflow.log"
    assert run.err_lines == [f"failed: {victim}: unexpected KeyError: 'a bug' (traceback in {log})"]
    assert run.out.strip().endswith(f"3 of 4 clips ok, 1 failed → {tmp_path / 'out'}; details in {log}")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and 'return {}["a bug"]' in text


def test_unexpected_error_outside_clips_is_one_line_pointing_to_a_log(demo_root, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    real_export = sammflow.export.export_flows
    monkeypatch.setattr(sammflow.export, "export_flows", crash)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    run = run_cli("export", demo_root, tmp_path / "out", "-q")
    assert_clean_failure(run, 2)
    # no output folder to log into: the one line says the traceback went to the temporary folder ($TMPDIR), and where
    prefix = ("error: unexpected ZeroDivisionError: division by zero (details in the temporary folder, as there is no output folder "
              "to log into: ")
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith(prefix), run.err
    log = Path(run.err_lines[0][len(prefix):].rstrip(")"))
    assert log.parent == tmp_path and log.name.startswith("sammflow-error-") and log.suffix == ".log"
    assert "Traceback" in log.read_text() and "crash" in log.read_text()
    # into an output folder sammflow made, the traceback goes to its sammflow.log
    monkeypatch.setattr(sammflow.export, "export_flows", real_export)
    assert run_cli("export", demo_root, tmp_path / "out", "-q", "-j", "1").code == 0
    monkeypatch.setattr(sammflow.export, "export_flows", crash)
    again = run_cli("export", demo_root, tmp_path / "out", "-q")
    assert again.err_lines == [f"error: unexpected ZeroDivisionError: division by zero (details in {tmp_path / 'out' / 'sammflow.log'})"]
    assert "crash" in (tmp_path / "out" / "sammflow.log").read_text()


def test_unexpected_error_with_nowhere_to_log_says_so(demo_root, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    def no_temporary_folder(**kwargs):
        raise FileNotFoundError(2, "No usable temporary directory found")

    monkeypatch.setattr(sammflow.export, "export_flows", crash)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "gone"))
    monkeypatch.setattr("tempfile.mkstemp", no_temporary_folder)
    run = run_cli("export", demo_root, tmp_path / "out", "-q")
    assert_clean_failure(run, 2)
    assert run.err_lines == ["error: unexpected ZeroDivisionError: division by zero (its traceback could not be written, neither to "
                             f"the output folder nor to the temporary folder {tmp_path / 'gone'})"]


def test_interrupt_keeps_finished_clips_and_resumes(demo_root, tmp_path, monkeypatch):
    real = sammflow.export.find_apex_faces
    calls = []

    def interrupted(items, **kwargs):
        calls.append([clip.clip for clip, _ in items])
        if len(calls) == 3:  # the apex faces of clips 1, then 2 and 3 found; those of clip 4 being looked for
            raise KeyboardInterrupt
        return real(items, **kwargs)

    monkeypatch.setattr(sammflow.export, "find_apex_faces", interrupted)
    run = run_cli("export", demo_root, tmp_path / "out", "-q", "-j", "1")
    assert_clean_failure(run, 130)
    assert run.err_lines == [f"interrupted (SIGINT); finished clips are kept in {tmp_path / 'out'} "
                             f"(the rest are 'pending' in its manifest.csv): re-run the same command to resume"]
    assert [len(c) for c in calls] == [1, 2, 1] and [r["status"] for r in run.rows] == ["ok", "ok", "ok", "pending"]
    monkeypatch.setattr(sammflow.export, "find_apex_faces", real)
    again = run_cli("export", demo_root, tmp_path / "out", "-q", "-j", "1")
    assert again.code == 0 and "(3 already done by an earlier run, kept)" in again.out
    assert [r["status"] for r in again.rows] == ["ok"] * 4


def test_cuda_without_cuda_is_one_line(demo_root, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = run_cli("export", demo_root, tmp_path / "out", "-q", "--device", "cuda:7")
    assert_clean_failure(run, 2)
    assert run.err_lines == ["error: device 'cuda:7' requested but CUDA is not available; use device='cpu'"]


# ---------------------------------------------------------------- unreadable folders, through the library


def test_an_unreadable_subject_folder_fails_its_clips_only(demo_copy, tmp_path, monkeypatch):
    original = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if self.name == "011" else original(self))
    clips, issues = discover(demo_copy)
    assert sorted(clips) == ["006_1_1", "006_2_1"]
    message = f"011: cannot read subject folder {demo_copy / '011'} (Permission denied)"
    assert [(i.kind, i.message) for i in issues] == [("unreadable", message)]
    report = export_flows(load_dataset(demo_copy, read_annotations(demo_copy / "samm.csv")), tmp_path / "out")
    assert [(r["clip"], r["status"], r["error"]) for r in report.rows][2:] == [
        (clip, "failed", f"{clip}: cannot read subject folder {demo_copy / '011'} (Permission denied)") for clip in ("011_1_2", "011_2_2")]
