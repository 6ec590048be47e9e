"""Dataset discovery (SAMM folder layout) and matching it with the annotations (frame decoding: test_frames.py)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow.annotations import AnnotationProblem, Annotations, ClipAnnotation, RejectedRow
from sammflow.dataset import (ClipFrames, Dataset, FrameError, InputError, discover, load_dataset, read_grey, safe_path,
                              show_path)


def write_image(path: Path, image: np.ndarray | None = None) -> Path:
    """Encode ``image`` (default: a small colour gradient) in the format of ``path``'s suffix.

    ``cv2.imencode`` + ``write_bytes`` rather than ``cv2.imwrite`` so any path (spaces,
    non-ASCII) is written exactly as given.
    """
    if image is None:
        y, x = np.mgrid[0:12, 0:16]
        image = np.dstack([x * 15, y * 20, np.full_like(x, 128)]).astype(np.uint8)
    ok, encoded = cv2.imencode(path.suffix.lower(), image)
    assert ok, path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return path


def make_clip(root: Path, clip: str, frames, *, name: str = "{subject}_{n:05d}.jpg") -> Path:
    """``root/<subject>/<clip>/`` holding one tiny image per frame number."""
    subject = clip.split("_")[0]
    folder = root / subject / clip
    folder.mkdir(parents=True, exist_ok=True)
    for n in frames:
        write_image(folder / name.format(subject=subject, n=n))
    return folder


def clip_ann(clip: str, onset: int, apex: int, offset: int) -> ClipAnnotation:
    return ClipAnnotation(subject=clip.split("_")[0], clip=clip, onset=onset, apex=apex, offset=offset)


def rejected(clip: str) -> RejectedRow:
    problem = AnnotationProblem(clip, 9, "apex", "apex frame 1143 is after offset frame 1134")
    return RejectedRow(9, clip, clip.split("_")[0], {"clip": clip}, (problem,))


# --------------------------------------------------------------------------- discover


def test_discover_samm_layout(tmp_path):
    folder = make_clip(tmp_path, "006_1_2", [5562, 5563, 5588, 5632])
    clips, issues = discover(tmp_path)
    assert issues == []
    assert list(clips) == ["006_1_2"]
    frames = clips["006_1_2"]
    assert (frames.subject, frames.clip, frames.folder) == ("006", "006_1_2", folder)
    assert frames.numbers == [5562, 5563, 5588, 5632]
    assert frames.path(5562) == folder / "006_05562.jpg"
    assert frames.span(5563, 5600) == [5563, 5588]


def test_discover_several_subjects_and_clips(tmp_path):
    make_clip(tmp_path, "006_1_2", [1, 2])
    make_clip(tmp_path, "006_1_3", [7])
    make_clip(tmp_path, "011_2_1", [100, 101, 102])
    clips, issues = discover(tmp_path)
    assert issues == []
    assert {c: (f.subject, f.numbers) for c, f in clips.items()} == {
        "006_1_2": ("006", [1, 2]),
        "006_1_3": ("006", [7]),
        "011_2_1": ("011", [100, 101, 102]),
    }


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("006_05562.jpg", 5562),  # SAMM: 5-digit padding
        ("006_0042.jpg", 42),  # 4-digit padding
        ("006_5562.jpg", 5562),  # unpadded
        ("5562.jpg", 5562),  # bare number
        ("img_1_2_00017.png", 17),  # only the trailing integer counts
        ("frame123.bmp", 123),
    ],
)
def test_frame_number_is_the_trailing_integer(tmp_path, name, number):
    folder = tmp_path / "006" / "006_1_2"
    write_image(folder / name)
    clips, issues = discover(tmp_path)
    assert issues == []
    assert clips["006_1_2"].frames == {number: folder / name}


def test_image_suffixes_found_and_other_files_ignored(tmp_path):
    folder = tmp_path / "006" / "006_1_2"
    for name in ("006_00001.png", "006_00002.bmp", "006_00003.JPG", "006_00004.jpeg", "006_00005.Png"):
        write_image(folder / name)
    for name in ("006_00006.txt", "006_00007.csv", "Thumbs.db", "notes.md", "006_00008.jpg.part"):
        (folder / name).write_text("not a frame")
    (folder / "006_00009.jpg").mkdir()  # a folder with an image-like name
    clips, issues = discover(tmp_path)
    assert issues == []
    assert {n: p.name for n, p in clips["006_1_2"].frames.items()} == {
        1: "006_00001.png",
        2: "006_00002.bmp",
        3: "006_00003.JPG",
        4: "006_00004.jpeg",
        5: "006_00005.Png",
    }


def test_name_without_trailing_number_is_bad_name(tmp_path):
    folder = make_clip(tmp_path, "006_1_2", [10, 11])
    write_image(folder / "cover.jpg")
    write_image(folder / "006_00012_left.jpg")
    clips, issues = discover(tmp_path)
    assert clips["006_1_2"].numbers == [10, 11]
    assert sorted((i.clip, i.kind) for i in issues) == [("006_1_2", "bad_name"), ("006_1_2", "bad_name")]
    messages = " | ".join(i.message for i in issues)
    assert "006_1_2: cover.jpg has no trailing frame number" in messages
    assert "006_00012_left.jpg" in messages


def test_same_frame_number_twice_is_duplicate_frame(tmp_path):
    folder = tmp_path / "006" / "006_1_2"
    write_image(folder / "006_5562.jpg")
    write_image(folder / "006_05562.jpg")
    clips, issues = discover(tmp_path)
    (issue,) = issues
    assert (issue.clip, issue.kind) == ("006_1_2", "duplicate_frame")
    assert "frame 5562 twice" in issue.message
    assert "006_05562.jpg" in issue.message and "006_5562.jpg" in issue.message
    assert clips["006_1_2"].frames == {5562: folder / "006_05562.jpg"}  # deterministic: the first by name


def test_macos_resource_fork_files_are_not_frames(tmp_path):
    """``._006_05562.jpg`` (AppleDouble, left by macOS on non-Mac drives) must not shadow the real frame."""
    folder = make_clip(tmp_path, "006_1_2", [5562, 5563])
    (folder / "._006_05562.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    clips, issues = discover(tmp_path)
    assert issues == []
    assert clips["006_1_2"].path(5562) == folder / "006_05562.jpg"
    assert read_grey(clips["006_1_2"].path(5562)).shape == (12, 16)


def test_empty_clip_folders_and_loose_files_are_skipped(tmp_path):
    (tmp_path / "006" / "006_1_9").mkdir(parents=True)
    write_image(tmp_path / "006" / "006_00001.jpg")  # a frame directly in the subject folder
    write_image(tmp_path / "stray.jpg")
    make_clip(tmp_path, "007_3_1", [1])
    clips, issues = discover(tmp_path)
    assert list(clips) == ["007_3_1"] and issues == []


def test_discover_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        discover(tmp_path / "absent")


def test_discover_root_that_is_a_file(tmp_path):
    path = tmp_path / "samm.csv"
    path.write_text("Subject;Filename\n")
    with pytest.raises(NotADirectoryError, match="expected the dataset folder"):
        discover(path)


def test_paths_with_spaces_and_non_ascii(tmp_path):
    root = tmp_path / "SAMM données" / "cópia 2"
    folder = make_clip(root, "006_1_2", [5562, 5588])
    clips, issues = discover(root)
    assert issues == [] and clips["006_1_2"].folder == folder
    image = read_grey(clips["006_1_2"].path(5588))
    assert image.dtype == np.uint8 and image.shape == (12, 16)
    dataset = load_dataset(str(root), Annotations("x", clips=(clip_ann("006_1_2", 5562, 5588, 5588),)))
    assert [a.clip for a, _ in dataset.ready()] == ["006_1_2"] and dataset.issues == ()


# --------------------------------------------------------------------------- ClipFrames


def test_clip_frames_path_of_missing_frame_names_clip_and_frame(tmp_path):
    folder = make_clip(tmp_path, "006_1_2", [5562, 5563, 5600])
    frames = discover(tmp_path)[0]["006_1_2"]
    with pytest.raises(FrameError) as exc:
        frames.path(5588)
    message = str(exc.value)
    assert message.startswith("006_1_2: frame 5588 not found")
    assert str(folder) in message and "5562–5600" in message


def test_clip_frames_without_frames():
    frames = ClipFrames("006", "006_1_2", Path("nowhere"), {})
    assert frames.numbers == [] and frames.span(0, 10) == []
    with pytest.raises(FrameError, match=r"006_1_2: frame 3 not found .*frames on disk: none"):
        frames.path(3)


# --------------------------------------------------------------------------- load_dataset


@pytest.fixture()
def mixed(tmp_path):
    """A dataset with one of each situation load_dataset must report."""
    root = tmp_path / "DATA"
    make_clip(root, "006_1_2", range(5560, 5640))  # complete
    make_clip(root, "006_1_3", [3912, 3913])  # apex 3948 and offset 3988 missing
    make_clip(root, "007_3_1", [2001, 2040])  # only the offset 2080 missing
    make_clip(root, "007_5_2", [10, 11])  # no annotation row
    make_clip(root, "028_4_1", [1134, 1143])  # its row was rejected
    annotations = Annotations(
        "samm.csv",
        clips=(
            clip_ann("006_1_2", 5562, 5588, 5632),
            clip_ann("006_1_3", 3912, 3948, 3988),
            clip_ann("007_3_1", 2001, 2040, 2080),
            clip_ann("009_2_4", 1, 2, 3),  # no folder on disk
        ),
        rejected=(rejected("028_4_1"),),
    )
    return load_dataset(root, annotations)


def test_load_dataset_reports_each_mismatch(mixed):
    assert sorted((i.clip, i.kind) for i in mixed.issues) == [
        ("006_1_3", "missing_frame"),
        ("006_1_3", "missing_frame"),
        ("007_3_1", "missing_frame"),
        ("007_5_2", "no_annotation"),
        ("009_2_4", "no_folder"),
    ]


def test_load_dataset_missing_frame_names_which(mixed):
    assert [i.message for i in mixed.issues_for("006_1_3")] == [
        "006_1_3: apex frame 3948 not on disk",
        "006_1_3: offset frame 3988 not on disk",
    ]
    assert [str(i) for i in mixed.issues_for("007_3_1")] == ["007_3_1: offset frame 2080 not on disk"]


def test_load_dataset_no_folder_and_no_annotation_messages(mixed):
    (no_folder,) = mixed.issues_for("009_2_4")
    assert no_folder.message.startswith("009_2_4: annotated but no folder 009/009_2_4 under ")
    (no_row,) = mixed.issues_for("007_5_2")
    assert no_row.message == "007_5_2: folder has no annotation row"
    assert mixed.issues_for("028_4_1") == []  # rejected rows are reported by the annotations, not as unannotated folders
    assert mixed.issues_for("006_1_2") == []


def test_ready_needs_onset_and_apex_on_disk(mixed):
    ready = mixed.ready()
    assert [(a.clip, f.clip) for a, f in ready] == [("006_1_2", "006_1_2"), ("007_3_1", "007_3_1")]
    assert all(a.onset in f.frames and a.apex in f.frames for a, f in ready)


def test_dataset_clip_lookup(mixed):
    ann, frames = mixed.clip("006_1_2")
    assert (ann.apex, frames.path(5588).name) == (5588, "006_05588.jpg")
    with pytest.raises(KeyError, match="009_2_4: annotated but no folder 009/009_2_4 under"):
        mixed.clip("009_2_4")
    with pytest.raises(KeyError, match="007_5_2: not a valid annotated clip"):
        mixed.clip("007_5_2")
    with pytest.raises(KeyError, match="028_4_1: not a valid annotated clip"):
        mixed.clip("028_4_1")


def test_dataset_counts_frames_and_keeps_root(mixed, tmp_path):
    assert mixed.frame_count == 80 + 2 + 2 + 2 + 2
    assert mixed.root == tmp_path / "DATA"
    assert set(mixed.clips_on_disk) == {"006_1_2", "006_1_3", "007_3_1", "007_5_2", "028_4_1"}


def test_load_dataset_carries_discovery_issues(tmp_path):
    folder = make_clip(tmp_path, "006_1_2", [1, 2, 3])
    write_image(folder / "006_001.jpg")  # frame 1 again
    dataset = load_dataset(tmp_path, Annotations("x", clips=(clip_ann("006_1_2", 1, 2, 3),)))
    assert [i.kind for i in dataset.issues] == ["duplicate_frame"]
    assert len(dataset.ready()) == 1


# --------------------------------------------------------------------------- safe_path


def test_safe_path_keeps_user_paths_inside_the_root(tmp_path):
    root = tmp_path / "data"
    (root / "006" / "006_1_2").mkdir(parents=True)
    assert safe_path(root, "006/006_1_2") == root / "006" / "006_1_2"
    assert safe_path(root, root / "006") == root / "006"
    assert safe_path(root, "") == root and safe_path(root, "006/../006") == root / "006"
    (root / "link").symlink_to(tmp_path)
    for escape in ("..", "../data2", "006/../../etc", "/etc/passwd", str(tmp_path), "link/secret", "a\x00b"):
        with pytest.raises(InputError):
            safe_path(root, escape)


# --------------------------------------------------------------------------- issue 10: paths, folders, frames


LATIN1 = os.fsdecode(b"donn\xe9es")  # a folder named in Latin-1: not valid UTF-8


def test_show_path_prints_any_path():
    assert show_path(Path("/data/SAMM données/006")) == "/data/SAMM données/006"
    shown = show_path(Path("/data") / LATIN1)
    assert shown == "/data/donn\\xe9es"  # the byte that is not UTF-8, escaped
    shown.encode("utf-8")  # printable, writable to a UTF-8 log or manifest
    assert show_path(b"/data/donn\xe9es") == shown and show_path(str(Path("/data") / LATIN1)) == shown


def test_non_utf8_paths_are_discovered_decoded_and_named_printably(tmp_path):
    root = tmp_path / LATIN1 / "DATA"
    folder = make_clip(root, "006_1_2", [5562, 5588])
    write_image(folder / os.fsdecode(b"\xe9_05600.jpg"))  # a frame whose own name is Latin-1
    clips, issues = discover(root)
    assert issues == [] and clips["006_1_2"].numbers == [5562, 5588, 5600]
    assert read_grey(clips["006_1_2"].path(5600)).shape == (12, 16)
    (folder / "006_05562.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FrameError) as exc:
        read_grey(clips["006_1_2"].path(5562))
    assert str(exc.value).startswith(f"{tmp_path}/donn\\xe9es/DATA/006/006_1_2/006_05562.jpg: ")
    str(exc.value).encode("utf-8")
    dataset = load_dataset(root, Annotations("x", clips=(clip_ann("006_1_2", 5562, 5588, 5590),)))
    [issue] = dataset.issues
    assert issue.message == "006_1_2: offset frame 5590 not on disk"
    missing = load_dataset(root, Annotations("x", clips=(clip_ann("009_1_1", 1, 2, 3),)))
    assert "donn\\xe9es" in missing.issues[0].message and missing.issues[0].message.encode("utf-8")


def test_same_clip_name_under_two_subjects_uses_the_annotated_subject(tmp_path):
    root = tmp_path / "DATA"
    right = make_clip(root, "101_1_1", [1, 2, 3])
    wrong = root / "102" / "101_1_1"  # the same clip name filed under another subject
    for n in (7, 8):
        write_image(wrong / f"102_{n:05d}.jpg")
    dataset = load_dataset(root, Annotations("x", clips=(clip_ann("101_1_1", 1, 2, 3),)))
    assert dataset.clips_on_disk["101_1_1"].folder == right  # not the last one found
    assert [a.clip for a, f in dataset.ready()] == ["101_1_1"] and dataset.clip("101_1_1")[1].folder == right
    [issue] = dataset.issues
    assert issue.kind == "duplicate_folder"
    assert issue.message == "101_1_1: two clip folders of that name, 101/101_1_1 and 102/101_1_1; using 101/101_1_1 (annotated subject 101)"
    # discovery on its own cannot choose: it reports the conflict too
    clips, issues = discover(root)
    assert [i.kind for i in issues] == ["duplicate_folder"] and "101/101_1_1 and 102/101_1_1" in issues[0].message


def test_same_clip_name_under_two_other_subjects_fails_naming_both(tmp_path):
    root = tmp_path / "DATA"
    make_clip(root, "101_1_1", [1, 2, 3])
    for n in (1, 2, 3):
        write_image(root / "102" / "101_1_1" / f"102_{n:05d}.jpg")
    ann = ClipAnnotation(subject="103", clip="101_1_1", onset=1, apex=2, offset=3)
    dataset = load_dataset(root, Annotations("x", clips=(ann,)))
    assert dataset.ready() == [] and "101_1_1" not in dataset.clips_on_disk
    expected = (f"101_1_1: annotated with subject 103, but no folder 103/101_1_1 under {root}; "
                "folders of that name are under other subjects: 101/101_1_1, 102/101_1_1")
    assert [(i.kind, i.message) for i in dataset.issues] == [("no_folder", expected)]
    assert dataset.folder_problem("101_1_1") == expected
    with pytest.raises(KeyError) as exc:
        dataset.clip("101_1_1")
    assert exc.value.args[0] == expected


def test_clip_folder_under_another_subject_is_used_with_a_warning(tmp_path):
    root = tmp_path / "DATA"
    folder = make_clip(root, "101_1_1", [1, 2, 3])
    ann = ClipAnnotation(subject="103", clip="101_1_1", onset=1, apex=2, offset=3)
    dataset = load_dataset(root, Annotations("x", clips=(ann,)))
    assert dataset.clips_on_disk["101_1_1"].folder == folder
    assert [(i.kind, i.message) for i in dataset.issues] == [
        ("subject_mismatch", "101_1_1: annotated with subject 103, found in folder 101/101_1_1; using it")]
    # the same subject number written another way is no mismatch
    (root / "101").rename(root / "0101")
    assert load_dataset(root, Annotations("x", clips=(clip_ann("101_1_1", 1, 2, 3),))).issues == ()


def _annotated(root: Path, clip: str = "006_1_2") -> Dataset:
    return load_dataset(root, Annotations("x", clips=(clip_ann(clip, 1, 2, 3),)))


def test_empty_clip_folder_is_not_a_missing_folder(tmp_path):
    (tmp_path / "006" / "006_1_2").mkdir(parents=True)
    make_clip(tmp_path, "007_1_1", [1])
    dataset = _annotated(tmp_path)
    folder = tmp_path / "006" / "006_1_2"
    assert [(i.kind, i.message) for i in dataset.issues_for("006_1_2")] == [
        ("no_folder", f"006_1_2: folder {folder} has no frames (it is empty)")]
    assert dataset.folder_problem("006_1_2") == f"006_1_2: folder {folder} has no frames (it is empty)"


def test_clip_folder_of_tiff_frames_names_the_formats_read(tmp_path):
    folder = tmp_path / "006" / "006_1_2"
    folder.mkdir(parents=True)
    for n in (1, 2, 3):
        cv2.imencode(".tif", np.zeros((8, 8), np.uint8))[1].tofile(folder / f"006_{n:05d}.tif")
    (folder / "Thumbs.db").write_bytes(b"x")
    (folder / ".DS_Store").write_bytes(b"x")
    assert dataset_problem(tmp_path) == f"006_1_2: folder {folder} holds only .db, .tif files; sammflow reads .jpg/.jpeg/.png/.bmp frames"
    (folder / "Thumbs.db").unlink()
    assert dataset_problem(tmp_path) == f"006_1_2: folder {folder} holds only .tif files; sammflow reads .jpg/.jpeg/.png/.bmp frames"


def test_clip_folder_with_frames_one_level_down(tmp_path):
    make_clip(tmp_path / "006" / "006_1_2", "raw_1_1", [1, 2, 3])  # 006/006_1_2/raw/raw_1_1/*.jpg
    folder = tmp_path / "006" / "006_1_2"
    assert dataset_problem(tmp_path) == (f"006_1_2: folder {folder} has no frames, only the subfolder raw/ "
                                         "(frames must be directly in the clip folder)")


def test_clip_folder_of_unnumbered_images(tmp_path):
    folder = tmp_path / "006" / "006_1_2"
    write_image(folder / "onset.jpg")
    write_image(folder / "apex.jpg")
    assert dataset_problem(tmp_path) == (f"006_1_2: folder {folder} has no frames: 2 image files, but none named with a "
                                         "trailing frame number (e.g. apex.jpg)")
    assert [i.kind for i in _annotated(tmp_path).issues] == ["no_folder"]  # one issue, not one per file as well


def dataset_problem(root: Path) -> str | None:
    return _annotated(root).folder_problem("006_1_2")


def test_same_subject_written_two_ways_is_ambiguous(tmp_path):
    make_clip(tmp_path, "006_1_2", [1, 2, 3])
    for n in (1, 2, 3):
        write_image(tmp_path / "6" / "006_1_2" / f"6_{n:05d}.jpg")
        write_image(tmp_path / "007" / "006_1_2" / f"007_{n:05d}.jpg")  # and one under another subject
    dataset = _annotated(tmp_path)
    assert "006_1_2" not in dataset.clips_on_disk
    assert dataset.folder_problem("006_1_2") == "006_1_2: several folders are subject 006's clip 006_1_2: 006/006_1_2, 6/006_1_2; rename all but one"


def test_three_folders_of_one_clip_name(tmp_path):
    make_clip(tmp_path, "006_1_2", [1, 2, 3])
    for subject in ("007", "008"):
        write_image(tmp_path / subject / "006_1_2" / f"{subject}_00001.jpg")
    [issue] = _annotated(tmp_path).issues
    assert issue.message == "006_1_2: 3 clip folders of that name, 006/006_1_2, 007/006_1_2, 008/006_1_2; using 006/006_1_2 (annotated subject 006)"
