"""The demo dataset: SAMM layout and naming, determinism, ground truth, never overwrites; the
layout, annotation file and quirks of each other dataset kind (read here with openpyxl and
OpenCV only, not with sammflow's readers)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from sammflow.annotations import read_annotations
from sammflow.cli import main
from sammflow.dataset import load_dataset, read_grey
from sammflow.demo import KINDS, DemoConfig, displacement_field, generate_demo, motion_profile, read_ground_truth

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


# ---------------------------------------------------------------- SAMM unchanged by the kinds


def _digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def test_samm_demo_unchanged_byte_for_byte(demo_root, demo_truth):
    """Digests taken from the generator before it had kinds: SAMM demos (and the app's cached
    one, found by hash) are what they were. They change only with the generator or the pinned
    numpy / OpenCV / scikit-image."""
    assert DemoConfig().hash == "fc5f5b108196" and "kind" not in DemoConfig().as_dict()
    assert demo_truth["config_hash"] == "d03d547bc160"  # conftest's SMALL_DEMO: 2 subjects × 2 clips × 12 frames, 2040×1088
    assert _digest(demo_root) == "8614509c5a5003b025181e8880c5b773e7ed928441d37bd126f8e99067f06c2e"
    assert "kind" not in json.loads((demo_root / "ground_truth.json").read_text()) and demo_truth["kind"] == "samm"


# ---------------------------------------------------------------- the other kinds

#: Per kind, the smallest demo that shows its quirks (≈ 0.5-1.5 s each).
KIND_DEMOS = {
    "casme2": DemoConfig(kind="casme2", subjects=2, clips_per_subject=1, frames=5),  # EP02_01f under both subjects; row 2's apex '/'
    "smic": DemoConfig(kind="smic", subjects=1, clips_per_subject=2, frames=5),
    "casme3a": DemoConfig(kind="casme3a", subjects=1, clips_per_subject=3, frames=5),  # videos a, a, b
    "mmew": DemoConfig(kind="mmew", subjects=1, clips_per_subject=2, frames=5),
}
FRAME_SIZE = {"casme2": (640, 480), "smic": (640, 480), "casme3a": (1280, 720), "mmew": (1280, 960)}
#: Each release's frame paths, and its emotion labels.
FRAME_PATH = {
    "casme2": r"CASME2_RAW_selected/sub\d\d/EP\d\d_\d\d[a-z]/img[1-9]\d*\.jpg",
    "smic": r"HS/s[1-9]\d*/micro/(negative|positive|surprise)/s[1-9]\d*_(ne|po|sur)_\d\d/image\d{6}\.jpg",
    "casme3a": r"part_A/spNO\.[1-9]\d*/[a-z]/color/[1-9]\d*\.jpg",
    "mmew": r"Micro_Expression/(happiness|surprise|disgust|fear|sadness|others)/S\d\d_\d\d_\d{3}/[1-9]\d*\.jpg",
}
EMOTIONS = {
    "casme2": {"happiness", "disgust", "repression", "surprise", "fear", "sadness", "others"},
    "smic": {"negative", "positive", "surprise"},
    "casme3a": {"happy", "disgust", "fear", "anger", "sad", "surprise", "others"},
    "mmew": {"happiness", "surprise", "disgust", "fear", "sadness", "others"},
}
POSITIVE = {"casme2": "happiness", "smic": "positive", "casme3a": "happy", "mmew": "happiness"}


@pytest.fixture(scope="module")
def kind_demo(tmp_path_factory):
    """``kind_demo(kind)`` → (folder, ground truth) of ``KIND_DEMOS[kind]``, made once."""
    made: dict[str, Path] = {}

    def make(kind: str) -> tuple[Path, dict]:
        if kind not in made:
            made[kind] = generate_demo(tmp_path_factory.mktemp(kind) / "DATA", KIND_DEMOS[kind])
        return made[kind], read_ground_truth(made[kind])

    return make


def _clip_folder(kind: str, clip: dict) -> str:
    """Where the release keeps a clip's frames, from its annotation's fields."""
    return {"casme2": f"CASME2_RAW_selected/{clip['subject']}/{clip['filename']}",
            "smic": f"HS/{clip['subject']}/micro/{clip['emotion']}/{clip['filename']}",
            "casme3a": f"part_A/{clip['subject']}/{clip['filename']}/color",
            "mmew": f"Micro_Expression/{clip['emotion']}/{clip['filename']}"}[kind]


def _frame_name(kind: str, number: int) -> str:
    return {"casme2": f"img{number}.jpg", "smic": f"image{number:06d}.jpg"}.get(kind, f"{number}.jpg")


def _rows(path: Path, sheet: str | None = None) -> list[tuple]:
    book = openpyxl.load_workbook(path)
    return list((book[sheet] if sheet else book.active).iter_rows(values_only=True))


def test_every_kind_is_covered():
    assert set(KINDS) == {"samm", *KIND_DEMOS}


@pytest.mark.parametrize("kind", list(KIND_DEMOS))
def test_frames_where_the_release_keeps_them(kind, kind_demo):
    root, truth = kind_demo(kind)
    assert truth["kind"] == kind and truth["frame_size"] == list(FRAME_SIZE[kind])
    jpgs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert jpgs and [j for j in jpgs if not re.fullmatch(FRAME_PATH[kind], j)] == []
    expected = set()
    for clip in truth["clips"]:
        assert clip["kind"] == kind and clip["folder"] == _clip_folder(kind, clip)
        assert clip["emotion"] in EMOTIONS[kind] and clip["onset"] < clip["apex"] < clip["offset"]
        expected |= {f"{clip['folder']}/{_frame_name(kind, f['frame'])}" for f in clip["frames"]}
        numbers = [f["frame"] for f in clip["frames"]]
        assert [clip["frame_name"].format(number=n) for n in numbers] == [_frame_name(kind, n) for n in numbers]
    assert set(jpgs) == expected
    assert len(truth["by_clip"]) == len(truth["clips"])  # clip ids are unique


@pytest.mark.parametrize("kind", list(KIND_DEMOS))
def test_colour_frames_of_the_kinds_size_with_the_face_inside(kind, kind_demo):
    root, truth = kind_demo(kind)
    width, height = FRAME_SIZE[kind]
    for clip in truth["clips"]:
        image = cv2.imread(str(root / clip["folder"] / _frame_name(kind, clip["apex"])), cv2.IMREAD_UNCHANGED)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        x1, y1, x2, y2 = clip["face_box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and y2 - y1 >= 120
        face = image[int(y1):int(y2), int(x1):int(x2)].astype(float)
        assert np.abs(face[..., 2] - face[..., 0]).mean() > 10  # really colour: skin is redder than blue


@pytest.mark.parametrize("kind", list(KIND_DEMOS))
def test_emotions_follow_the_motion(kind, kind_demo):
    _, truth = kind_demo(kind)
    for clip in truth["clips"]:
        if clip["motion"] == "smile":
            assert clip["emotion"] == POSITIVE[kind]
        if clip["motion"] == "brows_up":
            assert clip["emotion"] == "surprise"


def test_casme2_annotations(kind_demo):
    root, truth = kind_demo("casme2")
    assert openpyxl.load_workbook(root / "CASME2-coding-20140508.xlsx").sheetnames == ["Sheet1"]
    rows = _rows(root / "CASME2-coding-20140508.xlsx")
    assert rows[0] == ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion")
    for row, clip in zip(rows[1:], truth["clips"], strict=True):
        assert type(row[0]) is int and f"sub{row[0]:02d}" == clip["subject"]
        assert (row[1], row[2], row[4], row[6]) == (clip["filename"], clip["onset"], clip["offset"], clip["emotion"])
        assert row[3] == ("/" if clip["annotated_apex"] is None else clip["apex"])
        assert clip["clip"] == f"{clip['subject']}_{clip['filename']}"
    assert [row[3] for row in rows[1:]].count("/") == 1  # the true apex of that row is only in the ground truth
    subjects_of = Counter(clip["filename"] for clip in truth["clips"])
    assert subjects_of["EP02_01f"] == 2  # one folder name under two subjects


def test_smic_annotations(kind_demo):
    root, truth = kind_demo("smic")
    rows = _rows(root / "smic.xlsx")
    assert rows[0] == (None, "subject", "material", "emotion", "onset", "offset")  # no apex column
    for index, (row, clip) in enumerate(zip(rows[1:], truth["clips"], strict=True)):
        assert row == (index, clip["subject"], clip["filename"], clip["emotion"], clip["onset"], clip["offset"])
        assert clip["annotated_apex"] is None and clip["clip"] == clip["filename"]
        code = {"negative": "ne", "positive": "po", "surprise": "sur"}[clip["emotion"]]
        assert clip["filename"].startswith(f"{clip['subject']}_{code}_")


def test_casme3a_annotations_and_shared_video(kind_demo):
    root, truth = kind_demo("casme3a")
    path = root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["label"]
    assert all(cell.data_type == "s" for row in book["label"].iter_rows() for cell in row)  # every cell text
    rows = _rows(path, "label")
    assert rows[0] == ("Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion")
    for row, clip in zip(rows[1:], truth["clips"], strict=True):
        assert row[:5] == (clip["subject"], clip["filename"], str(clip["onset"]), str(clip["apex"]), str(clip["offset"]))
        assert row[7] == clip["emotion"]
    assert [c["clip"] for c in truth["clips"]] == ["spNO.1_a", "spNO.1_a_2", "spNO.1_b"]
    first, second = truth["clips"][:2]  # two micro-expressions of video a: one folder, frames one after the other
    assert first["folder"] == second["folder"] == "part_A/spNO.1/a/color"
    assert first["frames"][-1]["frame"] < second["frames"][0]["frame"]
    numbers = sorted(int(p.stem) for p in (root / first["folder"]).glob("*.jpg"))
    assert numbers == sorted(f["frame"] for f in first["frames"] + second["frames"])
    for video in ("a", "b"):  # beside color: 16-bit depth PNGs a reader must ignore
        depth = sorted((root / "part_A/spNO.1" / video / "depth").glob("*.png"))
        assert len(depth) == 2 and cv2.imread(str(depth[0]), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_mmew_annotations_and_frames_from_1(kind_demo):
    root, truth = kind_demo("mmew")
    rows = _rows(root / "MMEW_Micro_Exp.xlsx")
    assert rows[0] == ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion")
    for row, clip in zip(rows[1:], truth["clips"], strict=True):
        assert row[:5] == (clip["subject"], clip["filename"], clip["onset"], clip["apex"], clip["offset"]) and row[6] == clip["emotion"]
        assert clip["filename"].startswith(f"{clip['subject']}_") and clip["clip"] == clip["filename"]
        numbers = sorted(int(p.stem) for p in (root / clip["folder"]).glob("*.jpg"))
        assert numbers == list(range(1, KIND_DEMOS["mmew"].frames + 1)) and clip["frames"][0]["frame"] == 1


def test_kind_in_config_and_hash(tmp_path):
    config = DemoConfig(kind="smic", subjects=1, clips_per_subject=1, frames=5)
    assert (config.width, config.height, config.annotations) == (640, 480, "smic.xlsx")
    assert config.as_dict()["kind"] == "smic" and config.hash != DemoConfig(subjects=1, clips_per_subject=1, frames=5).hash
    a, b = generate_demo(tmp_path / "a", config), generate_demo(tmp_path / "b", config)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert read_ground_truth(a) == read_ground_truth(b) and _rows(a / "smic.xlsx") == _rows(b / "smic.xlsx")
    assert DemoConfig(**read_ground_truth(a)["config"]) == config
    with pytest.raises(ValueError, match=r"kind must be one of \['samm', 'casme2', 'smic', 'casme3a', 'mmew'\], got 'casme'"):
        DemoConfig(kind="casme")


def test_demo_command_kind(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "bad"), "--kind", "casme", "-q"]) == 2
    assert capsys.readouterr().err == "error: --kind must be one of ['samm', 'casme2', 'smic', 'casme3a', 'mmew'], got 'casme'\n"
    assert not (tmp_path / "bad").exists()
    assert main(["demo", str(tmp_path / "smic"), "--kind", "smic", "--subjects", "1", "--clips", "1", "--frames", "5", "-q"]) == 0
    assert str(tmp_path / "smic" / "smic.xlsx") in capsys.readouterr().out
    assert read_ground_truth(tmp_path / "smic")["kind"] == "smic"
