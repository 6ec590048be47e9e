"""``sammflow.access``: what a dashboard user may reach (no Streamlit involved).

The rules are in the module's docstring: every path from a widget or a link is resolved and
must lie inside an allowed root before anything is read, listed or tested for existence
there; the export folder must further lie outside every dataset. An audit hook
(``app_helpers.watching``) records what the process opens or lists, so "read nothing" is
asserted, not assumed. The same rules seen through the pages are in tests/test_app_safety.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from sammflow import access, export, export_choices
from sammflow.cache import ClipStore
from sammflow.dataset import Dataset, InputError
from sammflow.demo import DemoConfig
from sammflow.params import AnnotationParams, PipelineParams

from app_helpers import OUTSIDE, refused_export_folders, watching, write_video

pytest_plugins = ("app_fixtures",)  # the dashboard's fixtures, kept out of conftest.py


# ---------------------------------------------------------------- allowed roots and paths


def test_allowed_roots_are_the_listed_folders_plus_what_the_server_was_started_with(app_env: dict[str, str], tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAMMFLOW_ROOTS", raising=False)
    data = Path(app_env["SAMMFLOW_DATA"]).resolve()
    roots = access.allowed_roots()
    assert roots[0] == Path.cwd().resolve()  # unset: the working folder
    assert data in roots and data / "samm.csv" in roots and access.out_base().resolve() in roots
    assert access.demo_root(access.demo_config()).resolve() in roots
    assert Path.home().resolve() not in roots or Path.home().resolve() == Path.cwd().resolve()
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("SAMMFLOW_ROOTS", f"{a}{os.pathsep}{b}{os.pathsep}")
    roots = access.allowed_roots()
    assert roots[:2] == [a.resolve(), b.resolve()] and Path.cwd().resolve() not in roots and data in roots
    assert len(roots) == len(set(roots))  # no duplicates


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "tilde", "missing"])
def test_allowed_path_resolves_before_it_checks(allowed: Path, secret: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(secret.parent))
    typed = {"absolute": str(secret), "dotdot": f"{allowed}/../SECRET/006", "symlink": f"{allowed}/link/006",
             "tilde": "~/SECRET", "missing": f"{allowed}/../SECRET/no/such/folder"}[how]
    with watching(secret, allowed / "link") as hits:
        with pytest.raises(InputError) as caught:
            access.allowed_path(typed, "Dataset folder")
    message = str(caught.value)
    assert message.startswith(f"Dataset folder `{typed}` {OUTSIDE}") and str(allowed) in message and "SAMMFLOW_ROOTS" in message
    assert hits == []
    # inside the root, through a link that stays inside: allowed, and resolved
    (allowed / "inside").mkdir()
    (allowed / "alias").symlink_to(allowed / "inside")
    assert access.allowed_path(f"{allowed}/alias/../inside", "x") == (allowed / "inside").resolve()
    assert access.allowed_path(f"{allowed}/alias", "x") == (allowed / "inside").resolve()


def test_a_relative_path_is_taken_from_the_working_folder(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (allowed / "sub").mkdir()
    monkeypatch.chdir(allowed)
    assert access.allowed_path("sub", "x") == (allowed / "sub").resolve()
    with pytest.raises(InputError, match=f"^x `../SECRET` {OUTSIDE}"):
        access.allowed_path("../SECRET", "x")


def test_a_nul_character_is_not_a_path(allowed: Path) -> None:
    with pytest.raises(InputError, match="is not a usable path.*NUL"):
        access.allowed_path(f"{allowed}/a\x00b", "Dataset folder")


def test_checked_ref_resolves_both_paths_and_refuses_an_empty_folder(allowed: Path, secret: Path) -> None:
    (allowed / "data").mkdir()
    (allowed / "alias").symlink_to(allowed / "data")
    ref = access.checked_ref(access.DatasetRef(f"{allowed}/alias", f"{allowed}/alias/../data/samm.csv", demo=True))
    assert ref == access.DatasetRef(str((allowed / "data").resolve()), str((allowed / "data" / "samm.csv").resolve()), demo=True)
    with pytest.raises(InputError, match="^No dataset folder given"):
        access.checked_ref(access.DatasetRef("  ", "x.csv"))
    with pytest.raises(InputError, match=f"^Annotation file `{secret}/samm.csv` {OUTSIDE}"):
        access.checked_ref(access.DatasetRef(str(allowed / "data"), str(secret / "samm.csv")))


# ---------------------------------------------------------------- opening a dataset


def test_open_dataset_reads_through_the_given_loader(app_env: dict[str, str]) -> None:
    root, ann = app_env["SAMMFLOW_DATA"], app_env["SAMMFLOW_ANNOTATIONS"]
    calls = []

    def loader(r: str, a: str, signature: tuple, kind: str) -> Dataset:
        calls.append((r, a, signature, kind))
        return access.load(r, a, signature, kind)

    dataset = access.open_dataset(access.DatasetRef(root, ann), loader)
    assert [c.clip for c in dataset.annotations.clips] == ["006_1_1", "006_2_1", "011_1_2", "011_2_2"]
    assert calls == [(str(Path(root).resolve()), str(Path(ann).resolve()), access.signature(str(Path(root).resolve()), str(Path(ann).resolve())),
                      "samm")]  # the kind settled before reading (recognised from samm.csv)


def test_the_signature_changes_with_the_annotation_file(app_data: Path, tmp_path: Path) -> None:
    ann = tmp_path / "samm.csv"
    ann.write_text((app_data / "samm.csv").read_text())
    before = access.signature(str(app_data), str(ann))
    assert access.signature(str(app_data), str(ann)) == before
    ann.write_text(ann.read_text() + "\n")
    assert access.signature(str(app_data), str(ann)) != before


@pytest.mark.parametrize("case", ["missing", "file", "no_annotations", "annotations_folder", "huge", "garbage", "wrong_folder"])
def test_open_dataset_names_the_path_and_the_problem(allowed: Path, app_data: Path, case: str) -> None:
    folder = allowed / "data"
    folder.mkdir()
    ann = allowed / "samm.csv"
    ann.write_text((app_data / "samm.csv").read_text())
    if case == "missing":
        folder = allowed / "nothing"
    elif case == "file":
        folder = allowed / "a_file"
        folder.write_text("x")
    elif case == "no_annotations":
        ann = allowed / "none.csv"
    elif case == "annotations_folder":
        ann = allowed / "ann_dir"
        ann.mkdir()
    elif case == "huge":
        with open(ann, "wb") as fh:  # sparse: costs no disk
            fh.truncate(access.MAX_ANNOTATION_BYTES + 1)
    elif case == "garbage":
        ann.write_bytes(bytes(range(256)) * 64)
    elif case == "wrong_folder":
        (folder / "999" / "999_1_1").mkdir(parents=True)
        (folder / "999" / "999_1_1" / "999_0001.jpg").write_bytes(b"")
    loaded = []

    def loader(r: str, a: str, signature: tuple, kind: str) -> Dataset:
        loaded.append(r)
        return access.load(r, a, signature, kind)

    with pytest.raises(ValueError) as caught:
        access.open_dataset(access.DatasetRef(str(folder), str(ann)), loader)
    message = str(caught.value)
    expected = {
        "missing": f"Dataset folder not found: {folder}", "file": f"Not a folder: {folder}",
        "no_annotations": f"Annotation file not found: {ann}", "annotations_folder": f"Not a file: {ann} is a folder",
        "huge": f"Annotation file {ann} is 20 MB", "garbage": "Cannot use the annotation file:",
        "wrong_folder": "None of the 4 annotated clips has a folder in",
    }[case]
    assert message.startswith(expected), message
    if case == "huge":
        assert "wrong file?" in message and loaded == []  # refused on its size, never parsed
    if case == "garbage":
        assert str(ann) in message and "binary file" in message
    if case == "wrong_folder":
        assert str(folder) in message and "006/006_1_1/" in message and "found 1 other clip folders" in message
    if case in ("missing", "file", "no_annotations", "annotations_folder"):
        assert loaded == []  # checked before reading


# ---------------------------------------------------------------- the demo dataset


def test_demo_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAMMFLOW_DEMO_CONFIG", raising=False)
    assert access.demo_config() == DemoConfig()
    monkeypatch.setenv("SAMMFLOW_DEMO_CONFIG", json.dumps({"subjects": 1, "frames": 8}))
    config = access.demo_config()
    assert (config.subjects, config.frames) == (1, 8) and config.clips_per_subject == DemoConfig().clips_per_subject
    for bad in ("[1, 2]", "{not json", '{"no_such_field": 1}'):
        monkeypatch.setenv("SAMMFLOW_DEMO_CONFIG", bad)
        with pytest.raises(ValueError, match="SAMMFLOW_DEMO_CONFIG=.*is not a JSON object of DemoConfig fields"):
            access.demo_config()
    monkeypatch.setenv("SAMMFLOW_CACHE", str(tmp_path))
    assert access.demo_root(config) == tmp_path / f"demo-{config.hash}"


def test_demo_ready_only_for_a_complete_demo_of_that_config(app_data: Path, tmp_path: Path) -> None:
    from sammflow.demo import read_ground_truth

    config = DemoConfig(**read_ground_truth(app_data)["config"])
    assert access.demo_ready(app_data, config)
    assert not access.demo_ready(app_data, DemoConfig(**{**read_ground_truth(app_data)["config"], "seed": 1}))
    assert not access.demo_ready(tmp_path, config)  # half-generated: no ground truth yet


# ---------------------------------------------------------------- the export folder


def test_export_folder_rules(app_env: dict[str, str], allowed: Path, secret: Path) -> None:
    data = Path(app_env["SAMMFLOW_DATA"])
    refused = refused_export_folders(data, allowed, secret)
    assert len(refused) == 9
    with watching(secret, allowed / "link") as hits:
        for typed, cause in refused.items():
            with pytest.raises(InputError) as caught:
                access.export_folder(data, typed)
            assert cause in str(caught.value) and typed in str(caught.value), (typed, str(caught.value))
    assert hits == [] and not (secret / "out").exists() and not (data / "maps").exists()
    # a new folder, an empty one, and an earlier flow export are fine (nothing is created here)
    assert access.export_folder(data, str(allowed / "new" / "flows")) == (allowed / "new" / "flows").resolve()
    assert not (allowed / "new").exists()
    (allowed / "empty").mkdir()
    assert access.export_folder(data, str(allowed / "empty")) == (allowed / "empty").resolve()
    earlier = allowed / "earlier"
    earlier.mkdir()
    (earlier / "params.json").write_text(json.dumps({"kind": "flows", "params_hash": "x"}))
    (earlier / "flows").mkdir()
    assert access.export_folder(data, str(earlier)) == earlier.resolve()


def test_the_export_folder_is_outside_the_open_dataset_too(allowed: Path, app_data: Path) -> None:
    """Not only $SAMMFLOW_DATA: the dataset opened in the sidebar is protected as well."""
    other = allowed / "OTHER"
    other.mkdir()
    with pytest.raises(InputError, match="inside the dataset folder"):
        access.export_folder(other, str(other / "maps"))
    assert access.export_folder(app_data, str(other / "maps")) == (other / "maps").resolve()


def test_the_default_output_folder_is_one_per_dataset_and_parameters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 10.15: ``<base>/<dataset name>-<params hash>``; ``$SAMMFLOW_OUT`` is the base."""
    monkeypatch.delenv("SAMMFLOW_OUT", raising=False)
    monkeypatch.delenv("SAMMFLOW_ROOTS", raising=False)
    samm, other = access.DatasetRef("/data/SAMM", "/data/SAMM/samm.csv"), access.DatasetRef("/data/CASME II", "/data/c.csv")
    default, winsize = PipelineParams(), PipelineParams.from_dict({"flow": {"winsize": 21}})
    assert access.out_base() == Path.cwd() / "out"
    assert access.default_out_dir(samm, default.hash) == Path.cwd() / "out" / f"SAMM-{default.hash}"
    folders = {access.default_out_dir(ref, params.hash) for ref in (samm, other) for params in (default, winsize)}
    assert len(folders) == 4  # another dataset or parameter set: another folder
    assert access.default_out_dir(other, default.hash).name == f"CASME_II-{default.hash}"  # one safe path component
    assert access.default_out_dir(access.DatasetRef("/x/..", "a", demo=True), "h").name == "demo-h"
    assert access.dataset_name(access.DatasetRef("/data/..", "a")) == "dataset"
    monkeypatch.setenv("SAMMFLOW_OUT", str(tmp_path / "maps"))
    assert access.default_out_dir(samm, default.hash) == tmp_path / "maps" / f"SAMM-{default.hash}"
    # every default folder is inside an allowed root, also with SAMMFLOW_ROOTS elsewhere
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path / "elsewhere"))
    for ref in (samm, other):
        folder = access.default_out_dir(ref, default.hash)
        assert access.allowed_path(folder, "Output folder") == folder.resolve()


