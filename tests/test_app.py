"""The dashboard, page by page, with Streamlit's AppTest on a small demo dataset.

Every page must render without an exception, react to its widgets, and keep a bad dataset
to an ``st.error`` naming the problem. The processing itself is tested elsewhere; here the
assertions are about what a user sees (and that it equals what the CLI would write).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from sammflow import cache as disk
from sammflow import detect
from sammflow import ui
from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset
from sammflow.export import export_flows
from sammflow.params import AlignParams, GifParams, PipelineParams

from app_helpers import open_page

pytest_plugins = ("app_fixtures",)  # the dashboard's fixtures, kept out of conftest.py
REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
#: The "nothing configured" default demo, made tiny so creating it on first run is quick.
TINY_DEMO = {"subjects": 1, "clips_per_subject": 2, "frames": 8, "width": 960, "height": 540}
TIMEOUT = 120  # first detection imports torch (seconds on a 2-core machine)

# every test here runs the app in AppTest (seconds each): deselected by -m "not slow"
pytestmark = pytest.mark.slow


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def urls(at: AppTest) -> list[str]:
    return [url for image in at.image for url in image.value]


def clips_of(root: Path) -> list[str]:
    return [c.clip for c in read_annotations(root / "samm.csv").clips]


# ---------------------------------------------------------------- overview


def test_overview_summarises_the_dataset(app_env: dict[str, str]) -> None:
    at = open_page()
    assert_clean(at)
    assert at.title[0].value == "Overview"
    assert (metric(at, "Subjects"), metric(at, "Clips"), metric(at, "Ready"), metric(at, "Frames found")) == ("2", "4", "4", "48")
    assert metric(at, "Missing frames") == "0"
    assert len(at.get("plotly_chart")) == 4
    table = at.dataframe[0].value
    assert list(table["clip"]) == clips_of(Path(app_env["SAMMFLOW_DATA"]))
    assert set(table["status"]) == {"ready"}


def test_overview_filters_change_the_table(app_env: dict[str, str]) -> None:
    at = open_page()
    at.multiselect(key="ov_emotion").set_value(["Anger"]).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["emotion"]) == ["Anger"]
    assert "1 of 4 rows" in [c.value for c in at.caption]


def test_overview_lists_problems_with_their_clips(app_env: dict[str, str], broken_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = broken_data / "samm.csv"
    # a row whose apex is after its offset, as 028_4_1 in the real samm.csv
    csv.write_text(csv.read_text() + "011;011_9_9;1;100;300;200;101;Micro - 1/2;4;Anger;3;bad row\r\n")
    monkeypatch.setenv("SAMMFLOW_DATA", str(broken_data))
    monkeypatch.setenv("SAMMFLOW_ANNOTATIONS", str(csv))
    at = open_page()
    assert_clean(at)
    missing_clip = json.loads((broken_data / "ground_truth.json").read_text())["clips"][1]["clip"]
    assert metric(at, "Missing frames") == "1" and metric(at, "Ready") == "3"
    problems = at.dataframe[0].value
    assert "011_9_9" in set(problems["clip"]) and missing_clip in set(problems["clip"])
    assert any("after offset" in p for p in problems["problem"])
    table = at.dataframe[1].value
    assert table.set_index("clip").loc["011_9_9", "status"] == "invalid annotation"
    assert table.set_index("clip").loc[missing_clip, "status"] == "missing frames"


@pytest.mark.slow
def test_overview_does_not_import_torch(app_env: dict[str, str]) -> None:
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()\n"
        "assert not at.exception and at.title[0].value == 'Overview', at.exception\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


# ---------------------------------------------------------------- dataset choice and errors


PAGES = [None, "app_pages/alignment.py", "app_pages/grid.py", "app_pages/flow.py", "app_pages/gifs.py", "app_pages/export.py"]


@pytest.mark.parametrize("page", PAGES, ids=[(p or "overview").removeprefix("app_pages/") for p in PAGES])
def test_missing_dataset_folder_is_an_error_not_an_exception(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             page: str | None) -> None:
    missing = tmp_path / "no" / "such" / "SAMM"
    monkeypatch.setenv("SAMMFLOW_DATA", str(missing))
    at = open_page(page)
    assert not at.exception
    assert len(at.error) == 1 and str(missing) in at.error[0].value and "not found" in at.error[0].value
    assert not at.title  # no page ran on a dataset that cannot be opened


def test_a_folder_without_the_annotated_clips_is_an_error(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_DATA", str(tmp_path))  # an empty folder, with the demo's annotations
    at = open_page()
    assert not at.exception and not at.title
    assert "None of the 4 annotated clips has a folder in" in at.error[0].value and str(tmp_path) in at.error[0].value


def test_bad_paths_typed_in_the_sidebar_are_errors(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))  # paths typed in the page must lie in an allowed root
    at = open_page()
    not_a_table = tmp_path / "notes.csv"
    not_a_table.write_text("hello;world\n1;2\n")
    at.text_input(key="ann").set_value(str(not_a_table)).run()
    assert not at.exception
    assert str(not_a_table) in at.error[0].value and "Filename" in at.error[0].value  # names a missing column
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    at.text_input(key="data").set_value(str(a_file)).run()
    assert not at.exception and "Not a folder" in at.error[0].value and str(a_file) in at.error[0].value
    # back to a good folder: the page comes back
    at.text_input(key="data").set_value(app_env["SAMMFLOW_DATA"])
    at.text_input(key="ann").set_value("").run()
    assert_clean(at)
    assert at.title[0].value == "Overview"


def test_demo_dataset_is_created_on_first_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SAMMFLOW_DATA", "SAMMFLOW_ANNOTATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAMMFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMMFLOW_DEMO_CONFIG", json.dumps(TINY_DEMO))
    at = open_page()
    assert_clean(at)
    assert at.radio(key="source").value == "Demo"
    demos = list((tmp_path / "cache").glob("demo-*"))
    assert len(demos) == 1 and (demos[0] / "samm.csv").is_file()
    assert metric(at, "Clips") == "2" and metric(at, "Frames found") == "16"


# ---------------------------------------------------------------- alignment diagnostics


def test_alignment_page_shows_before_and_after(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/alignment.py")
    assert_clean(at)
    assert len(at.image) == 6 and len(at.get("plotly_chart")) == 2
    assert at.download_button[0].label == "Download figure (PNG)"
    fractions = [float(f) for f in re.findall(r"([\d.]+)% of pixels differ", texts(at))]
    assert len(fractions) == 2 and fractions[1] < fractions[0]  # aligned crops differ less than MTCNN crops

    before = urls(at)
    at.slider(key="thr").set_value(40).run()
    assert_clean(at)
    after = urls(at)
    assert after[:2] == before[:2] and after[2] != before[2]  # same crops, other thresholded difference
    assert float(re.findall(r"([\d.]+)% of pixels differ", texts(at))[0]) < fractions[0]


def test_alignment_view_lives_in_the_url(app_env: dict[str, str]) -> None:
    ann = read_annotations(Path(app_env["SAMMFLOW_DATA"]) / "samm.csv").clips[2]
    query = {"clip": ann.clip, "a": str(ann.onset + 1), "b": str(ann.offset), "thr": "20"}
    at = open_page("app_pages/alignment.py", query)
    assert_clean(at)
    assert at.selectbox(key="clip").value == ann.clip
    assert (at.selectbox(key="a").value, at.selectbox(key="b").value, at.slider(key="thr").value) == (ann.onset + 1, ann.offset, 20)
    assert at.image[1].captions == [f"frame {ann.offset} (offset)"]


def test_the_flag_threshold_changes_the_verdict_without_realigning(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``min_score`` only judges an alignment (outside the parameter hash): moving its slider
    changes the flagged frames, the chart's threshold and the verdict, never the crops."""
    root = Path(app_env["SAMMFLOW_DATA"])
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    ann, frames = dataset.clip(dataset.annotations.clips[1].clip)
    at = open_page("app_pages/alignment.py", {"clip": ann.clip})
    assert_clean(at)
    assert at.success[0].value.startswith(f"All {len(frames.numbers)} frames trusted: score ≥ 0.80")  # the defaults trust the demo
    images = urls(at)
    # what the disk cache holds for this clip (aligned by the page just now): every frame's score
    alignment = disk.aligned_crops(dataset, ann.clip, PipelineParams(), frames.numbers, store=disk.ClipStore(root)).alignment
    strict = AlignParams(min_score=0.999)
    expected = [int(n) for n in alignment.flagged(strict)]
    assert expected and expected == [int(n) for n, s in zip(alignment.frames, alignment.scores) if s < 0.999]
    realigned = []
    real = disk.normalize_clip
    monkeypatch.setattr(disk, "normalize_clip", lambda *args, **kwargs: realigned.append(kwargs.get("numbers")) or real(*args, **kwargs))

    def verdict(at: AppTest) -> str:
        assert_clean(at)
        assert urls(at) == images  # the same crops and differences: nothing was realigned
        assert realigned == []
        return next(w.value for w in at.warning if "flagged" in w.value) if at.warning else at.success[0].value

    at.slider(key="min_score").set_value(0.999).run()
    assert verdict(at) == f"{len(expected)} frame(s) flagged (score < 1.00 or high residual): " + ", ".join(map(str, expected))
    assert "flag below 1.00" in at.get("plotly_chart")[1].proto.spec  # the threshold line moved
    # with the memory caches emptied (a restart), the crops come from the disk cache: still no realignment
    st.cache_data.clear()
    at.slider(key="min_score").set_value(0.5).run()
    assert verdict(at).startswith(f"All {len(frames.numbers)} frames trusted: score ≥ 0.50")
    # a link with the threshold opens the same verdict
    at = open_page("app_pages/alignment.py", {"clip": ann.clip, "min_score": "0.999"})
    assert at.slider(key="min_score").value == 0.999
    assert verdict(at).startswith(f"{len(expected)} frame(s) flagged")


