"""Benchmarks: speed, memory, alignment fidelity and flow methods, as ratios measured in one run.

    .venv/bin/python bench/run.py                       # full run (first time ≈ 3 min to generate data)
    .venv/bin/python bench/run.py --quick               # smaller data, for a smoke test
    .venv/bin/python bench/run.py --only flow-methods   # one section (speed, fidelity, flow-methods)

Generates (or reuses) SAMM-size demo datasets under bench/data/, prints the tables and writes
BENCHMARKS.md with the machine, the date and the ratios. Only the sections measured are
rewritten: ``--only`` keeps every other section of the file as it is (and says in the
section it refreshed when it was measured), and sections the script does not write (notes
added by hand) are always kept. Every speed row is a fresh process timed from the outside
(start-up included) unless it says "warm".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_methods import markdown  # noqa: E402
from sammflow.demo import DemoConfig, generate_demo  # noqa: E402
from sammflow.params import AlignParams  # noqa: E402

DATA = ROOT / "bench" / "data"
PYTHON = sys.executable
#: The sections of BENCHMARKS.md this script writes, by ``--only`` name, in file order.
SECTIONS = {"speed": "## Speed and memory", "fidelity": "## Alignment fidelity (issue 4)", "flow-methods": "## Flow methods (issue 11)"}
#: Warm timed runs of each flow per pair and thread count (median).
FLOW_RUNS = 3


def run(cmd: list[str], **kwargs) -> tuple[float, str]:
    """Wall time of a fresh process and its output (raises if it fails)."""
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kwargs)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed, result.stdout + result.stderr


def peak_rss_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def decode_only(root: Path) -> tuple[float, int]:
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom sammflow.dataset import read_grey\n"
        f"paths = sorted(Path({str(root)!r}).glob('*/*/*.jpg'))\nstart = time.perf_counter()\n"
        "for p in paths: read_grey(p)\nprint(time.perf_counter() - start, len(paths))"
    )
    _, out = run([PYTHON, "-c", code])
    seconds, count = out.split()[-2:]
    return float(seconds), int(count)


def export_warm(root: Path, out: Path, workers: int) -> float:
    """clips/s of a second export in the same process (torch, MTCNN and the worker pool loaded;
    apex boxes detected again: the only box cache is the dashboard's disk store)."""
    code = (
        "import time\nfrom pathlib import Path\nfrom sammflow.annotations import read_annotations\n"
        "from sammflow.dataset import load_dataset\nfrom sammflow.export import export_flows\n"
        f"root = Path({str(root)!r})\nds = load_dataset(root, read_annotations(root / 'samm.csv'))\n"
        f"export_flows(ds, Path({str(out)!r}) / 'a', workers={workers})\n"
        f"start = time.perf_counter()\nreport = export_flows(ds, Path({str(out)!r}) / 'b', workers={workers})\n"
        "print(len(report.rows) / (time.perf_counter() - start))"
    )
    _, text = run([PYTHON, "-c", code])
    return float(text.split()[-1])


def alignment_time(root: Path) -> dict[str, float]:
    """ms per frame of the original whole-pixel alignment and of the sub-pixel default, on
    frames already decoded (the alignment alone)."""
    import numpy as np

    from sammflow.align import FrameAligner, apex_template, crop_aligned, match_frame
    from sammflow.annotations import read_annotations
    from sammflow.dataset import load_dataset, read_grey
    from sammflow.pipeline import find_apex_face

    dataset = load_dataset(root, read_annotations(root / "samm.csv"))
    times = {"whole_pixel": 0.0, "subpixel": 0.0}
    count = 0
    whole = AlignParams(method="whole_pixel")
    for clip, frames in dataset.ready()[:6]:
        box, _ = find_apex_face(clip, frames)
        decoded = [read_grey(frames.path(n)) for n in frames.numbers]
        template = apex_template(decoded[frames.numbers.index(clip.apex)], box)
        start = time.perf_counter()
        for frame in decoded:
            m = match_frame(frame, template, box)
            crop_aligned(frame, box, m.dx, m.dy, params=whole)
        times["whole_pixel"] += time.perf_counter() - start
        aligner = FrameAligner(template, box)
        start = time.perf_counter()
        for frame in decoded:
            aligner.crop(frame, aligner.match(frame))
        times["subpixel"] += time.perf_counter() - start
        count += len(decoded)
    return {k: 1000 * v / count for k, v in times.items()} | {"frames": float(np.float64(count))}


APP_TIMING = """
import json, sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=300)
start = time.perf_counter()
at.run()
first = time.perf_counter() - start
assert not at.exception, at.exception
torch_loaded = "torch" in sys.modules
at.switch_page("app_pages/flow.py").run()
assert not at.exception, at.exception
images = len(at.get("image"))
at.sidebar.slider(key="winsize").set_value(21)
start = time.perf_counter()
at.run()
warm = time.perf_counter() - start
assert not at.exception, at.exception
print(json.dumps({"first": first, "torch": torch_loaded, "warm": warm, "images": images}))
"""


def app_timings(root: Path, cache: Path) -> dict[str, float]:
    """Overview first run and the flow page's warm re-render after a flow-parameter change (AppTest)."""
    env = {**os.environ, "SAMMFLOW_DATA": str(root), "SAMMFLOW_ANNOTATIONS": str(root / "samm.csv"), "SAMMFLOW_CACHE": str(cache)}
    _, out = run([PYTHON, "-c", APP_TIMING], env=env)
    return json.loads(next(line for line in reversed(out.splitlines()) if line.startswith('{"first"')))


def speed_section(speed_root: Path) -> str:
    """The speed and memory table, measured on ``speed_root``."""
    rows: list[tuple[str, ...]] = []
    scratch = Path(tempfile.mkdtemp(prefix="sammflow-bench-"))
    try:
        decode_s, n_frames = decode_only(speed_root)
        rows.append(("decode only (1 process, grey JPEG decode)", f"{decode_s:.2f} s", f"{n_frames / decode_s:.0f} frames/s"))
        original_s, _ = run([PYTHON, "bench/original.py", str(speed_root), str(scratch / "original")])
        rows.append(("original method (PIL + full-res MTCNN + whole-pixel TM, 1 process)", f"{original_s:.2f} s",
                     f"{n_frames / original_s:.0f} frames/s, {original_s / decode_s:.2f}× decode"))
        rss_before = peak_rss_children_mb()
        timings = {}
        for workers in (1, os.cpu_count() or 1):
            if workers in timings:
                continue
            wall, _ = run([PYTHON, "-m", "sammflow", "normalize", str(speed_root), str(scratch / f"norm{workers}"), "-q", "-j", str(workers)])
            timings[workers] = wall
            rows.append((f"normalize, sub-pixel, {workers} worker(s), start-up included", f"{wall:.2f} s",
                         f"{n_frames / wall:.0f} frames/s, **{wall / decode_s:.2f}× decode**, {original_s / wall:.1f}× faster than original"))
        rss = max(peak_rss_children_mb(), rss_before)
        rows.append(("peak RSS of any process (decode, original, normalize)", f"{rss:.0f} MB", "target < 1500 MB"))
        same = _same_outputs(scratch / "norm1", scratch / f"norm{max(timings)}")
        rows.append(("normalize N workers == 1 worker (crops, alignment.csv)", "identical" if same else "DIFFERENT", ""))
        clips = len(list(speed_root.glob("*/*")))
        for workers in (1, os.cpu_count() or 1):
            wall, _ = run([PYTHON, "-m", "sammflow", "export", str(speed_root), str(scratch / f"cold{workers}"), "-q", "-j", str(workers)])
            rows.append((f"export maps, cold (fresh process, start-up and torch import included), {workers} worker(s), {clips} clips",
                         f"{clips / wall:.1f} clips/s", f"{wall:.2f} s"))
            rate = export_warm(speed_root, scratch / f"export{workers}", workers)
            rows.append((f"export maps, warm (second export in the same process: torch, MTCNN, pool loaded; boxes re-detected), "
                         f"{workers} worker(s), {clips} clips", f"{rate:.1f} clips/s", "target ≥ 20 clips/s"))
        if (ROOT / "app.py").exists():
            app = app_timings(speed_root, scratch / "cache")
            rows.append(("app: overview page, first run (AppTest, fresh process)", f"{app['first']:.2f} s",
                         f"target < 3 s; torch imported: {'yes' if app['torch'] else 'no'}"))
            rows.append(("app: flow page re-render after a flow-parameter change (9 maps + large view, crops cached)",
                         f"{app['warm']:.2f} s", "target < 0.3 s"))
        align = alignment_time(speed_root)
        rows.append(("alignment only, original whole-pixel (TM + crop)", f"{align['whole_pixel']:.2f} ms/frame", ""))
        rows.append(("alignment only, sub-pixel default (coarse TM + robust refinement + cubic crop)", f"{align['subpixel']:.2f} ms/frame",
                     f"{align['subpixel'] / align['whole_pixel']:.2f}× alignment alone; "
                     f"{(decode_s / n_frames * 1000 + align['subpixel']) / (decode_s / n_frames * 1000 + align['whole_pixel']):.2f}× with decode"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = markdown(rows, ("measure", "result", "note"))
    return f"""SAMM-size demo data: {n_frames} grey 2040×1088 JPEG frames ({clips} clips), `bench/data/`.
Ratios compare rows of this same run.

{table}
"""


def _datasets(configs: list[DemoConfig]) -> str:
    return ", ".join(f"{c.subjects}×{c.clips_per_subject} clips, jitter {c.jitter} px, seed {c.seed}" for c in configs)


def fidelity_section(configs: list[DemoConfig], roots: list[Path]) -> str:
    """The alignment fidelity table (``bench/fidelity.py``) over the demo datasets ``roots``."""
    from bench.fidelity import measure

    methods = {"whole_pixel (original)": AlignParams(method="whole_pixel"), "subpixel (default)": AlignParams(),
               "subpixel, not robust": AlignParams(robust=False), "perfect alignment (truth)": None}
    fidelity: dict[str, list[dict[str, float]]] = {}
    for root in roots:
        for name, summary in measure(root, methods).items():
            fidelity.setdefault(name, []).append(summary)
    merged = {name: {k: sum(s[k] for s in runs) / len(runs) for k in runs[0]} for name, runs in fidelity.items()}
    rows = [(name, f"{m['residual_mean']:.3f} / {m['residual_p95']:.3f}", f"{m['angle_error_mean']:.1f}° / {m['angle_error_max']:.1f}°",
             f"{m['pixel_angle_error_mean']:.1f}°", f"{m['peak_distance_mean']:.2f}") for name, m in merged.items()]
    table = markdown(rows, ("alignment", "residual shift, crop px (mean / p95)", "map direction error (mean / max)",
                            "per-pixel angle error", "peak distance, map px"))
    return f"""Demo datasets with known per-frame head jitter and local motion, on seeds, faces, motions
and jitter not used during development ({_datasets(configs)}).
Residual shift: aligned frames without local motion, against the true jitter, crop px at 224.
Map direction error: the value-weighted mean direction of the strongest 5 % of the 28×28
map against the mean true motion over those pixels. Per-pixel angle error: the same pixels,
each against the true local direction (symmetric errors cannot cancel). Peak distance:
value-weighted distance of those pixels from the true motion region (≥ half the peak true
displacement), 28×28 map px.

{table}
"""


def flow_methods_section(configs: list[DemoConfig], roots: list[Path]) -> str:
    """Every flow method against the true flow: on the demo datasets ``roots`` and on the
    synthetic face pair of ``bench/flow_methods.py``."""
    import cv2
    import numpy as np

    from bench.flow_methods import NOISE, bump_field, demo_pairs, flow_method_rows, header, method_rows

    threads = cv2.getNumThreads()
    pairs = [pair for root in roots for pair in demo_pairs(root)]
    peaks = [float(np.hypot(p.truth[..., 0], p.truth[..., 1]).max()) for p in pairs]
    synthetic_peak = float(np.hypot(*bump_field().reshape(-1, 2).T).max())
    demo_table = markdown(method_rows(pairs, runs=FLOW_RUNS, threads=threads), header(threads))
    synthetic_table = markdown(flow_method_rows(runs=2 * FLOW_RUNS + 1, threads=threads), header(threads))
    return f"""Each method (`--flow-method`) with its default parameters, on the onset and apex crops of
the real pipeline (MTCNN apex box, sub-pixel alignment, 224×224), against the true
onset→apex flow in crop px (`true_flow_in_crop` of `bench/fidelity.py`), on the fidelity
section's demo datasets: {len(pairs)} clips ({_datasets(configs)}),
SAMM-size JPEG frames with sensor noise; true motion peaking at {min(peaks):.1f}–{max(peaks):.1f} crop px.
Over the crop without a 1/16 border (`sammflow.encode.interior`), pixels of all clips
pooled: end-point error (EPE, mean |uv − truth|) everywhere and where the true motion
exceeds 0.5 px; angular error between (u, v, 1) and (u_t, v_t, 1) where it exceeds 0.1 px;
motion found / true, Σ|uv| / Σ|truth|, where it exceeds 0.5 px and at the peak, where it
is at least 0.8 × the clip's largest (below 1: motion underestimated). Time: median over
every pair × {FLOW_RUNS} warm runs of the flow alone (one process, crops in memory, a warm-up
run first), with `cv2.setNumThreads(1)` (as an export worker runs) and with OpenCV's
default, {threads} threads here (as the dashboard runs).

{demo_table}

The controlled pair of `bench/flow_methods.py` (same measures; {2 * FLOW_RUNS + 1} warm runs): the
astronaut's face cut and resized to 224×224, the apex rendered from it with Gaussian bumps
at the brows and mouth corners (up to {synthetic_peak:.1f} px), pixel noise σ = {NOISE:g} on both, no JPEG,
no alignment.

{synthetic_table}
"""


def preamble(*, quick: bool, date: str, machine: str) -> str:
    """The file's title and the run's date and machine."""
    return f"""# Benchmarks

Measured by `bench/run.py`{' --quick (smoke run: small data, not representative)' if quick else ''} on {date}.
Machine: {machine}.

"""


def split_sections(text: str) -> list[str]:
    """``text`` cut before every ``## `` heading line: the part before the first heading, then
    one part per section (its heading line first); joined, they give ``text`` back."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and (parts or current):
            parts.append("".join(current))
            current = []
        current.append(line)
    parts.append("".join(current))
    if parts and parts[0].startswith("## "):
        parts.insert(0, "")
    return parts


def merge_sections(old: str, sections: dict[str, str], *, head: str | None) -> str:
    """``old`` with the sections in ``sections`` (heading → whole section text) put in.

    A section already in ``old`` is replaced where it stands; a new one goes after the
    sections of ``SECTIONS`` that come before it in file order (or first); every other
    section is kept byte for byte. ``head`` replaces the part before the first section
    (``None``: kept).
    """
    parts = split_sections(old) if old else [""]
    if head is not None:
        parts[0] = head
    titles = list(SECTIONS.values())
    for title, text in sections.items():
        index = next((i for i, part in enumerate(parts) if part.splitlines()[:1] == [title]), None)
        if index is not None:
            parts[index] = text
            continue
        before = titles[:titles.index(title)]
        index = 1 + max((i for i, part in enumerate(parts) if i and part.splitlines()[0] in before), default=0)
        parts.insert(index, text)
    # a blank line between sections, without touching the sections kept
    joined = parts[0]
    for part in parts[1:]:
        if joined and not joined.endswith("\n\n"):
            joined += "\n" if joined.endswith("\n") else "\n\n"
        joined += part
    return joined.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small datasets (smoke test; numbers not representative)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), metavar="SECTION",
                        help=f"measure only these sections ({', '.join(SECTIONS)}) and rewrite only them in --out, keeping the rest")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    wanted = [name for name in SECTIONS if name in (args.only or SECTIONS)]

    speed_config = DemoConfig(subjects=2, clips_per_subject=2, frames=20, seed=11) if args.quick else DemoConfig(subjects=5, clips_per_subject=4, frames=60, seed=11)
    # fidelity on faces/motions/jitter not used while developing the method (tests use seeds 0 and 3)
    fidelity_configs = [DemoConfig(subjects=5, clips_per_subject=2, frames=30, seed=23, jitter=1.5),
                        DemoConfig(subjects=3, clips_per_subject=2, frames=30, seed=37, jitter=3.0, amplitude=3.0)]
    if args.quick:
        fidelity_configs = [DemoConfig(subjects=2, clips_per_subject=2, frames=16, seed=23)]
    print("generating / reusing benchmark data under bench/data ...", flush=True)
    speed_root = generate_demo(DATA / f"speed-{speed_config.hash}", speed_config) if "speed" in wanted else None
    fidelity_roots = [generate_demo(DATA / f"fidelity-{c.hash}", c) for c in fidelity_configs] if {"fidelity", "flow-methods"} & set(wanted) else []

    machine = f"{platform.node() or 'machine'}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    bodies = {}
    for name in wanted:
        print(f"measuring: {name} ...", flush=True)
        if name == "speed":
            bodies[name] = speed_section(speed_root)
        elif name == "fidelity":
            bodies[name] = fidelity_section(fidelity_configs, fidelity_roots)
        else:
            bodies[name] = flow_methods_section(fidelity_configs, fidelity_roots)
    old = args.out.read_text() if args.out.exists() else ""
    alone = bool(args.only) and bool(old)  # an --only run into an existing file keeps its title, date and machine
    stamp = (f"Refreshed alone by `bench/run.py{' --quick' if args.quick else ''} --only {' '.join(wanted)}` on {date} "
             f"({machine}); the sections not refreshed are from the run dated above.\n\n") if alone else ""
    sections = {SECTIONS[name]: f"{SECTIONS[name]}\n\n{stamp}{body}" for name, body in bodies.items()}
    text = merge_sections(old, sections, head=None if alone else preamble(quick=args.quick, date=date, machine=machine))
    args.out.write_text(text)
    print("".join(sections.values()) if alone else text)


def _same_outputs(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in ("params.json", "manifest.csv"))
    return bool(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


if __name__ == "__main__":
    main()
