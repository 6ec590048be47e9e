"""torch (≈ 5 s to import) is loaded only when a face is actually detected; imports run one
way: stages ← jobs ← command line and dashboard, without cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "sammflow"
MODULES = ["annotations", "dataset", "detect", "align", "flow", "encode", "animate", "pipeline", "export", "demo", "cli", "params", "cache",
           "figures", "files", "manifest", "outfolder", "workers", "text", "frames", "access", "tables", "charts", "export_choices",
           "fixes", "labels", "spot", "features", "kinds", "video", "mtcnn", "tiles", "cluster", "cluster_worker", "pool", "report"]
#: The processing stages: they know nothing of files written by jobs, folders or interfaces.
STAGES = {"text", "frames", "params", "kinds", "video", "annotations", "fixes", "labels", "dataset", "detect", "align", "flow", "encode", "spot", "animate",
          "demo", "pipeline", "mtcnn"}
#: The batch jobs and what they are built from.
JOBS = {"files", "manifest", "outfolder", "pool", "workers", "features", "export", "cluster", "cluster_worker"}


def _imports(path: Path) -> set[str]:
    """The sammflow modules ``path`` imports, anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sammflow."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "sammflow":
            found.update(a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sammflow."))
    return found


GRAPH = {p.stem: _imports(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem not in ("__init__", "__main__")}


@pytest.mark.slow
def test_processing_modules_import_neither_torch_nor_streamlit():
    code = (
        "import sys\n"
        + "".join(f"import sammflow.{m}\n" for m in MODULES)
        + "print(sorted(m for m in ('torch', 'facenet_pytorch', 'streamlit') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_dask_is_imported_only_for_a_cluster():
    """``--scheduler`` is parsed by ``sammflow.cluster`` at every command's start: ``distributed`` (≈ 1 s) waits for a cluster."""
    code = "import sys\nimport sammflow.cli, sammflow.cluster, sammflow.export, sammflow.workers\nprint('distributed' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_stages_import_only_stages():
    assert STAGES | JOBS <= set(GRAPH)
    for module in sorted(STAGES):
        assert GRAPH[module] <= STAGES, (module, GRAPH[module] - STAGES)


def test_jobs_import_no_interface():
    for module in sorted(JOBS):
        assert GRAPH[module] <= STAGES | JOBS, (module, GRAPH[module] - STAGES - JOBS)


def test_no_import_cycles():
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " → ".join([*path, module])
        if module in done:
            return
        for imported in sorted(GRAPH.get(module, ())):
            visit(imported, (*path, module))
        done.add(module)

    for module in GRAPH:
        visit(module, ())
