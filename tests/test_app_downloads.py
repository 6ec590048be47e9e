"""The dashboard's downloads (issue 15): every image figure a page offers downloads as a 2× PNG,
a single flow map enlarged to crisp squares; every chart's camera button downloads the
sidebar's format (2× PNG or SVG); the export page's *Download report (HTML)*.

What a download button downloads is read from Streamlit's media manager as the page hands it
over (``app_helpers.record_downloads``); a deferred button's callable runs when the test reads
it, as on a click.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import io
import json
import sys
import types
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from sammflow import figures, ui

from app_helpers import Download, download_of, open_page, record_downloads

pytest_plugins = ("app_fixtures",)  # the dashboard's fixtures, kept out of conftest.py
REPO = Path(__file__).resolve().parents[1]
CROP = 224  # the sidebar's default crop size: the flow and alignment pages' tile


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def panel_size(count: int, columns: int, tile: int, *, title: bool = True, scale: int = figures.DOWNLOAD_SCALE) -> tuple[int, int]:
    """(width, height) of ``figures.panel`` of ``count`` tiles (its documented layout)."""
    c = min(columns, count)
    rows = -(-count // columns)
    return ((c * tile + (c + 1) * 10) * scale, ((30 if title else 0) + rows * (tile + 22 + 10) + 10) * scale)


def png_size(download: Download) -> tuple[int, int]:
    with Image.open(io.BytesIO(download.read())) as image:
        assert image.format == "PNG" and download.mime == "image/png"
        return image.size


def buttons(at: AppTest) -> dict[str, object]:
    return {button.label if not button.key else button.key: button for button in at.download_button}


# ---------------------------------------------------------------- 2× PNGs


@pytest.mark.slow
def test_the_flow_pages_downloads_are_slide_ready(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    made = record_downloads(monkeypatch)
    at = open_page("app_pages/flow.py")
    assert_clean(at)
    shown = buttons(at)
    samples = len([b for b in at.button if b.key and b.key.startswith("large_")])
    assert png_size(download_of(shown["samples_png"], made)) == panel_size(samples, 3, 168)
    assert png_size(download_of(shown["figure_png"], made)) == panel_size(4, 4, CROP)
    raw = download_of(shown["map_raw"], made)
    assert png_size(raw) == (28, 28) and raw.file_name.startswith("sub") and raw.file_name.endswith(".png")  # the export's map, its name
    flow_map = download_of(shown["map_png"], made)
    assert png_size(flow_map) == (figures.MAP_PNG_SIDE, figures.MAP_PNG_SIDE)  # 28 px × 16
    assert flow_map.file_name == raw.file_name[:-4] + f"_{figures.MAP_PNG_SIDE}px.png"  # never the training input's own name


@pytest.mark.slow
def test_the_grid_alignment_and_gif_pages_download_2x_pngs(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    made = record_downloads(monkeypatch)
    at = open_page("app_pages/grid.py")
    assert_clean(at)
    assert png_size(download_of(at.download_button[0], made)) == panel_size(len(at.image), 5, 160)
    at.switch_page("app_pages/alignment.py").run()
    assert_clean(at)
    assert png_size(download_of(at.download_button[0], made)) == panel_size(6, 3, CROP)
    clip = at.selectbox(key="clip").value
    at = open_page("app_pages/gifs.py", {"gif_clips": clip})
    assert_clean(at)
    assert png_size(download_of(at.download_button(key=f"map_{clip}"), made)) == (figures.MAP_PNG_SIDE, figures.MAP_PNG_SIDE)
    slide = download_of(at.download_button(key=f"slide_{clip}"), made)
    assert png_size(slide) == panel_size(5, 5, CROP) and slide.file_name == f"slide_{clip}.png"


# ---------------------------------------------------------------- charts: 2× PNG or SVG


def chart_downloads(at: AppTest) -> list[dict[str, object]]:
    return [json.loads(chart.proto.config)["toImageButtonOptions"] for chart in at.get("plotly_chart")]


@pytest.mark.slow
def test_every_chart_downloads_in_the_sidebars_format(app_env: dict[str, str]) -> None:
    at = open_page()
    assert_clean(at)
    assert at.segmented_control(key="chart_format").value == "PNG"
    options = chart_downloads(at)
    assert len(options) == 4 and all({k: o[k] for k in ("format", "scale")} == {"format": "png", "scale": 2} for o in options)
    assert sorted(o["filename"] for o in options) == ["durations", "emotions", "latencies", "objective_classes"]
    at.segmented_control(key="chart_format").set_value("SVG").run()
    assert_clean(at)
    options = chart_downloads(at)
    assert len(options) == 4 and all(o["format"] == "svg" and "scale" not in o for o in options)
    at.switch_page("app_pages/flow.py").run()  # the choice holds on every page
    assert_clean(at)
    options = chart_downloads(at)
    assert len(options) == 4 and all(o["format"] == "svg" for o in options)
    at = open_page("app_pages/alignment.py", {"chart_format": "SVG"})  # a link's choice (the browser writes it: test_browser.py)
    assert_clean(at)
    assert [o["format"] for o in chart_downloads(at)] == ["svg"] * 3


def test_no_page_draws_a_chart_but_through_ui_chart() -> None:
    """Each chart's download format comes from the sidebar: no page calls ``plotly_chart`` itself."""
    for path in sorted((REPO / "app_pages").glob("*.py")):
        calls = [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Attribute) and node.attr in ("plotly_chart", "plotly_config")]
        assert calls == [], (path.name, calls)