def _plan_dataset(app_data: Path) -> Dataset:
    return access.open_dataset(access.DatasetRef(str(app_data), str(app_data / "samm.csv")))


def test_export_plan_says_what_an_export_would_do(app_env: dict[str, str], allowed: Path) -> None:
    """Issue 10.15: new / resume / replace, with what replacing deletes, before anything runs."""
    dataset = _plan_dataset(Path(app_env["SAMMFLOW_DATA"]))
    out = allowed / "maps"
    default, other = PipelineParams(), PipelineParams.from_dict({"flow": {"winsize": 21}})
    plan = export_choices.export_plan(dataset, str(out), default)
    assert (plan.state, plan.clips, plan.out) == ("new", 4, out.resolve()) and "is new" in plan.message()
    out.mkdir()
    assert "is empty" in export_choices.export_plan(dataset, str(out), default).message()
    assert not any(out.iterdir())  # looking wrote nothing
    export.export_flows(dataset, out, params=default, boxes=ClipStore(dataset.root))
    plan = export_choices.export_plan(dataset, str(out), default)
    assert (plan.state, plan.kept, plan.todo) == ("resume", 4, 0)
    maps = sorted(p.relative_to(out).as_posix() for p in (out / "flows").glob("*.png"))
    (out / maps[0]).unlink()
    assert export_choices.export_plan(dataset, str(out), default).kept == 3
    # the device and the quality thresholds are not other parameters
    lenient = PipelineParams.from_dict({"align": {"min_score": 0.5}})
    assert export_choices.export_plan(dataset, str(out), lenient).state == "resume"
    plan = export_choices.export_plan(dataset, str(out), other)
    assert plan.state == "replace" and plan.why == ("made with other parameters (flow.winsize 15 → 21)",)
    assert plan.delete == (*maps[1:], "alignment.csv")
    message = plan.message()
    assert f"`{plan.out}` holds an export made with other parameters (flow.winsize 15 → 21)" in message
    assert "deletes its 3 flow maps (" in message and "and 0 more" not in message and "--force" not in message
    # the plan is what the job does: replacing deletes exactly those files
    before = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    report = export.export_flows(dataset, out, params=other, force=True, boxes=ClipStore(dataset.root))
    assert report.replaced == 3 and set(plan.delete) <= before


