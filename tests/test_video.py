"""A researcher's own video: events' frames extracted exactly (frame i of the folder is the
video's frame i), a samm.csv the annotation reader takes, reuse without decoding, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow import video as video_module
from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset
from sammflow.kinds import find_annotations, guess_kind
from sammflow.params import AnnotationParams
from sammflow.video import (ANNOTATIONS, MARKER, SAMM_HEADER, SUBJECT, VideoEvent, clip_names, extract, is_video, read_events,
                            video_info)

W, H = 128, 64  # 8 bit blocks of 16×16 px on top: MJPG keeps flat 8×8-aligned blocks nearly exact
FRAMES = 40
#: (fourcc, suffix, colour, lossless)
CODECS = {"ffv1": ("FFV1", ".avi", False, True), "mjpg": ("MJPG", ".avi", True, False), "mp4v": ("mp4v", ".mp4", True, False)}


def pattern(number: int) -> np.ndarray:
    """A grey H×W frame carrying ``number``: its 8 bits as black / white blocks along the top,
    and a flat level below that also changes with it."""
    image = np.full((H, W), 40 + (number * 7) % 180, np.uint8)
    image[:16] = 0
    for bit in range(8):
        if number >> bit & 1:
            image[:16, 16 * bit:16 * bit + 16] = 255
    return image


def number_of(image: np.ndarray) -> int:
    """The frame number ``pattern`` drew (read from block centres, so a lossy codec is fine)."""
    return sum(1 << bit for bit in range(8) if image[4:12, 16 * bit + 4:16 * bit + 12].mean() > 127)


def write_video(path: Path, codec: str = "ffv1", frames: int = FRAMES) -> Path:
    fourcc, _, colour, _ = CODECS[codec]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (W, H), colour)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} {path.suffix} videos")
    for number in range(frames):
        writer.write(source(number, colour))
    writer.release()
    return path


def source(number: int, colour: bool) -> np.ndarray:
    """The frame written: ``pattern``, or in colour (BGR) with unequal channels, so that the grey conversion matters."""
    grey = pattern(number)
    return cv2.merge([grey, grey, grey // 2]) if colour else grey


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of ``path`` as OpenCV decodes it, sequentially, in grey."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def png_frames(folder: Path) -> dict[int, Path]:
    return {int(p.stem.rsplit("_", 1)[1]): p for p in folder.glob("*.png")}


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "my video.avi")


EVENTS = [VideoEvent(onset=3, apex=6, offset=10, emotion="Happiness"), VideoEvent(onset=8, offset=14, name="smile!"),
          VideoEvent(onset=30, apex=39, offset=39, emotion="Surprise")]


def test_is_video_goes_by_suffix():
    assert is_video("a/b.MP4") and is_video(Path("x.avi")) and is_video("missing.mkv")
    assert not is_video("DATA") and not is_video("samm.csv") and not is_video("frame.png")


@pytest.mark.parametrize("codec", list(CODECS))
def test_extract_writes_each_events_frames_as_the_video_numbers_them(tmp_path, codec):
    _, suffix, colour, lossless = CODECS[codec]
    path = write_video(tmp_path / f"clip{suffix}", codec)
    reference = decoded(path)
    assert len(reference) == FRAMES
    folder = extract(path, EVENTS, cache=tmp_path / "cache")
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("clip-")
    assert sorted(p.name for p in folder.iterdir()) == [SUBJECT, MARKER, ANNOTATIONS]
    names = clip_names(EVENTS)
    assert names == ["001_1", "001_smile", "001_3"]
    assert sorted(p.name for p in (folder / SUBJECT).iterdir()) == sorted(names)
    for event, name in zip(EVENTS, names):
        frames = png_frames(folder / SUBJECT / name)
        assert sorted(frames) == list(range(event.onset, event.offset + 1))
        assert all(p.name == f"001_{n:06d}.png" for n, p in frames.items())
        for number, file in frames.items():
            image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
            assert image.dtype == np.uint8 and image.shape == (H, W)  # grey, one channel
            assert number_of(image) == number  # the video's own frame index
            assert np.array_equal(image, reference[number])  # exactly OpenCV's decoding, lossless PNG
            expected = cv2.cvtColor(source(number, colour), cv2.COLOR_BGR2GRAY) if colour else pattern(number)
            if lossless:
                assert np.array_equal(image, expected)
            else:
                assert np.abs(image[16:].astype(int) - expected[16:]).mean() < 6
    record = json.loads((folder / MARKER).read_text())
    assert (record["width"], record["height"], record["frames_read"], record["fps"]) == (W, H, 40, 25.0)
    assert [e["clip"] for e in record["events"]] == names


def test_samm_csv_reads_as_a_samm_dataset_with_every_clip_on_disk(video, tmp_path):
    folder = extract(video, EVENTS, cache=tmp_path / "cache")
    lines = (folder / ANNOTATIONS).read_bytes().decode().split("\r\n")
    assert lines[0] == ";".join(SAMM_HEADER)
    assert lines[2].startswith("001;001_smile;;8;;14;7;")  # no apex: an empty cell
    assert find_annotations(folder, "samm") == folder / ANNOTATIONS and guess_kind(folder) == "samm"
    strict = read_annotations(folder / ANNOTATIONS)
    assert [c.clip for c in strict.clips] == ["001_1", "001_3"]
    assert [r.clip for r in strict.rejected] == ["001_smile"] and "empty Apex Frame" in strict.rejected[0].cause
    annotations = read_annotations(folder / ANNOTATIONS, params=AnnotationParams(apex="auto"))
    assert not annotations.rejected
    assert [(c.subject, c.clip, c.onset, c.apex, c.offset, c.spot, c.emotion) for c in annotations.clips] == [
        ("001", "001_1", 3, 6, 10, False, "Happiness"), ("001", "001_smile", 8, 11, 14, True, ""),
        ("001", "001_3", 30, 39, 39, False, "Surprise")]
    assert all("my video.avi" in c.notes for c in annotations.clips)
    assert not [p for p in annotations.problems if "Duration" in p.message or "does not start" in p.message]
    dataset = load_dataset(folder, annotations)
    assert dataset.issues == ()
    assert sorted(dataset.clips_on_disk) == ["001_1", "001_3", "001_smile"]
    assert len(dataset.ready()) == 3
    for clip in annotations.clips:
        assert {clip.onset, clip.apex, clip.offset} <= set(dataset.clips_on_disk[clip.clip].frames)


def test_overlapping_events_decode_each_frame_once(video, tmp_path, monkeypatch):
    retrieved: list[int] = []

    real = cv2.VideoCapture

    class Counting:  # a wrapper: a Python subclass of cv2.VideoCapture corrupts memory in OpenCV 4.14's bindings
        def __init__(self, *args):
            self.capture = real(*args)

        def __getattr__(self, name):
            return getattr(self.capture, name)

        def retrieve(self, *args):
            retrieved.append(int(self.capture.get(cv2.CAP_PROP_POS_FRAMES)))
            return self.capture.retrieve(*args)

    monkeypatch.setattr(video_module.cv2, "VideoCapture", Counting)
    calls = []
    folder = extract(video, EVENTS, cache=tmp_path / "cache", progress=lambda *a: calls.append(a))
    assert len(retrieved) == len(set(retrieved)) == 8 + 7 + 10 - 3  # frames 8-10 are in two events
    assert calls[-1] == (40, 40, "my video.avi") and [c[0] for c in calls] == list(range(1, 41))
    for number in (8, 9, 10):
        one, two = (folder / SUBJECT / name / f"001_{number:06d}.png" for name in ("001_1", "001_smile"))
        assert one.read_bytes() == two.read_bytes()


def test_a_second_call_reuses_the_folder_without_decoding(video, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    folder = extract(video, EVENTS, cache=cache)
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(video_module.cv2, "VideoCapture", no_decoding)
    assert extract(video, list(EVENTS), cache=cache) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps
    assert sorted(p.name for p in cache.iterdir()) == [folder.name]  # no staging folder left


def test_other_events_or_a_changed_video_extract_again(video, tmp_path):
    cache = tmp_path / "cache"
    first = extract(video, EVENTS, cache=cache)
    other_events = extract(video, [*EVENTS[:2], VideoEvent(onset=30, apex=38, offset=39, emotion="Surprise")], cache=cache)
    renamed = extract(video, [EVENTS[0], VideoEvent(onset=8, offset=14, name="frown"), EVENTS[2]], cache=cache)
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the same bytes, touched
    touched = extract(video, EVENTS, cache=cache)
    assert len({first, other_events, renamed, touched}) == 4
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in (first, other_events, renamed, touched))
    assert (renamed / SUBJECT / "001_frown").is_dir()


def test_a_folder_without_its_marker_is_extracted_again(video, tmp_path):
    folder = extract(video, EVENTS[:1], cache=tmp_path / "cache")
    (folder / MARKER).unlink()
    (folder / SUBJECT / "001_1" / "001_000005.png").unlink()
    assert extract(video, EVENTS[:1], cache=tmp_path / "cache") == folder
    assert (folder / MARKER).is_file() and sorted(png_frames(folder / SUBJECT / "001_1")) == list(range(3, 11))


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("make, cause", [
    (lambda p: None, "video file not found"),
    (lambda p: p.mkdir(), "is a folder, expected a video file"),
    (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p: p.write_text("not a video at all\n"), "cannot be opened as a video"),
])
def test_a_file_that_is_no_video_is_one_line_naming_it(tmp_path, make, cause):
    path = tmp_path / "clip.mp4"
    make(path)
    with pytest.raises(ValueError) as excinfo:
        extract(path, EVENTS[:1], cache=tmp_path / "cache")
    message = _one_line(excinfo)
    assert message.startswith(f"{path}: ") and cause in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_the_video_is_named_as_given_and_an_unusable_cache_is_one_line(video, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^other\.mp4: video file not found$"):
        extract("other.mp4", EVENTS[:1], cache=tmp_path / "cache")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError) as excinfo:
        extract(video.name, EVENTS[:1], cache=tmp_path / "file" / "cache")
    assert _one_line(excinfo).startswith(f"{tmp_path / 'file' / 'cache'}: cannot write to the video cache folder (")


def test_a_video_without_frames_is_refused(tmp_path):
    writer = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H), False)
    writer.release()
    path = tmp_path / "empty.avi"
    if not path.is_file() or path.stat().st_size == 0:
        pytest.skip("OpenCV wrote no file for a video without frames")
    with pytest.raises(ValueError) as excinfo:
        extract(path, EVENTS[:1], cache=tmp_path / "cache")
    message = _one_line(excinfo)
    assert message.startswith(str(path)) and ("no frames could be decoded" in message or "cannot be opened as a video" in message)


def test_an_event_after_the_last_frame_names_it_and_leaves_nothing(video, tmp_path):
    cache = tmp_path / "cache"
    events = [EVENTS[0], VideoEvent(onset=35, apex=40, offset=900, name="late")]
    with pytest.raises(ValueError) as excinfo:
        extract(video, events, cache=cache)
    assert _one_line(excinfo) == f"{video}: event 2 (late): offset 900 is after the video's last frame 39"
    assert not any(cache.iterdir())  # the staging folder is removed
    with pytest.raises(ValueError, match="event 1: offset 40 is after the video's last frame 39"):
        extract(video, [VideoEvent(onset=40, offset=40)], cache=cache)


@pytest.mark.parametrize("fields, cause", [
    (dict(onset=12, offset=10), "onset frame 12 is after offset frame 10"),
    (dict(onset=3, apex=11, offset=10), "apex frame 11 is after offset frame 10"),
    (dict(onset=3, apex=2, offset=10), "apex frame 2 is before onset frame 3"),
    (dict(onset=-1, offset=10), "onset frame -1 is negative"),
    (dict(onset=1.5, offset=10), "onset frame must be an integer, got 1.5"),
])
def test_impossible_events_are_refused_with_their_cause(fields, cause):
    with pytest.raises(ValueError) as excinfo:
        VideoEvent(**fields)
    assert cause in _one_line(excinfo)


def test_numpy_frame_numbers_are_plain_ints():
    event = VideoEvent(onset=np.int64(3), offset=np.int32(9), apex=np.int64(5))
    assert type(event.onset) is type(event.offset) is type(event.apex) is int


def test_events_making_one_clip_or_none_are_refused(video, tmp_path):
    with pytest.raises(ValueError) as excinfo:
        extract(video, [VideoEvent(onset=1, offset=3, name="a b"), VideoEvent(onset=5, offset=9, name="a_b")], cache=tmp_path)
    assert _one_line(excinfo) == f"{video}: events 1 and 2 both make clip 001_a_b: give them different names"
    with pytest.raises(ValueError, match="no events to extract"):
        extract(video, [], cache=tmp_path)


def test_any_path_opens(tmp_path):
    """A folder name that is not UTF-8 (OpenCV crashes on it) or holds ``%`` (an image-sequence pattern to OpenCV)."""
    for name in (os.fsdecode(b"donn\xe9es"), "50% take"):
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "v.avi"  # written elsewhere: OpenCV's VideoWriter crashes on such a path too
        os.replace(write_video(tmp_path / "v.avi", frames=12), path)
        assert video_info(path) == {"frames": 12, "fps": 25.0, "width": W, "height": H}
        out = extract(path, [VideoEvent(onset=2, apex=4, offset=6)], cache=tmp_path / "cache")
        assert sorted(png_frames(out / SUBJECT / "001_1")) == [2, 3, 4, 5, 6]
        assert number_of(cv2.imread(str(out / SUBJECT / "001_1" / "001_000005.png"), cv2.IMREAD_UNCHANGED)) == 5
    assert "v.avi" in (out / ANNOTATIONS).read_text()


def test_video_info(video, tmp_path):
    assert video_info(video) == {"frames": FRAMES, "fps": 25.0, "width": W, "height": H}
    (tmp_path / "x.mov").write_text("text")
    with pytest.raises(ValueError) as excinfo:
        video_info(tmp_path / "x.mov")
    assert _one_line(excinfo).startswith(f"{tmp_path / 'x.mov'}: cannot be opened as a video")
    with pytest.raises(ValueError, match="y.mp4: video file not found$"):
        video_info(tmp_path / "y.mp4")


def test_a_long_video_name_makes_a_short_folder_name(tmp_path):
    path = write_video(tmp_path / f"{'take ' * 45}.avi", frames=6)
    folder = extract(path, [VideoEvent(onset=1, offset=2)], cache=tmp_path / "cache")
    assert len(folder.name) == 80 + 1 + 16 and folder.name.startswith("take_take_")


@pytest.mark.parametrize("text", [
    "onset,apex,offset,emotion,name\n3,6,10,Happiness,\n8,,14,,smile!\n",
    "\ufeffOnset Frame;Apex Frame;Offset Frame;Estimated Emotion;Clip\r\n3;6;10;Happiness;\r\n\r\n8;;14;;smile!\r\n",
    "OnsetFrame\tApexFrame\tOffsetFrame\tEmotion\tNAME\n3.0\t6\t10\tHappiness\t\n8\t\t14\t\tsmile!\n",
    "name,offset,onset,emotion\n,10,3,Happiness\nsmile!,14,8,\n",
])
def test_read_events_takes_every_spelling(tmp_path, text):
    path = tmp_path / "events.csv"
    path.write_bytes(text.encode("utf-8"))
    events = read_events(path)
    apex = None if "apex" not in text.lower() else 6
    assert events == [VideoEvent(onset=3, apex=apex, offset=10, emotion="Happiness"), VideoEvent(onset=8, offset=14, name="smile!")]


@pytest.mark.parametrize("text, cause", [
    ("onset,apex,offset\n3,6,10\n5,x,9\n", "row 3: apex 'x' is not an integer frame number"),
    ("onset,apex,offset\n3,6,10\n,,9\n", "row 3: empty onset"),
    ("onset,apex,offset\n12,,10\n", "row 2: onset frame 12 is after offset frame 10"),
    ("onset;apex;offset\n3;11;10\n", "row 2: apex frame 11 is after offset frame 10"),
    ("onset,offset,name\n1,3,a\n5,9,a\n", "row 3: clip 001_a is also row 2's"),
    ("onset,apex,frames\n1,2,3\n", "no header row with onset and offset columns"),
    ("onset,offset\n", "no events below the header"),
    ("", "no header row with onset and offset columns"),
])
def test_read_events_rejects_bad_rows_in_one_line(tmp_path, text, cause):
    path = tmp_path / "events.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as excinfo:
        read_events(path)
    message = _one_line(excinfo)
    assert message.startswith(f"{path}: ") and cause in message


def test_read_events_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="events.csv: events file not found"):
        read_events(tmp_path / "events.csv")


@pytest.mark.slow
def test_a_demo_clip_as_a_video_exports_a_flow_map(demo_root, demo_truth, tmp_path):
    from sammflow.export import export_flows
    from sammflow.params import PipelineParams

    clip = demo_truth["clips"][0]
    folder = demo_root / clip["subject"] / clip["clip"]
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    first = int(files[0].stem.rsplit("_", 1)[1])
    path = tmp_path / "demo clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 200.0, (1020, 544), False)
    if not writer.isOpened():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 200.0, (1020, 544), False)
    for file in files:
        writer.write(cv2.resize(cv2.imread(str(file), cv2.IMREAD_GRAYSCALE), (1020, 544), interpolation=cv2.INTER_AREA))
    writer.release()
    events = [VideoEvent(onset=clip["onset"] - first, apex=clip["apex"] - first, offset=clip["offset"] - first, emotion="Happiness"),
              VideoEvent(onset=clip["onset"] - first, offset=clip["offset"] - first, name="spotted")]
    out = extract(path, events, cache=tmp_path / "cache")
    params = PipelineParams(annotations=AnnotationParams(apex="auto"))
    dataset = load_dataset(out, read_annotations(out / ANNOTATIONS, params=params.annotations))
    assert len(dataset.ready()) == 2 and not dataset.issues
    report = export_flows(dataset, tmp_path / "maps", params=params)
    assert report.ok == 2 and not report.failed, [(r["clip"], r["error"]) for r in report.rows]
    for name in ("001_1", "001_spotted"):
        image = cv2.imread(str(tmp_path / "maps" / "flows" / f"sub001_{name}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (28, 28, 3) and image.max() > 0
    spotted = next(r for r in report.rows if r["clip"] == "001_spotted")
    assert spotted["apex_source"] == "spotted" and abs(int(spotted["apex"]) - events[0].apex) <= 2
