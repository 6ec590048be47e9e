"""The benchmark machinery of bench/ (issue 13): its data sets, its measures and its tables — never timings."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import procs
from bench.alignment import ecc_refine
from bench.fidelity import residual_shifts
from bench.samm_scale import ANNOTATIONS, SammScaleConfig, chosen_rows, generate_samm_scale, rows_of
from bench.speed import target_table
from sammflow.align import FrameMatch, match_frame
from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset
from sammflow.demo import read_ground_truth
from sammflow.detect import FaceBox


def test_samm_scale_rows_are_the_real_files_rows_impossible_ones_included() -> None:
    rows = rows_of(ANNOTATIONS)
    assert len(rows) == 159 and sum(r.valid for r in rows) == 157 and len({r.subject for r in rows}) == 29
    assert {r.clip for r in rows if not r.valid} == {"028_4_1", "032_3_1"}
    kept = chosen_rows(rows, 12)
    assert [r.clip for r in kept[:12]] == [r.clip for r in rows[:12]] and len(kept) == 14


def test_samm_scale_set_loads_as_the_user_sees_it_and_a_subset_is_the_same_pixels(tmp_path: Path) -> None:
    small = generate_samm_scale(tmp_path / "two", SammScaleConfig(clips=2))
    annotations = read_annotations(small / "samm.csv")
    assert len(annotations.clips) == 2 and {r.clip for r in annotations.rejected} == {"028_4_1", "032_3_1"}
    source = ANNOTATIONS.read_bytes().splitlines(keepends=True)
    assert (small / "samm.csv").read_bytes() == b"".join(source[i] for i in (0, 1, 2, 126, 133))  # the file's own lines
    dataset = load_dataset(small, annotations)
    assert [c.clip for c, _ in dataset.ready()] == [c.clip for c in annotations.clips]
    assert {i.kind for i in dataset.issues} == {"missing_frame"}  # offset frames only: onset and apex are there
    clip, frames = dataset.ready()[0]
    assert frames.numbers == [clip.onset, clip.apex]
    assert sorted(p.name for p in frames.frames.values()) == [f"{clip.subject}_{n:05d}.jpg" for n in (clip.onset, clip.apex)]
    truth = read_ground_truth(small)
    assert {c["clip"] for c in truth["clips"]} == {clip.clip, annotations.clips[1].clip, "028_4_1", "032_3_1"}
    # reused as is; a set of fewer rows renders the same clips pixel for pixel
    assert generate_samm_scale(tmp_path / "two", SammScaleConfig(clips=2)) == small
    one = generate_samm_scale(tmp_path / "one", SammScaleConfig(clips=1))
    for path in frames.frames.values():
        assert (one / path.relative_to(small)).read_bytes() == path.read_bytes()
    assert SammScaleConfig(clips=1).hash != SammScaleConfig(clips=2).hash != SammScaleConfig().hash


def test_residual_shift_is_the_distance_to_the_true_jitter_difference_on_still_frames_in_crop_px() -> None:
    truth = {"frames": [{"frame": 1, "jitter": [0.5, 0.0], "motion": 0.0}, {"frame": 2, "jitter": [1.5, -1.0], "motion": 0.0},
                        {"frame": 3, "jitter": [0.0, 0.0], "motion": 1.0}, {"frame": 4, "jitter": [2.0, 2.0], "motion": 0.0}]}
    exact = {1: FrameMatch(0.5, 0.0, 1.0), 2: FrameMatch(1.5, -1.0, 1.0), 3: FrameMatch(9.0, 9.0, 1.0), 4: FrameMatch(2.0, 2.0, 1.0)}
    assert residual_shifts(truth, exact, apex=3, scale=0.5) == [0.0, 0.0, 0.0]  # frame 3 moves: left out
    off = {**exact, 2: FrameMatch(1.5 + 0.3, -1.0 - 0.4, 1.0)}
    assert residual_shifts(truth, off, apex=3, scale=2.0) == pytest.approx([0.0, 1.0, 0.0])
    # against the apex's own jitter: apex 1 moves every expected offset by (-0.5, 0)
    assert residual_shifts(truth, {2: FrameMatch(1.0, -1.0, 1.0)}, apex=1, scale=1.0) == pytest.approx([0.0])


def test_ecc_baseline_finds_a_known_sub_pixel_shift(face_image: np.ndarray) -> None:
    frame = cv2.resize(face_image, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    box = FaceBox(380, 300, 620, 560)
    template = frame[box.y1:box.y2, box.x1:box.x2].copy()
    shift = (2.37, -1.62)  # the head moved by this in the new frame
    moved = cv2.warpAffine(frame, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (1024, 1024), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    start = match_frame(moved, template, box)
    assert (start.dx, start.dy) == (2.0, -2.0)
    found, converged = ecc_refine(moved, template, box, start)
    assert converged and found.dx == pytest.approx(shift[0], abs=0.05) and found.dy == pytest.approx(shift[1], abs=0.05)


@pytest.mark.slow  # starts processes
def test_a_command_run_reports_its_wall_cpu_and_peak_memory(tmp_path: Path) -> None:
    code = "import numpy as np, time; a = np.ones(60 * 2**20 // 8); time.sleep(0.5); print('{\"mb\": 60}')"
    before = len(procs.RUNS)
    ran = procs.run([sys.executable, "-c", code], label="allocates 60 MB")
    assert ran.json_line("mb") == '{"mb": 60}' and ran.wall >= 0.5 and ran.cpu_s > 0
    assert ran.rss_mb >= 60 and (ran.tree_mb is None or ran.tree_mb >= ran.rss_mb)
    assert procs.RUNS[before:] == [ran] and procs.peak()[0] is not None
    with pytest.raises(procs.CommandFailed, match="exits 3"):
        procs.run([sys.executable, "-c", "import sys; sys.exit(3)"], label="exits 3")
    assert len(procs.RUNS) == before + 1  # a failed command is not a measurement


def test_target_table_judges_each_measured_target_and_leaves_the_others_out() -> None:
    m = {"normalize_ratio_1": 1.8, "normalize_ratio_2": 0.95, "align_ms": 3.4, "align_mean": 0.02, "align_p95": 0.03,
         "rss_single": 900.0, "rss_single_label": "normalize -j 2", "rss_tree": 1600.0, "rss_tree_label": "normalize -j 2"}
    table = target_table(m, 2, valid=157, rows=159, quick=False)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and "export" not in table and "Quick" not in table
    assert lines[2].startswith("| normalize") and "0.95 (2 workers)" in lines[2] and lines[2].endswith("| yes |")
    assert lines[3].endswith("| **no** |")  # 3.4 ms > 3 ms, though the residual is fine
    assert lines[4].endswith("| yes (sum: **no**) |")
    assert "Quick run" in target_table(m, 2, valid=12, rows=14, quick=True)
