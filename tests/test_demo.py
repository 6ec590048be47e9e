"""The demo dataset: SAMM layout and naming, determinism, ground truth, never overwrites."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset, read_grey
from sammflow.demo import DemoConfig, displacement_field, generate_demo, motion_profile

TINY = DemoConfig(subjects=1, clips_per_subject=1, frames=6, width=800, height=600)


def test_samm_layout_and_naming(demo_root, demo_truth):
    annotations = read_annotations(demo_root / "samm.csv")
    assert not annotations.problems and len(annotations.clips) == 4
    assert (demo_root / "samm.csv").read_bytes().count(b"\r\n") == 5  # SAMM's CRLF, header + 4 rows
    dataset = load_dataset(demo_root, annotations)
    assert not dataset.issues and len(dataset.ready()) == 4
    paddings = set()
    for clip in annotations.clips:
        frames = dataset.clips_on_disk[clip.clip]
        assert frames.folder == demo_root / clip.subject / clip.clip
        assert min(frames.numbers) > 0 and frames.numbers == list(range(min(frames.numbers), max(frames.numbers) + 1))
        assert clip.onset < clip.apex < clip.offset and clip.offset in frames.frames
        name = frames.frames[clip.onset].name
        assert re.fullmatch(rf"{clip.subject}_\d+\.jpg", name)
        paddings.add(len(name.split("_")[1].split(".")[0]))
        image = cv2.imread(str(frames.frames[clip.apex]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (1088, 2040) and image.dtype == np.uint8  # grey, SAMM size
    assert paddings == {4, 5}  # zero padding varies, as in SAMM


def test_ground_truth_describes_every_frame(demo_root, demo_truth):
    for clip in demo_truth["clips"]:
        frames = {f["frame"]: f for f in clip["frames"]}
        assert frames[clip["apex"]]["motion"] == 1.0 and frames[clip["onset"]]["motion"] == 0.0
        assert max(abs(v) for f in clip["frames"] for v in f["jitter"]) < 8
        x1, y1, x2, y2 = clip["face_box"]
        assert 150 < x2 - x1 < 450 and 200 < y2 - y1 < 500  # SAMM-like face size
        for bump in clip["bumps"]:
            assert x1 < bump["center"][0] < x2 and y1 < bump["center"][1] < y2
            assert np.hypot(*bump["displacement"]) <= 4.0 + 1e-6


def test_motion_really_happens_where_the_truth_says(demo_root, demo_truth):
    clip = demo_truth["clips"][0]
    folder = demo_root / clip["subject"] / clip["clip"]
    frame = {int(p.stem.split("_")[1]): p for p in folder.glob("*.jpg")}
    onset = cv2.imread(str(frame[clip["onset"]]), cv2.IMREAD_GRAYSCALE).astype(float)
    apex = cv2.imread(str(frame[clip["apex"]]), cv2.IMREAD_GRAYSCALE).astype(float)
    jitter = np.array(next(f["jitter"] for f in clip["frames"] if f["frame"] == clip["apex"])) - np.array(
        next(f["jitter"] for f in clip["frames"] if f["frame"] == clip["onset"]))
    # undo the head jitter, then compare onset and apex near a bump and far from every bump
    shifted = cv2.warpAffine(onset, np.float32([[1, 0, jitter[0]], [0, 1, jitter[1]]]), onset.shape[::-1])
    cx, cy = map(int, clip["bumps"][0]["center"])
    near = np.abs(apex - shifted)[cy - 15:cy + 15, cx - 15:cx + 15].mean()
    x1, y1, x2, y2 = map(int, clip["face_box"])
    far = np.abs(apex - shifted)[y2 - 40:y2 - 10, x1 + 10:x1 + 40].mean()
    assert near > 2 * far


def test_same_seed_same_dataset_other_seed_other(tmp_path):
    a = generate_demo(tmp_path / "a", TINY)
    b = generate_demo(tmp_path / "b", TINY)
    c = generate_demo(tmp_path / "c", DemoConfig(**{**TINY.__dict__, "seed": 1}))
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert json.loads((a / "ground_truth.json").read_text()) == json.loads((b / "ground_truth.json").read_text())
    assert (a / "samm.csv").read_bytes() != (c / "samm.csv").read_bytes()


def test_existing_demo_reused_other_folders_refused(tmp_path):
    root = generate_demo(tmp_path / "demo", TINY)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    generate_demo(root, TINY)  # same config: reused, untouched
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamp
    with pytest.raises(FileExistsError, match="other settings"):
        generate_demo(root, DemoConfig(**{**TINY.__dict__, "seed": 5}))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a sammflow demo"):
        generate_demo(tmp_path / "mine", TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left behind


def test_motion_profile_and_field():
    assert motion_profile(10, 10, 20, 40) == 0.0
    assert motion_profile(20, 10, 20, 40) == 1.0
    assert motion_profile(15, 10, 20, 40) == pytest.approx(0.5)
    assert motion_profile(41, 10, 20, 40) == 0.0
    bump = [{"center": [50.0, 40.0], "sigma": 5.0, "displacement": [0.0, 3.0]}]
    ys, xs = np.mgrid[0:80, 0:100].astype(np.float32)
    field = displacement_field(bump, xs, ys)
    assert field[40, 50].tolist() == [0.0, 3.0]
    assert np.abs(field[0, 0]).max() < 1e-6


def test_config_validated():
    with pytest.raises(ValueError, match="frames"):
        DemoConfig(frames=2)


def test_demo_into_a_folder_named_in_latin1(tmp_path):
    """OpenCV's ``imwrite`` crashed the interpreter on such a path, leaving a hidden half-built
    folder; run in a child process so that a regression fails this test instead of the session."""
    parent = tmp_path / os.fsdecode(b"donn\xe9es")
    code = ("import sys, os; from sammflow.demo import DemoConfig, generate_demo; "
            "generate_demo(os.fsdecode(sys.argv[1].encode('utf-8', 'surrogateescape')), "
            "DemoConfig(subjects=1, clips_per_subject=1, frames=6, width=800, height=600))")
    result = subprocess.run([sys.executable, "-c", code, str(parent / "DEMO")], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[1], errors="backslashreplace")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in parent.iterdir()) == ["DEMO"]  # no hidden staging folder left
    dataset = load_dataset(parent / "DEMO", read_annotations(parent / "DEMO" / "samm.csv"))
    assert not dataset.issues and len(dataset.ready()) == 1
    clip, frames = dataset.ready()[0]
    assert len(frames.frames) == 6 and read_grey(frames.path(clip.apex)).shape == (600, 800)


def test_refusal_names_a_latin1_folder_printably(tmp_path):
    mine = tmp_path / os.fsdecode(b"th\xe8se")
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError) as exc:
        generate_demo(mine, TINY)
    assert str(exc.value) == f"{tmp_path}/th\\xe8se: already exists and is not a sammflow demo dataset; choose an empty or new folder"
