"""MEGC2019 labels, action-unit parsing and leave-one-subject-out folds (``sammflow.labels``)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from sammflow.annotations import read_annotations
from sammflow.labels import (MEGC2019_CLASSES, MEGC2019_MAPS, MEGC2019_SOURCE, NOT_IN_MEGC2019, action_unit_groups, loso_folds,
                             megc_label, parse_action_units)
from sammflow.params import AnnotationParams

REAL = Path(__file__).parent / "data" / "samm.csv"


# --------------------------------------------------------------------------- MEGC2019


def test_classes_and_source():
    assert MEGC2019_CLASSES == ("negative", "positive", "surprise")
    assert "MEGC 2019" in MEGC2019_SOURCE and "FG 2019" in MEGC2019_SOURCE
    assert set(MEGC2019_MAPS["samm"].values()) == {0, 1, 2}


@pytest.mark.parametrize(("emotion", "label"), [
    ("Anger", 0), ("Contempt", 0), ("Disgust", 0), ("Fear", 0), ("Sadness", 0),
    ("Happiness", 1), ("Surprise", 2),
    ("Other", -1), ("", -1), ("Repression", -1), ("joy", -1),
])
def test_samm_emotions(emotion, label):
    assert megc_label("samm", emotion) == label


@pytest.mark.parametrize("written", ["anger", "ANGER", "  Anger ", "Anger\r\n", "\tanGer"])
def test_case_and_whitespace_do_not_matter(written):
    assert megc_label("samm", written) == 0


def test_unknown_dataset_raises_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"no MEGC2019 labels for dataset 'casme9'; known: samm"):
        megc_label("casme9", "Anger")


def counts(params: AnnotationParams) -> tuple[int, Counter]:
    annotations = read_annotations(REAL, params=params)
    return len(annotations.clips), Counter(megc_label("samm", c.emotion) for c in annotations.clips)


def test_real_file_as_is_gives_90_26_15():
    valid, labels = counts(AnnotationParams())
    assert valid == 157
    assert (labels[0], labels[1], labels[2], labels[NOT_IN_MEGC2019]) == (90, 26, 15, 26)


def test_real_file_with_fixes_gives_the_megc2019_samm_counts():
    """The MEGC2019 composite database's SAMM part: 133 clips, 92 negative, 26 positive, 15 surprise."""
    valid, labels = counts(AnnotationParams(fix=True))
    assert valid == 159
    assert (labels[0], labels[1], labels[2]) == (92, 26, 15)
    assert labels[0] + labels[1] + labels[2] == 133


# --------------------------------------------------------------------------- action units


@pytest.mark.parametrize(("text", "tokens"), [
    ("4+7", ["4", "7"]),
    ("R12 + R15", ["R12", "R15"]),
    ("A14C", ["A14C"]),
    ("12B+25+26", ["12B", "25", "26"]),
    ("L12 or L14", ["L12", "L14"]),
    ("(R6 or R12)+R15", ["R6", "R12", "R15"]),
    ("(R6 or R12) + R15", ["R6", "R12", "R15"]),
    ("R14A or 17A or 24A", ["R14A", "17A", "24A"]),
    ("12+15 ", ["12", "15"]),
    ("7B+ ref(43)", ["7B", "ref(43)"]),
    ("ref(L10)+A12B", ["ref(L10)", "A12B"]),
    ("10A/B", ["10A/B"]),
    ("A/L12", ["A/L12"]),
    ("13+T18+39", ["13", "T18", "39"]),
    ("R14+17+soft focus", ["R14", "17", "soft_focus"]),
    ("r12b", ["R12B"]),
    ("12++15", ["12", "15"]),
    ("", []),
    ("   ", []),
])
def test_parse_action_units(text, tokens):
    assert parse_action_units(text) == tokens


def test_alternatives_are_grouped():
    assert action_unit_groups("(R6 or R12)+R15") == [("R6", "R12"), ("R15",)]
    assert action_unit_groups("R14A or 17A or 24A") == [("R14A", "17A", "24A")]
    assert action_unit_groups("12B+25") == [("12B",), ("25",)]
    assert action_unit_groups("a or b+c") == [("a", "b"), ("c",)]  # "or" binds tighter than "+"
    assert action_unit_groups("((R6 OR R12))+R15") == [("R6", "R12"), ("R15",)]
    assert action_unit_groups("(12+15) or 4") == [("12", "15", "4")]  # a nested sum is flattened into its group
    assert action_unit_groups("(R6 or R12+R15") == [("R6", "R12"), ("R15",)]  # unbalanced: the parenthesis is ignored
    assert action_unit_groups("") == []


#: A token of SAMM's codes: optional ref(...), side prefix(es), AU number, intensity (range).
AU_TOKEN = re.compile(r"(ref\()?([LRATBU](/[LRATBU])?)?\d+([A-E](/[A-E])?)?(?(1)\))")


def test_every_action_unit_string_of_the_real_file_parses_to_au_codes():
    annotations = read_annotations(REAL)
    texts = {c.action_units for c in annotations.clips} | {r.values["action_units"] for r in annotations.rejected}
    assert len(texts) > 90
    notes = []
    for text in texts:
        tokens = parse_action_units(text)
        assert tokens, text
        assert all(t and not any(ch.isspace() for ch in t) for t in tokens), (text, tokens)
        assert (" or " in text) == any(len(g) > 1 for g in action_unit_groups(text)), text  # alternatives only from "or"
        notes += [t for t in tokens if not AU_TOKEN.fullmatch(t)]
        # every AU number written in the text is in a token
        assert sorted(re.findall(r"\d+", text)) == sorted(n for t in tokens for n in re.findall(r"\d+", t)), text
    assert notes == ["soft_focus"]


def test_the_fixed_action_units_have_no_alternatives():
    annotations = read_annotations(REAL, params=AnnotationParams(fix=True))
    for clip in annotations.clips:
        assert all(len(g) == 1 for g in action_unit_groups(clip.action_units)), clip.clip


# --------------------------------------------------------------------------- folds


def test_loso_folds_are_positions_among_sorted_subjects():
    assert loso_folds(["011", "006", "007", "006", "011"]) == {"006": 0, "007": 1, "011": 2}
    assert loso_folds([]) == {}
    assert loso_folds(iter(["037"])) == {"037": 0}


def test_loso_folds_of_the_real_file():
    annotations = read_annotations(REAL, params=AnnotationParams(fix=True))
    folds = loso_folds(c.subject for c in annotations.clips)
    assert len(folds) == 29 and sorted(folds.values()) == list(range(29))
    assert folds["006"] == 0 and folds["037"] == 28
