"""Onset→apex GIFs: which frames, how many, what size."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from sammflow.animate import (
    MISSING, drawable, encode_gif, frame_marker, gif_frame_numbers, has_glyph, label_frame, label_size, text_font,
)
from sammflow.annotations import ClipAnnotation
from sammflow.params import GifParams, declared

CLIP = ClipAnnotation(subject="006", clip="006_1_2", onset=100, apex=109, offset=120)


def test_onset_to_apex_every_frame():
    assert gif_frame_numbers(range(90, 130), CLIP) == list(range(100, 110))


def test_step_keeps_the_apex():
    assert gif_frame_numbers(range(90, 130), CLIP, params=GifParams(step=4)) == [100, 104, 108, 109]


def test_to_offset():
    numbers = gif_frame_numbers(range(90, 130), CLIP, params=GifParams(step=5, to_offset=True))
    assert numbers == [100, 105, 109, 110, 115, 120]


def test_frames_missing_on_disk_are_skipped():
    assert gif_frame_numbers([100, 101, 103, 109], CLIP) == [100, 101, 103, 109]


def test_gif_has_one_frame_per_crop_at_display_size():
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (224, 224), dtype=np.uint8) for _ in range(6)]
    data = encode_gif(crops, params=GifParams(size=160, fps=20))
    frames = iio.imread(data, index=None)
    assert frames.shape[:3] == (6, 160, 160)
    meta = iio.immeta(data)
    assert meta["duration"] == 50 and meta["loop"] == 0


def test_gif_refuses_nothing_and_mixed_shapes():
    with pytest.raises(ValueError, match="no frames"):
        encode_gif([])
    with pytest.raises(ValueError, match="differ in shape"):
        encode_gif([np.zeros((10, 10), np.uint8), np.zeros((12, 10), np.uint8)])


# ---------------------------------------------------------------- frame numbers and markers (issue 10, item 17)


def _grey_frames(data: bytes) -> np.ndarray:
    frames = iio.imread(data, index=None)
    return frames[..., 0] if frames.ndim == 4 else frames


def test_labels_are_declared_on_by_default_with_an_off_switch():
    (f, p), = [(f, p) for f, p in declared(GifParams) if f.name == "labels"]
    assert f.default is True and p.flag == "gif-labels" and p.output and "frame number" in p.help
    from sammflow.cli import _build, build_parser

    assert _build(GifParams, build_parser().parse_args(["gif", "DATA", "OUT"])).labels is True
    assert _build(GifParams, build_parser().parse_args(["gif", "DATA", "OUT", "--no-gif-labels"])).labels is False
    assert GifParams(labels=False).hash != GifParams().hash


def test_every_frame_gets_its_number_and_the_onset_and_apex_their_marker_in_the_top_corners():
    numbers = gif_frame_numbers(range(90, 130), CLIP, params=GifParams(step=4))
    assert numbers == [100, 104, 108, 109]
    crops = [np.full((200, 200), 128, np.uint8)] * len(numbers)
    frames = _grey_frames(encode_gif(crops, numbers=numbers, clip=CLIP))  # labels: the default
    assert frames.shape == (4, 224, 224)
    assert label_size(224) == 13  # font px at 224
    strip = 18  # the boxes: text 13 px + 2 × 2 px padding at most
    for frame, number in zip(frames, numbers):
        drawn = frame != 128
        assert not drawn[strip:].any()  # below the top 18 px (8 % of the frame) nothing changed: the face is clear
        left, right = drawn[:strip, :112], drawn[:strip, 112:]
        assert 40 < np.flatnonzero(left.any(axis=0)).max() < 80  # "frame 1xx": a box from the left edge, ≈ 60 px wide
        box = np.flatnonzero(frame[:, 0] <= 5)
        assert list(box) == list(range(len(box))) and 12 <= len(box) <= strip  # white on black, from the top (measured 14 px)
        marked = number in (CLIP.onset, CLIP.apex)
        assert right.any() == marked, number  # "onset" / "apex" only on their frame, from the right edge
        if marked:
            box = np.flatnonzero(frame[:, -1] >= 250)
            assert list(box) == list(range(len(box))) and 12 <= len(box) <= strip  # black on white
    # the numbers differ, so do the boxes; the two unmarked frames differ only in the number's last digit(s)
    assert not np.array_equal(frames[1][:strip], frames[2][:strip])
    assert not np.array_equal(frames[0][:strip, 112:], frames[3][:strip, 112:])  # "onset" is not "apex"


def test_labels_off_or_without_numbers_leave_the_frames_alone():
    crops = [np.full((200, 200), 128, np.uint8)] * 3
    for data in (encode_gif(crops, numbers=[1, 2, 3], clip=CLIP, params=GifParams(labels=False)), encode_gif(crops)):
        assert (_grey_frames(data) == 128).all()
    with pytest.raises(ValueError, match="2 frame numbers for 3 frames"):
        encode_gif(crops, numbers=[1, 2])


def test_labels_on_colour_frames_and_their_size_follows_the_gif():
    rgb = label_frame(np.full((320, 320, 3), (200, 30, 30), np.uint8), 4512, "apex")
    assert rgb.shape == (320, 320, 3) and (rgb[40:] == (200, 30, 30)).all() and (rgb[:5, 0] == 0).all() and (rgb[:5, -1] == 255).all()
    assert [label_size(side) for side in (96, 160, 224, 320)] == [10, 10, 13, 19]


def test_markers_name_the_phase_of_a_frame():
    assert [frame_marker(n, CLIP) for n in (99, 100, 105, 109, 120)] == ["", "onset", "", "apex", "offset"]
    assert frame_marker(5, ClipAnnotation("1", "1_1", 5, 5, 9)) == "onset/apex"


# ---------------------------------------------------------------- text the built-in font can draw (issue 10, item 14)


def test_the_built_in_font_lacks_arrows_times_and_inequalities():
    """Why ``drawable`` exists: Pillow's own font draws these as an empty box."""
    assert not any(has_glyph(c) for c in "→×≥≤−–ä")
    assert all(has_glyph(c) for c in "Az09 °·|%…-><=\n")


