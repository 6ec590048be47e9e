"""Dataset kinds: ids, layouts, output names and how a folder's kind is recognised (no frames read)."""

from __future__ import annotations

import pytest

from sammflow.kinds import KINDS, find_annotations, guess_kind, kind_of, output_stem, resolve


@pytest.mark.parametrize("kind, raw, expected", [
    ("samm", "6", "006"), ("samm", "006", "006"), ("samm", "6.0", "006"), ("samm", "s6", None), ("samm", "", None),
    ("casme2", "1", "sub01"), ("casme2", "sub1", "sub01"), ("casme2", "sub17", "sub17"), ("casme2", "17.0", "sub17"),
    ("smic", "s1", "s1"), ("casme3a", "spNO.1", "spNO.1"), ("mmew", "S03", "S03"), ("mmew", "a b", None),
])
def test_subject_ids(kind, raw, expected):
    assert KINDS[kind].subject_id(raw) == expected


def test_clip_ids_are_unique_within_a_dataset():
    assert KINDS["samm"].clip_id("006", "006_1_2") == "006_1_2"
    assert KINDS["samm"].clip_id("006", "007_1_2") == "007_1_2"  # SAMM's Filename is its id (a mismatch is only warned about)
    # CASME II reuses a Filename under other subjects: the subject makes it unique
    assert KINDS["casme2"].clip_id("sub01", "EP02_01f") == "sub01_EP02_01f" != KINDS["casme2"].clip_id("sub02", "EP02_01f")
    assert KINDS["smic"].clip_id("s1", "s1_ne_01") == "s1_ne_01"
    # CAS(ME)³ A: one video, several micro-expressions (MEB names them e, e2, e3; here the subject leads and _2 follows)
    assert [KINDS["casme3a"].clip_id("spNO.1", "e", n) for n in (1, 2, 3)] == ["spNO.1_e", "spNO.1_e_2", "spNO.1_e_3"]


def test_layouts_and_output_names():
    assert KINDS["casme2"].clip_folder("sub01", "EP02_01f") == ("sub01", "EP02_01f")
    assert KINDS["smic"].clip_folder("s1", "s1_ne_01", "Negative") == ("s1", "micro", "negative", "s1_ne_01")
    assert KINDS["casme3a"].clip_folder("spNO.1", "a") == ("spNO.1", "a", "color")
    assert KINDS["mmew"].clip_folder("S03", "S03_01_002", "happiness") == ("happiness", "S03_01_002")
    assert KINDS["smic"].folder_of(("s1", "micro", "negative", "s1_ne_01")) == ("s1", "s1_ne_01")
    assert KINDS["casme3a"].folder_of(("spNO.1", "a", "depth")) is None  # depth frames beside the colour ones are not clips
    assert KINDS["mmew"].folder_of(("happiness", "S03_01_002")) == ("S03", "S03_01_002")
    assert output_stem("samm", "006", "006_1_2") == "sub006_006_1_2"  # the original scripts' names
    assert output_stem("casme2", "sub01", "sub01_EP02_01f") == "sub01_EP02_01f"
    # a composite's ids carry their kind
    assert output_stem("samm", "samm-006", "samm-006_1_2") == "samm-sub006_006_1_2"
    assert output_stem("casme2", "casme2-sub01", "casme2-sub01_EP02_01f") == "casme2-sub01_EP02_01f"
    assert not KINDS["smic"].has_apex and KINDS["smic"].required == ("subject", "clip", "onset", "offset")


def test_columns_are_found_by_each_kind_s_names():
    assert KINDS["casme2"].column("ApexFrame") == "apex" and KINDS["casme2"].column("Estimated Emotion") == "emotion"
    assert KINDS["smic"].column("material") == "clip" and KINDS["casme3a"].column("Objective class") == "objective_class"
    assert KINDS["samm"].column("Apex Frame") == "apex" and KINDS["samm"].column("bogus") is None


def test_a_folder_s_kind_from_its_annotation_file_then_its_layout(tmp_path):
    cases = {"samm.csv": "samm", "CASME2-coding-20140508.xlsx": "casme2", "smic.xlsx": "smic",
             "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx": "casme3a", "MMEW_Micro_Exp.xlsx": "mmew"}
    for name, kind in cases.items():
        folder = tmp_path / kind
        folder.mkdir()
        (folder / name).write_bytes(b"")
        assert guess_kind(folder) == kind
        assert find_annotations(folder, kind) == folder / name
        assert resolve(folder) == (kind, folder / name)
    layouts = {"CASME2_RAW_selected": "casme2", "HS": "smic", "part_A": "casme3a", "Micro_Expression": "mmew", "006": "samm",
               "sub03": "casme2", "spNO.7": "casme3a"}
    for folder_name, kind in layouts.items():
        folder = tmp_path / f"layout-{folder_name}"
        (folder / folder_name).mkdir(parents=True)
        assert guess_kind(folder) == kind, folder_name
    empty = tmp_path / "empty"
    empty.mkdir()
    assert guess_kind(empty) is None and resolve(empty) == ("samm", None)  # nothing says: SAMM, and no annotation file
    assert resolve(empty, kind="smic") == ("smic", None)
    with pytest.raises(ValueError, match=r"kind must be one of \['samm', 'casme2', 'smic', 'casme3a', 'mmew'\], got 'casme'"):
        kind_of("casme")
