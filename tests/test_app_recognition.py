"""The *Recognition check* page (AppTest): two exports of a small labelled demo, logreg, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sammflow.demo import DemoConfig, generate_demo
from tests.app_helpers import open_page
from tests.helpers import run_cli

pytest_plugins = ("tests.app_fixtures",)

PAGE = "app_pages/recognition.py"
#: Small enough for seconds with logreg: 6 subjects × 3 clips (one per class) × 5 frames of 640×480.
SMALL = DemoConfig(subjects=6, clips_per_subject=3, frames=5, width=640, height=480, labelled=True, seed=2)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """``A/features.npz`` (default parameters) and ``B/features.npz`` (``--winsize 21``) in one folder."""
    root = tmp_path_factory.mktemp("recognition_app")
    data = generate_demo(root / "DATA", SMALL)
    for name, extra in (("A", ()), ("B", ("--winsize", "21"))):
        code, _, err = run_cli("export", data, root / name, "--arrays", "-q", *extra)
        assert code == 0, err
    return root


def test_page_compares_two_exports(app_env, exports, monkeypatch):
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(exports))
    at = open_page(PAGE)
    assert not at.exception and any("Run" in b.label for b in at.button)
    at.text_input(key="recognition_a").set_value(str(exports / "A" / "features.npz"))
    at.text_input(key="recognition_b").set_value(str(exports / "B"))  # the folder works too
    at.selectbox(key="recognition_model").set_value("logreg")
    at.button(key="recognition_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = [(m.label, m.value) for m in at.metric]
    assert sorted(label for label, _ in metrics) == ["UAR", "UAR", "UF1", "UF1"]
    evaluation = json.loads((exports / "A" / "evaluation.json").read_text())
    assert ("UF1", f"{evaluation['overall']['uf1']:.3f}") in metrics  # the page shows what the file holds
    assert (exports / "B" / "evaluation-logreg.json").is_file()
    tables = [t.value for t in at.dataframe]
    difference = next(t for t in tables if "parameter" in t.columns)
    assert "flow.winsize" in set(difference["parameter"]) and "params_hash" in set(difference["parameter"])
    row = difference[difference["parameter"] == "flow.winsize"].iloc[0]
    assert (row["A"], row["B"]) == ("15", "21")
    assert len(at.get("plotly_chart")) == 2  # both confusion matrices

    # a rerun shows the kept result: no training again
    before = (exports / "A" / "evaluation.json").stat().st_mtime_ns
    at.run()
    assert not at.exception and len(at.metric) == 4 and (exports / "A" / "evaluation.json").stat().st_mtime_ns == before


def test_page_names_a_bad_export(app_env, exports, monkeypatch, tmp_path):
    monkeypatch.setenv("SAMMFLOW_ROOTS", str(exports))
    at = open_page(PAGE)
    at.text_input(key="recognition_a").set_value(str(exports / "DATA"))
    at.button(key="recognition_run").click().run()
    assert not at.exception and len(at.error) == 1 and "features.npz" in at.error[0].value and not at.metric
    at.text_input(key="recognition_a").set_value(str(tmp_path))  # outside the allowed folders
    at.button(key="recognition_run").click().run()
    assert not at.exception and "outside the folders this dashboard may open" in at.error[0].value
