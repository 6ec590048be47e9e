"""Atomic writes, the clean-up of what a killed writer leaves, and the small readers and
encoders every writer shares."""

from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np
import pytest

import sammflow
from sammflow import files, text
from sammflow.files import (
    PACKAGES, csv_bytes, encode_image, package_versions, read_csv, read_json, remove_stale_temp_files, write_atomic, write_csv,
)


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- write_atomic


def test_write_atomic_creates_the_folder_and_replaces_the_file(tmp_path):
    target = tmp_path / "a" / "b" / "map.png"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert _listing(tmp_path) == ["a", "a/b", "a/b/map.png"]  # no temporary file beside it
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's usual mode, not mkstemp's 0600


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["disk_full", "ctrl_c"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "manifest.csv"
    target.write_bytes(b"the old manifest")

    def fail(src, dst):
        assert os.path.basename(src).startswith(".sammflow-manifest.csv.") and os.path.getsize(src) == len(b"the new one")
        raise failure

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(type(failure)):
        write_atomic(target, b"the new one")
    assert target.read_bytes() == b"the old manifest"
    assert _listing(tmp_path) == ["manifest.csv"]


def test_a_write_that_fails_midway_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "map.png", "text, not bytes")  # fails inside the write, after mkstemp
    assert _listing(tmp_path) == []


def test_a_folder_that_cannot_be_written_raises_and_leaves_nothing(tmp_path, monkeypatch):
    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "map.png", b"x")
    assert _listing(tmp_path) == []


# ---------------------------------------------------------------- stale temporary files


def test_temporary_files_carry_the_sammflow_marker(tmp_path, monkeypatch):
    seen = []
    real = files.os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    write_atomic(tmp_path / "map.png", b"x")
    assert len(seen) == 1 and seen[0].startswith(".sammflow-map.png.") and seen[0].endswith(".tmp")
    assert files.is_temp_name(seen[0])


def test_stale_temporary_files_of_write_atomic_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "flows").mkdir()
    # as write_atomic names them
    _, made_by_mkstemp = tempfile.mkstemp(prefix=".sammflow-sub006_006_1_2.png.", suffix=".tmp", dir=tmp_path / "flows")
    stale = [tmp_path / ".sammflow-manifest.csv.abcdefgh.tmp", tmp_path / "flows" / ".sammflow-sub006_006_1_1.png.k3j_x9a2.tmp",
             tmp_path / made_by_mkstemp]
    kept = [
        tmp_path / ".my-notes.tmp",  # no 8-character random part
        tmp_path / ".x.png.abcd1234.tmp",  # a user's file that merely looks like a temporary file: no sammflow marker
        tmp_path / ".manifest.csv.abcdefgh.tmp",  # the same
        tmp_path / "sammflow-manifest.csv.abcdefgh.tmp",  # not hidden
        tmp_path / ".sammflow-manifest.csv.abcdefg.tmp",  # 7 characters
        tmp_path / ".sammflow-manifest.csv.ABCDEFGH.tmp",  # mkstemp uses lower case only
        tmp_path / ".sammflow-manifest.csv.abcdefgh.tmp.bak",
        tmp_path / "flows" / "sub006_006_1_1.png",
    ]
    for path in [*stale[:2], *kept]:
        path.write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert remove_stale_temp_files(tmp_path) == [] and remove_stale_temp_files(tmp_path / "missing") == []


# ---------------------------------------------------------------- CSV and JSON


def test_csv_round_trip(tmp_path):
    columns = ["clip", "error", "warnings", "frames"]
    rows = [
        {"clip": "006_1_2", "error": 'comma, "quotes" and ; semicolon', "warnings": "line one\nline two", "frames": 2, "extra": "dropped"},
        {"clip": "résultat ✓", "frames": 0},
    ]
    data = csv_bytes(rows, columns)
    assert data.startswith(b"clip,error,warnings,frames\n") and b"\r\n" not in data and b"dropped" not in data
    write_csv(tmp_path / "manifest.csv", rows, columns)
    assert (tmp_path / "manifest.csv").read_bytes() == data
    back = read_csv(tmp_path / "manifest.csv")
    assert back == [
        {"clip": "006_1_2", "error": 'comma, "quotes" and ; semicolon', "warnings": "line one\nline two", "frames": "2"},
        {"clip": "résultat ✓", "error": "", "warnings": "", "frames": "0"},
    ]
    assert csv_bytes([], columns) == b"clip,error,warnings,frames\n" and read_csv(tmp_path / "missing.csv") == []


LATIN1 = os.fsdecode(b"/data/caf\xe9")  # a folder named in Latin-1: a str with a lone surrogate on Linux


def test_text_with_undecodable_path_bytes_is_printable_utf8():
    assert LATIN1.endswith("\udce9")
    assert text.printable(f"{LATIN1}/006: cannot read") == "/data/caf\\xe9/006: cannot read"
    assert text.printable("café ✓") == "café ✓"  # valid text is left alone
    assert text.printable("odd \ud800 surrogate") == "odd \\ud800 surrogate"
    text.printable(LATIN1 + "\ud800").encode("utf-8")  # never raises


def test_csv_with_an_undecodable_path_is_written_as_utf8(tmp_path):
    rows = [{"clip": "006_1_1", "error": f"006_1_1: onset frame 4 not on disk in {LATIN1}/006/006_1_1"}]
    write_csv(tmp_path / "manifest.csv", rows, ["clip", "error"])
    text = (tmp_path / "manifest.csv").read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "not on disk in /data/caf\\xe9/006/006_1_1" in text
    assert read_csv(tmp_path / "manifest.csv")[0]["error"].endswith("/data/caf\\xe9/006/006_1_1")


def test_append_text_survives_any_path(tmp_path):
    log = tmp_path / "sammflow.log"
    assert files.append_text(log, f"failed: {LATIN1}\n") is True
    assert files.append_text(log, "second\n") is True
    assert log.read_bytes().decode("utf-8") == "failed: /data/caf\\xe9\nsecond\n"
    assert files.append_text(tmp_path / "missing" / "x.log", "x") is False  # an unwritable log never raises


def test_read_json_is_none_for_anything_unreadable(tmp_path):
    (tmp_path / "ok.json").write_text('{"kind": "flows"}')
    (tmp_path / "half.json").write_text('{"kind": "fl')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert read_json(tmp_path / "ok.json") == {"kind": "flows"}
    for name in ("half.json", "binary.json", "missing.json", ""):
        assert read_json(tmp_path / name) is None, name


# ---------------------------------------------------------------- images and versions


def test_encode_image_is_a_lossless_png(monkeypatch):
    image = np.arange(28 * 28 * 3, dtype=np.uint8).reshape(28, 28, 3)
    back = cv2.imdecode(np.frombuffer(encode_image(image), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, image)
    assert encode_image(image[..., 0]).startswith(b"\x89PNG")
    monkeypatch.setattr(files.cv2, "imencode", lambda suffix, array: (False, None))  # what OpenCV returns when it gives up
    with pytest.raises(ValueError, match=r"^cannot encode a uint8 \(28, 28, 3\) image as .gif$"):
        encode_image(image, ".gif")


def test_package_versions_name_every_package_that_shapes_outputs():
    versions = package_versions()
    assert list(versions) == ["sammflow", *PACKAGES]
    assert versions["sammflow"] == sammflow.__version__
    for name in ("numpy", "opencv-contrib-python-headless", "torch"):
        assert versions[name] not in ("", "not installed")
