"""Flow methods on SAMM-like crops against a known displacement field: accuracy and speed.

    .venv/bin/python bench/flow_methods.py            # table of every method, default parameters
    .venv/bin/python bench/flow_methods.py --runs 9   # more timing runs

The onset crop is scikit-image's astronaut face (a 140 px square around the face, resized to
224×224 like an aligned SAMM crop); the apex crop is the same face with a known local motion,
Gaussian bumps of 1–4 px at the brows (down) and the mouth corners (smile), as in the demo
dataset. Both crops get independent pixel noise (σ = 1 grey level). The apex is rendered so
that each onset pixel p lands exactly at p + truth(p): the flow's own convention.

``demo_pairs`` gives the same kind of pair from a demo dataset instead: the real pipeline's
aligned onset and apex crops of each clip and their true flow; ``bench/run.py --only
flow-methods`` measures both (BENCHMARKS.md, "Flow methods").

Measures (``accuracy``), over the crop without a border of 14 px (``sammflow.encode.interior``),
the pixels of every pair pooled: end-point error (mean |uv − truth|, px) everywhere and
where the true motion exceeds 0.5 px; angular error (mean angle between the 3-D vectors
(u, v, 1) and (u_t, v_t, 1), degrees, where the true motion exceeds 0.1 px); motion found /
true (Σ|uv| / Σ|truth| where the true motion exceeds 0.5 px, and where it is at least 0.8 × its
largest, the peak: below 1, the motion is underestimated); and the time per onset→apex pair (median of warm runs) with one OpenCV
thread, as a worker runs, and with OpenCV's default thread count, as the dashboard runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from sammflow.encode import interior  # noqa: E402
from sammflow.flow import compute_flow  # noqa: E402
from sammflow.params import FLOW_METHODS, FlowParams  # noqa: E402

#: Crop side, px (an aligned SAMM crop).
SIZE = 224
#: The astronaut's face region (x1, y1, x2, y2 in photograph px) that becomes the crop.
FACE_REGION = (160, 40, 300, 180)
#: Local motions in crop px: (centre x, centre y, sigma, peak dx, peak dy). Brows 2 px down,
#: mouth corners 4 px out and up (the demo's landmarks, mapped into the crop).
BUMPS = (
    (72.0, 76.0, 13.0, 0.0, 2.0), (139.0, 79.0, 13.0, 0.0, 2.0),
    (63.0, 159.0, 13.0, -2.83, -2.83), (151.0, 163.0, 13.0, 2.83, -2.83),
)
#: Pixel noise added to both crops, grey levels.
NOISE = 1.0
#: Angular error only where the true motion exceeds this, px.
MOVING = 0.1
#: End-point error and motion found / true also where the true motion exceeds this, px.
STRONG = 0.5
#: The peak of a pair's motion: where the true motion is at least this fraction of its largest.
PEAK = 0.8


def header(threads: int) -> tuple[str, ...]:
    """Column names of ``method_rows``; ``threads`` is the "all threads" count."""
    return ("method", "EPE px", f"EPE px, true > {STRONG:g} px", f"angular error °, true > {MOVING:g} px",
            f"motion found / true, true > {STRONG:g} px", f"motion found / true at the peak (true ≥ {PEAK:g} × max)",
            "ms per pair, warm, 1 thread", f"ms per pair, warm, all {threads} threads")


@dataclass(frozen=True)
class FlowPair:
    """An onset and an apex crop and the true flow between them.

    Attributes
    ----------
    name : str
        What the pair is (a clip id).
    onset, apex : ndarray, uint8, shape (S, S)
    truth : ndarray, float32, shape (S, S, 2)
        Where each onset pixel is in the apex crop, crop px.
    """

    name: str
    onset: np.ndarray
    apex: np.ndarray
    truth: np.ndarray

    def __post_init__(self) -> None:
        if self.onset.shape != self.apex.shape or self.truth.shape != self.onset.shape + (2,):
            raise ValueError(f"{self.name}: onset {self.onset.shape}, apex {self.apex.shape} and truth {self.truth.shape} do not match")


def bump_field(bumps: tuple[tuple[float, float, float, float, float], ...] = BUMPS, size: int = SIZE) -> np.ndarray:
    """Sum of Gaussian bumps, float32 (size, size, 2), crop px: the true motion of each onset pixel."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    field = np.zeros((size, size, 2))
    for cx, cy, sigma, dx, dy in bumps:
        weight = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        field[..., 0] += dx * weight
        field[..., 1] += dy * weight
    return field.astype(np.float32)