# ---------------------------------------------------------------- the export's report


REPORT_LABEL = "Download report (HTML)"


@pytest.mark.slow
def test_an_export_offers_its_html_report(app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(tmp_path))
    made = record_downloads(monkeypatch)
    out = tmp_path / "OUT"
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(out)).run()
    assert REPORT_LABEL not in [b.label for b in at.download_button]  # nothing exported there yet
    at.button(key="run_export").click().run()
    assert_clean(at)
    assert [b.label for b in at.download_button] == ["Download maps + manifest + params (zip)", REPORT_LABEL]
    report = download_of(at.download_button(key="report_result"), made)
    assert (report.file_name, report.mime) == ("report.html", "text/html")
    # a later session on the finished folder: the report of what is there, without exporting again
    at = open_page("app_pages/export.py")
    at.text_input(key="out_dir").set_value(str(out)).run()
    assert_clean(at)
    assert at.button(key="run_export").label == "Resume: compute 0, keep 4"
    again = download_of(at.download_button(key="report_folder"), made)
    assert (again.file_name, again.mime) == ("report.html", "text/html")
    if importlib.util.find_spec("sammflow.report") is None:
        pytest.skip("the report's contents need sammflow.report (build_report), not in this checkout yet")
    for made_report in (report, again):
        page = made_report.read().decode("utf-8")
        assert 'id="dataset"' in page and 'id="parameters"' in page, page[:500]


@pytest.mark.parametrize("error", [ValueError("not a sammflow output: no params.json <here>"), PermissionError(13, "Permission denied")],
                         ids=["not-an-output", "unreadable"])
def test_a_report_that_cannot_be_built_is_a_page_saying_why(error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report is built on click, outside the page's run: its failure becomes the file's text."""
    def build_report(out_dir: str | Path, *, clips: object = None, progress: object = None) -> str:
        raise error

    # a stand-in for sammflow.report in this test only (ReportError is a ValueError)
    monkeypatch.setitem(sys.modules, "sammflow.report", types.SimpleNamespace(build_report=build_report))
    page = ui.report_html(tmp_path / "notes")
    assert page.startswith("<!DOCTYPE html>") and "<h1>No report</h1>" in page and str(tmp_path / "notes") in page
    assert html.escape(str(error)) in page and "<here>" not in page


def test_the_report_of_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    pytest.importorskip("sammflow.report", reason="needs sammflow.report (build_report)")
    (tmp_path / "notes.txt").write_text("x")
    page = ui.report_html(tmp_path)
    assert "<h1>No report</h1>" in page and str(tmp_path) in page
