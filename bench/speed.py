"""The speed and memory section of BENCHMARKS.md (issue 13): rows, the target table, and how each is measured.

Two data sets (``bench/run.py`` builds or reuses them under ``bench/data``):

* the **demanding set** (``DemoConfig(subjects=5, clips_per_subject=4, frames=60, seed=11,
  jitter=3.0, jitter_kind="uniform", noise=1.0)``: 20 clips × 60 SAMM-size grey JPEG frames,
  every frame's head independently uniform in ±3 px, noise σ = 1, one local motion per clip):
  decode, normalize and alignment rows;
* the **SAMM-scale set** (``bench/samm_scale.py``: the real samm.csv's 159 rows, 157 valid
  clips, onset and apex frames): export, TV-L1 export and dashboard rows.

Every row says **cold** or **warm**. Cold: a fresh process timed from the outside (interpreter
start-up, imports and MTCNN load included), with an empty sammflow disk cache
(``SAMMFLOW_CACHE`` pointing at a new folder). Warm: the same process again (what is loaded
stays loaded). In every row the data set's files are in the OS page cache (each file read
once just before the measurements): no row measures the disk.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.flow_methods import markdown

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
#: The speed rows, by ``--rows`` name, in the order they are measured.
GROUPS = ("decode", "original", "normalize", "align", "export", "cluster", "tvl1", "grid", "flow", "report")
#: AppTest's limit for one script run, s (a cold grid page detects every apex face).
APP_TIMEOUT = 1800

DECODE = """
import json, sys, time
from pathlib import Path
root, which = Path(sys.argv[1]), sys.argv[2]
paths = sorted(root.glob("*/*/*.jpg"))
if which == "cv2":
    import cv2, numpy as np
    def decode(path):
        return cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
else:
    from sammflow.dataset import read_grey as decode
start = time.perf_counter()
for path in paths:
    decode(path)
print(json.dumps({"loop": time.perf_counter() - start, "frames": len(paths)}))
"""

EXPORT_WARM = """
import json, sys, time
from pathlib import Path
from sammflow.annotations import read_annotations
from sammflow.dataset import load_dataset
from sammflow.export import export_flows
root, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dataset = load_dataset(root, read_annotations(root / "samm.csv"))
export_flows(dataset, out / "first", workers=workers)
start = time.perf_counter()
report = export_flows(dataset, out / "second", workers=workers)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": len(report.rows), "ok": report.ok}))
"""

#: A LocalCluster of N workers started once, then: an export on it (cold workers: each loads
#: the detector), a second export (warm), and the per-task overhead (no-op tasks' round trip).
CLUSTER_WARM = """
import json, sys, time
from pathlib import Path
from distributed import Client, LocalCluster
from sammflow.annotations import read_annotations
from sammflow.cluster import Scheduler
from sammflow.dataset import load_dataset
from sammflow.export import export_flows
root, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dataset = load_dataset(root, read_annotations(root / "samm.csv"))
with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50) as cluster:
    scheduler = Scheduler.parse(cluster.scheduler_address)
    start = time.perf_counter()
    export_flows(dataset, out / "first", scheduler=scheduler)
    first = time.perf_counter() - start
    start = time.perf_counter()
    report = export_flows(dataset, out / "second", scheduler=scheduler)
    second = time.perf_counter() - start
    with Client(cluster) as client:
        client.gather(client.map(abs, range(-50, 0), pure=False))  # warm
        start = time.perf_counter()
        n = 1000
        client.gather(client.map(abs, range(-n, 0), pure=False))
        overhead = (time.perf_counter() - start) / n
print(json.dumps({"seconds": second, "first": first, "ok": report.ok, "task_overhead_ms": overhead * 1000}))
"""

#: The start of the AppTest scripts: the app, and a run of it timed.
APP = """
import json, sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=float(sys.argv[2]))
def timed():
    start = time.perf_counter()
    at.run()
    assert not at.exception, at.exception
    return time.perf_counter() - start
