"""Alignment alone, per frame, on frames already decoded: time split by stage, and accuracy.

    .venv/bin/python bench/alignment.py bench/data/demanding-84a7d07609b5            # JSON on stdout
    .venv/bin/python bench/alignment.py DATA --clips 4                                # the first 4 clips

Three methods, each on every frame of every clip of a demo dataset (``ground_truth.json``),
one process, OpenCV limited to one thread (``cv2.setNumThreads(1)``, as an export or
normalize worker runs), frames decoded before the clock starts, the apex face box found by
the pipeline's own ``find_apex_face`` (MTCNN), one untimed warm-up pass on the first clip:

``subpixel``
    ``sammflow.align.FrameAligner`` with the default ``AlignParams`` (what normalize and
    export run). Stages: *coarse* (the aligner's own start, ``match_frame_coarse`` on its
    quarter- or half-resolution template, timed on its own), *refinement* (``FrameAligner.match`` minus
    that coarse time), *crop* (``FrameAligner.crop``). If a later ``FrameAligner`` has no
    separate coarse step this module can call, coarse is ``None`` and refinement is the whole match.
``whole_pixel``
    The original scripts' method: ``match_frame`` (TM_CCOEFF_NORMED at full resolution,
    ±``margin`` px), then the crop at that whole-pixel offset; no refinement.
``ecc``
    Baseline: ``cv2.findTransformECC`` with ``cv2.MOTION_TRANSLATION``. Template: the apex
    crop (the box on the apex frame, uint8); input: the frame window of the box at the
    whole-pixel match grown by ``ECC_PAD`` px on each side; initial warp: that whole-pixel
    match (so *coarse* is ``match_frame``); criteria ``ECC_CRITERIA`` (50 iterations or a
    correlation increment below 1e-4), no mask, OpenCV's default Gaussian pre-filter
    (``gaussFiltSize`` 5). Crop: the same cubic crop as ``subpixel``. A frame where ECC does
    not converge (OpenCV raises) keeps the whole-pixel match and is counted in ``failed``.

Accuracy: the residual shift of ``bench/fidelity.py`` (``residual_shifts``): on frames without
local motion, the distance between the found offset and the true jitter difference, crop px
(at ``crop_size`` 224), mean and 95th percentile over all such frames.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.fidelity import residual_shifts  # noqa: E402
from sammflow import align  # noqa: E402
from sammflow.align import FrameAligner, FrameMatch, apex_template, crop_aligned, match_frame  # noqa: E402
from sammflow.annotations import read_annotations  # noqa: E402
from sammflow.dataset import load_dataset, read_grey  # noqa: E402
from sammflow.demo import read_ground_truth  # noqa: E402
from sammflow.params import AlignParams  # noqa: E402
from sammflow.pipeline import find_apex_face  # noqa: E402

METHODS = ("subpixel", "whole_pixel", "ecc")
STAGES = ("coarse", "refinement", "crop", "total")
#: ECC's termination: at most 50 iterations, or a correlation increment below 1e-4.
ECC_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-4)
#: OpenCV's default Gaussian pre-filter of both images, px.
ECC_GAUSS = 5
#: Frame px around the box (at the whole-pixel match) that ECC's input window adds on each side.
ECC_PAD = 8


def _coarse_of(aligner: FrameAligner):
    """The aligner's own coarse step as a callable ``frame -> FrameMatch``, or ``None`` if it has none we can call."""
    small = getattr(aligner, "template_coarse", None)
    coarse = getattr(align, "match_frame_coarse", None)
    if aligner.params.method != "subpixel" or small is None or coarse is None:
        return None
    return lambda frame: coarse(frame, small, aligner.box, margin=aligner.params.margin, factor=aligner.coarse_factor)


def ecc_refine(frame: np.ndarray, template: np.ndarray, box, start: FrameMatch) -> tuple[FrameMatch, bool]:
    """``findTransformECC`` (translation) from the whole-pixel match ``start``; (match, converged)."""
    h, w = frame.shape
    x0 = max(0, int(round(box.x1 + start.dx)) - ECC_PAD)
    y0 = max(0, int(round(box.y1 + start.dy)) - ECC_PAD)
    x1 = min(w, int(round(box.x2 + start.dx)) + ECC_PAD)
    y1 = min(h, int(round(box.y2 + start.dy)) + ECC_PAD)
    window = frame[y0:y1, x0:x1]
    # the warp maps template pixel (u, v) to window pixel (u + tx, v + ty)
    warp = np.array([[1, 0, box.x1 + start.dx - x0], [0, 1, box.y1 + start.dy - y0]], dtype=np.float32)
    try:
        score, warp = cv2.findTransformECC(template, window, warp, cv2.MOTION_TRANSLATION, ECC_CRITERIA, None, ECC_GAUSS)
    except cv2.error:
        return start, False
    return FrameMatch(float(warp[0, 2] + x0 - box.x1), float(warp[1, 2] + y0 - box.y1), float(score)), True


