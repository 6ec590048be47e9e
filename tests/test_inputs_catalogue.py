"""The bad-input catalogue, part 2 (issue 10): paths that are not UTF-8, damaged and hostile
frames (corrupt data behind an intact end marker, decompression bombs, unreadable files,
broken links), clip folders that are there but unusable, one clip name under two subjects,
annotation files in UTF-16 and other encodings.

Each case runs the real command line in this process (``sammflow.cli.main``) on a damaged
copy of the small demo dataset and checks the README's promises: one line naming the clip or
file and the cause, the exit code, no traceback, nothing printed by a library straight to
the terminal (file descriptor 2, past ``sys.stderr``), the dataset untouched, nothing written
outside the output folder (nor a crash log in the temporary folder), the good clips exported.

Frame and folder cases share one export run (``frame_run``): a copy of a demo clip damaged
one way per case, all processed together (``-j 1``, so that an unreadable file can be
simulated in this process: tests run as root, who reads through ``chmod 000``).
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import openpyxl
import pytest

from sammflow.cli import main
from sammflow.text import show_path

HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration", "Micro",
          "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
LATIN1 = os.fsdecode(b"donn\xe9es")  # a folder named in Latin-1: not valid UTF-8 on a UTF-8 system
READS = ".jpg/.jpeg/.png/.bmp"


# ---------------------------------------------------------------- running the command line


@dataclass
class Run:
    code: int
    out: str
    err: str
    noise: str  # what reached file descriptor 2 directly (C libraries)
    rows: list[dict[str, str]]

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@contextlib.contextmanager
def fd2_captured():
    """Everything written to file descriptor 2 meanwhile (libjpeg, libpng and OpenCV print
    there, past ``sys.stderr``); yields a list that holds it once the block ends."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "backslashreplace"))


def run_cli(*args: str | Path) -> Run:
    """``sammflow ARGS`` in this process; the manifest of the output folder (the 3rd argument) read back."""
    out, err = io.StringIO(), io.StringIO()
    with fd2_captured() as noise, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([os.fspath(a) for a in args])
    manifest = Path(args[2]) / "manifest.csv" if len(args) > 2 else None
    rows = []
    if manifest is not None and manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    return Run(code, out.getvalue(), err.getvalue(), noise[0], rows)


def hashes(folder: Path, *, skip: Path | None = None) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones and links included) by relative path → content hash."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_symlink():
            found[str(path.relative_to(folder))] = "link→" + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[str(path.relative_to(folder)) + "/"] = ""
    return found


def assert_promises(run: Run, code: int) -> None:
    """Exit code, no traceback, no library noise, every line printable."""
    assert run.code == code, (run.code, run.err)
    assert "Traceback" not in run.out + run.err
    assert run.noise == "", run.noise  # e.g. "Corrupt JPEG data: ..." naming no file
    (run.out + run.err).encode("utf-8")  # a path that is not UTF-8 is shown escaped, never crashes a print or a log


def demo_rows(root: Path) -> list[list[str]]:
    with open(root / "samm.csv", newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh, delimiter=";"))[1:]


def write_table(path: Path, rows: list[list[str]], *, delimiter: str = ";") -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode())
    return path


# ---------------------------------------------------------------- damage


def frame(folder: Path, number: int) -> Path:
    """The file of frame ``number`` (zero padding varies, as in SAMM)."""
    return next(p for p in folder.iterdir() if p.stem.rsplit("_", 1)[-1].isdigit() and int(p.stem.rsplit("_", 1)[1]) == number)


def grey(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE)


def replace(path: Path, suffix: str, data: bytes) -> Path:
    """Put ``data`` in place of frame ``path``, under its name with ``suffix``."""
    path.unlink()
    new = path.with_suffix(suffix)
    new.write_bytes(data)
    return new


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_parts(png: bytes) -> tuple[int, bytes, int]:
    """Start of the first IDAT chunk, its data, and its end."""
    at = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[at:at + 4])[0]
    return at, png[at + 8:at + 8 + length], at + 12 + length