def test_an_unfinished_export_of_other_parameters_is_simply_replaced(app_env: dict[str, str], allowed: Path) -> None:
    dataset = _plan_dataset(Path(app_env["SAMMFLOW_DATA"]))
    out = allowed / "unfinished"
    export.export_flows(dataset, out, boxes=ClipStore(dataset.root))
    manifest = out / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",ok,", ",pending,"))  # as if killed before any clip finished
    plan = export_choices.export_plan(dataset, str(out), PipelineParams.from_dict({"flow": {"winsize": 21}}))
    assert plan.state == "new" and plan.why and "no clip finished" in plan.message()


def test_a_refusal_is_worded_for_the_page(app_env: dict[str, str], allowed: Path) -> None:
    """The job's refusal of other parameters names ``--force``; the page has no such flag."""
    dataset = _plan_dataset(Path(app_env["SAMMFLOW_DATA"]))
    out = allowed / "maps"
    export.export_flows(dataset, out, boxes=ClipStore(dataset.root))
    with pytest.raises(InputError) as caught:
        export.export_flows(dataset, out, params=PipelineParams.from_dict({"flow": {"winsize": 21}}), boxes=ClipStore(dataset.root))
    assert "--force" in str(caught.value)  # the command line's wording, which stays
    worded = export_choices.page_message(str(caught.value))
    assert worded.startswith(f"{out}: made with other parameters (flow.winsize 15 → 21)")
    assert "--force" not in worded and "*Replace*" in worded


