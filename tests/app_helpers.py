"""Helpers shared by the dashboard tests (plain functions; the fixtures are in app_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 120  # first detection imports torch (seconds on a 2-core machine)


def open_page(page: str | None = None, query: dict[str, str | list[str]] | None = None) -> AppTest:
    """Run app.py (optionally with URL query parameters), then switch to ``page``."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page).run()
    return at
