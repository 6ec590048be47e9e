"""torch (≈ 5 s to import) is loaded only when a face is actually detected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODULES = ["annotations", "dataset", "detect", "align", "flow", "encode", "animate", "pipeline", "export", "demo", "cli", "params", "cache", "figures"]


def test_processing_modules_import_neither_torch_nor_streamlit():
    code = (
        "import sys\n"
        + "".join(f"import sammflow.{m}\n" for m in MODULES)
        + "print(sorted(m for m in ('torch', 'facenet_pytorch', 'streamlit') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
