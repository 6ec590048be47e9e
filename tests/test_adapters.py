"""Every dataset kind read from its own layout and annotation file (the demo of each kind), the
composite of several, and the batch export on each: the adapters of issue 12."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import manifest, run_cli
from sammflow.annotations import read_annotations
from sammflow.dataset import InputError, load_dataset, merge, read_grey
from sammflow.demo import DemoConfig, generate_demo, read_ground_truth
from sammflow.export import export_flows, flow_map_name
from sammflow.features import load_features
from sammflow.kinds import resolve
from sammflow.labels import megc_label, megc_report
from sammflow.params import AnnotationParams, PipelineParams

KINDS = ("casme2", "smic", "casme3a", "mmew")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """A small demo of every kind (2 subjects × 2 clips × 12 frames; SAMM's too)."""
    base = tmp_path_factory.mktemp("kinds")
    return {kind: generate_demo(base / kind, DemoConfig(subjects=2, clips_per_subject=2, frames=12, kind=kind))
            for kind in ("samm", *KINDS)}


def _open(root, params=AnnotationParams()):
    kind, annotations = resolve(root)
    return load_dataset(root, read_annotations(annotations, params=params, dataset=kind))


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_recognised_and_every_clip_found(demos, kind):
    root = demos[kind]
    truth = read_ground_truth(root)
    assert resolve(root)[0] == kind
    dataset = _open(root)
    assert dataset.kind == kind and dataset.issues == ()
    assert [c.clip for c in dataset.annotations.clips] == [c["clip"] for c in truth["clips"]]  # ids unique, in file order
    assert dataset.annotations.rejected == ()
    ready = {clip.clip for clip, _ in dataset.ready()}
    for expected in truth["clips"]:
        clip = dataset.annotations.by_clip[expected["clip"]]
        assert (clip.subject, clip.onset, clip.offset, clip.dataset) == (expected["subject"], expected["onset"], expected["offset"], kind)
        assert clip.emotion == expected["emotion"]
        frames = dataset.clips_on_disk[clip.clip]
        assert frames.folder == root / expected["folder"] and {clip.onset, clip.offset} <= set(frames.frames)
        if expected["annotated_apex"] is None:  # SMIC annotates none, CASME II's "/": spotted, from the middle frame
            assert clip.spot and clip.apex == (clip.onset + clip.offset) // 2
        else:
            assert clip.apex == expected["annotated_apex"] and not clip.spot and clip.clip in ready
    # colour frames are read as grey, once, at the edge
    clip, frames = dataset.ready()[0] if dataset.ready() else (dataset.annotations.clips[0], frames)
    grey = read_grey(frames.path(clip.onset))
    colour = cv2.imdecode(np.fromfile(frames.path(clip.onset), np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2 and colour.ndim == 3 and grey.shape == colour.shape[:2]


def test_quirks_of_each_layout(demos):
    casme2 = _open(demos["casme2"])
    names = [c.folder for c in casme2.annotations.clips]
    assert len(names) > len(set(names))  # one Filename under several subjects, still distinct clips
    assert any("no apex annotated" in p.message for p in casme2.annotations.problems)  # the "/" row: a warning, not a rejection
    casme3a = _open(demos["casme3a"])
    shared = [c for c in casme3a.annotations.clips if c.clip.endswith("_2")]
    assert shared, "two micro-expressions of one video"
    for clip in shared:
        first = casme3a.annotations.by_clip[clip.clip[:-2]]
        assert casme3a.clips_on_disk[clip.clip].folder == casme3a.clips_on_disk[first.clip].folder
        assert (clip.onset, clip.offset) != (first.onset, first.offset)
    for frames in casme3a.clips_on_disk.values():  # the depth frames beside color/ are not read
        assert frames.folder.name == "color" and all(p.parent.name == "color" for p in frames.frames.values())
    mmew = _open(demos["mmew"])
    assert all(min(f.frames) == 1 for f in mmew.clips_on_disk.values())  # frames numbered from 1 in each clip


def test_labels_of_each_kind(demos):
    for kind in KINDS:
        for clip in _open(demos[kind]).annotations.clips:
            expected = {"casme2": {"disgust": 0, "repression": 0, "happiness": 1, "surprise": 2},
                        "smic": {"negative": 0, "positive": 1, "surprise": 2}}.get(kind, {}).get(clip.emotion.lower(), -1)
            assert megc_label(kind, clip.emotion) == expected, (kind, clip.emotion)


def test_an_annotation_file_named_otherwise_the_layout_or_kind_decides(demos, tmp_path):
    import shutil

    root = Path(shutil.copytree(demos["casme2"], tmp_path / "casme2"))
    own = resolve(root)[1]
    renamed = own.rename(root / "labels.xlsx")
    assert resolve(root, renamed) == ("casme2", renamed)  # CASME2_RAW_selected/ says so
    (root / "CASME2_RAW_selected").rename(root / "frames")
    assert resolve(root, renamed) == ("samm", renamed)  # nothing says: SAMM, unless told
    assert resolve(root, renamed, "casme2") == ("casme2", renamed)


def test_merge_prefixes_subjects_and_clips_by_kind(demos):
    parts = [_open(demos[kind]) for kind in ("samm", "casme2", "smic")]
    composite = merge(parts)
    assert composite.kind == "samm+casme2+smic" and composite.roots == tuple(demos[k] for k in ("samm", "casme2", "smic"))
    ids = [c.clip for c in composite.annotations.clips]
    assert len(ids) == len(set(ids)) == sum(len(p.annotations.clips) for p in parts)
    for clip in composite.annotations.clips:
        assert clip.subject.startswith(f"{clip.dataset}-") and clip.clip.startswith(f"{clip.dataset}-")
        assert composite.clips_on_disk[clip.clip].frames  # frames from each part's own folder
    assert flow_map_name(composite.annotations.by_clip["samm-006_1_1"] if "samm-006_1_1" in composite.annotations.by_clip
                         else composite.annotations.clips[0]).startswith("samm-sub")
    with pytest.raises(InputError, match="one dataset of each kind"):
        merge([parts[0], parts[0]])
    # resolving a composite resolves each part
    auto = composite.resolved(AnnotationParams(apex="spot"))
    assert auto.parts and all(c.spot for c in auto.annotations.clips)


def test_megc2019_keeps_only_the_three_classes(demos):
    params = AnnotationParams(megc2019=True)
    for kind in ("samm", *KINDS):
        dataset = _open(demos[kind], params)
        annotations = dataset.annotations
        assert all(megc_label(kind, c.emotion) >= 0 for c in annotations.clips)
        assert dataset.issues == ()  # a left-out clip's folder is annotated, not "without a row"
        total = len(_open(demos[kind]).annotations.clips)
        assert len(annotations.clips) + annotations.left_out == total
    assert _open(demos["casme3a"], params).annotations.clips == ()  # CAS(ME)³ is not part of MEGC2019
    rows = [{"dataset": "samm", "label_megc": "0", "status": "ok"}, {"dataset": "samm", "label_megc": "2", "status": "failed"},
            {"dataset": "smic", "label_megc": "1", "status": "ok"}, {"dataset": "samm", "label_megc": "-1", "status": "ok"}]
    assert megc_report(rows) == [
        "MEGC2019 smic: 1 clips (0/1/0 negative/positive/surprise), 1 exported; the composite has 164 (70/51/43)",
        "MEGC2019 casme2: 0 clips (0/0/0 negative/positive/surprise), 0 exported; the composite has 145 (88/32/25)",
        "MEGC2019 samm: 2 clips (1/0/1 negative/positive/surprise), 1 exported; the composite has 133 (92/26/15)",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_export_on_each_kind(demos, kind, tmp_path):
    dataset = _open(demos[kind])
    truth = read_ground_truth(demos[kind])
    report = export_flows(dataset, tmp_path / "out", params=PipelineParams(annotations=AnnotationParams(apex="auto")))
    assert report.ok == len(truth["clips"]), [r["error"] for r in report.failed]
    for row in report.rows:
        expected = truth["by_clip"][row["clip"]]
        assert (tmp_path / "out" / row["output"]).is_file() and row["output"] == f"flows/{row['clip']}.png"
        assert row["dataset"] == kind and int(row["label_megc"]) == megc_label(kind, expected["emotion"])
        if expected["annotated_apex"] is None:
            assert row["apex_source"] == "spotted" and abs(int(row["apex"]) - expected["apex"]) <= 2
        else:
            assert int(row["apex"]) == expected["apex"]


@pytest.mark.slow
def test_composite_export_from_the_command_line(demos, tmp_path):
    out = tmp_path / "MEGC"
    code, stdout, err = run_cli("export", out, "--dataset", f"samm={demos['samm']}",
                                "--dataset", f"casme2={demos['casme2']},annotations={resolve(demos['casme2'])[1]}",
                                "--dataset", f"smic={demos['smic']}", "--megc2019", "--arrays", "-q", "-j", "1")
    assert code == 0, err
    rows = manifest(out)
    assert {r["dataset"] for r in rows} == {"samm", "casme2", "smic"}
    assert all(int(r["label_megc"]) >= 0 for r in rows)
    features = load_features(out / "features.npz")
    subjects = set(features["subject"])
    assert all(s.split("-", 1)[0] in ("samm", "casme2", "smic") for s in subjects)
    # one fold per (prefixed) subject: no fold holds two people, even where two datasets number subjects alike
    assert len(set(zip(features["fold"], features["subject"]))) == len(subjects) == len(set(features["fold"]))
    assert "MEGC2019 samm:" in stdout and "MEGC2019 casme2:" in stdout and "MEGC2019 smic:" in stdout
    code, _, err = run_cli("export", tmp_path / "data", out, "--dataset", f"samm={demos['samm']}")
    assert code == 2 and "OUT is then the only positional argument" in err
    code, _, err = run_cli("export", out, "--dataset", "casme=/nowhere")
    assert code == 2 and "expected KIND=PATH[,annotations=FILE] with KIND one of samm, casme2, smic, casme3a, mmew" in err


def test_megc2019_on_the_real_samm_file_is_the_composite_s_133_clips():
    from helpers import __file__ as helpers_file
    from sammflow.manifest import clip_row

    real = Path(helpers_file).with_name("data") / "samm.csv"
    annotations = read_annotations(real, params=AnnotationParams(fix=True, megc2019=True))
    rows = [clip_row(c, "ok") for c in annotations.clips]
    assert (len(rows), annotations.left_out, annotations.rejected) == (133, 26, ())  # the 26 "Other" clips left out
    assert megc_report(rows)[2] == "MEGC2019 samm: 133 clips (92/26/15 negative/positive/surprise), 133 exported; as in the composite"