def test_a_new_folder_beside_a_kept_export(allowed: Path) -> None:
    (allowed / "maps").mkdir()
    (allowed / "maps-2").mkdir()
    assert export_choices.new_folder(allowed / "maps") == allowed / "maps-3"
    assert export_choices.new_folder(allowed) is None  # its sibling would be outside the allowed root


def test_the_rules_are_written_down() -> None:
    doc = access.__doc__
    assert "what a page user can reach" in doc and "no upload widget" in doc
    for name in (access.ENV_ROOTS, access.ENV_DATA, access.ENV_ANNOTATIONS, access.ENV_OUT):
        assert f"${name}" in doc, name


# ---------------------------------------------------------------- every dataset kind, videos, composites (issue 12)


def test_resolved_ref_settles_the_kind_and_finds_its_annotation_file(kinds_env: dict[str, Path]) -> None:
    casme2, smic = kinds_env["casme2"], kinds_env["smic"]
    ref = access.resolved_ref(access.DatasetRef(str(casme2)))
    assert ref == access.DatasetRef(str(casme2.resolve()), str((casme2 / "CASME2-coding-20140508.xlsx").resolve()), kind="casme2")
    assert access.resolved_ref(ref) == ref  # settled: as it is
    assert access.resolved_ref(access.DatasetRef(str(smic), kind="auto")).kind == "smic"
    assert access.resolved_ref(access.DatasetRef(str(casme2), kind="casme2")).annotations == ref.annotations
    # the kind is part of what is read, and of the cache key
    dataset = access.open_dataset(access.DatasetRef(str(casme2)))
    assert dataset.kind == "casme2" and [c.clip for c in dataset.annotations.clips] == ["sub01_EP02_01f", "sub02_EP02_01f"]
    assert access.ref_key(ref) != access.ref_key(dataclasses.replace(ref, kind="smic"))
    assert access.kind_title("casme2") == "CASME II" and access.kind_title("samm+casme2") == "composite: SAMM + CASME II"
    with pytest.raises(InputError, match="Unknown dataset kind 'casme4': one of auto, samm, casme2"):
        access.resolved_ref(access.DatasetRef(str(casme2), kind="casme4"))


