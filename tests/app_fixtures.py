"""Fixtures of the dashboard tests (tests/test_app*.py, test_browser.py, test_access.py, test_cache.py ...).

Loaded by those modules as a plugin (``pytest_plugins = ("app_fixtures",)``) rather than
put in conftest.py, so the dashboard's test setup stays beside its tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sammflow.demo import DemoConfig, generate_demo

#: 2 subjects × 2 clips × 12 SAMM-sized frames: every page has work to show, in ≈ 3 s.
APP_DEMO = DemoConfig(subjects=2, clips_per_subject=2, frames=12)


@pytest.fixture(scope="session")
def app_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo dataset the dashboard tests only read."""
    return generate_demo(tmp_path_factory.mktemp("app_demo") / "DATA", APP_DEMO)


@pytest.fixture(scope="session")
def app_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One disk cache for the whole session: MTCNN runs once per clip, as in a real app."""
    return tmp_path_factory.mktemp("app_cache")


@pytest.fixture()
def app_env(app_data: Path, app_cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing the dashboard at ``app_data`` (as a deployment would)."""
    env = {"SAMMFLOW_DATA": str(app_data), "SAMMFLOW_ANNOTATIONS": str(app_data / "samm.csv"), "SAMMFLOW_CACHE": str(app_cache)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("SAMMFLOW_DEMO_CONFIG", "SAMMFLOW_OUT"):
        monkeypatch.delenv(name, raising=False)
    return env


#: Demos of other kinds (and a SAMM one beside them, for composites): 2 subjects × 1 clip × 10 frames.
KIND_DEMOS = ("samm", "casme2", "smic")


@pytest.fixture(scope="session")
def kind_demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small demos of each kind in ``KIND_DEMOS`` (kind → dataset folder), side by side in one
    folder; the tests only read them."""
    base = tmp_path_factory.mktemp("kind_demos")
    return {kind: generate_demo(base / kind, DemoConfig(subjects=2, clips_per_subject=1, frames=10, kind=kind)) for kind in KIND_DEMOS}


@pytest.fixture()
def kinds_env(kind_demos: dict[str, Path], app_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """No dataset configured; a page user may open the kind demos and ``tmp_path`` (``SAMMFLOW_ROOTS``)."""
    for name in ("SAMMFLOW_DATA", "SAMMFLOW_ANNOTATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAMMFLOW_ROOTS", os.pathsep.join([str(next(iter(kind_demos.values())).parent), str(tmp_path)]))
    return kind_demos


@pytest.fixture()
def broken_data(app_data: Path, tmp_path: Path) -> Path:
    """A copy of ``app_data`` whose second clip lost its apex frame."""
    root = Path(shutil.copytree(app_data, tmp_path / "BROKEN"))
    truth = json.loads((root / "ground_truth.json").read_text())
    clip = truth["clips"][1]
    frame = next((root / clip["subject"] / clip["clip"]).glob(f"*{clip['apex']}.jpg"))
    frame.unlink()
    return root


@pytest.fixture()
def secret(app_data: Path, tmp_path: Path) -> Path:
    """A perfectly good dataset the dashboard must not open: outside every allowed root."""
    return Path(shutil.copytree(app_data, tmp_path / "SECRET"))


@pytest.fixture()
def allowed(app_env: dict[str, str], tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``SAMMFLOW_ROOTS`` = one folder, holding a symbolic link to ``secret``."""
    root = tmp_path / "ALLOWED"
    root.mkdir()
    (root / "link").symlink_to(secret, target_is_directory=True)
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(root))
    return root
