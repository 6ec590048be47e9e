"""``sammflow.tables``: the dashboard's tables and clip lists, as plain functions over a Dataset.

The dataset here is built from empty frame files (tables never decode a frame), so every
status the overview knows occurs once and every value is known:

=========  ==========  =====================================  =========  ============
clip       subject     on disk                                emotion    AUs
=========  ==========  =====================================  =========  ============
006_1_1    006         frames 9–21 (ready)                    Anger      R14+4(+7)
006_2_1    006         frames 30–40 (ready)                   Surprise   1+2
007_1_1    007         apex frame 54 missing                  Happiness  12
007_2_1    007         no folder                              (none)     (none)
011_1_1    011         frames 100–110 (ready)                 Happiness  L12
011_9_9    011         apex after offset: invalid annotation  Anger      4
011_3_3    011         a folder without an annotation row
=========  ==========  =====================================  =========  ============
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sammflow import tables
from sammflow.align import Alignment
from sammflow.detect import FaceBox
from sammflow.params import AlignParams, AnnotationParams
from sammflow.annotations import read_annotations
from sammflow.dataset import Dataset, load_dataset, merge
from sammflow.kinds import resolve
from sammflow.pipeline import ClipError

pytest_plugins = ("app_fixtures",)  # the kind demos (tests/app_fixtures.py)

HEADER = "Subject;Filename;Inducement Code;Onset Frame;Apex Frame;Offset Frame;Duration;Micro;Action Units;Estimated Emotion;Objective Classes;Notes"
ROWS = [
    "006;006_1_1;1;10;14;20;11;Micro - 1/2;R14+4(+7);Anger;3;",
    "006;006_2_1;1;31;33;39;9;Micro - 1/2;1+2;Surprise;7;",
    "007;007_1_1;1;50;54;58;9;Micro - 1/2;12;Happiness;1;",
    "007;007_2_1;1;60;61;62;3;Micro - 1/2;;;;",
    "011;011_1_1;1;101;105;109;9;Micro - 1/2;L12;Happiness;1;",
    "011;011_9_9;1;100;300;200;101;Micro - 1/2;4;Anger;3;bad row",
]
FRAMES = {"006/006_1_1": range(9, 22), "006/006_2_1": range(30, 41), "007/007_1_1": [*range(50, 54), *range(55, 59)],
          "011/011_1_1": range(100, 111), "011/011_3_3": range(1, 4)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("tables") / "DATA"
    for folder, numbers in FRAMES.items():
        (root / folder).mkdir(parents=True)
        for n in numbers:
            (root / folder / f"{folder.split('/')[0]}_{n:05d}.jpg").write_bytes(b"")
    (root / "samm.csv").write_text("\r\n".join([HEADER, *ROWS]) + "\r\n")
    return load_dataset(root, read_annotations(root / "samm.csv"))


@pytest.mark.parametrize(("text", "expected"), [
    ("R14+4(+7)", [4, 7, 14]), ("4+12", [4, 12]), ("L12", [12]), ("12+12", [12]), ("", []), (None, []), ("A1+25+26", [1, 25, 26]),
])
def test_aus_of(text: str | None, expected: list[int]) -> None:
    assert tables.aus_of(text) == expected


def test_annotation_table_has_one_row_per_annotation_row_with_its_status(dataset: Dataset) -> None:
    table = tables.annotation_table(dataset)
    assert list(table.columns) == ["subject", "clip", "onset", "apex", "offset", "duration", "latency", "AUs", "emotion",
                                   "objective class", "frames on disk", "status", "note"]
    assert list(table["clip"]) == ["006_1_1", "006_2_1", "007_1_1", "007_2_1", "011_1_1", "011_9_9"]  # valid rows, then rejected
    rows = table.set_index("clip")
    assert dict(rows["status"]) == {"006_1_1": "ready", "006_2_1": "ready", "007_1_1": "missing frames", "007_2_1": "no folder",
                                    "011_1_1": "ready", "011_9_9": "invalid annotation"}
    assert dict(rows["frames on disk"]) == {"006_1_1": 13, "006_2_1": 11, "007_1_1": 8, "007_2_1": 0, "011_1_1": 11, "011_9_9": 0}
    first = rows.loc["006_1_1"]
    assert (first["onset"], first["apex"], first["offset"], first["duration"], first["latency"]) == (10, 14, 20, 11, 4)
    assert (first["AUs"], first["emotion"], first["objective class"], first["note"]) == ("R14+4(+7)", "Anger", "3", "")
    assert (rows.loc["007_2_1", "emotion"], rows.loc["007_2_1", "objective class"]) == ("—", "—")
    assert rows.loc["007_1_1", "note"] == "apex frame 54 not on disk"
    assert "no folder 007/007_2_1" in rows.loc["007_2_1", "note"]
    rejected = rows.loc["011_9_9"]
    assert rejected["status"] == "invalid annotation" and "after offset" in rejected["note"] and rejected["AUs"] == "4"
    assert rejected[["onset", "apex", "offset", "duration", "latency"]].isna().all()


def test_filter_table_ands_columns_and_ors_values(dataset: Dataset) -> None:
    table = tables.annotation_table(dataset)
    assert tables.filter_table(table, {}).equals(table)
    assert tables.filter_table(table, {"emotion": [], "status": ()}).equals(table)  # an empty choice keeps every row
    assert list(tables.filter_table(table, {"emotion": ["Anger", "Surprise"]})["clip"]) == ["006_1_1", "006_2_1", "011_9_9"]
    assert list(tables.filter_table(table, {"emotion": ["Anger", "Surprise"], "status": ["ready"]})["clip"]) == ["006_1_1", "006_2_1"]
    assert list(tables.filter_table(table, {"subject": ["011"], "emotion": ["Surprise"]})["clip"]) == []


def test_problem_table_names_each_clip_and_cause(dataset: Dataset) -> None:
    problems = tables.problem_table(dataset)
    assert list(problems.columns) == ["clip", "where", "severity", "problem"]
    by_clip = {clip: group for clip, group in problems.groupby("clip")}
    assert set(by_clip) == {"007_1_1", "007_2_1", "011_9_9", "011_3_3"}
    assert list(by_clip["007_1_1"]["where"]) == ["missing frame"] and list(by_clip["007_1_1"]["severity"]) == ["error"]
    assert list(by_clip["007_2_1"]["where"]) == ["no folder"]
    assert list(by_clip["011_3_3"]["severity"]) == ["warning"]  # a folder without a row is only a warning
    bad = by_clip["011_9_9"].iloc[0]
    assert bad["where"] == "annotation row 7" and bad["severity"] == "error" and "after offset" in bad["problem"]


def test_problem_table_of_a_clean_dataset_is_empty_with_its_columns(tmp_path: Path) -> None:
    (tmp_path / "006" / "006_1_1").mkdir(parents=True)
    for n in range(10, 21):
        (tmp_path / "006" / "006_1_1" / f"006_{n:05d}.jpg").write_bytes(b"")
    (tmp_path / "samm.csv").write_text(f"{HEADER}\r\n{ROWS[0]}\r\n")
    clean = load_dataset(tmp_path, read_annotations(tmp_path / "samm.csv"))
    assert tables.summary(clean)["problems"] == 0
    problems = tables.problem_table(clean)
    assert len(problems) == 0 and list(problems.columns) == ["clip", "where", "severity", "problem"]


def test_summary_counts(dataset: Dataset) -> None:
    assert tables.summary(dataset) == {"subjects": 3, "clips": 5, "ready": 3, "folders": 5, "frames": 13 + 11 + 8 + 11 + 3,
                                       "missing_frames": 1, "problems": 4, "rejected": 1}


def test_filter_clips_keeps_ready_clips_in_annotation_order(dataset: Dataset) -> None:
    assert tables.filter_clips(dataset) == ["006_1_1", "006_2_1", "011_1_1"]  # 007_1_1 misses its apex, 007_2_1 its folder
    assert tables.filter_clips(dataset, subjects=["006"]) == ["006_1_1", "006_2_1"]
    assert tables.filter_clips(dataset, emotions=["Happiness"]) == ["011_1_1"]
    assert tables.filter_clips(dataset, aus=[12]) == ["011_1_1"]  # "L12" is AU 12
    assert tables.filter_clips(dataset, aus=[7, 2]) == ["006_1_1", "006_2_1"]  # any of the AUs
    assert tables.filter_clips(dataset, subjects=["006"], emotions=["Anger"], aus=[14]) == ["006_1_1"]
    assert tables.filter_clips(dataset, subjects=["006"], aus=[12]) == []


def test_sample_is_reproducible_and_bounded() -> None:
    clips = [f"c{i}" for i in range(20)]
    first = tables.sample(clips, 3)
    assert len(first) == 9 and len(set(first)) == 9 and set(first) <= set(clips)
    assert tables.sample(clips, 3) == first
    assert tables.sample(clips, 4) != first
    assert len(tables.sample(clips, 3, n=25)) == 20
    few = ["a", "b", "c"]
    assert sorted(tables.sample(few, 0)) == few  # all of them when there are fewer
    assert tables.sample([], 5) == []


def test_caption(dataset: Dataset) -> None:
    assert tables.caption(dataset, "006_1_1") == "006_1_1 · Anger · AU R14+4(+7)"
    assert tables.caption(dataset, "007_2_1") == "007_2_1"  # no emotion, no AUs
    assert tables.caption(dataset, "../../etc") == "../../etc"  # not a clip: just the id
    assert tables.caption(dataset, "011_9_9") == "011_9_9"  # a rejected row is not a clip


def test_ready_ids_and_grid_clips(dataset: Dataset) -> None:
    assert tables.ready_ids(dataset) == ["006_1_1", "006_2_1", "011_1_1"]
    assert tables.grid_clips(dataset, "clip") == ["006_1_1", "006_2_1", "011_1_1"]
    assert tables.grid_clips(dataset, "subject") == ["006_1_1", "011_1_1"]  # 007 has no ready clip


def test_frame_number(dataset: Dataset) -> None:
    assert [tables.frame_number(dataset, "006_1_1", which) for which in ("first", "onset", "apex")] == [9, 10, 14]
    assert tables.frame_number(dataset, "006_2_1", "first") == 30
    with pytest.raises(ClipError, match="^007_2_1: (annotated but )?no folder"):
        tables.frame_number(dataset, "007_2_1", "onset")
    with pytest.raises(ClipError, match="^011_9_9: not a valid annotated clip"):
        tables.frame_number(dataset, "011_9_9", "onset")


def test_flag_reasons_say_which_limit_each_frame_broke() -> None:
    """Issue 10.18: per flagged frame, the limit it broke and by how much."""
    alignment = Alignment(box=FaceBox(0, 0, 10, 10, 0.99), frames=np.array([5, 6, 7, 8, 9]), offsets=np.zeros((5, 2)),
                          scores=np.array([0.95, 0.71, 0.93, 0.62, 0.7999]), residuals=np.array([0.05, 0.1, 0.31, 0.45, 0.2]))
    params = AlignParams(min_score=0.8, max_residual=0.2)
    reasons = tables.flag_reasons(alignment, params)
    assert reasons == [(6, "score 0.71 < 0.80"), (7, "residual 0.31 > 0.20 px"), (8, "score 0.62 < 0.80, residual 0.45 > 0.20 px"),
                       (9, "score 0.7999 < 0.8000")]  # as many decimals as it takes to tell them apart
    assert [n for n, _ in reasons] == [int(n) for n in alignment.flagged(params)]  # the same frames as the verdict
    assert tables.flag_reasons(alignment, AlignParams(min_score=0.5, max_residual=1.0)) == []


# ---------------------------------------------------------------- labels, annotation settings, apex notes (issue 11)


def test_label_table_and_megc_counts_map_emotions_to_the_benchmark_classes(dataset: Dataset) -> None:
    table = tables.label_table(dataset)
    assert list(table.columns) == ["emotion", "MEGC2019 class", "clips"]
    # valid rows only (011_9_9 is rejected); classes in order, most clips first; no emotion is not in MEGC2019
    assert table.values.tolist() == [["Anger", "negative", 1], ["Happiness", "positive", 2], ["Surprise", "surprise", 1],
                                     ["—", tables.NOT_IN_MEGC, 1]]
    assert tables.megc_counts(dataset) == {"negative": 1, "positive": 2, "surprise": 1, "not in MEGC": 1}
    assert [tables.megc_class(dataset, e) for e in ("Contempt", " happiness ", "Other", "")] == ["negative", "positive", "not in MEGC",
                                                                                                "not in MEGC"]


def test_megc_counts_list_every_class_even_without_clips(tmp_path: Path) -> None:
    (tmp_path / "samm.csv").write_text(f"{HEADER}\r\n{ROWS[0]}\r\n")
    only_anger = load_dataset(tmp_path, read_annotations(tmp_path / "samm.csv"))
    assert tables.megc_counts(only_anger) == {"negative": 1, "positive": 0, "surprise": 0, "not in MEGC": 0}


def fixable(tmp_path: Path, params: AnnotationParams) -> Dataset:
    """Two clips of the real SAMM file that shipped fixes change: an AU ("L12 or L14") and an apex after the offset."""
    rows = ["011;011_4_2;1;100;104;110;11;Micro - 1/2;L12 or L14;Happiness;1;",
            "028;028_4_1;1;1071;1143;1134;64;Micro - 1/2;4;Anger;3;",
            ROWS[0]]
    (tmp_path / "samm.csv").write_text("\r\n".join([HEADER, *rows]) + "\r\n")
    return load_dataset(tmp_path, read_annotations(tmp_path / "samm.csv")).resolved(params)


def test_resolution_counts_say_what_the_annotation_settings_did(dataset: Dataset, tmp_path: Path) -> None:
    assert tables.resolution_counts(dataset) == {"fixed": 0, "fixed_apex": 0, "to_spot": 0}
    assert tables.resolution_counts(dataset.resolved(AnnotationParams(apex="auto"))) == {"fixed": 0, "fixed_apex": 0, "to_spot": 1}
    assert tables.resolution_counts(dataset.resolved(AnnotationParams(apex="spot"))) == {"fixed": 0, "fixed_apex": 0, "to_spot": 6}
    assert tables.resolution_counts(fixable(tmp_path, AnnotationParams())) == {"fixed": 0, "fixed_apex": 0, "to_spot": 0}
    assert tables.resolution_counts(fixable(tmp_path, AnnotationParams(fix=True))) == {"fixed": 2, "fixed_apex": 1, "to_spot": 0}


def test_apex_note_says_how_the_apex_was_chosen(dataset: Dataset, tmp_path: Path) -> None:
    ann = dataset.annotations.by_clip["006_1_1"]
    assert tables.apex_note(dataset, ann) == "apex 14"
    spot = dataset.resolved(AnnotationParams(apex="spot"))
    spotted = dataclasses.replace(spot.annotations.by_clip["006_1_1"], apex=16, apex_source="spotted", spot=False)
    assert tables.apex_note(spot, spotted) == "apex spotted: 16 (annotated: 14)"
    auto = dataset.resolved(AnnotationParams(apex="auto"))
    reference = auto.annotations.by_clip["011_9_9"]  # apex 300 after offset 200: spotted from the middle frame
    assert reference.apex == 150 and reference.spot
    assert tables.annotated_clip(auto, "011_9_9") is None and tables.annotated_clip(auto, "006_1_1") == ann
    assert tables.apex_note(auto, dataclasses.replace(reference, apex=140, apex_source="spotted")) == "apex spotted: 140 (annotated: none usable)"
    fixed = fixable(tmp_path, AnnotationParams(fix=True))
    assert tables.apex_note(fixed, fixed.annotations.by_clip["028_4_1"]) == "apex 1105 (fixed)"
    fixed_spot = fixable(tmp_path, AnnotationParams(fix=True, apex="spot"))
    again = dataclasses.replace(fixed_spot.annotations.by_clip["028_4_1"], apex=1110, apex_source="spotted")
    assert tables.apex_note(fixed_spot, again) == "apex spotted: 1110 (annotated: 1105, fixed)"


def test_frame_number_of_a_spotted_clip(dataset: Dataset) -> None:
    spotted = dataclasses.replace(dataset.annotations.by_clip["006_1_1"], apex=16, apex_source="spotted")
    assert [tables.frame_number(dataset, "006_1_1", which, clip=spotted) for which in ("first", "onset", "apex")] == [9, 10, 16]


def test_features_summary_gives_the_shapes_and_labels(tmp_path: Path) -> None:
    n, size = 5, 28
    path = tmp_path / "features.npz"
    np.savez(path, u=np.zeros((n, size, size), np.float32), v=np.zeros((n, size, size), np.float32),
             strain=np.zeros((n, size, size), np.float32), X=np.zeros((n, size, size, 3), np.float32),
             label_megc=np.array([0, 0, 1, 2, -1]), fold=np.array([0, 0, 1, 1, 2]), clip=np.array(["a", "b", "c", "d", "e"]))
    assert tables.features_summary(path) == ("features.npz: 5 clips × 28 × 28 (u, v, strain float32; X 5 × 28 × 28 × 3) · "
                                             "MEGC2019: 2 negative, 1 positive, 1 surprise, 1 not in MEGC · 3 subject folds")
    with pytest.raises(OSError):
        tables.features_summary(tmp_path / "missing.npz")


# ---------------------------------------------------------------- every dataset kind (issue 12)


@pytest.fixture(scope="module")
def kinds(kind_demos: dict[str, Path]) -> dict[str, Dataset]:
    """The kind demos, each read with its kind and annotation file found (``sammflow.kinds.resolve``)."""
    read = {}
    for kind, root in kind_demos.items():
        found, annotations = resolve(root)
        assert found == kind
        read[kind] = load_dataset(root, read_annotations(annotations, dataset=kind))
    return read


def test_labels_per_dataset_of_a_composite(kinds: dict[str, Dataset], dataset: Dataset) -> None:
    composite = merge([dataset, kinds["casme2"]])
    per_class = tables.megc_by_dataset(composite)
    assert list(per_class.columns) == ["dataset", "negative", "positive", "surprise", "not in MEGC", "clips"]
    # this module's SAMM rows (valid: 1 Anger, 2 Happiness, 1 Surprise, 1 without emotion), the CASME II demo's (disgust, surprise)
    assert per_class.values.tolist() == [["SAMM", 1, 2, 1, 1, 5], ["CASME II", 1, 0, 1, 0, 2]]
    per_emotion = tables.emotions_by_dataset(composite)
    assert per_emotion.values.tolist() == [["SAMM", "Anger", "negative", 1], ["SAMM", "Happiness", "positive", 2],
                                           ["SAMM", "Surprise", "surprise", 1], ["SAMM", "—", tables.NOT_IN_MEGC, 1],
                                           ["CASME II", "disgust", "negative", 1], ["CASME II", "surprise", "surprise", 1]]
    # the whole composite: each clip mapped by its own dataset's table ("disgust" is negative in both, "Other" only SAMM's)
    assert tables.megc_counts(composite) == {"negative": 2, "positive": 2, "surprise": 2, "not in MEGC": 1}
    assert tables.label_table(composite).values.tolist() == [["Anger", "negative", 1], ["disgust", "negative", 1], ["Happiness", "positive", 2],
                                                             ["Surprise", "surprise", 1], ["surprise", "surprise", 1],
                                                             ["—", tables.NOT_IN_MEGC, 1]]
    # one dataset: one row, the same counts as megc_counts
    assert tables.megc_by_dataset(kinds["smic"]).values.tolist() == [["SMIC", 1, 0, 1, 0, 2]]
    assert tables.megc_by_dataset(dataset).iloc[0, 1:5].tolist() == list(tables.megc_counts(dataset).values())


def test_frame_rates_and_apexes_of_each_kind(kinds: dict[str, Dataset]) -> None:
    assert [tables.frame_rate(kinds[k]) for k in ("samm", "casme2", "smic")] == [200.0, 200.0, 100.0]
    assert tables.frame_rate(merge([kinds["samm"], kinds["casme2"]])) == 200.0
    assert tables.frame_rate(merge([kinds["samm"], kinds["smic"]])) is None  # no one rate
    # SMIC annotates no apex: the table shows none (the reference frame is not an apex), nor a latency
    table = tables.annotation_table(kinds["smic"])
    assert table["apex"].isna().all() and table["latency"].isna().all() and set(table["status"]) == {"ready"}
    smic = kinds["smic"].annotations.clips[0]
    assert smic.spot and tables.annotated_clip(kinds["smic"], smic.clip) is None
    spotted = dataclasses.replace(smic, apex=smic.apex + 1, apex_source="spotted", spot=False)
    assert tables.apex_note(kinds["smic"], spotted) == f"apex spotted: {smic.apex + 1} (annotated: none usable)"
    # CASME II's "/" apex: none usable either; its other clip's apex is the file's
    first, slash = kinds["casme2"].annotations.clips
    assert tables.annotated_clip(kinds["casme2"], slash.clip) is None and tables.annotated_clip(kinds["casme2"], first.clip) == first


def test_a_composite_clip_is_annotated_as_its_dataset_says(kinds: dict[str, Dataset]) -> None:
    composite = merge([kinds["samm"], kinds["casme2"]]).resolved(AnnotationParams(apex="spot"))
    samm = kinds["samm"].annotations.clips[0]
    found = tables.annotated_clip(composite, f"samm-{samm.clip}")
    assert found == dataclasses.replace(samm, subject=f"samm-{samm.subject}", clip=f"samm-{samm.clip}")
    assert tables.annotated_clip(composite, f"casme2-{kinds['casme2'].annotations.clips[1].clip}") is None  # its "/" apex
    assert tables.annotated_clip(composite, "samm-999_9_9") is None
    assert [tables.caption(composite, c) for c in tables.ready_ids(composite)][2].startswith("casme2-sub01_EP02_01f · disgust")
    assert tables.grid_clips(composite, "subject") == tables.ready_ids(composite)  # one clip per subject, subjects prefixed
