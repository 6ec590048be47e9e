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
import random
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from sammflow import cache as disk
from sammflow import access, cluster, detect, export, export_choices, figures, tables, tiles, ui
from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset
from sammflow.export import export_flows
from sammflow.params import PRESETS, AlignParams, AnnotationParams, GifParams, PipelineParams
from sammflow.pipeline import spot_clip

from app_helpers import OUTSIDE, open_page, watching, write_video

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


def test_overview_filters_live_in_the_link(app_env: dict[str, str]) -> None:
    """Issue 10.18: the four filters are bound to the URL like every other page's choices."""
    at = open_page(None, {"ov_emotion": ["Anger", "Surprise"], "ov_status": "ready"})
    assert_clean(at)
    assert at.multiselect(key="ov_emotion").value == ["Anger", "Surprise"] and at.multiselect(key="ov_status").value == ["ready"]
    assert sorted(at.dataframe[0].value["emotion"]) == ["Anger", "Surprise"] and "2 of 4 rows" in [c.value for c in at.caption]
    subject = at.dataframe[0].value["subject"].iloc[0]
    at = open_page(None, {"ov_subject": subject, "ov_class": ["3", "7"]})  # (the browser writes the URL: tests/test_browser.py)
    assert_clean(at)
    assert set(at.dataframe[0].value["subject"]) == {subject} and set(at.dataframe[0].value["objective class"]) <= {"3", "7"}
    # a value the dataset does not have is ignored visibly
    at = open_page(None, {"ov_class": "../../etc"})
    assert not at.exception and at.multiselect(key="ov_class").value == []
    assert "Ignored from the link: ov_class = `../../etc`" in at.warning[0].value


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


def test_closing_the_tab_does_not_lose_the_demo_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.18: the first run's generation goes on when its tab is closed, and a tab opened
    meanwhile shows it finishing instead of starting over."""
    for name in ("SAMMFLOW_DATA", "SAMMFLOW_ANNOTATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAMMFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMMFLOW_DEMO_CONFIG", json.dumps(TINY_DEMO))
    gate, calls = threading.Event(), []
    real = access.generate_demo

    def slow(*args: object, **kwargs: object) -> Path:
        calls.append(args[0])
        assert gate.wait(60), "never released"
        return real(*args, **kwargs)

    monkeypatch.setattr(access, "generate_demo", slow)
    first = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    with pytest.raises(RuntimeError, match="timed out"):
        first.run(timeout=5)  # AppTest stops the script, as closing the tab does
    assert len(calls) == 1 and not first.title  # the first tab only saw the progress
    build = access.demo_build(access.demo_config())
    assert build is not None and not build.finished  # still running, on its own
    threading.Timer(1.0, gate.set).start()
    second = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()  # reopened while it runs
    assert_clean(second)
    assert len(calls) == 1  # not started over
    assert metric(second, "Clips") == "2" and metric(second, "Frames found") == "16"
    assert build.finished and build.error is None and access.demo_build(access.demo_config()) is None
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".demo")] == []  # nothing half-built left


def test_a_failed_demo_generation_is_an_error_and_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SAMMFLOW_DATA", "SAMMFLOW_ANNOTATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAMMFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMMFLOW_DEMO_CONFIG", json.dumps(TINY_DEMO))
    calls = []

    def full(*args: object, **kwargs: object) -> Path:
        calls.append(args[0])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(access, "generate_demo", full)
    at = open_page()
    assert not at.exception and not at.title
    assert at.error[0].value.startswith(f"Cannot create the demo dataset in {tmp_path / 'cache'}: [Errno 28] No space left on device.")
    at.run()
    assert len(calls) == 2  # a failure is not remembered: the next run tries again


# ---------------------------------------------------------------- alignment diagnostics


def test_alignment_page_shows_before_and_after(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/alignment.py")
    assert_clean(at)
    assert len(at.image) == 6 and len(at.get("plotly_chart")) == 3  # face position, quality, motion
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
    scores = dict(zip(alignment.frames.tolist(), alignment.scores.tolist()))
    listed = "\n".join(f"- frame {n}: score {scores[n]:.3f} < 0.999" for n in expected[:12])  # 3 decimals: 2 would read "1.00 < 1.00"
    more = f"\n- … and {len(expected) - 12} more (in the chart)" if len(expected) > 12 else ""
    assert verdict(at) == f"{len(expected)} frame(s) flagged (limits: score ≥ 0.999, residual ≤ 0.2 px):\n\n{listed}{more}"
    notes = [a.get("text", "") for a in json.loads(at.get("plotly_chart")[1].proto.spec)["layout"].get("annotations", [])]
    assert any("flag below" in t and "1.00" in t for t in notes), notes  # the threshold line moved
    # with the memory caches emptied (a restart), the crops come from the disk cache: still no realignment
    st.cache_data.clear()
    at.slider(key="min_score").set_value(0.5).run()
    assert verdict(at).startswith(f"All {len(frames.numbers)} frames trusted: score ≥ 0.50")
    # a link with the threshold opens the same verdict
    at = open_page("app_pages/alignment.py", {"clip": ann.clip, "min_score": "0.999"})
    assert at.slider(key="min_score").value == 0.999
    assert verdict(at).startswith(f"{len(expected)} frame(s) flagged")


def test_each_flagged_frame_says_which_limit_it_broke(app_env: dict[str, str]) -> None:
    """Issue 10.18: "frame N: residual 0.31 > 0.10 px" (whole-pixel alignment leaves up to half a
    pixel, so the residual limit bites), "score 0.71 < 0.80" where the score is low too."""
    root = Path(app_env["SAMMFLOW_DATA"])
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    ann, frames = dataset.clip(dataset.annotations.clips[0].clip)
    at = open_page("app_pages/alignment.py", {"clip": ann.clip, "method": "whole_pixel", "max_residual": "0.1", "min_score": "0.97"})
    assert_clean(at)
    params = PipelineParams.from_dict({"align": {"method": "whole_pixel"}})
    alignment = disk.aligned_crops(dataset, ann.clip, params, frames.numbers, store=disk.ClipStore(root)).alignment
    truth = {int(n): (float(s), float(r)) for n, s, r in zip(alignment.frames, alignment.scores, alignment.residuals)}
    flagged = [n for n, (s, r) in truth.items() if s < 0.97 or r > 0.1]
    assert any(r > 0.1 for _, r in truth.values()), truth  # the case this test is about occurs
    warning = next(w.value for w in at.warning if "flagged" in w.value)
    assert warning.startswith(f"{len(flagged)} frame(s) flagged (limits: score ≥ 0.97, residual ≤ 0.1 px):\n\n")
    lines = {int(m.group(1)): m.group(2) for m in re.finditer(r"^- frame (\d+): (.*)$", warning, re.M)}
    assert list(lines) == flagged[:12]
    for n, text in lines.items():
        score, residual = truth[n]
        parts = dict(re.findall(r"(score|residual) ([\d.]+) [<>]", text))
        assert ("score" in parts) == (score < 0.97) and ("residual" in parts) == (residual > 0.1), (n, text)
        if "score" in parts:
            assert abs(float(parts["score"]) - score) < 0.005 and "< 0.97" in text
        if "residual" in parts:
            assert abs(float(parts["residual"]) - residual) < 0.005 and text.endswith("> 0.10 px")


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


def test_the_grid_is_kept_whole_and_fills_the_disk_cache(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: run again, the grid reads no file (it is held in memory as drawn); its boxes
    and crops are in the disk cache, so after a restart no face is detected again."""
    st.cache_data.clear()
    at = open_page("app_pages/grid.py", {"frame": "apex"})
    assert_clean(at)
    shown = urls(at)
    with watching(Path(app_env["SAMMFLOW_CACHE"])) as reads:
        at.run()
    assert_clean(at)
    assert reads == [] and len(urls(at)) == len(shown) == 4
    assert [b.label for b in at.download_button] == ["Download grid (PNG)"]
    st.cache_data.clear()  # a restarted server
    monkeypatch.setattr(detect, "load_detector", lambda *args: pytest.fail("the boxes are on disk"))
    at = open_page("app_pages/grid.py", {"frame": "apex"})
    assert_clean(at)
    assert [image.captions[0] for image in at.image] == [f"{c.clip} · apex {c.apex}" for c in
                                                          read_annotations(Path(app_env["SAMMFLOW_DATA"]) / "samm.csv").clips]
    at.switch_page("app_pages/flow.py").run()  # the apex crops the grid made are the flow page's too
    assert_clean(at)


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