"""

GRID = APP + """
overview = timed()
at.switch_page("app_pages/grid.py")
first = timed()
tiles = sum(len(image.captions) or 1 for image in at.image)
errors = len(at.error)
again = timed()
print(json.dumps({"overview": overview, "first": first, "again": again, "tiles": tiles, "errors": errors}))
"""

FLOW = APP + """
timed()
at.switch_page("app_pages/flow.py")
first = timed()
images = len(at.image)
at.slider(key="winsize").set_value(21)
farneback = timed()
at.selectbox(key="flow_method").set_value("tvl1")
tvl1_first = timed()
at.selectbox(key="map_scale").set_value("minmax")
tvl1_encode = timed()
at.slider(key="tvl1_lambda").set_value(0.3)
tvl1_param = timed()
print(json.dumps({"first": first, "images": images, "farneback": farneback, "tvl1_first": tvl1_first,
                  "tvl1_encode": tvl1_encode, "tvl1_param": tvl1_param}))
"""


@dataclass(frozen=True)
class SpeedData:
    demanding: Path
    demanding_about: str  # e.g. "20 clips × 60 frames"
    samm: Path
    samm_about: str
    quick: bool


def cores() -> int:
    """The cores this process may use (as sammflow's worker pool counts them)."""
    try:
        from sammflow.workers import available_cores

        return available_cores()
    except ImportError:  # pragma: no cover - an older or reorganised sammflow
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_details() -> str:
    """CPU model, cores, memory and the load average now (other work on the machine slows every row)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1])
        memory = f", {kb / 2**20:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{model}, {cores()} cores usable (of {os.cpu_count()}){memory}"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "unknown"


def warm_page_cache(root: Path) -> int:
    """Read every file under ``root`` once (so no row measures the disk); returns the bytes read."""
    return sum(len(path.read_bytes()) for path in sorted(root.rglob("*")) if path.is_file())


def env_with_cache(cache: Path, **extra: str) -> dict[str, str]:
    """This environment with sammflow's disk cache at ``cache`` (new and empty for a cold row)."""
    return {**os.environ, "SAMMFLOW_CACHE": str(cache), "XDG_CACHE_HOME": str(cache / "xdg"), **extra}


def _mem(ran: procs.Ran) -> str:
    tree = f", all its processes {ran.tree_mb:.0f} MB" if ran.tree_mb is not None else ""
    return f"peak RSS {ran.rss_mb:.0f} MB (largest process{tree})"


#: ``sammflow export`` exits 1 when any clip failed: the SAMM-scale set's two impossible rows always do.
EXPORT_CODES = (0, 1)


def _ok_rows(manifest: Path, valid: int) -> tuple[str, int]:
    """How many manifest rows are ``ok`` (as text, flagged if not every valid clip) and how many rows there are."""
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ok = sum(r["status"] == "ok" for r in rows)
    return (str(ok) if ok == valid else f"**only {ok}**"), len(rows)


def _cold_export(data: SpeedData, out: Path, options: list[str], env: dict[str, str]) -> procs.Ran:
    """``python -m sammflow export`` of the SAMM-scale set into ``out`` with ``options``, a fresh process timed from outside."""
    return procs.run([PYTHON, "-m", "sammflow", "export", str(data.samm), str(out), "-q", *options], label=f"export {' '.join(options)}",
                     cwd=ROOT, env=env, ok_codes=EXPORT_CODES)


def _same_files(a: Path, b: Path) -> bool:
    """Every file of output folders ``a`` and ``b`` byte-identical (``params.json`` aside: it records times)."""
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name != "params.json" and p.suffix != ".log"}
    return files(a) == files(b)