# ---------------------------------------------------------------- grid


def test_grid_shows_one_aligned_tile_per_clip_or_subject(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/grid.py")
    assert_clean(at)
    clips = clips_of(Path(app_env["SAMMFLOW_DATA"]))
    captions = [c for image in at.image for c in image.captions]
    assert [c.split(" · ")[0] for c in captions] == clips and all("onset" in c for c in captions)
    at.radio(key="per").set_value("subject").run()
    assert_clean(at)
    assert len(at.image) == 2
    at.radio(key="frame").set_value("apex").run()
    assert all("apex" in c for image in at.image for c in image.captions)


# ---------------------------------------------------------------- flow samples


def test_flow_map_follows_the_winsize_slider_without_realigning(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/flow.py")
    assert_clean(at)
    assert len(at.image) == 4 + 4  # 4 sample maps + onset, apex, large map, legend
    before = urls(at)
    mean_before = metric(at, "Mean flow (crop px)")
    at.slider(key="winsize").set_value(31).run()
    assert_clean(at)
    after = urls(at)
    assert after[4] == before[4]  # the aligned onset crop is reused
    assert after[6] != before[6] and after[:4] != before[:4]  # the large map and the samples are recomputed
    assert metric(at, "Mean flow (crop px)") != mean_before


def test_flow_filters_and_resample(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/flow.py")
    at.multiselect(key="emotions").set_value(["Anger"]).run()
    assert_clean(at)
    assert at.image[0].captions[0].split(" · ")[1] == "Anger"
    assert at.subheader[0].value == "1 of 1 clips"
    at.multiselect(key="emotions").set_value([])
    at.multiselect(key="aus").set_value([12]).run()  # smile, and brows down + smile
    assert at.subheader[0].value == "2 of 2 clips"
    seed = at.number_input(key="seed").value
    at.button(key="resample").click().run()
    assert at.number_input(key="seed").value != seed


def test_flow_view_lives_in_the_url(app_env: dict[str, str]) -> None:
    clip = clips_of(Path(app_env["SAMMFLOW_DATA"]))[3]
    at = open_page("app_pages/flow.py", {"clip": clip, "winsize": "21", "map_size": "32"})
    assert_clean(at)
    assert at.selectbox(key="clip").value == clip and at.slider(key="winsize").value == 21
    assert "flow map (32×32)" in at.image[6].captions


def test_flow_page_reads_crops_from_disk_after_a_restart(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    open_page("app_pages/flow.py")  # warm the disk cache
    st.cache_data.clear()  # a restarted server has empty memory caches

    def no_detector(*args: object, **kwargs: object) -> None:
        raise AssertionError("MTCNN must not run: the boxes are on disk")

    monkeypatch.setattr(detect, "load_detector", no_detector)  # the one way to MTCNN (process-wide lru_cache)
    at = open_page("app_pages/flow.py")
    assert_clean(at)
    assert len(at.image) == 8


# ---------------------------------------------------------------- GIFs


def test_gif_page_animates_chosen_clips(app_env: dict[str, str]) -> None:
    ann = read_annotations(Path(app_env["SAMMFLOW_DATA"]) / "samm.csv").clips[0]
    at = open_page("app_pages/gifs.py", {"gif_clips": ann.clip})
    assert_clean(at)
    assert len(at.image) == 2 and at.image[0].value[0].endswith(".gif")
    frames = ann.apex - ann.onset + 1
    assert at.image[0].captions[0].startswith(f"{frames} frames, onset {ann.onset} → apex {ann.apex}")
    at.slider(key="step").set_value(2).run()
    assert at.image[0].captions[0].startswith(f"{len(range(ann.onset, ann.apex + 1, 2)) + (frames % 2 == 0)} frames")
    at.toggle(key="offset").set_value(True).run()
    assert_clean(at)
    assert f"→ offset {ann.offset}" in at.image[0].captions[0]
    assert [b.label for b in at.download_button] == ["Download GIF", "Download map (PNG)"]


def test_gif_is_animated_at_display_size(app_env: dict[str, str]) -> None:
    ref = ui.DatasetRef(app_env["SAMMFLOW_DATA"], app_env["SAMMFLOW_ANNOTATIONS"])
    ctx = ui.Context(ref, ui.open_dataset(ref), PipelineParams())
    ann = ctx.dataset.annotations.clips[1]
    data, count = ui.gif(ctx, ann.clip, GifParams(size=160, step=1))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "GIF" and image.size == (160, 160)
        assert image.n_frames == count == ann.apex - ann.onset + 1


def test_reset_parameters_restores_the_defaults(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/flow.py", {"winsize": "31", "levels": "5"})
    assert at.slider(key="winsize").value == 31
    at.button(key="reset_params").click().run()
    assert_clean(at)
    assert (at.slider(key="winsize").value, at.slider(key="levels").value) == (15, 3)


# ---------------------------------------------------------------- batch export


@pytest.mark.slow
def test_export_writes_what_the_cli_writes(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))  # the output folder typed in the page must lie in an allowed root
    at = open_page("app_pages/export.py")
    assert_clean(at)
    out = tmp_path / "OUT"
    at.text_input(key="out_dir").set_value(str(out)).run()
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok")
    assert [b.label for b in at.download_button] == ["Download maps + manifest + params (zip)"]
    assert json.loads((out / "params.json").read_text())["params_hash"] == PipelineParams().hash
    root = Path(app_env["SAMMFLOW_DATA"])
    reference = export_flows(load_dataset(root, read_annotations(root / "samm.csv")), tmp_path / "CLI")
    assert reference.ok == 4
    for row in reference.rows:
        assert (out / row["output"]).read_bytes() == (tmp_path / "CLI" / row["output"]).read_bytes()
    ours, cli = (list(csv.DictReader((folder / "manifest.csv").open())) for folder in (out, tmp_path / "CLI"))
    assert list(ours[0]) == list(cli[0])  # same columns
    for mine, theirs in zip(ours, cli, strict=True):
        assert mine == theirs, {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


@pytest.mark.slow
def test_export_goes_on_after_a_failing_clip(app_env: dict[str, str], broken_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_DATA", str(broken_data))
    monkeypatch.setenv("SAMMFLOW_ANNOTATIONS", str(broken_data / "samm.csv"))
    monkeypatch.setenv("SAMMFLOW_OUT", str(tmp_path / "OUT"))
    at = open_page("app_pages/export.py")
    at.button(key="run_export").click().run()
    assert not at.exception
    assert at.warning[0].value.startswith("3 of 4 clips ok, 1 failed")
    rows = at.dataframe[0].value
    failed = rows[rows["status"] == "failed"]
    cause = failed["cause"].iloc[0]
    assert len(failed) == 1 and cause.startswith(failed["clip"].iloc[0]) and "apex frame" in cause and "not on disk" in cause
    assert len(list((tmp_path / "OUT" / "flows").glob("*.png"))) == 3


def test_export_refuses_a_folder_inside_the_dataset(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/export.py")
    inside = Path(app_env["SAMMFLOW_DATA"]) / "maps"
    at.text_input(key="out_dir").set_value(str(inside)).run()
    at.button(key="run_export").click().run()
    assert not at.exception
    assert str(inside) in at.error[0].value and "inside the dataset" in at.error[0].value
    assert not inside.exists()
