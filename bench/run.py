"""Benchmarks: speed, memory, alignment fidelity and flow methods, as ratios measured in one run.

    .venv/bin/python bench/run.py                       # full run (first time ≈ 5 min to generate data)
    .venv/bin/python bench/run.py --quick --out /tmp/bench_quick.md   # smoke run: every row on small data
    .venv/bin/python bench/run.py --only flow-methods   # one section (speed, fidelity, flow-methods, recognition)
    .venv/bin/python bench/run.py --only speed --rows grid flow --out /tmp/b.md   # some speed rows only

Generates (or reuses) the benchmark data under bench/data/ (the demanding set and the
SAMM-scale set of ``bench/speed.py``, the fidelity demo sets), prints the tables and writes
BENCHMARKS.md with the machine, the date and the ratios. Only the sections measured are
rewritten: ``--only`` keeps every other section of the file as it is (and says in the
section it refreshed when it was measured), and sections the script does not write (notes
added by hand) are always kept. Every speed row says cold (a fresh process timed from the
outside, start-up included) or warm; the speed section starts with issue 13's target table.
The default run measures every section, so alignment fidelity is re-measured in the same run
as the speed rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_methods import markdown  # noqa: E402
from bench.samm_scale import SammScaleConfig, generate_samm_scale  # noqa: E402
from bench.speed import GROUPS, SpeedData, speed_section  # noqa: E402
from sammflow.demo import DemoConfig, generate_demo  # noqa: E402
from sammflow.params import AlignParams  # noqa: E402

DATA = ROOT / "bench" / "data"
#: The demanding set of issue 13 (speed rows): 20 clips × 60 SAMM-size frames, every frame's head
#: independently uniform in ±3 px, noise σ = 1; and its --quick stand-in.
DEMANDING = DemoConfig(subjects=5, clips_per_subject=4, frames=60, seed=11, jitter=3.0, jitter_kind="uniform", noise=1.0)
DEMANDING_QUICK = DemoConfig(subjects=2, clips_per_subject=2, frames=20, seed=11, jitter=3.0, jitter_kind="uniform", noise=1.0)
#: The SAMM-scale set (export and dashboard rows): every row of the real samm.csv; --quick: its first 12 rows.
SAMM_SCALE = SammScaleConfig()
SAMM_SCALE_QUICK = SammScaleConfig(clips=12)
#: The sections of BENCHMARKS.md this script writes, by ``--only`` name, in file order.
SECTIONS = {"speed": "## Speed and memory", "fidelity": "## Alignment fidelity (issue 4)", "flow-methods": "## Flow methods (issue 11)",
            "recognition": "## Recognition check (issue 16)"}
#: Warm timed runs of each flow per pair and thread count (median).
FLOW_RUNS = 3


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
    parser.add_argument("--rows", nargs="+", choices=GROUPS, metavar="ROWS", default=list(GROUPS),
                        help=f"speed rows to measure ({', '.join(GROUPS)}; default: all); the others are left out of the section")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    wanted = [name for name in SECTIONS if name in (args.only or SECTIONS)]

    demanding_config = DEMANDING_QUICK if args.quick else DEMANDING
    samm_config = SAMM_SCALE_QUICK if args.quick else SAMM_SCALE
    # fidelity on faces/motions/jitter not used while developing the method (tests use seeds 0 and 3)
    fidelity_configs = [DemoConfig(subjects=5, clips_per_subject=2, frames=30, seed=23, jitter=1.5),
                        DemoConfig(subjects=3, clips_per_subject=2, frames=30, seed=37, jitter=3.0, amplitude=3.0)]
    if args.quick:
        fidelity_configs = [DemoConfig(subjects=2, clips_per_subject=2, frames=16, seed=23)]
    print("generating / reusing benchmark data under bench/data ...", flush=True)
    speed_data = None
    if "speed" in wanted:
        c = demanding_config
        speed_data = SpeedData(
            demanding=generate_demo(DATA / f"demanding-{c.hash}", c),
            demanding_about=(f"`bench/data/demanding-{c.hash}`: {c.subjects * c.clips_per_subject} clips × {c.frames} grey "
                             f"{c.width}×{c.height} JPEG frames (q{c.jpeg_quality}), every frame's head independently uniform in "
                             f"±{c.jitter:g} px, noise σ = {c.noise:g}, one local motion per clip"),
            samm=generate_samm_scale(DATA / samm_config.name, samm_config),
            samm_about=(f"`bench/data/{samm_config.name}`: the rows of the real samm.csv"
                        + (f" (its first {samm_config.clips} rows and the impossible ones)" if samm_config.clips else "")
                        + f", each clip's onset and apex frames (2040×1088 grey JPEG q{samm_config.jpeg_quality}, the demo's face "
                          f"per subject, head uniform in ±{samm_config.jitter:g} px per frame, noise σ = {samm_config.noise:g}, "
                          "a local motion at the apex)"),
            quick=args.quick)
    fidelity_roots = [generate_demo(DATA / f"fidelity-{c.hash}", c) for c in fidelity_configs] if {"fidelity", "flow-methods"} & set(wanted) else []

    machine = f"{platform.node() or 'machine'}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    bodies = {}
    for name in wanted:
        print(f"measuring: {name} ...", flush=True)
        if name == "speed":
            bodies[name] = speed_section(speed_data, args.rows)
        elif name == "fidelity":
            bodies[name] = fidelity_section(fidelity_configs, fidelity_roots)
        elif name == "recognition":
            from bench.recognition import section as recognition_section

            bodies[name] = recognition_section(quick=args.quick)
        else:
            bodies[name] = flow_methods_section(fidelity_configs, fidelity_roots)
    old = args.out.read_text() if args.out.exists() else ""
    alone = bool(args.only) and bool(old)  # an --only run into an existing file keeps its title, date and machine
    rows = f" --rows {' '.join(args.rows)}" if list(args.rows) != list(GROUPS) else ""
    stamp = (f"Refreshed alone by `bench/run.py{' --quick' if args.quick else ''} --only {' '.join(wanted)}{rows}` on {date} "
             f"({machine}); the sections not refreshed are from the run dated above.\n\n") if alone else ""
    sections = {SECTIONS[name]: f"{SECTIONS[name]}\n\n{stamp}{body}" for name, body in bodies.items()}
    text = merge_sections(old, sections, head=None if alone else preamble(quick=args.quick, date=date, machine=machine))
    args.out.write_text(text)
    print("".join(sections.values()) if alone else text)


if __name__ == "__main__":
    main()