def _same_outputs(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in ("params.json", "manifest.csv"))
    return bool(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def speed_section(data: SpeedData, groups: Sequence[str] = GROUPS) -> str:
    """The speed and memory section's body, measured now (``groups``: which rows)."""
    n = cores()
    workers = sorted({1, n})
    rows: list[tuple[str, ...]] = []
    align_rows: list[tuple[str, ...]] = []
    m: dict[str, object] = {}  # what the target table needs
    scratch = Path(tempfile.mkdtemp(prefix="sammflow-bench-"))
    load_before = load_average()
    try:
        from sammflow.annotations import read_annotations

        valid = len(read_annotations(data.samm / "samm.csv").clips)
        samm_rows = valid + len(read_annotations(data.samm / "samm.csv").rejected)
        frames = len(list(data.demanding.glob("*/*/*.jpg")))
        warm_page_cache(data.demanding)
        warm_page_cache(data.samm)
        cold_cache = lambda name: env_with_cache(scratch / f"cache-{name}")  # noqa: E731 - a new, empty cache folder per cold row

        decode_s = None
        if "decode" in groups or "normalize" in groups or "original" in groups:
            for which, what in (("cv2", "`cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)`"),
                                ("read_grey", "`sammflow.dataset.read_grey` (libjpeg-turbo via simplejpeg, strict checks)")):
                ran = procs.run([PYTHON, "-c", DECODE, str(data.demanding), which], label=f"decode only ({which})", cwd=ROOT,
                                env=cold_cache(f"decode-{which}"))
                result = json.loads(ran.json_line("loop"))
                if which == "cv2":
                    decode_s = result["loop"]
                    m["decode_cv2"] = decode_s
                rows.append((f"decode only, {what}, 1 process, every frame of the demanding set — cold process, page cache warm",
                             f"{result['loop']:.2f} s", f"{frames / result['loop']:.0f} frames/s; the decode loop alone (process wall "
                             f"{ran.wall:.2f} s with start-up){'; **the ratio denominator**' if which == 'cv2' else ''}"))

        original_s = None
        if "original" in groups:
            ran = procs.run([PYTHON, "bench/original.py", str(data.demanding), str(scratch / "original")], label="original method",
                            cwd=ROOT, env=cold_cache("original"))
            original_s = ran.wall
            rows.append(("original method (PIL + full-res MTCNN + whole-pixel TM, 1 process) — cold (fresh process, start-up included)",
                         f"{ran.wall:.2f} s", f"{frames / ran.wall:.0f} frames/s, {ran.wall / decode_s:.2f}× cv2 decode; {_mem(ran)}"))

        if "normalize" in groups:
            for w in workers:
                ran = procs.run([PYTHON, "-m", "sammflow", "normalize", str(data.demanding), str(scratch / f"norm{w}"), "-q", "-j", str(w)],
                                label=f"normalize -j {w}", cwd=ROOT, env=cold_cache(f"norm{w}"))
                m[f"normalize_ratio_{w}"] = ran.wall / decode_s
                faster = f", {original_s / ran.wall:.1f}× faster than original" if original_s else ""
                rows.append((f"normalize, sub-pixel, {w} worker(s), demanding set — cold (fresh process, start-up included)",
                             f"{ran.wall:.2f} s", f"{frames / ran.wall:.0f} frames/s, **{ran.wall / decode_s:.2f}× cv2 decode**{faster}; "
                             f"CPU {ran.cpu_share(n):.0%} of {n} cores; {_mem(ran)}"))
            if len(workers) > 1:
                same = _same_outputs(scratch / "norm1", scratch / f"norm{n}")
                rows.append((f"normalize {n} workers == 1 worker (crops, alignment.csv) — a check of the two cold runs above, not a timing", "identical" if same else "**DIFFERENT**", ""))

        if "align" in groups:
            ran = procs.run([PYTHON, "bench/alignment.py", str(data.demanding)], label="alignment (bench/alignment.py)", cwd=ROOT, env=cold_cache("align"))
            result = json.loads(ran.json_line("frames"))
            names = {"subpixel": "sub-pixel default (`FrameAligner`: coarse TM at ¼ resolution + robust Gauss-Newton + cubic crop)",
                     "whole_pixel": "original whole-pixel (full-resolution TM + whole-pixel crop)",
                     "ecc": "baseline `cv2.findTransformECC`, MOTION_TRANSLATION, from the whole-pixel match"}
            for method, name in names.items():
                r = result["methods"][method]
                coarse = "–" if r["coarse_ms"] != r["coarse_ms"] else f"{r['coarse_ms']:.2f}"  # NaN: no separate coarse step
                failed = f" ({r['failed']} frames kept the whole-pixel match)" if r["failed"] else ""
                align_rows.append((name, coarse, f"{r['refinement_ms']:.2f}", f"{r['crop_ms']:.2f}", f"**{r['total_ms']:.2f}** "
                                   f"({r['total_ms_median']:.2f})", f"{r['residual_mean']:.3f} / {r['residual_p95']:.3f}{failed}"))
            sub = result["methods"]["subpixel"]
            m["align_ms"], m["align_p95"], m["align_mean"] = sub["total_ms"], sub["residual_p95"], sub["residual_mean"]
            m["align_about"] = (f"{result['frames']} frames of {result['clips']} clips of the demanding set, {result['still_frames']} "
                                f"of them without local motion (residual shift)")

        if "export" in groups:
            for w in workers:
                out = scratch / f"export{w}"
                ran = _cold_export(data, out, ["-j", str(w)], cold_cache(f"export{w}"))
                ok, total = _ok_rows(out / "manifest.csv", valid)
                m[f"export_rate_{w}"] = valid / ran.wall
                rows.append((f"export maps (Farnebäck), {w} worker(s), SAMM-scale set — cold (fresh process `python -m sammflow "
                             f"export DATA OUT -q -j {w}`, start-up and MTCNN load included, empty disk cache)",
                             f"{valid / ran.wall:.1f} clips/s", f"{ran.wall:.2f} s for the {valid} valid clips ({ok} ok of {total} "
                             f"manifest rows; the {total - valid} impossible rows are reported, not processed); CPU {ran.cpu_share(n):.0%} "
                             f"of {n} cores; {_mem(ran)}"))
            ran = procs.run([PYTHON, "-c", EXPORT_WARM, str(data.samm), str(scratch / "export-warm"), str(n)],
                            label=f"export twice in one process, -j {n}", cwd=ROOT, env=cold_cache("export-warm"))
            result = json.loads(ran.json_line("seconds"))
            m["export_warm"] = valid / result["seconds"]
            warm_ok = str(result["ok"]) if result["ok"] == valid else f"**only {result['ok']}**"
            rows.append((f"export maps (Farnebäck), {n} worker(s), SAMM-scale set — **warm** (second `export_flows` in the same "
                         "process: MTCNN and the worker pool loaded; apex faces detected again)",
                         f"{valid / result['seconds']:.1f} clips/s", f"{result['seconds']:.2f} s for the {valid} valid clips "
                         f"({warm_ok} ok); {_mem(ran)} (both exports)"))

        if "cluster" in groups:
            local = scratch / f"export{n}"
            if not (local / "manifest.csv").is_file():  # the export rows were not measured in this run
                ran = _cold_export(data, local, ["-j", str(n)], cold_cache(f"export{n}"))
                m[f"export_rate_{n}"] = valid / ran.wall
            out = scratch / "export-cluster"
            ran = _cold_export(data, out, ["--scheduler", f"local:{n}"], cold_cache("cluster"))
            ok, total = _ok_rows(out / "manifest.csv", valid)
            same = _same_files(local, out)
            rows.append((f"export maps (Farnebäck), `--scheduler local:{n}` (a Dask LocalCluster of {n} worker processes, started by "
                         "the command; detection on the workers), SAMM-scale set — cold (fresh process, cluster start included)",
                         f"{valid / ran.wall:.1f} clips/s", f"{ran.wall:.2f} s for the {valid} valid clips ({ok} ok); against "
                         f"{m.get(f'export_rate_{n}', float('nan')):.1f} clips/s with `-j {n}` (local processes) above; outputs "
                         f"{'byte-identical to' if same else '**DIFFERENT from**'} the `-j {n}` run's (params.json aside); {_mem(ran)}"))
            ran = procs.run([PYTHON, "-c", CLUSTER_WARM, str(data.samm), str(scratch / "cluster-warm"), str(n)],
                            label=f"exports on a LocalCluster of {n}", cwd=ROOT, env=cold_cache("cluster-warm"))
            result = json.loads(ran.json_line("seconds"))
            rows.append((f"export maps (Farnebäck) on a running LocalCluster of {n} workers — first export (workers load the detector) "
                         "/ **warm** (second export, same cluster)", f"{valid / result['first']:.1f} / {valid / result['seconds']:.1f} clips/s",
                         f"{result['first']:.2f} s / {result['seconds']:.2f} s ({result['ok']} ok)"
                         + (f"; against {m['export_warm']:.1f} clips/s warm with local processes above" if "export_warm" in m else "")))
            rows.append(("Dask per-task overhead on that cluster (1000 no-op tasks, `client.map`, round trip) — warm",
                         f"{result['task_overhead_ms']:.2f} ms/task", f"a clip's task costs ≈ {1000 * n / max(valid / result['seconds'], 1e-9):.0f} ms "
                         "of a worker: the overhead is a small share of it"))

        if "tvl1" in groups:
            out = scratch / "export-tvl1"
            ran = _cold_export(data, out, ["--flow-method", "tvl1", "-j", str(n)], cold_cache("tvl1"))
            ok, total = _ok_rows(out / "manifest.csv", valid)
            m["tvl1_rate"], m["tvl1_wall"], m["tvl1_cpu"] = valid / ran.wall, ran.wall, ran.cpu_share(n)
            rows.append((f"export maps, TV-L1 (`--flow-method tvl1`), {n} worker(s) = all cores, SAMM-scale set — cold (fresh process)",
                         f"{valid / ran.wall:.2f} clips/s", f"{ran.wall:.1f} s for the {valid} valid clips ({ok} ok); CPU "
                         f"{ran.cpu_share(n):.0%} of {n} cores over the run; {_mem(ran)}"))

        if "grid" in groups:
            cache = scratch / "cache-app"
            env = env_with_cache(cache, SAMMFLOW_DATA=str(data.samm), SAMMFLOW_ANNOTATIONS=str(data.samm / "samm.csv"),
                                 SAMMFLOW_OUT=str(scratch / "app-out"))
            app = str(ROOT / "app.py")
            first = procs.run([PYTHON, "-c", GRID, app, str(APP_TIMEOUT)], label="dashboard grid page (empty cache)", cwd=ROOT, env=env)
            g = json.loads(first.json_line("overview"))
            second = procs.run([PYTHON, "-c", GRID, app, str(APP_TIMEOUT)], label="dashboard grid page (disk cache filled)", cwd=ROOT, env=env)
            g2 = json.loads(second.json_line("overview"))
            m["grid_cold"], m["grid_warm"] = g["first"], g["again"]
            rows.append(("dashboard: app start, overview page, first run (AppTest) — cold (fresh process, empty disk cache)",
                         f"{g['overview']:.2f} s", "SAMM-scale set"))
            rows.append(("dashboard: grid page (*Normalized grid*, one tile per clip), first run — cold (same fresh process, after the "
                         "overview; empty disk cache: every apex face detected, every onset frame aligned)",
                         f"{g['first']:.2f} s", f"{g['tiles']} tiles, {g['errors']} errors; process wall {first.wall:.1f} s with start-up; "
                         f"{_mem(first)}"))
            rows.append(("dashboard: grid page re-run — **warm** (same process: `st.cache_data` filled)", f"{g['again']:.2f} s", ""))
            rows.append(("dashboard: grid page, first run in a new process — **warm disk cache** (boxes and crops on disk), cold process",
                         f"{g2['first']:.2f} s", f"overview first {g2['overview']:.2f} s; process wall {second.wall:.1f} s; {_mem(second)}"))
            flow_env = env  # the flow page below reuses this disk cache (apex boxes found)

        if "flow" in groups:
            if "grid" not in groups:
                flow_env = env_with_cache(scratch / "cache-flow", SAMMFLOW_DATA=str(data.samm),
                                          SAMMFLOW_ANNOTATIONS=str(data.samm / "samm.csv"), SAMMFLOW_OUT=str(scratch / "app-out"))
            ran = procs.run([PYTHON, "-c", FLOW, str(ROOT / "app.py"), str(APP_TIMEOUT)], label="dashboard flow page", cwd=ROOT, env=flow_env)
            f = json.loads(ran.json_line("first"))
            m["flow_farneback"], m["flow_tvl1_encode"], m["flow_tvl1_param"] = f["farneback"], f["tvl1_encode"], f["tvl1_param"]
            boxes = "the disk cache the grid rows filled: apex boxes, onset crops" if "grid" in groups else "empty disk cache"
            rows.append((f"dashboard: flow page, first run (9 maps + large view, Farnebäck) — cold page in a fresh process ({boxes}; "
                         "flows computed)", f"{f['first']:.2f} s", f"{f['images']} images; {_mem(ran)}"))
            rows.append(("dashboard: flow page re-render after a flow-parameter change (Farnebäck window 15 → 21; 9 maps + large "
                         "view) — **warm** (crops cached)", f"{f['farneback']:.2f} s", "target ≤ 0.3 s"))
            rows.append(("dashboard: flow page after choosing TV-L1 in the sidebar (10 TV-L1 flows computed) — warm (crops cached)",
                         f"{f['tvl1_first']:.2f} s", "the flows of a new method are computed once"))
            rows.append(("dashboard: flow page re-render after a map-parameter change with TV-L1 (brightness scale robust → minmax; "
                         "the flows need not be recomputed) — **warm** (crops and TV-L1 flows cached)", f"{f['tvl1_encode']:.2f} s",
                         "target ≤ 0.3 s"))
            rows.append(("dashboard: flow page re-render after a TV-L1 parameter change (lambda 0.15 → 0.3: 10 TV-L1 flows "
                         "recomputed) — warm (crops cached)", f"{f['tvl1_param']:.2f} s", ""))

        if "report" in groups:
            local = scratch / f"export{n}"
            if not (local / "manifest.csv").is_file():  # the export rows were not measured in this run
                _cold_export(data, local, ["-j", str(n)], cold_cache(f"export{n}"))
            ran = procs.run([PYTHON, "-m", "sammflow", "report", str(local), "-q"], label="report of the SAMM-scale export", cwd=ROOT,
                            env=cold_cache("report"))
            size = (local / "report.html").stat().st_size / 1e6
            m["report_s"], m["report_mb"] = ran.wall, size
            rows.append(("report of the SAMM-scale export — cold (fresh process `python -m sammflow report OUT`: aligned crops of "
                         "every clip recomputed from the dataset, 9 sample flows, 3 clips in detail, one self-contained HTML file)",
                         f"{ran.wall:.1f} s, {size:.1f} MB", f"targets < 30 s and < 20 MB; CPU {ran.cpu_share(n):.0%} of {n} cores; "
                         f"{_mem(ran)}"))

        single, tree = procs.peak()
        if single is not None:
            tree_text = f"; the largest sum over one command's processes (sampled every {procs.SAMPLE_SECONDS:g} s): " \
                        f"{tree.tree_mb:.0f} MB, {tree.label}" if tree is not None else ""
            rows.append(("peak RSS of any command run above (every one a fresh process; its worker processes included)", f"{single.rss_mb:.0f} MB",
                         f"largest process: {single.label}{tree_text}; target ≤ 1500 MB"))
            m["rss_single"], m["rss_single_label"] = single.rss_mb, single.label
            if tree is not None:
                m["rss_tree"], m["rss_tree_label"] = tree.tree_mb, tree.label
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parts = [f"""Machine: {machine_details()}; load average (1 / 5 / 15 min) {load_before} before these rows, {load_average()} after
(other work on the machine slows every row). Data (`bench/data/`, built by `bench/run.py`): the demanding set,
{data.demanding_about}; the SAMM-scale set (`bench/samm_scale.py`), {data.samm_about}.
Every row says cold (a fresh process timed from the outside, start-up included, empty sammflow disk
cache) or warm (the same process again); the data files are in the OS page cache in every row.
Ratios compare rows of this same run."""]
    if m:
        parts.append("### Targets (issue 13)\n\n" + target_table(m, n, valid=valid, rows=samm_rows, quick=data.quick))
    if rows:
        parts.append(markdown(rows, ("measure", "result", "note")))
    if align_rows:
        parts.append(f"""### Alignment per frame (warm)

One process, frames decoded before the clock starts, OpenCV limited to 1 thread (as a worker runs),
{m['align_about']}; `bench/alignment.py`. ms per frame, mean (median of the total in brackets).
Coarse: the match the refinement starts from; refinement: the whole match minus the coarse step;
crop: the 224×224 crop. Residual shift: `bench/fidelity.py`'s measure, crop px against the true jitter.
ECC: template = the apex crop, input = the box at the whole-pixel match ± 8 px, warp initialised
there, 50 iterations or ε = 1e-4, Gaussian pre-filter 5 (OpenCV's default), no mask.

{markdown(align_rows, ("method", "coarse", "refinement", "crop", "total", "residual shift, crop px (mean / p95)"))}""")
    return "\n\n".join(parts) + "\n"


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def target_table(m: dict, n: int, *, valid: int, rows: int, quick: bool) -> str:
    """The issue's targets against this run's rows (a target whose rows were not measured is left out)."""
    out: list[tuple[str, ...]] = []
    if "normalize_ratio_1" in m:
        ratio = m.get(f"normalize_ratio_{n}", m["normalize_ratio_1"])
        out.append(("normalize, demanding set, wall incl. start-up ÷ single-process cv2 decode-only", "1.7–2.1",
                    f"{ratio:.2f} ({n} workers); {m['normalize_ratio_1']:.2f} (1 worker)", "≤ 1.0", _met(ratio <= 1.0)))
    if "align_ms" in m:
        out.append(("sub-pixel alignment per frame (after decode), same fidelity (residual ≤ 0.05 crop px, here p95)", "~9 ms",
                    f"{m['align_ms']:.2f} ms; residual {m['align_mean']:.3f} / {m['align_p95']:.3f} (mean / p95)", "≤ 3 ms",
                    _met(m["align_ms"] <= 3.0 and m["align_p95"] <= 0.05)))
    if f"export_rate_{n}" in m:
        out.append((f"cold export, SAMM-scale ({valid} valid clips of {rows} rows), fresh process, Farnebäck", "9 clips/s",
                    f"{m[f'export_rate_{n}']:.1f} clips/s ({n} workers); {m['export_rate_1']:.1f} (1 worker); warm "
                    f"{m['export_warm']:.1f}", "≥ 20 clips/s", _met(m[f"export_rate_{n}"] >= 20)))
    if "tvl1_rate" in m:
        out.append(("TV-L1 export, same set, cold", "–", f"{m['tvl1_rate']:.2f} clips/s, {m['tvl1_wall']:.0f} s; CPU "
                    f"{m['tvl1_cpu']:.0%} of {n} cores", "report it; all cores used", "reported"))
    if "grid_cold" in m:
        out.append((f"dashboard grid page, {rows} clips ({valid} tiles), cold / warm", "15.8 s / 3.0 s",
                    f"{m['grid_cold']:.1f} s / {m['grid_warm']:.2f} s", "≤ 8 s / ≤ 1 s",
                    _met(m["grid_cold"] <= 8 and m["grid_warm"] <= 1)))
    if "flow_farneback" in m:
        out.append(("flow page re-render after a flow-parameter change (9 maps + large view), crops cached", "0.18 s",
                    f"Farnebäck {m['flow_farneback']:.2f} s; TV-L1: map parameter {m['flow_tvl1_encode']:.2f} s, TV-L1 parameter "
                    f"{m['flow_tvl1_param']:.2f} s (flows recomputed; not judged)", "≤ 0.3 s, also with TV-L1 cached crops",
                    _met(m["flow_farneback"] <= 0.3 and m["flow_tvl1_encode"] <= 0.3)))
    if "rss_single" in m:
        tree = f"; {m['rss_tree'] / 1024:.2f} GB summed over the processes of {m['rss_tree_label']}" if "rss_tree" in m else ""
        out.append(("peak RSS, any command", "0.9 GB", f"{m['rss_single'] / 1024:.2f} GB (largest process: {m['rss_single_label']})"
                    f"{tree}", "≤ 1.5 GB", _met(m["rss_single"] <= 1536) + (f" (sum: {_met(m['rss_tree'] <= 1536)})" if "rss_tree" in m else "")))
    note = ("**Quick run: small data, not comparable with the targets.**\n\n" if quick else "")
    return note + markdown(out, ("measure", "issue 13's \"now\"", "this run", "target", "met"))