def warp_forward(image: np.ndarray, uv: np.ndarray, *, iterations: int = 30) -> np.ndarray:
    """``image`` with the content at each pixel p moved to p + ``uv``(p).

    ``cv2.remap`` pulls (apex(q) = image(q − g(q))), so the pull field g on the apex grid is
    solved from g(q) = uv(q − g(q)) by fixed-point iteration (a contraction while the field's
    gradient is below 1; uv is read bilinearly between pixels).

    Parameters
    ----------
    image : ndarray, uint8, shape (H, W)
    uv : ndarray, float32, shape (H, W, 2)
        Forward displacement of each pixel of ``image``, px (x right, y down).

    Returns
    -------
    ndarray, uint8, shape (H, W)
        Bicubic, reflected at the border.
    """
    h, w = image.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    pull = uv.copy()
    for _ in range(iterations):
        pull = cv2.remap(uv, xs - pull[..., 0], ys - pull[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(image, xs - pull[..., 0], ys - pull[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def face_pair(*, noise: float = NOISE, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAMM-like onset and apex crops and the true flow between them.

    Returns
    -------
    onset, apex : ndarray, uint8, shape (224, 224)
    truth : ndarray, float32, shape (224, 224, 2)
        Crop px.
    """
    from skimage import data  # the photograph ships inside the scikit-image wheel

    grey = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    x1, y1, x2, y2 = FACE_REGION
    face = cv2.resize(grey[y1:y2, x1:x2], (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    truth = bump_field()
    moved = warp_forward(face, truth)
    rng = np.random.default_rng(seed)
    onset, apex = (np.clip(np.round(img + rng.normal(0, noise, img.shape)), 0, 255).astype(np.uint8) for img in (face, moved))
    return onset, apex, truth


def accuracy(uvs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict[str, float]:
    """Errors of flows against their true flows, interior pixels of every pair pooled.

    Parameters
    ----------
    uvs, truths : sequences of ndarray, shape (S, S, 2)
        Found and true flow of each pair, crop px.

    Returns
    -------
    dict
        ``epe`` (mean |uv − truth|, px), ``epe_strong`` (the same where |truth| > ``STRONG``),
        ``angular`` (mean angle between (u, v, 1) and (u_t, v_t, 1), degrees, where
        |truth| > ``MOVING``), ``found_ratio`` (Σ|uv| / Σ|truth| where |truth| > ``STRONG``)
        and ``peak_ratio`` (the same where |truth| ≥ ``PEAK`` × the pair's largest |truth|).
    """
    if len(uvs) != len(truths) or not uvs:
        raise ValueError(f"need as many flows as true flows, at least one; got {len(uvs)} and {len(truths)}")
    u, v, ut, vt = (np.concatenate([interior(a[..., k]).ravel().astype(np.float64) for a in arrays])
                    for arrays, k in ((uvs, 0), (uvs, 1), (truths, 0), (truths, 1)))
    epe = np.hypot(u - ut, v - vt)
    found_mag, true_mag = np.hypot(u, v), np.hypot(ut, vt)
    strong, moving = true_mag > STRONG, true_mag > MOVING
    peak = np.concatenate([(m >= PEAK * m.max()).ravel() for m in (np.hypot(*interior(t).transpose(2, 0, 1)) for t in truths)])
    cos = (u * ut + v * vt + 1) / np.sqrt((u**2 + v**2 + 1) * (ut**2 + vt**2 + 1))
    return {
        "epe": float(epe.mean()),
        "epe_strong": float(epe[strong].mean()),
        "angular": float(np.degrees(np.arccos(np.clip(cos[moving], -1.0, 1.0))).mean()),
        "found_ratio": float(found_mag[strong].sum() / true_mag[strong].sum()),
        "peak_ratio": float(found_mag[peak].sum() / true_mag[peak].sum()),
    }


def time_per_pair(pairs: Sequence[FlowPair], params: FlowParams, *, runs: int, threads: int) -> float:
    """Median ms of ``compute_flow`` over ``runs`` warm runs of every pair, OpenCV set to ``threads`` threads."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        compute_flow(pairs[0].onset, pairs[0].apex, params=params)  # warm-up
        times = []
        for pair in pairs:
            for _ in range(runs):
                start = time.perf_counter()
                compute_flow(pair.onset, pair.apex, params=params)
                times.append(time.perf_counter() - start)
    finally:
        cv2.setNumThreads(before)
    return 1000 * float(np.median(times))


def method_rows(pairs: Sequence[FlowPair], methods: tuple[str, ...] = FLOW_METHODS, *, runs: int = 5,
                threads: int | None = None) -> list[tuple[str, ...]]:
    """One row per method (default parameters), columns as ``header``: accuracy over ``pairs``
    and median ms per pair with 1 and with all threads.

    ``threads`` is the "all threads" count (default: OpenCV's, ``cv2.getNumThreads()``).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    every = threads or cv2.getNumThreads()
    rows = []
    for method in methods:
        params = FlowParams(method=method)
        found = accuracy([compute_flow(p.onset, p.apex, params=params).uv for p in pairs], [p.truth for p in pairs])
        rows.append((method, f"{found['epe']:.3f}", f"{found['epe_strong']:.3f}", f"{found['angular']:.2f}", f"{found['found_ratio']:.2f}",
                     f"{found['peak_ratio']:.2f}",
                     f"{time_per_pair(pairs, params, runs=runs, threads=1):.1f}",
                     f"{time_per_pair(pairs, params, runs=runs, threads=every):.1f}"))
    return rows


def flow_method_rows(methods: tuple[str, ...] = FLOW_METHODS, *, runs: int = 5, threads: int | None = None) -> list[tuple[str, ...]]:
    """``method_rows`` on the synthetic face pair (``face_pair``)."""
    return method_rows([FlowPair("astronaut", *face_pair())], methods, runs=runs, threads=threads)


def demo_pairs(root: Path) -> list[FlowPair]:
    """Every clip of a demo dataset as the pipeline sees it: the aligned onset and apex crops
    (MTCNN apex box, default alignment: sub-pixel, 224×224) and the true flow between them
    (``bench.fidelity.true_flow_in_crop``).
    """
    from bench.fidelity import true_flow_in_crop  # the pipeline (and torch) only when demo data is measured
    from sammflow.annotations import read_annotations
    from sammflow.dataset import load_dataset
    from sammflow.demo import read_ground_truth
    from sammflow.params import PipelineParams
    from sammflow.pipeline import normalize_clip

    params = PipelineParams()
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    truth = read_ground_truth(root)
    pairs = []
    for clip, frames in dataset.ready():
        normalized = normalize_clip(clip, frames, params=params, numbers=(clip.onset, clip.apex))
        pairs.append(FlowPair(clip.clip, normalized.crops[clip.onset], normalized.crops[clip.apex],
                              true_flow_in_crop(truth["by_clip"][clip.clip], normalized.alignment.box, params.align.crop_size)))
    return pairs


def markdown(rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed warm runs per method and thread count (median), >= 5 (default 7)")
    parser.add_argument("--methods", nargs="+", default=list(FLOW_METHODS), choices=FLOW_METHODS)
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error(f"--runs must be >= 5, got {args.runs}")
    threads = cv2.getNumThreads()
    print(f"OpenCV {cv2.__version__}, {threads} threads by default, {os.cpu_count()} CPUs; "
          f"{SIZE}×{SIZE} crops, true motion up to {np.hypot(*bump_field().reshape(-1, 2).T).max():.1f} px, noise σ = {NOISE:g}\n")
    print(markdown(flow_method_rows(tuple(args.methods), runs=args.runs, threads=threads), header(threads)))


if __name__ == "__main__":
    main()