def measure_alignment(root: Path, *, clips: int | None = None) -> dict:
    """Per-frame stage times (ms, mean and median) and residual shifts (crop px) of ``METHODS`` on the demo dataset ``root``."""
    cv2.setNumThreads(1)
    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    truth = read_ground_truth(root)
    ready = dataset.ready()[:clips] if clips else dataset.ready()
    params = AlignParams()
    whole = AlignParams(method="whole_pixel")
    times = {m: {s: [] for s in STAGES} for m in METHODS}
    residuals: dict[str, list[float]] = {m: [] for m in METHODS}
    failed = {m: 0 for m in METHODS}
    frames_done = 0
    coarse_split = True
    for index, (clip, frames) in enumerate(ready):
        box, _ = find_apex_face(clip, frames)
        decoded = {n: read_grey(frames.path(n)) for n in frames.numbers}
        template = apex_template(decoded[clip.apex], box)
        aligner = FrameAligner(template, box, params=params)
        coarse = _coarse_of(aligner)
        coarse_split &= coarse is not None
        scale = params.crop_size / box.width
        passes = (False, True) if index == 0 else (True,)  # an untimed warm-up pass on the first clip
        for timed in passes:
            matches: dict[str, dict[int, FrameMatch]] = {m: {} for m in METHODS}
            for n, frame in decoded.items():
                # sub-pixel default: the coarse step alone, then the whole match, then the crop
                t0 = time.perf_counter()
                if coarse is not None:
                    coarse(frame)
                t1 = time.perf_counter()
                m = aligner.match(frame)
                t2 = time.perf_counter()
                aligner.crop(frame, m)
                t3 = time.perf_counter()
                matches["subpixel"][n] = m
                failed["subpixel"] += timed and not np.isfinite(m.residual)
                c, match_s, crop_s = t1 - t0, t2 - t1, t3 - t2
                stage = {"coarse": c if coarse is not None else float("nan"),
                         "refinement": match_s - c if coarse is not None else match_s, "crop": crop_s, "total": match_s + crop_s}
                # the original whole-pixel method
                t0 = time.perf_counter()
                start = match_frame(frame, template, box, margin=params.margin)
                t1 = time.perf_counter()
                crop_aligned(frame, box, start.dx, start.dy, params=whole)
                t2 = time.perf_counter()
                matches["whole_pixel"][n] = start
                whole_stage = {"coarse": t1 - t0, "refinement": 0.0, "crop": t2 - t1, "total": t2 - t0}
                # ECC from the whole-pixel match (its coarse step is that match, timed above)
                t0 = time.perf_counter()
                e, converged = ecc_refine(frame, template, box, start)
                t1 = time.perf_counter()
                crop_aligned(frame, box, e.dx, e.dy, params=params)
                t2 = time.perf_counter()
                matches["ecc"][n] = e
                failed["ecc"] += timed and not converged
                ecc_stage = {"coarse": whole_stage["coarse"], "refinement": t1 - t0, "crop": t2 - t1,
                             "total": whole_stage["coarse"] + t2 - t0}
                if timed:
                    for method, values in (("subpixel", stage), ("whole_pixel", whole_stage), ("ecc", ecc_stage)):
                        for s in STAGES:
                            times[method][s].append(values[s])
            if timed:
                frames_done += len(decoded)
                for method in METHODS:
                    residuals[method].extend(residual_shifts(truth["by_clip"][clip.clip], matches[method], clip.apex, scale))
    out: dict = {"frames": frames_done, "clips": len(ready), "still_frames": len(residuals["subpixel"]),
                 "coarse_split": coarse_split, "threads": 1, "methods": {}}
    for method in METHODS:
        r = np.asarray(residuals[method])
        out["methods"][method] = {
            **{f"{s}_ms": 1000 * float(np.mean(times[method][s])) for s in STAGES},
            **{f"{s}_ms_median": 1000 * float(np.median(times[method][s])) for s in STAGES},
            "residual_mean": float(r.mean()), "residual_p95": float(np.percentile(r, 95)), "failed": int(failed[method]),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a demo dataset (with ground_truth.json)")
    parser.add_argument("--clips", type=int, default=None, help="only the first CLIPS ready clips")
    args = parser.parse_args(argv)
    print(json.dumps(measure_alignment(args.data, clips=args.clips)))


if __name__ == "__main__":
    main()