def test_drawable_replaces_what_the_font_lacks_and_keeps_the_rest():
    assert drawable("Onset → apex flow maps") == "Onset -> apex flow maps"
    assert drawable("flow map (28×28)") == "flow map (28x28)"
    assert drawable("|difference| ≥ 12: 3.1%") == "|difference| >= 12: 3.1%"
    assert drawable("Farnebäck · 90° down\n−0.5 px") == "Farneback · 90° down\n-0.5 px"
    assert drawable("日本") == MISSING * 2  # nothing sensible: never an empty box
    for text in ("Onset → apex × ≥ ≤ ≈ – — é ü µ Δ 日", "".join(map(chr, range(32, 0x2200)))):
        assert all(has_glyph(c) for c in drawable(text))
    assert text_font(13) is text_font(13)  # one font object per size


def test_labelled_gifs_of_grey_crops_read_back_with_imageio(tmp_path):
    """Pillow wrote labelled grey frames with changing frame modes (L, L, RGB) that imageio
    could not read back ("No packer found from P to L"): labelled frames are written as RGB.
    The demo below reproduced it (its first clip, every 2nd frame)."""
    import imageio.v3 as iio

    from sammflow.annotations import read_annotations
    from sammflow.dataset import load_dataset
    from sammflow.demo import DemoConfig, generate_demo
    from sammflow.pipeline import normalize_clip

    root = generate_demo(tmp_path / "DEMO", DemoConfig(subjects=2, clips_per_subject=1, frames=10))
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    for clip, frames in dataset.ready():
        for labels in (True, False):
            params = GifParams(step=2, labels=labels)
            numbers = gif_frame_numbers(frames.numbers, clip, params=params)
            crops = normalize_clip(clip, frames, numbers=numbers).crops
            data = encode_gif([crops[n] for n in numbers], params=params, numbers=numbers, clip=clip)
            decoded = iio.imread(data, index=None, extension=".gif")
            assert decoded.shape[1:3] == (224, 224) and 1 <= len(decoded) <= len(numbers)
