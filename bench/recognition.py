"""Recognition check (``sammflow evaluate``) on a labelled demo: time and UF1 / UAR of each model.

    .venv/bin/python bench/recognition.py            # 450 clips (25 subjects × 18), every model
    .venv/bin/python bench/recognition.py --quick    # the tests' size (12 subjects × 6 = 72 clips)

Generates (or reuses) a labelled demo dataset (``DemoConfig(labelled=True)``: one facial motion
per MEGC2019 class, varied per subject and clip) under bench/data/, exports it with
``sammflow export --arrays`` (the default parameters), then times each model's whole
leave-one-subject-out run **cold**: a fresh ``python -m sammflow evaluate`` process, start-up
included, timed from the outside, its UF1 / UAR read back from ``evaluation-<model>.json``.
Then, as a floor, logreg on the same features with the labels shuffled within each subject
(over ``SHUFFLE_SEEDS``): what a model scores when there is nothing to learn. ``bench/run.py
--only recognition`` writes it to BENCHMARKS.md; the bounds of ``tests/test_evaluate.py`` come
from these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sammflow.demo import DemoConfig, generate_demo  # noqa: E402
from sammflow.recognition import MODELS, evaluate, load_labelled  # noqa: E402

DATA = ROOT / "bench" / "data"
#: About the MEGC2019 composite's 442 clips; small frames (the flow maps are 28×28 anyway).
FULL = DemoConfig(subjects=25, clips_per_subject=18, frames=9, width=640, height=480, labelled=True, seed=41)
#: The size ``tests/test_evaluate.py`` runs on.
QUICK = DemoConfig(subjects=12, clips_per_subject=6, frames=9, width=640, height=480, labelled=True, seed=5)
SHUFFLE_SEEDS = (0, 1, 2, 3, 4)


def prepare(config: DemoConfig) -> tuple[Path, float, float]:
    """The labelled demo and its export (reused when present): features.npz, seconds to generate, to export."""
    folder = DATA / f"recognition-{config.hash}"
    start = time.perf_counter()
    data = generate_demo(folder / "DATA", config)
    generated = time.perf_counter() - start
    out = folder / "OUT"
    start = time.perf_counter()
    if not (out / "features.npz").is_file():
        subprocess.run([sys.executable, "-m", "sammflow", "export", str(data), str(out), "--arrays", "-q"], check=True)
    return out / "features.npz", generated, time.perf_counter() - start


def cold_run(features: Path, model: str) -> tuple[float, dict]:
    """``sammflow evaluate FEATURES --model MODEL`` in a fresh process: seconds, and its evaluation file."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sammflow", "evaluate", str(features), "--model", model, "-q"], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, json.loads((features.parent / f"evaluation-{model}.json").read_text())


def shuffled_within_subjects(y: np.ndarray, subjects: np.ndarray, seed: int) -> np.ndarray:
    """``y`` permuted within each subject (each subject keeps its class counts)."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    for subject in np.unique(subjects):
        index = np.flatnonzero(subjects == subject)
        out[index] = y[rng.permutation(index)]
    return out


def rows(config: DemoConfig, models: list[str]) -> tuple[str, list[tuple[str, ...]]]:
    features, generated, exported = prepare(config)
    data = load_labelled(features)
    counts = np.bincount(data.y, minlength=len(data.classes))
    about = (f"{len(data.y)} clips ({config.subjects} subjects × {config.clips_per_subject}; "
             + ", ".join(f"{n} {c}" for c, n in zip(data.classes, counts))
             + f"), {config.frames} frames of {config.width}×{config.height} per clip, seed {config.seed}; "
             + ("; data reused from an earlier run" if max(generated, exported) < 0.5 else
                f"; generated in {generated:.0f} s, exported in {exported:.0f} s"))
    table = []
    for model in models:
        seconds, result = cold_run(features, model)
        overall = result["overall"]
        table.append((model, f"{result['epochs']}", f"{seconds:.1f}", f"{overall['uf1']:.3f} [{overall['interval']['uf1'][0]:.2f}, "
                      f"{overall['interval']['uf1'][1]:.2f}]", f"{overall['uar']:.3f}"))
    shuffled = [evaluate(data.with_labels(shuffled_within_subjects(data.y, data.subject, s)), "logreg").overall["uf1"]
                for s in SHUFFLE_SEEDS]
    table.append((f"logreg, labels shuffled within subjects ({len(SHUFFLE_SEEDS)} seeds)", str(MODELS["logreg"].epochs), "",
                  f"mean {np.mean(shuffled):.3f}, max {np.max(shuffled):.3f}", ""))
    return about, table


def markdown(table: list[tuple[str, ...]]) -> str:
    columns = ("model", "epochs / iterations", "LOSO run, cold (s)", "UF1 [95 % CI over subjects]", "UAR")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table])


def section(*, quick: bool = False, models: list[str] | None = None) -> str:
    """BENCHMARKS.md's recognition section (``bench/run.py``)."""
    config = QUICK if quick else FULL
    about, table = rows(config, models or list(MODELS))
    return f"""`sammflow evaluate` on a labelled demo (`DemoConfig(labelled=True)`): {about}.
Each run is a fresh process (`python -m sammflow evaluate FEATURES --model M`), start-up and
the write of `evaluation.json` included, on CPU ({os.cpu_count()} cores here; the CNNs train on one
thread, `torch.set_num_threads(1)`, for bit-for-bit reproducibility). UF1 / UAR: all
leave-one-subject-out folds' predictions pooled; chance is 0.33 for these 3 balanced classes.

{markdown(table)}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tests' 72-clip size instead of 450 clips")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args(argv)
    print(section(quick=args.quick, models=args.models))


if __name__ == "__main__":
    main()
