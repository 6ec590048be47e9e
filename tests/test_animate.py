"""Onset→apex GIFs: which frames, how many, what size."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from sammflow.animate import encode_gif, gif_frame_numbers
from sammflow.annotations import ClipAnnotation
from sammflow.params import GifParams

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
