"""Shared fixtures: a small demo dataset generated once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow.demo import DemoConfig, generate_demo, read_ground_truth

#: Small but SAMM-sized: 2 subjects × 2 clips × 12 frames of 2040×1088 (≈ 2 s to generate).
SMALL_DEMO = DemoConfig(subjects=2, clips_per_subject=2, frames=12)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention demo dataset; copy it (``demo_copy``) before changing it."""
    return generate_demo(tmp_path_factory.mktemp("demo") / "DATA", SMALL_DEMO)


@pytest.fixture()
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private copy of the demo dataset that a test may damage."""
    return Path(shutil.copytree(demo_root, tmp_path / "DATA"))


@pytest.fixture(scope="session")
def demo_truth(demo_root: Path) -> dict:
    return read_ground_truth(demo_root)


@pytest.fixture(scope="session")
def face_image() -> np.ndarray:
    """A textured real face (scikit-image's astronaut), grey uint8 512×512."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
