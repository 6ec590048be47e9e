"""``sammflow report OUT``: one self-contained HTML file summarising an output folder.

A small demo export (made once for the module) is reported; the file must hold the six
sections, images that decode, the 3 × 3 flow sample (or every map of a smaller set), a
command that gives the recorded params hash when parsed back by the command line, escaped
text, and still be written when the dataset has moved. A real Chromium opens it offline.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sammflow.cli import _pipeline_params, build_parser, main
from sammflow.report import SECTIONS, ReportError, build_report, read_output, reproduce_argv, write_report

CHROMIUM = Path("/usr/bin/chromium")
DATA_URI = re.compile(r'src="data:image/(png|jpeg|gif);base64,([A-Za-z0-9+/=]+)"')
HOSTILE = '<script>alert("x")</script>'



def _export(demo_root: Path, out: Path, *flags: str, command: str = "export") -> Path:
    assert main([command, str(demo_root), str(out), "-q", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def exported(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(demo_root, tmp_path_factory.mktemp("report") / "out", "--arrays")


@pytest.fixture(scope="module")
def report(exported: Path) -> str:
    path = write_report(exported)
    assert path == exported / "report.html"
    return path.read_text(encoding="utf-8")


def _section(text: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', text, re.S)
    assert match, f"no section {name}"
    return match.group(1)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _decode_all(text: str) -> int:
    """Every ``data:`` image decodes to a non-empty image; returns how many there are."""
    found = DATA_URI.findall(text)
    for fmt, data in found:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.load()
            assert image.format.lower() == fmt and image.width > 0 and image.height > 0
    return len(found)


@pytest.mark.slow  # a batch job's output folder
def test_every_section_is_there_and_every_image_decodes(report: str, exported: Path) -> None:
    for name, title in SECTIONS.items():
        assert f'<section id="{name}"><h2>{title}</h2>' in report
        assert f'href="#{name}"' in report  # the table of contents
    assert _decode_all(report) >= 4 * 3 + 4  # grid thumbnails and flow maps at least
    assert report.count("<script") == report.count("</script>")
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|@import|@font-face|<iframe", report)  # nothing fetched
    from plotly.offline import get_plotlyjs

    assert report.count(get_plotlyjs()[:60]) == 1  # plotly.js inlined once
    assert report.count("script.plot-data") == 1 and "displaylogo: false" in report  # one loader
    assert 'id="chart-1"' in report and '"Download SVG"' not in report  # buttons are made by the loader, in JS
    assert "Download PNG (2×)" in report and "Download SVG" in report


@pytest.mark.slow  # a batch job's output folder
def test_flow_section_holds_the_sample_with_scales(report: str, exported: Path) -> None:
    flows = _section(report, "flows")
    ok = [r for r in _rows(exported) if r["status"] == "ok"]
    maps = re.findall(r'<figure class="tile map"><img src="data:image/png', flows)
    assert len(maps) == min(9, len(ok))
    assert len(re.findall(r"full brightness = [0-9.]+ px", flows)) == len(maps)  # each map's own scale
    assert "normalised on its own" in flows and "colour wheel" in flows


@pytest.mark.slow  # a batch job's output folder
def test_dataset_grid_and_clips_sections(report: str, exported: Path) -> None:
    ok = [r for r in _rows(exported) if r["status"] == "ok"]
    dataset = _section(report, "dataset")
    assert "MEGC2019 class" in dataset and "<details>" in dataset and "features.npz" in dataset
    grid = _section(report, "grid")
    assert len(re.findall(r"data:image/jpeg", grid)) == 3 * len(ok)  # first, onset, apex of each clip
    clips = _section(report, "clips")
    assert clips.count("data:image/gif") == 3 and clips.count('class="plot-data"') == 9  # u, v, strain of 3 clips
    alignment = _section(report, "alignment")
    assert alignment.count('<div class="pair">') == 3 and "Lowest match scores" in alignment


def _round_trip(out: Path) -> list[str]:
    """The report's command, parsed by the command line: the same params hash as params.json."""
    output = read_output(out)
    argv = reproduce_argv(output)
    args = build_parser().parse_args(argv)
    assert _pipeline_params(args).hash == output.content["params_hash"]
    return argv


@pytest.mark.slow  # a batch job's output folder
def test_the_command_reproduces_the_params_hash(report: str, exported: Path) -> None:
    argv = _round_trip(exported)
    assert argv[:3] == ["export", str(read_output(exported).content["dataset"]), str(exported)]
    assert "--arrays" in argv and not any(a.startswith("--winsize") for a in argv)  # the defaults are not repeated
    assert "sammflow " + " ".join(argv[:2]) in _section(report, "parameters")


@pytest.mark.slow  # a batch job's output folder
@pytest.mark.parametrize("flags", [("--winsize", "21", "--map-size", "32", "--no-robust", "--min-score", "0.7"),
                                   ("--preset", "ststnet", "--tvl1-lambda", "0.3"),
                                   ("--flow-method", "tvl1", "--map-scale", "minmax", "--fix-annotations")])
