"""End-to-end: ``streamlit run app.py`` in a real browser (Debian's Chromium via Playwright).

Every page is visited by its URL; each must finish running without an exception block and
show its images or charts. Screenshots go to ``test-artifacts/`` (gitignored) for a human
to look at.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ("app_fixtures",)  # the dashboard's fixtures, kept out of conftest.py
REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
#: (URL path, page title, CSS selector that must be present once the page has run, minimum count)
PAGES = [
    ("", "Overview", ".js-plotly-plot", 4),
    ("alignment", "Alignment diagnostics", '[data-testid="stImage"] img', 6),
    ("grid", "Normalized grid", '[data-testid="stImage"] img', 4),
    ("flow", "Flow samples", '[data-testid="stImage"] img', 8),
    ("gifs", "Onset → apex GIFs", '[data-testid="stImage"] img', 4),
    ("export", "Batch export", '[data-testid="stButton"] button', 1),
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_data: Path, app_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "SAMMFLOW_DATA": str(app_data), "SAMMFLOW_ANNOTATIONS": str(app_data / "samm.csv"),
           "SAMMFLOW_CACHE": str(app_cache), "SAMMFLOW_OUT": str(tmp_path_factory.mktemp("browser_out"))}
    env.pop("SAMMFLOW_DEMO_CONFIG", None)
    log = (tmp_path_factory.mktemp("browser_log") / "streamlit.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not become healthy:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser_page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        yield page
        browser.close()


def _wait_until_done(page, selector: str, minimum: int, timeout_s: float = 90) -> None:
    """Until the script has finished (no running indicator) and ``selector`` matched
    ``minimum`` elements twice in a row (Streamlit renders while it runs)."""
    deadline = time.monotonic() + timeout_s
    stable = 0
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        found = page.locator(selector).count()
        stable = stable + 1 if (not running and found >= minimum) else 0
        if stable >= 3:
            return
        page.wait_for_timeout(400)
    raise AssertionError(f"page did not finish: {page.locator(selector).count()} × {selector}, running indicator "
                         f"{page.locator('[data-testid=stStatusWidget]').count()}")


def _assert_healthy(page) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()
    broken = page.evaluate("() => [...document.querySelectorAll('[data-testid=stImage] img')].filter(i => !i.complete || i.naturalWidth === 0).length")
    assert broken == 0, f"{broken} image(s) did not load"


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # Streamlit scrolls its main section, not the document: grow the viewport to the content
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1440, "height": min(max(int(height) + 40, 1000), 6000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size({"width": 1440, "height": 1000})


def test_a_shared_link_is_the_first_request(browser_page, server: str) -> None:
    """A link copied in a lab meeting, opened right after the server started: the page runs
    through app.py (sidebar, navigation) with the linked settings."""
    page = browser_page
    page.goto(f"{server}/alignment?thr=30&winsize=21", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Alignment diagnostics").first.wait_for(timeout=60_000)
    _wait_until_done(page, '[data-testid="stImage"] img', 6)
    _assert_healthy(page)
    nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    assert [line.splitlines()[-1] for line in nav] == ["Overview", "Alignment diagnostics", "Normalized grid", "Flow samples",
                                                        "Onset→apex GIFs", "Batch export"]
    assert page.get_by_role("slider", name="Difference threshold (grey levels)").input_value() == "30"
    assert "thr=30" in page.url and "winsize=21" in page.url


@pytest.mark.parametrize(("path", "title", "selector", "minimum"), PAGES, ids=[p[0] or "overview" for p in PAGES])
def test_page_renders_in_chromium(browser_page, server: str, path: str, title: str, selector: str, minimum: int) -> None:
    page = browser_page
    page.goto(f"{server}/{path}", wait_until="domcontentloaded")
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    _wait_until_done(page, selector, minimum)
    _assert_healthy(page)
    if path == "":
        assert page.locator(".js-plotly-plot .main-svg").count() >= 4  # plotly drew its SVGs
    if path == "gifs":
        assert page.locator('[data-testid="stImage"] img[src$=".gif"]').count() == 2  # animated, not re-encoded
    if path == "export":
        page.get_by_role("button", name=re.compile("^Export")).click()
        page.get_by_text(re.compile(r"4 of 4 clips ok")).wait_for(timeout=60_000)
        _wait_until_done(page, '[data-testid="stDownloadButton"]', 1)
        _assert_healthy(page)
    _screenshot(page, f"{PAGES.index((path, title, selector, minimum)) + 1}_{path or 'overview'}")