def test_no_annotation_file_names_the_kind_and_the_files_it_looks_for(kinds_env: dict[str, Path], tmp_path: Path) -> None:
    casme2 = kinds_env["casme2"]
    with watching(casme2 / "CASME2-coding-20140508.xlsx") as hits:
        with pytest.raises(ValueError) as caught:
            access.open_dataset(access.DatasetRef(str(casme2), kind="smic"))
    assert str(caught.value) == (f"No SMIC annotation file in {casme2.resolve()} (the kind chosen in the sidebar; expected `smic*.xlsx`, "
                                 "`SMIC*.xlsx` or `smic*.csv`). This folder holds CASME2-coding-20140508.xlsx, a CASME II annotation "
                                 "file: choose CASME II or auto. Type the annotation file's path, or choose another kind.")
    assert hits == []  # nothing read but the folder's listing
    # recognised from the layout, without its annotation file
    layout = tmp_path / "CASME2"
    (layout / "sub01" / "EP02_01f").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"^No CASME II annotation file in .* \(the kind recognised from the folder's layout; "
                                         r"expected `CASME2-coding\*\.xlsx`"):
        access.resolved_ref(access.DatasetRef(str(layout)))
    # nothing to go by: every kind's files are listed
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match=r"none of the kinds' files is there \(SAMM: `samm.csv`.*MMEW: `MMEW_Micro_Exp\*\.xlsx`"):
        access.resolved_ref(access.DatasetRef(str(tmp_path / "nothing")))
    # a folder that is not the kind's layout: the kind is named as a suspect
    with pytest.raises(ValueError, match=r"read as SMIC\)\. Wrong dataset folder, annotation file or kind\?$"):
        access.open_dataset(access.DatasetRef(str(casme2), str(casme2 / "CASME2-coding-20140508.xlsx"), kind="smic"))