def test_the_command_of_a_non_default_export_round_trips(demo_root: Path, tmp_path: Path, flags: tuple[str, ...]) -> None:
    out = _export(demo_root, tmp_path / "out", *flags)
    argv = _round_trip(out)
    for flag in flags[::2]:
        if flag != "--preset":
            assert flag in argv or flag.replace("--no-", "--") in argv
    assert ("--preset", "ststnet" if "ststnet" in flags else "seed") == tuple(argv[argv.index("--preset"):argv.index("--preset") + 2])


@pytest.mark.slow  # a batch job's output folder
def test_a_normalize_output_reads_its_crops_and_round_trips(demo_root: Path, tmp_path: Path) -> None:
    out = _export(demo_root, tmp_path / "aligned", "--margin", "30", command="normalize")
    argv = _round_trip(out)
    assert argv[0] == "normalize" and "--margin" in argv and "--preset" not in argv
    text = write_report(out).read_text(encoding="utf-8")
    assert "read from this normalize output" in _section(text, "grid")
    assert "cannot be read" not in text
    _decode_all(text)


@pytest.mark.slow  # a batch job's output folder
def test_a_moved_dataset_still_gives_a_report(exported: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(exported, tmp_path / "out"))
    (out / "report.html").unlink(missing_ok=True)
    content = json.loads((out / "params.json").read_text())
    content["dataset"] = str(tmp_path / "gone" / HOSTILE)
    (out / "params.json").write_text(json.dumps(content))
    text = write_report(out).read_text(encoding="utf-8")
    for name in SECTIONS:
        assert f'<section id="{name}">' in text
    assert "cannot be read" in _section(text, "grid") and "cannot be read" in _section(text, "clips")
    flows = _section(text, "flows")
    ok = [r for r in _rows(out) if r["status"] == "ok"]
    assert len(re.findall(r'<figure class="tile map"><img', flows)) == min(9, len(ok))  # the folder's maps still shown
    assert HOSTILE not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    _decode_all(text)
    _round_trip(out)


@pytest.mark.slow  # a batch job's output folder
def test_text_from_files_is_escaped(exported: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(exported, tmp_path / "out"))
    rows = _rows(out)
    rows[0]["clip"] = rows[0]["emotion"] = HOSTILE  # a hand-edited manifest: the clip is not found, its id is shown
    rows[1]["status"], rows[1]["error"] = "failed", f"{rows[1]['clip']}: {HOSTILE}"
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = build_report(out, clips=[HOSTILE])
    assert HOSTILE not in text
    assert text.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 3
    _decode_all(text)


def test_not_an_output_folder_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a sammflow output folder"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="folder not found"):
        build_report(tmp_path / "missing")
    (tmp_path / "params.json").write_text('{"something": "else"}')
    (tmp_path / "manifest.csv").write_text("a,b\n")
    with pytest.raises(ReportError, match=r"params\.json is not sammflow's"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow  # a batch job's output folder
def test_cli_report_and_its_errors(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(exported), "-q"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(str(exported / "report.html")) and out.endswith("MB)")
    first = _rows(exported)[0]["clip"]
    assert main(["report", str(exported), "--clips", first, "-q"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}: not a sammflow output folder")
    assert main(["report", str(exported), "--clips", "nope,999_9_9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope, 999_9_9" in err[0] and "Traceback" not in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(exported), "--clips", "a,,b"])
    assert exit_info.value.code == 2


@pytest.mark.slow  # a batch job's output folder
def test_module_entry_point_writes_the_report(exported: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "sammflow", "report", str(exported)], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(exported / "report.html"))
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")
def test_the_report_renders_offline_in_chromium(report: str, exported: Path) -> None:
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM_ARGS

    url = (exported / "report.html").resolve().as_uri()
    requests: list[str] = []
    console: list[tuple[str, str]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: console.append((message.type, message.text)))
            page.on("pageerror", lambda error: console.append(("error", str(error))))
            page.goto(url, wait_until="load")
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 15", timeout=30_000)
            charts = page.locator(".js-plotly-plot").count()
            broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            images = page.evaluate("() => document.images.length")
            svg = page.locator('.modebar-btn[data-title="Download SVG"]').count()
            png = page.locator('.modebar-btn[data-title="Download PNG (2×)"]').count()
            logo = page.locator(".modebar-btn--logo").count()
        finally:
            browser.close()
    assert [m for m in console if m[0] == "error"] == []
    assert [u for u in requests if u != url and not u.startswith(("data:", "blob:", "about:"))] == []
    assert broken == 0 and images >= 16
    assert charts >= 15  # 4 label charts, 2 alignment histograms, 9 flow channels: all interactive
    assert svg == charts and png == charts and logo == 0
