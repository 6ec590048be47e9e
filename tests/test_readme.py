"""The README's two opening commands stay true: CI runs exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _opening_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_install_and_run_commands():
    app, tests = _opening_commands()
    assert "pip install -r requirements.txt" in app and app.endswith("streamlit run app.py")
    assert "pip install -r requirements-dev.txt" in tests and tests.endswith("python -m pytest")
    assert (ROOT / "requirements.txt").is_file() and (ROOT / "requirements-dev.txt").is_file()


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _opening_commands()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in lines
    assert "rm -rf .venv" in lines  # a fresh environment every time


def test_requirements_pin_what_works_here():
    requirements = (ROOT / "requirements.txt").read_text()
    for pin in ("facenet-pytorch==2.5.3", "torch==2.14.1", "torchvision==0.29.1"):
        assert pin in requirements