def cut_jpeg(path: Path) -> Path:
    """A JPEG cut in half, its end-of-image marker put back: libjpeg decodes the rest as grey
    and only prints "Corrupt JPEG data: premature end of data segment"."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    return path


def stray_marker(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\xda") + (len(data) - data.index(b"\xff\xda")) // 2
    data[at:at + 2] = b"\xff\xd3"  # a restart marker in the middle of the image data
    path.write_bytes(bytes(data))
    return path


def cut_png(path: Path, *, depth: int = 8) -> Path:
    image = grey(path)
    png = cv2.imencode(".png", image if depth == 8 else image.astype(np.uint16) * 257)[1].tobytes()
    at, body, _ = png_parts(png)
    return replace(path, ".png", png[:at] + png_chunk(b"IDAT", body[: len(body) // 2]) + png_chunk(b"IEND", b""))


def png_crc_error(path: Path) -> Path:
    data = bytearray(cv2.imencode(".png", grey(path))[1].tobytes())
    _, _, end = png_parts(bytes(data))
    data[end - 1] ^= 0xFF
    return replace(path, ".png", bytes(data))


def bomb_png(path: Path) -> Path:
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    return replace(path, ".png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
                   + png_chunk(b"IEND", b""))


def bomb_jpeg(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    path.write_bytes(bytes(data))
    return path


def bomb_bmp(path: Path) -> Path:
    data = bytearray(cv2.imencode(".bmp", np.zeros((8, 8), np.uint8))[1].tobytes())
    data[18:26] = struct.pack("<ii", 100000, 100000)
    return replace(path, ".bmp", bytes(data))


def cut_bmp(path: Path) -> Path:
    data = cv2.imencode(".bmp", grey(path))[1].tobytes()
    return replace(path, ".bmp", data[: len(data) * 2 // 3])


def broken_link(path: Path) -> Path:
    path.unlink()
    path.symlink_to(path.parent.parent / "moved" / path.name)
    return path


def every_frame(change: Callable[[Path], object]) -> Callable[[Path], None]:
    return lambda folder: [change(p) for p in sorted(folder.iterdir())] and None


def noisy_png(path: Path) -> Path:
    """A grey PNG with metadata libpng complains about (a broken colour profile, a text chunk
    with a bad CRC): the pixels are fine."""
    png = cv2.imencode(".png", grey(path))[1].tobytes()
    text = bytearray(png_chunk(b"tEXt", b"Comment\x00exported"))
    text[-1] ^= 0xFF
    extra = png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(b"not a profile")) + bytes(text)
    return replace(path, ".png", png[:33] + extra + png[33:])


def padded_jpeg(path: Path) -> Path:
    """Bytes between the image data and the end marker (some cameras pad): libjpeg warns
    "extraneous bytes before marker 0xd9", the image is whole."""
    data = path.read_bytes()
    path.write_bytes(data[:-2] + b"\x00" * 6 + data[-2:])
    return path


def png_named_jpg(path: Path) -> Path:
    path.write_bytes(cv2.imencode(".png", grey(path))[1].tobytes())
    return path


def latin1_name(path: Path) -> Path:
    new = path.with_name(os.fsdecode(b"\xe9t\xe9_") + path.name.rsplit("_", 1)[1])
    path.rename(new)
    return new


def tiff_only(folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        cv2.imencode(".tif", grey(path))[1].tofile(path.with_suffix(".tif"))
        path.unlink()


def one_level_down(folder: Path) -> None:
    (folder / "frames").mkdir()
    for path in sorted(folder.glob("*.jpg")):
        path.rename(folder / "frames" / path.name)


def unnumbered(folder: Path) -> None:
    for i, path in enumerate(sorted(folder.iterdir())):
        path.rename(folder / f"frame{'abcdefghijklmnop'[i]}.jpg")


def emptied(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


#: case: (what is damaged: "onset" / "apex" frame, or "folder"; damage; status; expected text
#: in the row's error, with {path} (the damaged file) and {folder} (the clip folder))
FRAME_CASES: dict[str, tuple[str, Callable, str, str]] = {
    "jpeg_cut_end_marker_put_back": ("onset", cut_jpeg, "failed", "{path}: corrupt JPEG data (premature end of data segment)"),
    "jpeg_cut_end_marker_put_back_apex": ("apex", cut_jpeg, "failed", "{path}: corrupt JPEG data (premature end of data segment)"),
    "jpeg_stray_marker_in_image_data": ("onset", stray_marker, "failed", "{path}: corrupt JPEG data ("),
    "frame_unreadable": ("onset", lambda p: p, "failed", "{path}: cannot read (Permission denied)"),
    "apex_frame_unreadable": ("apex", lambda p: p, "failed", "{path}: cannot read (Permission denied)"),
    "frame_is_a_broken_link": ("onset", broken_link, "failed", "{path}: broken symbolic link (to "),
    "png_bomb_apex": ("apex", bomb_png, "failed", "{path}: image is 100000×100000 px, larger than any video frame: refusing to decode"),
    "jpeg_bomb_onset": ("onset", bomb_jpeg, "failed", "{path}: image is 65000×65000 px, larger than any video frame: refusing to decode"),
    "bmp_bomb_onset": ("onset", bomb_bmp, "failed", "{path}: image is 100000×100000 px, larger than any video frame: refusing to decode"),
    "png_cut_end_put_back": ("onset", cut_png, "failed", "{path}: truncated PNG data (the image data ends early)"),
    "png16_cut_end_put_back": ("onset", lambda p: cut_png(p, depth=16), "failed", "{path}: truncated PNG data (the image data ends early)"),
    "png_crc_error": ("onset", png_crc_error, "failed", "{path}: corrupt PNG data (CRC error in the IDAT chunk)"),
    "bmp_cut_short": ("onset", cut_bmp, "failed", "{path}: truncated BMP ("),
    "clip_folder_empty": ("folder", emptied, "failed", "folder {folder} has no frames (it is empty)"),
    "clip_folder_of_tiff_frames": ("folder", tiff_only, "failed", f"folder {{folder}} holds only .tif files; sammflow reads {READS} frames"),
    "frames_one_level_down": ("folder", one_level_down, "failed", "folder {folder} has no frames, only the subfolder frames/ "
                                                                  "(frames must be directly in the clip folder)"),
    "frames_without_numbers": ("folder", unnumbered, "failed", "folder {folder} has no frames: 12 image files, but none named with a "
                                                               "trailing frame number (e.g. framea.jpg)"),
    "png_frames_with_noisy_metadata": ("folder", every_frame(noisy_png), "ok", ""),
    "jpeg_frames_padded_before_end_marker": ("folder", every_frame(padded_jpeg), "ok", ""),
    "png_content_named_jpg": ("onset", png_named_jpg, "ok", ""),
    "frame_name_in_latin1": ("onset", latin1_name, "ok", ""),
}


@dataclass
class FrameRun:
    run: Run
    root: Path
    out: Path
    expected: dict[str, tuple[str, str, str]]  # case → (clip, status, text)
    before: dict[str, str]
    after: dict[str, str]
    outside_before: dict[str, str]
    outside_after: dict[str, str]
    crash_logs: list[str]
    good: list[str]


@pytest.fixture(scope="module")
def frame_run(demo_root, tmp_path_factory) -> FrameRun:
    base = tmp_path_factory.mktemp("catalogue2")
    root, out, logs = base / "DATA", base / "out", base / "tmp"
    root.mkdir()
    logs.mkdir()
    rows = demo_rows(demo_root)
    table, expected, denied = [], {}, set()
    for row in rows:  # the untouched clips
        shutil.copytree(demo_root / row[0] / row[1], root / row[0] / row[1])
        table.append(row)
    for i, (case, (target, damage, status, text)) in enumerate(FRAME_CASES.items()):
        source = rows[i % len(rows)]
        subject, clip, onset, apex = source[0], f"{source[1]}c{i:02d}", int(source[3]), int(source[4])
        folder = Path(shutil.copytree(demo_root / subject / source[1], root / subject / clip))
        damaged = damage(folder) if target == "folder" else damage(frame(folder, onset if target == "onset" else apex))
        if case.endswith("unreadable"):
            denied.add(damaged)
        table.append([subject, clip, *source[2:]])
        expected[case] = (clip, status, text.format(path=show_path(damaged) if damaged else "", folder=show_path(folder)))
    # one clip name under two subjects: the annotated subject's folder is used; the other one
    # (same frame numbers, no face) would fail the clip
    subject, clip = rows[0][:2]
    other = Path(shutil.copytree(demo_root / subject / clip, root / "011" / clip))
    for path in other.iterdir():
        path.write_bytes(cv2.imencode(".jpg", np.full((1088, 2040), 90, np.uint8))[1].tobytes())
    expected["same_clip_name_under_another_subject"] = (clip, "ok", "")
    # ... and under two subjects, neither the annotated one
    source = rows[1]
    for where in ("006", "011"):
        shutil.copytree(demo_root / source[0] / source[1], root / where / "099_1_1")
    table.append(["099", "099_1_1", *source[2:]])
    expected["clip_name_only_under_other_subjects"] = (
        "099_1_1", "failed", f"099_1_1: annotated with subject 099, but no folder 099/099_1_1 under {root}; "
                             "folders of that name are under other subjects: 006/099_1_1, 011/099_1_1")
    # ... and under one other subject only: used, with a warning
    shutil.copytree(demo_root / source[0] / source[1], root / "006" / "098_1_1")
    table.append(["098", "098_1_1", *source[2:]])
    expected["clip_under_another_subject_only"] = ("098_1_1", "ok", "")
    write_table(root / "samm.csv", table)

    before, outside_before = hashes(root), {k: v for k, v in hashes(base, skip=out).items() if not k.startswith("tmp/")}
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):  # chmod 000, for a root test process
        if isinstance(file, (str, os.PathLike)) and Path(file) in denied and "r" in mode:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", guarded_open)
        patch.setattr(io, "open", guarded_open)
        patch.setattr(tempfile, "tempdir", str(logs))
        run = run_cli("export", root, out, "-q", "-j", "1")
    outside_after = {k: v for k, v in hashes(base, skip=out).items() if not k.startswith("tmp/")}
    # sammflow's crash logs (torch keeps its own cache folder there when first imported)
    crash_logs = sorted(p.name for p in logs.iterdir() if p.name.startswith("sammflow"))
    return FrameRun(run, root, out, expected, before, hashes(root), outside_before, outside_after, crash_logs, [r[1] for r in rows])


CASES = [*FRAME_CASES, "same_clip_name_under_another_subject", "clip_name_only_under_other_subjects", "clip_under_another_subject_only"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_each_bad_frame_or_folder_gets_its_row_and_cause(frame_run, case):
    clip, status, text = frame_run.expected[case]
    rows = [r for r in frame_run.run.rows if r["clip"] == clip]
    assert [(r["status"], r["error"]) for r in rows] and len(rows) == 1, rows
    row = rows[0]
    assert row["status"] == status, (row["status"], row["error"])
    if status == "ok":
        assert row["error"] == "" and (frame_run.out / row["output"]).is_file()
    else:
        assert row["error"].startswith(f"{clip}: ") and text in row["error"], row["error"]
        assert f"{status}: {row['error']}" in frame_run.run.err_lines  # its one line on the terminal
        assert row["output"] == ""


@pytest.mark.slow
def test_the_frame_run_keeps_every_promise(frame_run):
    run = frame_run.run
    assert_promises(run, 1)
    failed = [r for r in run.rows if r["status"] != "ok"]
    assert len(failed) == sum(status != "ok" for _, status, _ in frame_run.expected.values())
    warnings = [line for line in run.err_lines if line.startswith("dataset warning: ")]
    # one line per failed clip, the dataset warnings, nothing else (no second line per failure, no library noise)
    assert sorted(run.err_lines) == sorted([f"{r['status']}: {r['error']}" for r in failed] + warnings)
    clip = frame_run.good[0]
    assert warnings == [
        f"dataset warning: {clip}: two clip folders of that name, 006/{clip} and 011/{clip}; using 006/{clip} (annotated subject 006)",
        "dataset warning: 098_1_1: annotated with subject 098, found in folder 006/098_1_1; using it",
    ]
    assert all(r["status"] == "ok" and (frame_run.out / r["output"]).is_file() for r in run.rows if r["clip"] in frame_run.good)
    assert frame_run.after == frame_run.before  # the dataset is never written to
    assert frame_run.outside_after == frame_run.outside_before and frame_run.crash_logs == []  # nothing outside the output folder
    assert not [p for p in frame_run.out.rglob("*") if p.name.startswith(".")]  # no temporary file left


# ---------------------------------------------------------------- annotation files


def _encoded(rows: list[list[str]], encoding: str, bom: bytes = b"", delimiter: str = "\t") -> bytes:
    text = write_table(Path(tempfile.mkdtemp()) / "x.csv", rows, delimiter=delimiter).read_bytes().decode()
    return bom + text.encode(encoding)


#: Excel's "Save as Unicode text" is UTF-16 LE with a byte-order mark, tab-separated.
GOOD_ENCODINGS = {
    "excel_unicode_text_utf16le_bom_tabs": lambda rows: _encoded(rows, "utf-16-le", b"\xff\xfe"),
    "utf16be_bom_tabs": lambda rows: _encoded(rows, "utf-16-be", b"\xfe\xff"),
    "utf16le_without_bom_semicolons": lambda rows: _encoded(rows, "utf-16-le", delimiter=";"),
    "utf8_bom_tabs": lambda rows: _encoded(rows, "utf-8", b"\xef\xbb\xbf"),
    "utf32le_bom_tabs": lambda rows: _encoded(rows, "utf-32-le", b"\xff\xfe\x00\x00"),
}


@pytest.mark.parametrize("case", GOOD_ENCODINGS)
def test_annotation_files_in_unicode_encodings_are_read(case, demo_root, tmp_path):
    path = tmp_path / "SAMM unicode.txt"
    row = demo_rows(demo_root)[0]
    path.write_bytes(GOOD_ENCODINGS[case]([[*row[:-1], "brows lowered – sourcils froncés"]]))
    before = hashes(demo_root)
    run = run_cli("export", demo_root, tmp_path / "out", "-a", path, "-q", "-j", "1")
    assert_promises(run, 0)
    assert [(r["clip"], r["status"]) for r in run.rows] == [(row[1], "ok")] and (tmp_path / "out" / run.rows[0]["output"]).is_file()
    assert hashes(demo_root) == before


def _xlsx_cut_short(path: Path, rows: list[list[str]]) -> Path:
    book = openpyxl.Workbook()
    book.active.append(HEADER)
    for row in rows:
        book.active.append(row)
    book.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _denied(path: Path, rows: list[list[str]], monkeypatch) -> Path:
    write_table(path, rows)
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied", str(self)))
                        if self == path else real(self))
    return path


def _latin1_empty(path: Path, rows: list[list[str]]) -> Path:
    folder = path.parent / LATIN1
    folder.mkdir()
    (folder / "samm.csv").write_bytes(b"")
    return folder / "samm.csv"


# case: make(path, rows, monkeypatch) -> annotation path; the message after "error: <path>: "
BAD_ANNOTATIONS = {
    "annotation_file_unreadable": (lambda p, rows, mp: _denied(p.with_suffix(".csv"), rows, mp),
                                   "cannot read the annotation file (Permission denied)"),
    "annotation_path_is_a_folder": (lambda p, rows, mp: (p.mkdir(), p)[1], "is a folder, expected an annotation file (.csv or .xlsx)"),
    "utf16_with_an_odd_byte_at_the_end": (lambda p, rows, mp: (p.write_bytes(_encoded(rows, "utf-16-le", b"\xff\xfe") + b"\x0a"), p)[1],
                                          "starts as UTF-16-LE text but is not (truncated data at byte "),
    "xlsx_cut_short": (lambda p, rows, mp: _xlsx_cut_short(p.with_suffix(".xlsx"), rows), "not a readable .xlsx spreadsheet ("),
    "empty_file_in_a_latin1_folder": (lambda p, rows, mp: _latin1_empty(p, rows), "file is empty"),
}


@pytest.mark.parametrize("case", BAD_ANNOTATIONS)
def test_unusable_annotation_file_is_one_line_and_exit_2(case, demo_root, tmp_path, monkeypatch):
    make, message = BAD_ANNOTATIONS[case]
    path = make(tmp_path / "annotations", demo_rows(demo_root), monkeypatch)
    run = run_cli("export", demo_root, tmp_path / "out", "-a", path, "-q")
    assert_promises(run, 2)
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith(f"error: {show_path(path)}: {message}"), run.err_lines
    assert not (tmp_path / "out").exists()  # nothing written for an unusable input


# ---------------------------------------------------------------- paths and whole datasets


def _all_clips(change: Callable[[Path], None]) -> Callable[[Path], str]:
    def make(data: Path) -> str:
        for subject in sorted(p for p in data.iterdir() if p.is_dir()):
            for clip in sorted(subject.iterdir()):
                change(clip)
        first = demo_rows(data)[0]
        return show_path(data / first[0] / first[1])
    return make


# case: damage every clip folder of the copy -> the first clip's folder; the cause expected after "; <clip>: "
UNUSABLE_DATASETS = {
    "every_clip_folder_empty": (_all_clips(emptied), "folder {folder} has no frames (it is empty)"),
    "every_clip_of_tiff_frames": (_all_clips(tiff_only), f"folder {{folder}} holds only .tif files; sammflow reads {READS} frames"),
    "every_clip_one_level_down": (_all_clips(one_level_down), "folder {folder} has no frames, only the subfolder frames/"),
}


@pytest.mark.parametrize("case", UNUSABLE_DATASETS)
def test_dataset_whose_folders_are_all_unusable_says_why_and_exits_2(case, demo_copy, tmp_path):
    make, cause = UNUSABLE_DATASETS[case]
    annotations = Path(shutil.copy(demo_copy / "samm.csv", tmp_path / "samm.csv"))
    folder = make(demo_copy)
    before = hashes(demo_copy)
    run = run_cli("export", demo_copy, tmp_path / "out", "-a", annotations, "-q")
    assert_promises(run, 2)
    clip = demo_rows(demo_copy)[0][1]
    assert len(run.err_lines) == 1, run.err_lines
    rows = demo_rows(demo_copy)
    assert run.err_lines[0].startswith(f"error: {demo_copy}: no clip folders with frames found (expected {rows[0][0]}/{rows[0][1]}, "
                                       f"{rows[1][0]}/{rows[1][1]}, ... : <subject>/<clip>/<frames>); {clip}: {cause.format(folder=folder)}")
    assert hashes(demo_copy) == before and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dataset_in_a_latin1_folder_with_a_bad_frame(demo_root, tmp_path):
    data = Path(shutil.copytree(demo_root, tmp_path / LATIN1 / "DATA"))
    subject, clip, _, onset = demo_rows(data)[1][:4]
    bad = cut_jpeg(frame(data / subject / clip, int(onset)))
    before = hashes(tmp_path, skip=tmp_path / "out")
    run = run_cli("export", data, tmp_path / "out", "-q", "-j", "1")
    assert_promises(run, 1)
    shown = show_path(bad)
    assert "donn\\xe9es" in shown
    assert run.err_lines == [f"failed: {clip}: {shown}: corrupt JPEG data (premature end of data segment)"]
    assert [r["status"] for r in run.rows].count("ok") == 3 and all((tmp_path / "out" / r["output"]).is_file() for r in run.rows if r["output"])
    assert hashes(tmp_path, skip=tmp_path / "out") == before


@pytest.mark.slow
def test_output_folder_in_a_latin1_folder(demo_root, tmp_path):
    out = tmp_path / LATIN1 / "out"
    annotations = write_table(tmp_path / "one.csv", demo_rows(demo_root)[:1])
    run = run_cli("export", demo_root, out, "-a", annotations, "-q", "-j", "1")
    assert_promises(run, 0)
    assert [r["status"] for r in run.rows] == ["ok"] and (out / run.rows[0]["output"]).is_file()


@pytest.mark.slow
def test_demo_into_a_latin1_folder(tmp_path):
    """Run as its own process: before, OpenCV's ``imwrite`` crashed the interpreter (SIGSEGV)
    there, leaving a hidden half-built folder."""
    out = tmp_path / LATIN1 / "DEMO"
    result = subprocess.run([sys.executable, "-m", "sammflow", "demo", os.fsencode(out), "--subjects", "1", "--clips", "1", "--frames", "6",
                             "-q"], capture_output=True, timeout=300, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr.decode("utf-8", "backslashreplace")[-2000:]
    assert b"Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["DEMO"]  # no hidden staging folder left
    rows = demo_rows(out)
    assert len(rows) == 1 and len(list((out / rows[0][0] / rows[0][1]).glob("*.jpg"))) == 6


def test_missing_dataset_folder_in_a_latin1_folder(tmp_path, demo_root):
    data = tmp_path / LATIN1 / "DATA"
    run = run_cli("export", data, tmp_path / "out", "-a", demo_root / "samm.csv", "-q")
    assert_promises(run, 2)
    assert run.err_lines == [f"error: {show_path(data)}: dataset folder not found"]