def test_a_composite_is_one_dataset_per_line_merged(kinds_env: dict[str, Path]) -> None:
    samm, casme2 = kinds_env["samm"], kinds_env["casme2"]
    text = f"# the MEGC2019 composite, two of its datasets\nsamm={samm}\n\ncasme2={casme2},annotations={casme2 / 'CASME2-coding-20140508.xlsx'}\n"
    ref = access.composite_ref(text)
    assert ref.kind == "samm+casme2" and [(p.kind, p.root) for p in ref.parts] == [("samm", str(samm)), ("casme2", str(casme2))]
    assert ref.label == "composite: SAMM + CASME II"
    assert access.dataset_name(ref) == "samm-casme2"
    dataset = access.open_dataset(ref)
    assert dataset.kind == "samm+casme2" and dataset.roots == (samm.resolve(), casme2.resolve())
    assert [c.clip for c in dataset.annotations.clips] == ["samm-006_1_1", "samm-011_1_2", "casme2-sub01_EP02_01f", "casme2-sub02_EP02_01f"]
    resolved = access.resolved_ref(ref)
    assert resolved.parts[0].annotations == str((samm / "samm.csv").resolve()) and access.ref_key(resolved).count(";") == 1
    for bad, message in [("", "No datasets given"), ("samm /data", "Composite, line 1: 'samm /data': expected KIND=PATH"),
                         (f"samm={samm}\nsamm={casme2}", "Composite, line 2: a second samm dataset")]:
        with pytest.raises(InputError, match=f"^{message}"):
            access.composite_ref(bad)
    # each part's paths are confined and named
    with pytest.raises(ValueError, match=f"^Composite dataset `casme2=/etc`: Dataset folder `/etc` {OUTSIDE}"):
        access.open_dataset(access.composite_ref(f"samm={samm}\ncasme2=/etc"))


def test_a_video_is_confined_and_extracted_into_the_cache(kinds_env: dict[str, Path], tmp_path: Path,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    frames = sorted((kinds_env["casme2"] / "CASME2_RAW_selected" / "sub01" / "EP02_01f").glob("*.jpg"), key=lambda f: int(f.stem[3:]))
    video = write_video(frames[:6], tmp_path / "me.avi")
    secret = tmp_path_factory.mktemp("SECRET")  # beside tmp_path: outside the roots
    outside = write_video(frames[:6], secret / "secret.avi")
    with watching(secret) as hits:
        for call in (lambda: access.video_facts(str(outside)), lambda: access.extract_video(str(outside), access.video_events(onset=0, offset=2)),
                     lambda: access.video_events(str(secret / "events.csv"))):
            with pytest.raises(InputError, match=OUTSIDE):
                call()
    assert hits == []
    assert access.video_facts(str(video)) == {"frames": 6, "fps": 30.0, "width": 640, "height": 480}
    events = access.video_events(onset=1, offset=4)
    source = access.extract_video(str(video), events)
    assert source.to_spot == [1] and source.ref.video == str(video.resolve()) and source.ref.fps == 30.0
    assert Path(source.ref.root).parent == access.video_cache() and access.video_cache() in access.allowed_roots()
    dataset = access.open_dataset(source.ref)
    assert dataset.kind == "samm" and [r.clip for r in dataset.annotations.rejected] == ["001_1"]  # no apex: not with "annotated"
    assert [(c.clip, c.onset, c.offset, c.spot) for c in dataset.resolved(AnnotationParams(apex="auto")).annotations.clips] == [("001_1", 1, 4, True)]
    assert access.dataset_name(source.ref) == "me"
    with pytest.raises(InputError, match="inside the dataset folder"):  # the extracted videos are datasets too
        access.export_folder(source.ref.root, str(access.video_cache() / "maps"))
    with pytest.raises(InputError, match="^Video event: onset frame 4 is after offset frame 1"):
        access.video_events(onset=4, offset=1)
    with pytest.raises(InputError, match="not a video's name"):
        access.extract_video(str(tmp_path / "me.txt"), events)