def _large(at: AppTest) -> str:
    """The clip shown large: its box, checked against the large view's own caption."""
    clip = at.selectbox(key="clip").value
    assert at.image[len(at.image) - 4].captions[0].startswith("aligned onset (frame ")
    return clip


def _tiles(at: AppTest) -> list[str]:
    return [image.captions[0].split(" · ")[0] for image in at.image[:len(at.image) - 4]]


def test_the_large_view_follows_a_resample_unless_a_clip_was_picked(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.18: after *Re-sample* the large clip is the new sample's first; a clip the user
    picked (box, a tile's *Open large*, a link) stays."""
    at = open_page("app_pages/flow.py")
    assert_clean(at)
    first = _tiles(at)
    assert _large(at) == first[0]
    clips = clips_of(Path(app_env["SAMMFLOW_DATA"]))
    seeds = iter(s for s in range(1, 500) if tables.sample(clips, s)[0] not in (first[0],))
    seed = next(seeds)
    monkeypatch.setattr(random, "randrange", lambda *args: seed)
    at.button(key="resample").click().run()
    assert_clean(at)
    assert at.number_input(key="seed").value == seed and _tiles(at) == tables.sample(clips, seed)
    assert _large(at) == _tiles(at)[0] != first[0]  # followed the sample
    assert at.query_params["clip"] == _large(at)  # the link follows too
    # picked in the box: stays through a re-sample
    picked = next(c for c in clips if c != _tiles(at)[0])
    at.selectbox(key="clip").set_value(picked).run()
    other = next(s for s in range(1, 500) if tables.sample(clips, s)[0] not in (picked, _tiles(at)[0]))
    monkeypatch.setattr(random, "randrange", lambda *args: other)
    at.button(key="resample").click().run()
    assert_clean(at)
    assert _tiles(at)[0] != picked and _large(at) == picked


def test_a_tile_opens_large(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page("app_pages/flow.py")
    tiles = _tiles(at)
    assert [b.label for b in at.button if b.key and b.key.startswith("large_")] == ["Open large"] * len(tiles)
    assert at.button(key=f"large_{tiles[0]}").disabled and not at.button(key=f"large_{tiles[2]}").disabled
    at.button(key=f"large_{tiles[2]}").click().run()
    assert_clean(at)
    assert _large(at) == tiles[2] and at.button(key=f"large_{tiles[2]}").disabled
    ann = read_annotations(Path(app_env["SAMMFLOW_DATA"]) / "samm.csv").by_clip[tiles[2]]
    assert at.image[len(at.image) - 4].captions[0] == f"aligned onset (frame {ann.onset})"
    seed = next(s for s in range(1, 500) if tables.sample(clips_of(Path(app_env["SAMMFLOW_DATA"])), s)[0] != tiles[2])
    monkeypatch.setattr(random, "randrange", lambda *args: seed)
    at.button(key="resample").click().run()
    assert _large(at) == tiles[2]  # opened large = picked: a re-sample keeps it


def test_a_linked_large_clip_stays_through_a_resample(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A link naming another clip than its sample's first is a pick; one naming the first (what a
    link copied before any pick holds) still follows."""
    clips = clips_of(Path(app_env["SAMMFLOW_DATA"]))
    first = tables.sample(clips, 0)[0]
    picked = next(c for c in clips if c != first)
    seed = next(s for s in range(1, 500) if tables.sample(clips, s)[0] not in (first, picked))
    monkeypatch.setattr(random, "randrange", lambda *args: seed)
    for linked, after in ((picked, picked), (first, tables.sample(clips, seed)[0])):
        at = open_page("app_pages/flow.py", {"clip": linked})
        assert _large(at) == linked
        at.button(key="resample").click().run()
        assert_clean(at)
        assert _large(at) == after, linked


def test_flows_are_computed_again_only_when_an_active_flow_parameter_changes(app_env: dict[str, str],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: the flow fields are kept by crops + the flow parameters active under the method;
    the maps are encoded from them. A map parameter, or a parameter of another method, computes
    no flow (TV-L1: a second a pair)."""
    st.cache_data.clear()
    computed: list[str] = []
    real = tiles.compute_flows

    def compute_flows(pairs, params, **kwargs):
        computed.append(f"{params.method} {len(pairs)}")
        return real(pairs, params, **kwargs)

    monkeypatch.setattr(tiles, "compute_flows", compute_flows)
    at = open_page("app_pages/flow.py")
    assert_clean(at) and computed == ["farneback 4"]  # the 4 clips of the sample; the large one is among them
    maps = urls(at)
    for key, value in (("map_scale", "minmax"), ("map_size", 32), ("map_channels", "uvs")):
        at.sidebar.selectbox(key=key).set_value(value).run()
        assert_clean(at)
    assert computed == ["farneback 4"] and urls(at)[:4] != maps[:4]  # new maps, from the same flows
    at.sidebar.selectbox(key="flow_method").set_value("dis").run()
    at.sidebar.selectbox(key="flow_method").set_value("farneback").run()  # back: its flows are still there
    assert computed == ["farneback 4", "dis 4"]
    at.sidebar.slider(key="winsize").set_value(21).run()
    at.sidebar.selectbox(key="flow_method").set_value("dis").run()  # the window size is Farnebäck's: DIS's flows stand
    assert_clean(at)
    assert computed == ["farneback 4", "dis 4", "farneback 4"]


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
    assert [b.label for b in at.download_button] == ["Download GIF", "Download map (PNG)", "Download map for slides (PNG)", "Download slide figure (PNG)"]


def test_gif_is_animated_at_display_size(app_env: dict[str, str]) -> None:
    ref = ui.DatasetRef(app_env["SAMMFLOW_DATA"], app_env["SAMMFLOW_ANNOTATIONS"])
    ctx = ui.Context(ref, ui.open_dataset(ref), PipelineParams())
    ann = ctx.dataset.annotations.clips[1]
    data, count = ui.gif(ctx, ann.clip, GifParams(size=160, step=1))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "GIF" and image.size == (160, 160)
        assert image.n_frames == count == ann.apex - ann.onset + 1


def test_gifs_carry_frame_labels_unless_turned_off(app_env: dict[str, str]) -> None:
    ref = ui.DatasetRef(app_env["SAMMFLOW_DATA"], app_env["SAMMFLOW_ANNOTATIONS"])
    ctx = ui.Context(ref, ui.open_dataset(ref), PipelineParams())
    clip = ctx.dataset.annotations.clips[0].clip
    labelled, plain = (ui.gif(ctx, clip, GifParams(size=160, labels=labels))[0] for labels in (True, False))
    with Image.open(io.BytesIO(labelled)) as a, Image.open(io.BytesIO(plain)) as b:
        corner = (0, 0, 40, 12)  # "frame N", white on black, top left
        assert a.convert("L").crop(corner).tobytes() != b.convert("L").crop(corner).tobytes()
    at = open_page("app_pages/gifs.py", {"gif_clips": clip, "gif_labels": "false"})
    assert_clean(at)
    assert at.toggle(key="gif_labels").value is False


def test_the_slide_figure_of_each_clip(app_env: dict[str, str]) -> None:
    """Issue 10.17: per clip, a download of onset, apex, arrows, map and legend side by side
    (``sammflow.figures.clip_figure``), with the sidebar's encoding."""
    clips = clips_of(Path(app_env["SAMMFLOW_DATA"]))
    at = open_page("app_pages/gifs.py", {"gif_clips": clips[:2]})
    assert_clean(at)
    slides = [b for b in at.download_button if b.label == "Download slide figure (PNG)"]
    assert [b.key for b in slides] == [f"slide_{c}" for c in clips[:2]]
    ref = ui.DatasetRef(app_env["SAMMFLOW_DATA"], app_env["SAMMFLOW_ANNOTATIONS"])
    ctx = ui.Context(ref, ui.open_dataset(ref), PipelineParams())
    slide = figures.clip_figure(ui.flow(ctx, clips[0]), params=ctx.params.encode)
    assert slide.ndim == 3 and slide.shape[1] > 3 * slide.shape[0]  # one row of five tiles


def test_all_gifs_as_one_zip_with_progress_and_a_bound(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.17: the chosen clips' or all ready clips' GIFs in one zip, bounded."""
    clips = clips_of(Path(app_env["SAMMFLOW_DATA"]))
    ref = ui.DatasetRef(app_env["SAMMFLOW_DATA"], app_env["SAMMFLOW_ANNOTATIONS"])
    ctx = ui.Context(ref, ui.open_dataset(ref), PipelineParams())
    params = GifParams(size=160, step=2)
    calls = []
    made = ui.gif_zip(ctx, clips, params, progress=lambda done, total, clip: calls.append((done, total, clip)))
    assert made.included == tuple(clips) and made.failed == () and made.left_out == ()
    assert calls == [(i, 4, c) for i, c in enumerate(clips)] + [(4, 4, "")]
    with zipfile.ZipFile(io.BytesIO(made.data)) as archive:
        names = archive.namelist()
        assert names == [f"sub{ctx.dataset.annotations.by_clip[c].subject}_{c}.gif" for c in clips]
        assert archive.read(names[1]) == ui.gif(ctx, clips[1], params)[0]  # the page's own GIF, byte for byte
    # the bound: clips past it are named, never silently dropped
    bound = ui.MAX_ZIP_BYTES
    monkeypatch.setattr(ui, "MAX_ZIP_CLIPS", 3)
    made = ui.gif_zip(ctx, clips, params)
    assert made.included == tuple(clips[:3]) and made.left_out == (clips[3],)
    monkeypatch.setattr(ui, "MAX_ZIP_BYTES", len(ui.gif(ctx, clips[0], params)[0]) + 1)
    made = ui.gif_zip(ctx, clips, params)
    assert made.included == (clips[0],) and made.left_out == tuple(clips[1:])
    # on the page
    monkeypatch.setattr(ui, "MAX_ZIP_BYTES", bound)
    at = open_page("app_pages/gifs.py", {"gif_clips": clips[0], "step": "2", "gif_size": "160"})
    assert at.button(key="zip_prepare").label == "Prepare zip of 1 GIFs"
    at.radio(key="zip_scope").set_value("all ready").run()
    assert at.button(key="zip_prepare").label == "Prepare zip of 3 GIFs"
    at.button(key="zip_prepare").click().run()
    assert_clean(at)
    assert at.download_button(key="zip_download").label.startswith("Download 3 GIFs (zip, ")
    assert "1 clip(s) not in the zip (the limit of 3 clips" in at.warning[0].value and clips[3] in at.warning[0].value
    at.slider(key="fps").set_value(20).run()
    assert "(made with other clips or settings: prepare it again)" in at.download_button(key="zip_download").label


def test_a_failing_clip_is_named_in_the_gif_zip(app_env: dict[str, str], broken_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_DATA", str(broken_data))
    ref = ui.DatasetRef(str(broken_data), str(broken_data / "samm.csv"))
    ctx = ui.Context(ref, ui.open_dataset(ref), PipelineParams())
    clips = clips_of(broken_data)
    made = ui.gif_zip(ctx, clips, GifParams(size=160))
    assert made.included == (clips[0], *clips[2:]) and len(made.failed) == 1
    apex = read_annotations(broken_data / "samm.csv").by_clip[clips[1]].apex
    assert made.failed[0].startswith(f"{clips[1]}: ") and str(apex) in made.failed[0]  # names the clip and the missing frame


def test_reset_parameters_restores_the_defaults(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/flow.py", {"winsize": "31", "levels": "5"})
    assert at.slider(key="winsize").value == 31
    at.button(key="reset_params").click().run()
    assert_clean(at)
    assert (at.slider(key="winsize").value, at.slider(key="levels").value) == (15, 3)
    assert at.query_params.get("winsize", "15") == "15"  # the link says the default, or nothing


#: What Streamlit logs (once per process, with a stack trace) when a widget gets a default
#: argument and a value set through its key.
DUPLICATE_STATE_WARNING = "was created with a default value but also had its value set via the Session State API"


def test_reset_parameters_logs_no_streamlit_warning(app_env: dict[str, str]) -> None:
    """Issue 10.18: in a fresh process (Streamlit logs the warning once per process), every
    use of *Reset parameters* and of the pages' programmatic choices leaves the log clean."""
    script = (
        "from app_helpers import open_page\n"
        "at = open_page('app_pages/flow.py', {'winsize': '31', 'levels': '5', 'method': 'whole_pixel', 'robust': 'false'})\n"
        "at.button(key='reset_params').click().run()\n"
        "assert at.slider(key='winsize').value == 15 and at.selectbox(key='method').value == 'subpixel', at.slider(key='winsize').value\n"
        "assert at.toggle(key='robust').value is True\n"
        "at.slider(key='winsize').set_value(21).run()\n"
        "at.button(key='reset_params').click().run()\n"
        "at.button(key='resample').click().run()\n"
        "at.switch_page('app_pages/export.py').run()\n"
        "at.slider(key='winsize').set_value(25).run()\n"
        "assert not at.exception, at.exception\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("done"), done.stderr[-3000:]
    assert DUPLICATE_STATE_WARNING not in done.stderr, done.stderr[-3000:]
    assert "Stack (most recent call last)" not in done.stderr, done.stderr[-3000:]


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
    assert [b.label for b in at.download_button] == ["Download maps + manifest + params (zip)", "Download report (HTML)"]
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
    # $SAMMFLOW_OUT is the base: the export went to the dataset's and parameters' own folder in it
    assert len(list((tmp_path / "OUT" / f"BROKEN-{PipelineParams().hash}" / "flows").glob("*.png"))) == 3


def test_export_refuses_a_folder_inside_the_dataset(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/export.py")
    inside = Path(app_env["SAMMFLOW_DATA"]) / "maps"
    at.text_input(key="out_dir").set_value(str(inside)).run()
    assert not at.exception
    assert str(inside) in at.error[0].value and "inside the dataset" in at.error[0].value
    assert not [b for b in at.button if b.key in ("run_export", "export_replace", "export_new_folder")]  # nothing to click
    assert not inside.exists()


def test_the_export_page_checks_its_dask_scheduler_field(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: a value that is no scheduler is an error naming the field, with nothing to click;
    an unreachable scheduler is an error once the export runs (not a hang), and nothing is written."""
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)  # nothing listens on port 1: wait half a second, not ten
    out = tmp_path / "maps"
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(out)).run()
    at.text_input(key="export_scheduler").set_value("nonsense").run()
    assert not at.exception
    assert at.error[0].value.startswith("Dask scheduler 'nonsense': not a Dask scheduler address (tcp://HOST:PORT")
    assert not [b for b in at.button if b.key == "run_export"]
    at.text_input(key="export_scheduler").set_value("local:100000").run()
    assert at.error[0].value.startswith("Dask scheduler local:100000: more worker processes than the ")
    at.text_input(key="export_scheduler").set_value("tcp://127.0.0.1:1").run()
    assert_clean(at)
    at.button(key="run_export").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["cannot reach the Dask scheduler at tcp://127.0.0.1:1: Timed out trying to connect to "
                                           "tcp://127.0.0.1:1 after 0.5 s"]
    assert not out.exists()


def test_the_export_page_runs_on_a_local_dask_cluster(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: with *Dask scheduler* ``local:1`` the page exports on a local cluster: the same maps."""
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(tmp_path / "maps")).run()
    at.text_input(key="export_scheduler").set_value("local:1").run()
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok")
    root = Path(app_env["SAMMFLOW_DATA"])
    reference = export_flows(load_dataset(root, read_annotations(root / "samm.csv")), tmp_path / "local")
    assert {r["output"]: (tmp_path / "maps" / r["output"]).read_bytes() for r in reference.rows} == {
        r["output"]: (tmp_path / "local" / r["output"]).read_bytes() for r in reference.rows}


def page_text(at: AppTest) -> str:
    return "\n".join(e.value for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success]
                     ) + "\n".join(b.label for b in at.button)


def test_the_default_export_folder_is_per_dataset_and_parameters(app_env: dict[str, str], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.15: a second dataset or parameter set gets a folder of its own, never the first one's."""
    monkeypatch.setenv("SAMMFLOW_OUT", str(tmp_path / "exports"))
    at = open_page("app_pages/export.py")
    assert_clean(at)
    name = Path(app_env["SAMMFLOW_DATA"]).name
    first = tmp_path / "exports" / f"{name}-{PipelineParams().hash}"
    assert at.text_input(key="out_dir").value == str(first)
    assert at.button(key="run_export").label == "Export 4 clips"
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok") and len(list((first / "flows").glob("*.png"))) == 4
    # other parameters: another default folder, new, so no refusal and no choice to make
    at.slider(key="winsize").set_value(21).run()
    second = tmp_path / "exports" / f"{name}-{at.session_state['out_dir'].rsplit('-', 1)[1]}"
    assert at.text_input(key="out_dir").value == str(second) != str(first)
    assert second.name.endswith(PipelineParams.from_dict({"flow": {"winsize": 21}}).hash)
    assert at.button(key="run_export").label == "Export 4 clips"
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert json.loads((second / "params.json").read_text())["params"]["flow"]["winsize"] == 21
    assert json.loads((first / "params.json").read_text())["params"]["flow"]["winsize"] == 15  # untouched
    # a folder the user typed stays typed when the parameters change
    typed = str(tmp_path / "exports" / "mine")
    at.text_input(key="out_dir").set_value(typed).run()
    at.slider(key="winsize").set_value(15).run()
    assert at.text_input(key="out_dir").value == typed


def test_the_export_page_offers_resume_replace_and_a_new_folder(app_env: dict[str, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.15: an earlier export in the folder is resumed, replaced (saying what is
    deleted) or kept (a new folder) by explicit choices worded for the page: no "--force"."""
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))
    out = tmp_path / "maps"
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(out)).run()
    assert f"`{out}` is new" in page_text(at)
    at.button(key="run_export").click().run()
    assert_clean(at)
    maps = {p.name: p.read_bytes() for p in (out / "flows").glob("*.png")}
    assert len(maps) == 4
    # the same parameters: resume (or start over)
    assert "holds an earlier export of these parameters: 4 of 4 clips are done" in at.info[0].value
    assert (at.button(key="run_export").label, at.button(key="export_restart").label) == ("Resume: compute 0, keep 4", "Start over: recompute all 4")
    (out / "flows" / sorted(maps)[0]).unlink()  # one map lost: resume computes it alone
    at.run()
    assert at.button(key="run_export").label == "Resume: compute 1, keep 3"
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok (3 kept from the earlier export)")
    assert {p.name: p.read_bytes() for p in (out / "flows").glob("*.png")} == maps
    # other parameters: the page says what replacing deletes; no command-line flag anywhere
    at.slider(key="winsize").set_value(21).run()
    assert_clean(at)
    warning = at.warning[0].value
    assert f"`{out}` holds an export made with other parameters (flow.winsize 15 → 21)" in warning
    assert "*Replace* deletes its 4 flow maps (" in warning and "`alignment.csv`" in warning and "keeps any other file" in warning
    assert "--force" not in page_text(at)
    assert at.button(key="export_replace").label == "Replace: delete 4 maps, export"
    assert at.button(key="export_new_folder").label == "Export to a new folder: maps-2"
    # keep it: a new folder, which the field then shows
    at.button(key="export_new_folder").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok") and at.text_input(key="out_dir").value == str(out.with_name("maps-2"))
    assert json.loads((out.with_name("maps-2") / "params.json").read_text())["params"]["flow"]["winsize"] == 21
    assert {p.name: p.read_bytes() for p in (out / "flows").glob("*.png")} == maps  # the earlier export is untouched
    # replace it
    at.text_input(key="out_dir").set_value(str(out)).run()
    at.button(key="export_replace").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok") and "4 maps of other parameters deleted first" in at.success[0].value
    assert json.loads((out / "params.json").read_text())["params"]["flow"]["winsize"] == 21
    replaced = {p.name: p.read_bytes() for p in (out / "flows").glob("*.png")}
    assert replaced.keys() == maps.keys() and replaced != maps
    assert "holds an earlier export of these parameters: 4 of 4" in at.info[0].value


def test_a_refusal_that_arrives_anyway_is_worded_for_the_page(app_env: dict[str, str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session exports other parameters into the folder between the page's look at it
    and the job's start: the job's refusal is shown worded for the page, without "--force"."""
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))
    out = tmp_path / "race"
    root = Path(app_env["SAMMFLOW_DATA"])
    real = export_choices.export_plan
    armed = []

    def racing(*args: object, **kwargs: object) -> export_choices.ExportPlan:
        plan = real(*args, **kwargs)
        if armed:  # right after the page looked: the other session's export lands
            armed.clear()
            export_flows(load_dataset(root, read_annotations(root / "samm.csv")), out, params=PipelineParams.from_dict({"flow": {"winsize": 9}}),
                         boxes=disk.ClipStore(root))
        return plan

    monkeypatch.setattr(export_choices, "export_plan", racing)
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(out)).run()
    assert at.button(key="run_export").label == "Export 4 clips"
    armed.append(True)
    at.button(key="run_export").click().run()
    assert not at.exception and not at.success and len(at.error) == 1
    message = at.error[0].value
    assert message.startswith(f"{out}: made with other parameters (flow.winsize 9 → 15)") and "*Replace*" in message
    assert "--force" not in page_text(at)
    assert json.loads((out / "params.json").read_text())["params"]["flow"]["winsize"] == 9  # the other export is intact


# ---------------------------------------------------------------- model-ready features (issue 11)


def sidebar_text(at: AppTest) -> str:
    return "\n".join(c.value for c in at.sidebar.caption)


def page_params(at: AppTest) -> PipelineParams:
    """The parameters the sidebar built in this run (what every page computes with)."""
    return at.session_state["_sammflow_context"].params


def test_a_preset_sets_every_flow_and_map_widget(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/flow.py", {"winsize": "21"})
    assert at.selectbox(key="preset").value == "seed" and page_params(at).preset == "seed"
    assert "changed from preset: flow.winsize" in sidebar_text(at)
    at.selectbox(key="preset").set_value("ststnet").run()
    assert_clean(at)
    assert (at.selectbox(key="flow_method").value, at.selectbox(key="map_channels").value) == ("tvl1", "uvs")
    params = page_params(at)
    assert params.preset == "ststnet" and params.hash == PipelineParams.from_preset("ststnet").hash and params.preset_changes() == []
    assert PRESETS["ststnet"].title in sidebar_text(at) and "changed from preset" not in sidebar_text(at)
    # changed after choosing it: listed
    at.slider(key="tvl1_lambda").set_value(0.3).run()
    assert_clean(at)
    assert page_params(at).preset_changes() == ["flow.tvl1_lambda"] and "changed from preset: flow.tvl1_lambda" in sidebar_text(at)
    # *Reset parameters* goes back to the preset's values, keeping the preset
    at.button(key="reset_params").click().run()
    assert (at.slider(key="tvl1_lambda").value, at.selectbox(key="flow_method").value) == (0.15, "tvl1")
    assert page_params(at).preset_changes() == [] and at.selectbox(key="preset").value == "ststnet"
    at.slider(key="tvl1_lambda").set_value(0.3).run()
    # back to seed: every flow and map widget is reset, the Farnebäck ones included (winsize was 21)
    at.selectbox(key="preset").set_value("seed").run()
    assert_clean(at)
    assert (at.selectbox(key="flow_method").value, at.selectbox(key="map_channels").value, at.slider(key="winsize").value) == (
        "farneback", "hsv", 15)
    assert page_params(at).hash == PipelineParams().hash and "changed from preset" not in sidebar_text(at)
    # the export page's folder follows the preset's parameters
    at.selectbox(key="preset").set_value("offapexnet").run()
    at.switch_page("app_pages/export.py").run()
    assert_clean(at)
    assert at.text_input(key="out_dir").value.endswith(f"-{PipelineParams.from_preset('offapexnet').hash}")


def test_a_link_naming_only_a_preset_opens_its_values(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/export.py", {"preset": "offapexnet"})
    assert_clean(at)
    assert (at.selectbox(key="flow_method").value, at.selectbox(key="map_channels").value) == ("tvl1", "uv")
    assert page_params(at) == PipelineParams.from_preset("offapexnet", {"detect": {"device": "cpu"}})


def test_parameters_are_shown_only_where_they_have_an_effect(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/export.py")
    keys = lambda: {w.key for w in [*at.sidebar.slider, *at.sidebar.selectbox, *at.sidebar.toggle]}
    shown = keys()
    assert {"winsize", "levels", "pyr_scale", "map_scale"} <= shown and not {k for k in shown if k.startswith(("tvl1_", "dis_"))}
    assert "map_fixed_scale" not in shown  # only with the fixed scale
    assert {"fix_annotations", "apex_policy"} <= shown  # the annotation settings are in the sidebar too
    at.selectbox(key="flow_method").set_value("tvl1").run()
    assert_clean(at)
    shown = keys()
    assert {"tvl1_tau", "tvl1_lambda", "tvl1_theta", "tvl1_scales", "tvl1_warps"} <= shown
    assert not {"winsize", "levels", "pyr_scale", "dis_patch_size"} & shown
    assert page_params(at).preset_changes() == ["flow.method"]
    at.selectbox(key="flow_method").set_value("dis").run()
    assert {"dis_finest_scale", "dis_patch_size", "dis_patch_stride"} <= keys() and not any(k.startswith("tvl1_") for k in keys())
    at.selectbox(key="map_scale").set_value("fixed").run()
    assert "map_fixed_scale" in keys()
    at.selectbox(key="map_channels").set_value("uvs").run()
    assert not {"map_scale", "map_fixed_scale"} & keys()  # a uvs map has no brightness scale
    assert_clean(at)


def test_the_flow_page_shows_the_four_channels_and_the_map_legend(app_env: dict[str, str]) -> None:
    at = open_page("app_pages/flow.py")
    assert_clean(at)
    charts_ = at.get("plotly_chart")
    assert len(charts_) == 4
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in charts_]
    assert titles == ["u: horizontal flow (+ right)", "v: vertical flow (+ down)", "optical strain", "magnitude"]
    bars = [json.loads(c.proto.spec)["data"][0]["colorbar"]["title"]["text"] for c in charts_]
    assert bars == ["px", "px", "strain<br>(px/px)", "px"]
    z = json.loads(charts_[0].proto.spec)["data"][0]["z"]
    assert (len(z), len(z[0])) == (224, 224) if isinstance(z, list) else z["shape"] == "224, 224"  # crop resolution
    legend = at.image[len(at.image) - 1].captions[0]
    assert re.fullmatch(r"colour legend \(direction = hue\): full brightness = [\d.]+ px", legend), legend
    # a uvs map: its legend says what the channels are
    at.selectbox(key="map_channels").set_value("uvs").run()
    assert_clean(at)
    assert at.image[len(at.image) - 1].captions[0] == "channels: R = u, G = v, B = strain, each min-max normalised"
    assert len(at.get("plotly_chart")) == 4


@pytest.mark.slow
def test_export_with_features_writes_the_npz_and_zips_it(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))
    out = tmp_path / "FEATURES"
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(out)).run()
    box = at.checkbox(key="export_arrays")
    assert box.label == "Also write features.npz (u, v, strain arrays with labels and folds)" and box.value is False
    box.check().run()
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("4 of 4 clips ok")
    path = out / "features.npz"
    with np.load(path) as data:  # numpy's defaults: allow_pickle=False
        assert {"u", "v", "strain", "X", "label_megc", "fold"} <= set(data.files)
        assert data["u"].shape == data["strain"].shape == (4, 28, 28) and data["X"].shape == (4, 28, 28, 3)
        assert sorted(data["label_megc"].tolist()) == [-1, 0, 1, 2] and sorted(set(data["fold"].tolist())) == [0, 1]
    assert at.info[-1].value == tables.features_summary(path) and "4 clips × 28 × 28" in at.info[-1].value
    download = at.download_button[0]
    assert download.label == "Download maps + manifest + params + features.npz (zip)"
    with zipfile.ZipFile(io.BytesIO(export.zip_outputs(at.session_state["export_result"]))) as archive:
        assert "features.npz" in archive.namelist()
        assert archive.read("features.npz") == path.read_bytes()
    # an export without arrays in a folder that holds them resumes; with them, a folder without arrays recomputes
    at.text_input(key="out_dir").set_value(str(tmp_path / "PLAIN")).run()
    at.checkbox(key="export_arrays").uncheck().run()
    at.button(key="run_export").click().run()
    at.checkbox(key="export_arrays").check().run()
    assert at.button(key="run_export").label == "Resume: compute 4, keep 0"  # no arrays there yet


def test_apex_policy_spot_spots_the_apex_the_pages_show(app_env: dict[str, str]) -> None:
    root = Path(app_env["SAMMFLOW_DATA"])
    dataset = load_dataset(root, read_annotations(root / "samm.csv")).resolved(AnnotationParams(apex="spot"))
    ann, frames = dataset.clip(dataset.annotations.clips[1].clip)
    box, _ = disk.apex_box(dataset, ann.clip, PipelineParams().detect, store=disk.ClipStore(root))
    spotted, curve = spot_clip(ann, frames, box=box)
    at = open_page("app_pages/alignment.py", {"clip": ann.clip, "apex_policy": "spot"})
    assert_clean(at)
    assert at.selectbox(key="apex_policy").value == "spot"
    note = f"apex spotted: {spotted.apex} (annotated: {ann.apex})"
    assert note in "\n".join(c.value for c in at.caption)
    motion = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert [t["name"] for t in motion["data"]] == ["motion from onset", "spotted apex"]
    assert motion["data"][1]["x"] == [spotted.apex]
    assert {a["text"] for a in motion["layout"]["annotations"]} >= {"annotated apex", "spotted apex", "onset", "offset"}
    assert at.selectbox(key="b").value == spotted.apex  # frame B starts at the apex the pages use
    # the flow page's large view uses it too, and says so
    at.switch_page("app_pages/flow.py").run()
    at.selectbox(key="clip").set_value(ann.clip).run()
    assert_clean(at)
    assert note in "\n".join(c.value for c in at.caption)
    assert at.image[len(at.image) - 3].captions[0] == f"aligned apex (frame {spotted.apex}) + flow"


def test_the_overview_counts_labels_and_what_the_annotation_settings_did(app_env: dict[str, str]) -> None:
    at = open_page()
    assert_clean(at)
    assert "kind: **SAMM**" in at.caption[0].value
    counts = {label: metric(at, label) for label in ("MEGC2019: negative", "MEGC2019: positive", "MEGC2019: surprise",
                                                     "MEGC2019: not in MEGC", "Fixes applied", "Apex to spot")}
    assert counts == {"MEGC2019: negative": "1", "MEGC2019: positive": "1", "MEGC2019: surprise": "1", "MEGC2019: not in MEGC": "1",
                      "Fixes applied": "0", "Apex to spot": "0"}
    labels = at.dataframe[1].value
    assert labels.values.tolist() == [["Anger", "negative", 1], ["Happiness", "positive", 1], ["Surprise", "surprise", 1],
                                      ["Other", "not in MEGC", 1]]
    at.selectbox(key="apex_policy").set_value("spot").run()
    assert_clean(at)
    assert metric(at, "Apex to spot") == "4" and metric(at, "Clips") == "4"
    at.toggle(key="fix_annotations").set_value(True).run()
    assert_clean(at)
    assert metric(at, "Fixes applied") == "0"  # none of the shipped fixes is about the demo's clips


# ---------------------------------------------------------------- every dataset kind (issue 12)


def folder_query(root: Path, **more: str) -> dict[str, str]:
    return {"source": "Folder", "data": str(root), **more}


def composite_query(demos: dict[str, Path], *kinds: str) -> dict[str, str]:
    return {"source": "Composite", "composite": "\n".join(f"{kind}={demos[kind]}" for kind in kinds)}


def test_the_kind_box_recognises_a_folder_and_a_forced_kind_is_explained(kinds_env: dict[str, Path]) -> None:
    root = kinds_env["casme2"]
    at = open_page(None, folder_query(root))
    assert_clean(at)
    box = at.selectbox(key="kind")
    assert box.value == "auto" and box.options == ["auto", "SAMM", "CASME II", "SMIC", "CAS(ME)³ part A", "MMEW"]
    assert at.text_input(key="ann").value == ""  # optional: the kind's file found in the folder
    assert "kind: **CASME II**" in at.caption[0].value and str(root / "CASME2-coding-20140508.xlsx") in at.caption[0].value
    assert "CASME II" in sidebar_text(at) and "`CASME2-coding-20140508.xlsx`" in sidebar_text(at)
    assert (metric(at, "Subjects"), metric(at, "Clips"), metric(at, "Ready")) == ("2", "2", "2")
    assert at.session_state["_sammflow_context"].dataset.kind == "casme2"
    # forced to SMIC: said plainly, with the files it looks for and what the folder is instead
    at.selectbox(key="kind").set_value("smic").run()
    assert not at.exception and not at.title and len(at.error) == 1
    message = at.error[0].value
    assert message.startswith(f"No SMIC annotation file in {root} (the kind chosen in the sidebar; expected `smic*.xlsx`"), message
    assert "holds CASME2-coding-20140508.xlsx, a CASME II annotation file: choose CASME II or auto" in message
    # and with the CASME II file typed in, the layout does not match: the kind is named as a suspect
    at.text_input(key="ann").set_value(str(root / "CASME2-coding-20140508.xlsx")).run()
    assert not at.exception and not at.title
    assert "read as SMIC). Wrong dataset folder, annotation file or kind?" in at.error[0].value
    # chosen right: the page comes back; a link keeps the kind by its title
    at.text_input(key="ann").set_value("")
    at.selectbox(key="kind").set_value("casme2").run()
    assert_clean(at)
    assert "kind: **CASME II**" in at.caption[0].value
    at = open_page(None, folder_query(root, kind="CASME II"))
    assert_clean(at)
    assert at.selectbox(key="kind").value == "casme2"


def test_a_folder_without_any_annotation_file_names_what_was_looked_for(kinds_env: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    at = open_page(None, folder_query(empty))
    assert not at.exception and not at.title
    message = at.error[0].value
    assert message.startswith(f"No annotation file in {empty}: none of the kinds' files is there (SAMM: `samm.csv`"), message
    assert "CASME II: `CASME2-coding*.xlsx`" in message and "SMIC: `smic*.xlsx`" in message


@pytest.mark.parametrize("kind", ["casme2", "smic", "samm+casme2"])
@pytest.mark.parametrize("page", PAGES, ids=[(p or "overview").removeprefix("app_pages/") for p in PAGES])
def test_every_page_renders_on_every_kind(kinds_env: dict[str, Path], kind: str, page: str | None) -> None:
    """Issue 12: CASME II (subjects sub01, clips sub01_EP02_01f, one apex '/'), SMIC (no apex
    at all: every clip spotted) and a composite of SAMM + CASME II (ids prefixed by kind)."""
    query = composite_query(kinds_env, *kind.split("+")) if "+" in kind else folder_query(kinds_env[kind])
    at = open_page(page, query)
    assert_clean(at)
    assert at.title
    dataset = at.session_state["_sammflow_context"].dataset
    assert dataset.kind == kind and len(tables.ready_ids(dataset)) == (4 if "+" in kind else 2)
    shown = "\n".join(c.value for c in at.caption)
    if page == "app_pages/alignment.py":
        assert len(at.image) == 6 and len(at.get("plotly_chart")) == 3
        if kind == "smic":  # no apex in SMIC's annotations: the page's apex is spotted, and says so
            assert "apex spotted: " in shown and "(annotated: none usable)" in shown
    if page == "app_pages/flow.py":
        assert len(at.image) == len(dataset.ready()) + 4 and at.selectbox(key="clip").value in tables.ready_ids(dataset)
    if page == "app_pages/gifs.py":
        assert at.image[0].value[0].endswith(".gif")
    if page == "app_pages/grid.py":
        assert [image.captions[0].split(" · ")[0] for image in at.image] == tables.ready_ids(dataset)
    if page is None and "+" in kind:
        assert all(c.startswith(("samm-", "casme2-")) for c in at.dataframe[0].value["clip"])
    if page == "app_pages/export.py":
        assert at.button(key="run_export").label == f"Export {len(dataset.ready())} clips"


def test_a_composite_shows_its_labels_per_dataset(kinds_env: dict[str, Path]) -> None:
    at = open_page(None, composite_query(kinds_env, "samm", "casme2"))
    assert_clean(at)
    assert at.text_area(key="composite").value == f"samm={kinds_env['samm']}\ncasme2={kinds_env['casme2']}"
    assert "kind: **composite: SAMM + CASME II**" in at.caption[0].value
    assert f"`{kinds_env['casme2']}` · annotations `{kinds_env['casme2'] / 'CASME2-coding-20140508.xlsx'}`" in at.caption[0].value
    assert (metric(at, "Subjects"), metric(at, "Clips"), metric(at, "Ready")) == ("4", "4", "4")
    assert (metric(at, "MEGC2019: negative"), metric(at, "MEGC2019: surprise")) == ("2", "2")  # each clip by its dataset's table
    assert [s.value for s in at.main.subheader][-1] == "Labels per dataset"
    per_class, per_emotion = at.dataframe[-2].value, at.dataframe[-1].value
    assert list(per_class.columns) == ["dataset", "negative", "positive", "surprise", "not in MEGC", "clips"]
    assert per_class.values.tolist() == [["SAMM", 1, 0, 1, 0, 2], ["CASME II", 1, 0, 1, 0, 2]]
    assert per_emotion.values.tolist() == [["SAMM", "Anger", "negative", 1], ["SAMM", "Surprise", "surprise", 1],
                                           ["CASME II", "disgust", "negative", 1], ["CASME II", "surprise", "surprise", 1]]
    # one dataset is not a composite: no per-dataset section
    at = open_page(None, folder_query(kinds_env["casme2"]))
    assert "Labels per dataset" not in [s.value for s in at.main.subheader]
    # a line that is not a dataset, or a second of one kind, is named
    at = open_page(None, {"source": "Composite", "composite": f"samm={kinds_env['samm']}\nsmic {kinds_env['smic']}"})
    assert not at.exception and not at.title and at.error[0].value.startswith("Composite, line 2: ")
    at = open_page(None, {"source": "Composite", "composite": f"samm={kinds_env['samm']}\nsamm={kinds_env['casme2']}"})
    assert at.error[0].value.startswith("Composite, line 2: a second samm dataset")
    at = open_page(None, {"source": "Composite", "composite": f"samm={kinds_env['samm']}\nsmic={kinds_env['casme2']}"})
    assert at.error[0].value.startswith(f"Composite dataset `smic={kinds_env['casme2']}`: No SMIC annotation file in "), at.error[0].value


def test_a_video_opens_as_a_dataset_of_its_events(kinds_env: dict[str, Path], tmp_path: Path) -> None:
    """Issue 12: a video file (allowed roots, like every path) + one event's frames or an events
    CSV, extracted once into the cache; an event without an apex is spotted (policy auto)."""
    clip = kinds_env["casme2"] / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    frames = sorted(clip.glob("*.jpg"), key=lambda f: int(f.stem.removeprefix("img")))
    video = write_video(frames, tmp_path / "take 1.avi")
    at = open_page(None, {"source": "Video", "video": str(video), "v_onset": "1", "v_offset": "8"})
    assert_clean(at)
    assert f"{len(frames)} frames · 30 fps · 640×480 px" in sidebar_text(at)
    assert at.selectbox(key="apex_policy").value == "auto" and "Event 1 has no apex: it is spotted" in sidebar_text(at)
    ctx = at.session_state["_sammflow_context"]
    assert ctx.ref.video == str(video) and Path(ctx.ref.root).parent == disk.cache_dir() / "videos" and ctx.fps == 30.0
    assert (metric(at, "Clips"), metric(at, "Ready"), metric(at, "Frames found"), metric(at, "Apex to spot")) == ("1", "1", "8", "1")
    assert "take 1.avi" in at.caption[0].value
    at.switch_page("app_pages/alignment.py").run()
    assert_clean(at)
    assert "001_1 · onset 1 · apex spotted: " in "\n".join(c.value for c in at.caption)
    at.switch_page("app_pages/export.py").run()
    assert_clean(at)
    assert Path(at.text_input(key="out_dir").value).name.startswith("take_1-")  # the video's name, not the cache folder's
    # with its apex: other events, a folder of their own; opened again, that folder as it is
    extracted = {p.name for p in (disk.cache_dir() / "videos").iterdir()}
    at = open_page(None, {"source": "Video", "video": str(video), "v_onset": "1", "v_apex": "4", "v_offset": "8"})
    assert_clean(at)
    assert at.selectbox(key="apex_policy").value == "annotated" and metric(at, "Apex to spot") == "0"
    at.switch_page("app_pages/alignment.py").run()
    assert "001_1 · onset 1 · apex 4 · offset 8" in "\n".join(c.value for c in at.caption)
    made = {p.name for p in (disk.cache_dir() / "videos").iterdir()} - extracted
    assert len(made) == 1
    at = open_page(None, {"source": "Video", "video": str(video), "v_onset": "1", "v_apex": "4", "v_offset": "8"})
    assert {p.name for p in (disk.cache_dir() / "videos").iterdir()} == extracted | made
    # an events file: one clip per row
    events = tmp_path / "events.csv"
    events.write_text("onset,apex,offset,emotion,name\n0,3,5,happiness,smile\n4,,9,surprise,\n")
    at = open_page(None, {"source": "Video", "video": str(video), "events": str(events)})
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert table[["clip", "emotion", "status"]].values.tolist() == [["001_smile", "happiness", "ready"], ["001_2", "surprise", "ready"]]
    assert metric(at, "Clips") == "2" and at.selectbox(key="apex_policy").value == "auto"  # the second event has no apex
    # mistakes: named, never a traceback
    for query, expected in [({"v_onset": "0", "v_offset": "40"}, f"offset 40 is after the video's last frame {len(frames) - 1}"),
                            ({"v_onset": "5", "v_offset": "2"}, "Video event: onset frame 5 is after offset frame 2"),
                            ({"v_onset": "5"}, "Give the event's onset and offset frames"),
                            ({"video": str(tmp_path / "none.avi"), "v_onset": "0", "v_offset": "2"}, "Video file not found: "),
                            ({"video": str(kinds_env["casme2"].parent.parent / "elsewhere.avi")}, OUTSIDE)]:
        at = open_page(None, {"source": "Video", "video": str(video), **query})
        assert not at.exception and not at.title and expected in at.error[0].value, (query, at.error[0].value)
