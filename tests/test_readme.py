"""The README's two opening commands stay true: CI runs exactly the test command."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------- the package is installed, with its command (issue 10)


def _requirement_lines() -> list[str]:
    return [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_requirements_install_the_package_with_its_command():
    import tomllib

    assert _requirement_lines()[-1] == "-e ."  # the README's install puts sammflow itself in the venv
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["project"]["scripts"] == {"sammflow": "sammflow.__main__:entry"}
    assert project["tool"]["setuptools"]["packages"] == ["sammflow"]  # not tests/, bench/, app_pages/


def test_example_outputs_are_ignored_by_git():
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["out/DEMO/006/006_1_1/006_05562.jpg", "out/MAPS/flows/sub006_006_1_1.png", "sammflow.egg-info/PKG-INFO", "build/lib"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.splitlines() == paths, "out/ (the README examples' outputs), build/ and *.egg-info/ must be ignored"


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_a_working_command_from_any_folder(tmp_path):
    """Built from a copy (no build/ left in the checkout), installed without dependencies (the test
    environment has them), then ``sammflow`` run from an unrelated folder."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"
    shutil.copytree(ROOT / "sammflow", source / "sammflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(source), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("sammflow-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"sammflow", wheel.name.split("-py3")[0] + ".dist-info"}
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, str(tmp_path / "site" / "bin" / "sammflow"), "export", "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sammflow export ")
    script = str(tmp_path / "site" / "bin" / "sammflow")
    bad = subprocess.run([sys.executable, script, "export", "D", "O", "--winsize", "14"], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=120)
    assert (bad.returncode, bad.stdout) == (2, "")  # main()'s return code is the script's exit code
    assert bad.stderr.splitlines() == ["error: --winsize must be odd (OpenCV averages over winsize + 1 px when it is even: "
                                       "14 would give the flow of 15), got 14"]
    assert list(elsewhere.iterdir()) == []
