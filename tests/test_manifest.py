"""Manifest rows, the quality verdict judged from per-frame records, and the resume plan:
plain functions over rows, tested on hand-made rows (no files)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sammflow.align import Alignment, FrameMatch
from sammflow.annotations import AnnotationProblem, ClipAnnotation, RejectedRow
from sammflow.detect import FaceBox
from sammflow.manifest import (
    ALIGNMENT_COLUMNS, MANIFEST_COLUMNS, RECORDS, STATUSES, Refused, alignment_fields, box_fields, clip_row, differences, judge,
    one_line, plan, same_annotation,
)
from sammflow.outfolder import UNHASHED
from sammflow.params import AlignParams, PipelineParams
from sammflow.pipeline import NormalizedClip

THRESHOLDS = AlignParams(min_score=0.8, max_residual=0.2)


def record(frame, score, residual):
    return {"frame": frame, "dx": 0.0, "dy": 0.0, "score": score, "residual": residual, "angle": 0.0, "scale": 1.0}


def clip(name: str, row: int, *, subject: str = "006", onset: int = 10, apex: int = 15, offset: int = 20, emotion: str = "Anger") -> ClipAnnotation:
    return ClipAnnotation(subject, name, onset, apex, offset, row=row, action_units="4", emotion=emotion, objective_class="3")


def rejected(name: str, row: int) -> RejectedRow:
    problem = AnnotationProblem(name, row, "apex", "apex frame 5 is before onset frame 9")
    return RejectedRow(row, name, "006", {"onset": "9", "apex": "5", "offset": "12", "emotion": "Other"}, (problem,))


def ok_row(item: ClipAnnotation, **extra) -> dict[str, str]:
    """A manifest row as read back from manifest.csv: every value text."""
    row = {k: str(v) for k, v in clip_row(item, "ok").items()}
    return {**row, "output": f"flows/sub{item.subject}_{item.clip}.png", "align_trusted": "yes", "flagged_frames": "", **extra}


PARAMS = {"params": PipelineParams().output_dict(), "dataset": "/data/SAMM", "annotations": "/data/SAMM/samm.csv"}


# ---------------------------------------------------------------- judge


def test_judge_flags_low_scores_and_high_residuals():
    records = [record(1, 0.95, 0.05), record(2, 0.79, 0.05), record(3, 0.95, 0.25), record(4, 0.5, 0.9), record(5, 1.0, 0.0)]
    assert judge(records, THRESHOLDS) == {"align_trusted": "no", "flagged_frames": "2 3 4"}
    assert judge([record(1, 0.95, 0.05), record(5, 1.0, 0.0)], THRESHOLDS) == {"align_trusted": "yes", "flagged_frames": ""}


def test_judge_thresholds_are_inclusive_boundaries():
    # a score equal to min_score and a residual equal to max_residual are trusted; anything past them is not
    at = [record(1, 0.8, 0.2)]
    assert judge(at, THRESHOLDS) == {"align_trusted": "yes", "flagged_frames": ""}
    assert judge([record(1, 0.79999, 0.2)], THRESHOLDS)["flagged_frames"] == "1"
    assert judge([record(1, 0.8, 0.2001)], THRESHOLDS)["flagged_frames"] == "1"
    assert judge(at, AlignParams(min_score=0.80001))["flagged_frames"] == "1"
    assert judge(at, AlignParams(max_residual=0.19999))["flagged_frames"] == "1"


def test_judge_reads_records_as_written_to_alignment_csv():
    # what read_csv gives back: text, frame numbers in file order
    records = [{"clip": "006_1_2", "frame": "4661", "score": "0.99", "residual": "0.01"},
               {"clip": "006_1_2", "frame": "4660", "score": "0.7", "residual": "0.01"},
               {"clip": "006_1_2", "frame": "4664", "score": "1.0", "residual": "0.3"}]
    assert judge(records, THRESHOLDS) == {"align_trusted": "no", "flagged_frames": "4660 4664"}
    assert judge([], THRESHOLDS) == {"align_trusted": "yes", "flagged_frames": ""}


def test_judge_of_the_records_agrees_with_the_alignment_itself():
    box = FaceBox(100, 100, 300, 300)
    rng = np.random.default_rng(0)
    matches = {n: FrameMatch(0.0, 0.0, float(s), float(r)) for n, s, r in
               zip(range(100, 160), rng.uniform(0.6, 1.0, 60), rng.uniform(0.0, 0.4, 60))}
    alignment = Alignment.from_matches(box, matches)
    for params in (THRESHOLDS, AlignParams(min_score=0.9, max_residual=0.1), AlignParams(min_score=0.0, max_residual=2.0)):
        expected = " ".join(str(n) for n in alignment.flagged(params))
        assert judge(alignment.to_records(), params) == {"align_trusted": "no" if expected else "yes", "flagged_frames": expected}


# ---------------------------------------------------------------- rows


def test_clip_row_of_a_clip_and_of_a_rejected_row():
    row = clip_row(clip("006_1_2", 2), "failed", "006_1_2: onset frame 10\nnot on disk")
    assert row == {"subject": "006", "clip": "006_1_2", "onset": 10, "apex": 15, "offset": 20, "action_units": "4", "emotion": "Anger",
                   "objective_class": "3", "dataset": "samm", "apex_source": "annotated", "fixes": "", "aus": "4", "label_megc": 0,
                   "status": "failed", "error": "006_1_2: onset frame 10 not on disk"}
    bad = clip_row(rejected("006_9_9", 7), "invalid_annotation", "apex frame 5 is before onset frame 9")
    assert bad["error"] == "006_9_9 (annotation row 7): apex frame 5 is before onset frame 9"
    assert (bad["onset"], bad["apex"], bad["offset"], bad["emotion"], bad["action_units"]) == ("9", "5", "12", "Other", "")
    assert set(row) <= set(MANIFEST_COLUMNS) and set(STATUSES) == {"ok", "failed", "invalid_annotation", "pending"}
    assert one_line(" a\n b\t\tc \r\n") == "a b c"


def test_alignment_fields_hold_the_box_the_worst_frame_and_the_records():
    box = FaceBox(10, 20, 110, 140, prob=0.987654, frame=15)
    matches = {10: FrameMatch(1.23456, -0.5, 0.9123456, 0.123456), 15: FrameMatch(0.0, 0.0, 1.0, 0.0)}
    normalized = NormalizedClip(clip("006_1_2", 2), {}, Alignment.from_matches(box, matches), ("from the clip",))
    fields = alignment_fields(normalized, ["from detection"])
    assert {k: fields[k] for k in ("x1", "y1", "x2", "y2", "face_prob", "face_frame")} == box_fields(box) == {
        "x1": 10, "y1": 20, "x2": 110, "y2": 140, "face_prob": 0.9877, "face_frame": 15}
    assert fields["match_score_min"] == 0.9123 and fields["residual_max"] == 0.1235 and fields["frames"] == 2
    assert fields["warnings"] == "from detection | from the clip"
    assert [list(r) for r in fields[RECORDS]] == [ALIGNMENT_COLUMNS] * 2
    assert fields[RECORDS][0] == {"frame": 10, "dx": 1.2346, "dy": -0.5, "score": 0.91235, "residual": 0.1235, "angle": 0.0, "scale": 1.0}
    assert RECORDS not in MANIFEST_COLUMNS and "align_trusted" not in fields  # judged later, with the thresholds in force


def test_same_annotation_compares_subject_onset_apex_offset_only():
    item = clip("006_1_2", 2)
    row = ok_row(item)
    assert same_annotation(item, row)
    assert same_annotation(clip("006_1_2", 5, emotion="Happiness"), row)  # relabelled, moved in the file: same outputs
    for changed in (clip("006_1_2", 2, subject="007"), clip("006_1_2", 2, onset=11), clip("006_1_2", 2, apex=14),
                    clip("006_1_2", 2, offset=21)):
        assert not same_annotation(changed, row)


# ---------------------------------------------------------------- differences


def test_differences_name_what_changed():
    assert differences(PARAMS, PARAMS) == []
    other = {**PARAMS, "params": PipelineParams(align=AlignParams(margin=30)).output_dict()}
    assert differences(PARAMS, other) == ["made with other parameters (align.margin 40 → 30)"]
    moved = {**PARAMS, "dataset": "/elsewhere/SAMM"}
    assert differences(PARAMS, moved) == ["made from /data/SAMM, not /elsewhere/SAMM"]
    gif = {**PARAMS, "gif": {"fps": 10.0}}
    assert differences(gif, {**PARAMS, "gif": {"fps": 5}}) == ["made with other parameters (gif.fps 10.0 → 5)"]
    many = PipelineParams(align=AlignParams(margin=1, crop_size=100, method="whole_pixel", robust=False, motion="similarity"))
    assert differences(PARAMS, {**PARAMS, "params": many.output_dict()}) == [
        "made with other parameters (align.crop_size 224 → 100, align.margin 40 → 1, align.method subpixel → whole_pixel, "
        "align.motion translation → similarity, +1 more)"]


def test_differences_ignore_unhashed_keys_of_an_older_params_json():
    # params.json of earlier versions listed the device and the thresholds among the hashed "params"
    older = {**PARAMS, "params": PipelineParams(align=AlignParams(min_score=0.5, max_residual=1.0)).to_dict()}
    older["params"]["detect"]["device"] = "cuda:0"
    assert set(UNHASHED) == {"detect.device", "align.min_score", "align.max_residual"}
    assert differences(older, PARAMS, unhashed=UNHASHED) == []
    # and a parameter sammflow knows that new's "params" lacks has no effect on new's outputs anyway
    assert differences(older, PARAMS) == []
    older["params"]["gif"] = {"fps": 5}  # what sammflow does not know still counts
    assert differences(older, PARAMS) == ["made with other parameters (gif.fps 5 → -)"]
    del older["params"]["gif"]
    # a real change is still one
    changed = {**PARAMS, "params": PipelineParams(encode=PipelineParams().encode.__class__(size=32)).output_dict()}
    assert differences(older, changed, unhashed=UNHASHED) == ["made with other parameters (encode.size 28 → 32)"]


# ---------------------------------------------------------------- plan


A, B, C = clip("006_1_1", 2), clip("006_1_2", 3), clip("011_1_1", 5, subject="011")
BAD = rejected("006_9_9", 4)
ITEMS = [A, B, BAD, C]


def _resumable(present=("006_1_1", "006_1_2", "011_1_1")):
    return lambda item, old: same_annotation(item, old) and item.clip in present


def test_plan_of_a_new_folder_does_every_clip():
    result = plan(ITEMS, ITEMS, None, [], PARAMS, force=False, resumable=_resumable())
    assert [r["status"] for r in result.rows] == ["pending", "pending", "invalid_annotation", "pending"]
    assert result.todo == [(0, A), (1, B), (3, C)]
    assert (result.resumed, result.replace, result.created) == (0, [], None)
    assert "annotation row 4" in result.rows[2]["error"]


def test_plan_resumes_what_is_done_and_still_there():
    old = {**PARAMS, "created": "2024-01-01T00:00:00+00:00"}
    rows = [ok_row(A), {**ok_row(B), "status": "pending", "output": ""}, ok_row(C, emotion="Fear")]
    result = plan(ITEMS, ITEMS, old, rows, PARAMS, force=False, resumable=_resumable(present=("006_1_1", "011_1_1")))
    assert result.resumed == 2 and result.todo == [(1, B)] and result.replace == []
    assert result.created == "2024-01-01T00:00:00+00:00"  # the kept outputs' start
    assert result.rows[0] == {**ok_row(A), "emotion": "Anger"} and result.rows[3]["emotion"] == "Anger"  # labels follow the annotation
    # an output gone missing, or a re-annotated clip, is done again
    result = plan(ITEMS, ITEMS, old, rows, PARAMS, force=False, resumable=_resumable(present=("011_1_1",)))
    assert result.resumed == 1 and [c.clip for _, c in result.todo] == ["006_1_1", "006_1_2"]
    moved = clip("011_1_1", 5, subject="011", apex=16)
    result = plan([A, B, BAD, moved], [A, B, BAD, moved], old, rows, PARAMS, force=False, resumable=_resumable())
    assert [c.clip for _, c in result.todo] == ["006_1_2", "011_1_1"]


def test_plan_refuses_finished_outputs_of_other_parameters():
    old = {**PARAMS, "params": PipelineParams(align=AlignParams(margin=30)).output_dict()}
    with pytest.raises(Refused, match=r"^made with other parameters \(align.margin 30 → 40\); use a new output folder, or --force"):
        plan(ITEMS, ITEMS, old, [ok_row(A)], PARAMS, force=False, resumable=_resumable())
    with pytest.raises(Refused, match="^has outputs but no params.json, so their parameters are unknown; "):
        plan(ITEMS, ITEMS, None, [ok_row(A)], PARAMS, force=False, resumable=_resumable())
    with pytest.raises(Refused, match="^made from /data/SAMM, not /other"):
        plan(ITEMS, ITEMS, PARAMS, [ok_row(A)], {**PARAMS, "dataset": "/other"}, force=False, resumable=_resumable())


def test_plan_of_a_folder_where_nothing_was_finished_replaces_without_force():
    old = {**PARAMS, "params": PipelineParams(align=AlignParams(margin=30)).output_dict()}
    pending = [{**ok_row(A), "status": "pending"}, {**ok_row(B), "status": "failed"}]
    result = plan(ITEMS, ITEMS, old, pending, PARAMS, force=False, resumable=_resumable())
    assert result.replace == ["made with other parameters (align.margin 30 → 40)"] and len(result.todo) == 3 and result.resumed == 0


def test_plan_with_force_recomputes_everything():
    old = {**PARAMS, "created": "2024-01-01T00:00:00+00:00"}
    rows = [ok_row(A), ok_row(B), ok_row(C)]
    result = plan(ITEMS, ITEMS, old, rows, PARAMS, force=True, resumable=_resumable())
    assert result.resumed == 0 and [c.clip for _, c in result.todo] == ["006_1_1", "006_1_2", "011_1_1"] and result.replace == []
    other = {**old, "params": PipelineParams(align=AlignParams(margin=30)).output_dict()}
    result = plan(ITEMS, ITEMS, other, rows, PARAMS, force=True, resumable=_resumable())
    assert result.replace == ["made with other parameters (align.margin 30 → 40)"] and result.created is None and len(result.todo) == 3


def test_plan_keeps_other_clips_of_a_gif_subset_in_annotation_order():
    old = {**PARAMS, "gif": {"fps": 10.0}}
    new = {**PARAMS, "gif": {"fps": 10.0}}
    rows = [ok_row(C), ok_row(A)]
    result = plan([B], ITEMS, old, rows, new, force=False, resumable=_resumable())
    assert [(r["clip"], r["status"]) for r in result.rows] == [("006_1_1", "ok"), ("006_1_2", "pending"), ("011_1_1", "ok")]
    assert result.todo == [(1, B)] and result.resumed == 0  # kept, but not counted as this job's
    # a kept clip whose GIF is gone is dropped, not redone: it was not asked for
    result = plan([B], ITEMS, old, rows, new, force=False, resumable=_resumable(present=("006_1_1",)))
    assert [r["clip"] for r in result.rows] == ["006_1_1", "006_1_2"]


def test_clip_row_has_the_label_columns():
    row = clip_row(dataclasses.replace(clip("006_1_2", 2), action_units="R12B + L14", fixes=("apex 1143 → 1105 (MEB)",),
                                       apex_source="fixed"), "ok")
    assert set(MANIFEST_COLUMNS) >= set(row)
    assert row["dataset"] == "samm" and row["label_megc"] == 0  # Anger: negative
    assert row["aus"] == "R12B L14" and row["apex_source"] == "fixed" and row["fixes"] == "apex 1143 → 1105 (MEB)"
    assert clip_row(clip("006_1_3", 3, emotion="Happiness"), "ok")["label_megc"] == 1
    assert clip_row(clip("006_1_4", 4, emotion="Surprise"), "ok")["label_megc"] == 2
    assert clip_row(clip("006_1_5", 5, emotion="Other"), "ok")["label_megc"] == -1
    assert clip_row(rejected("006_1_6", 6), "invalid_annotation")["label_megc"] == -1  # Other


def test_a_clip_to_be_spotted_resumes_a_row_whose_apex_was_spotted():
    to_spot = dataclasses.replace(clip("006_1_2", 2), spot=True)  # apex 15 is only the reference frame
    spotted = {**ok_row(clip("006_1_2", 2)), "apex": "17", "apex_source": "spotted"}
    assert same_annotation(to_spot, spotted)
    assert not same_annotation(to_spot, ok_row(clip("006_1_2", 2)))  # made with the annotated apex
    assert not same_annotation(clip("006_1_2", 2), spotted)  # asked for the annotated apex now
    assert not same_annotation(to_spot, {**spotted, "offset": "21"})


def test_parameters_added_since_an_older_params_json_count_as_their_defaults():
    new = {"params": PipelineParams().output_dict(), "dataset": "/data"}
    older = {"params": {stage: values for stage, values in PipelineParams().output_dict().items() if stage != "annotations"},
             "dataset": "/data"}
    del older["params"]["flow"]["method"], older["params"]["encode"]["channels"]
    assert differences(older, new) == []
    tvl1 = {"params": PipelineParams.from_preset("ststnet").output_dict(), "dataset": "/data"}
    assert "flow.method farneback → tvl1" in differences(older, tvl1)[0]
