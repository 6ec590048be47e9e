"""Command line: ``python -m sammflow {demo,normalize,flows,gif,export} --help``.

Runs headless on a server. Long work shows a progress bar (tqdm, on stderr); each command
ends with one line per failed clip (naming it and the cause) and a one-line summary, and
exits 1 when any clip failed, 2 when the input as a whole is unusable (bad dataset folder,
annotation file or output folder; one line saying why), 130 / 143 when interrupted by
Ctrl-C / SIGTERM (finished clips are kept; re-run the same command to resume), 0 otherwise.
No traceback is ever printed: unexpected errors are one line pointing to a log file that
holds the details.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator
from datetime import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sammflow import __version__
from sammflow.annotations import AnnotationError, read_annotations
from sammflow.dataset import Dataset, InputError, load_dataset
from sammflow.params import STAGES, AlignParams, DetectParams, EncodeParams, FlowParams, GifParams, PipelineParams, declared

def _add_params(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One flag per declared parameter of ``cls`` (``sammflow.params.param``): its flag name, help and default."""
    group = parser.add_argument_group(title)
    for f, p in declared(cls):
        flag = "--" + (p.flag or f.name.replace("_", "-"))
        choices = f"; one of {', '.join(map(str, p.choices))}" if p.choices and not isinstance(f.default, str) else ""
        help_text = f"{p.help}{choices} (default: {f.default})"
        dest = f"{cls.__name__}.{f.name}"
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            group.add_argument(flag, dest=dest, type=type(f.default), default=f.default, metavar=f.name.upper(), help=help_text)


_STAGE_CLASSES = {"detect": DetectParams, "align": AlignParams, "flow": FlowParams, "encode": EncodeParams}


def _build(cls: type, args: argparse.Namespace) -> Any:
    """A parameter set from the flags of the command (defaults for a stage the command has no flags of)."""
    return cls(**{f.name: getattr(args, f"{cls.__name__}.{f.name}") for f, _ in declared(cls) if hasattr(args, f"{cls.__name__}.{f.name}")})


def _pipeline_params(args: argparse.Namespace) -> PipelineParams:
    return PipelineParams(**{stage: _build(cls, args) for stage, cls in _STAGE_CLASSES.items()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sammflow",
        description="SAMM-style micro-expression clips → aligned face crops → onset→apex optical flow → 28×28 flow maps.",
    )
    parser.add_argument("--version", action="version", version=f"sammflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def dataset_command(name: str, help_text: str, data_help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("data", type=Path, help=data_help)
        p.add_argument("out", type=Path, help="output folder (created; must be outside the dataset folder)")
        p.add_argument("--annotations", "-a", type=Path, help="samm.csv or SAMM_Micro_FACS_Codes_v2.xlsx (default: DATA/samm.csv, or the one a normalize run recorded)")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        p.add_argument("--workers", "-j", type=int, default=None, help="worker processes (default: one per core)")
        p.add_argument("--force", action="store_true",
                       help="recompute every clip, even those OUT already holds; if OUT was made with other parameters "
                            "(or from another input folder), remove its outputs first instead of refusing")
        return p

    demo = sub.add_parser("demo", help="write a demo dataset in SAMM layout (with samm.csv and ground truth)",
                          description="Write a demo dataset in SAMM layout, generated from scikit-image's astronaut photograph: "
                                      "grey 2040×1088 frames with head jitter and a known local motion, samm.csv and ground_truth.json.")
    demo.add_argument("out", type=Path, help="new or empty folder")
    demo.add_argument("--subjects", type=int, default=3, help="number of subjects (default: 3)")
    demo.add_argument("--clips", type=int, default=2, help="clips per subject (default: 2)")
    demo.add_argument("--frames", type=int, default=36, help="frames per clip (default: 36)")
    demo.add_argument("--amplitude", type=float, default=4.0, help="peak local motion at apex, frame px (default: 4)")
    demo.add_argument("--jitter", type=float, default=1.5, help="per-frame head jitter std, frame px (default: 1.5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = dataset_command("normalize", "align every frame of every annotated clip to its apex face crop",
                        "dataset folder: DATA/<subject>/<clip>/<subject>_<frame>.jpg")
    for stage in ("detect", "align"):
        _add_params(p, _STAGE_CLASSES[stage], STAGES[stage])

    p = dataset_command("flows", "flow maps sub{SUBJECT}_{CLIP}.png from aligned crops (a normalize output)",
                        "a folder written by 'normalize'")
    for stage in ("flow", "encode"):
        _add_params(p, _STAGE_CLASSES[stage], STAGES[stage])

    p = dataset_command("gif", "onset→apex GIFs of aligned crops", "dataset folder or a 'normalize' output")
    p.add_argument("--clip", "-c", action="append", dest="clips", metavar="CLIP", help="clip id, e.g. 006_1_2 (repeatable; default: all)")
    _add_params(p, GifParams, "animation")
    for stage in ("detect", "align"):
        _add_params(p, _STAGE_CLASSES[stage], STAGES[stage])

    p = dataset_command("export", "raw frames → flow maps + manifest.csv + params.json (aligns only onset and apex)",
                        "dataset folder: DATA/<subject>/<clip>/<subject>_<frame>.jpg")
    for stage, cls in _STAGE_CLASSES.items():
        _add_params(p, cls, STAGES[stage])
    return parser


class _Bar:
    """A tqdm progress bar fed by the library's ``progress(done, total, label)`` callback."""

    def __init__(self, unit: str, quiet: bool) -> None:
        self.unit, self.quiet, self.bar = unit, quiet, None

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load(data: Path, annotations: Path | None) -> Dataset:
    from sammflow.export import is_normalized, normalized_params

    if annotations is None:
        if (data / "samm.csv").is_file():
            annotations = data / "samm.csv"
        elif is_normalized(data) and normalized_params(data).get("annotations"):
            annotations = Path(normalized_params(data)["annotations"])
        elif not data.exists():
            raise FileNotFoundError(f"{data}: dataset folder not found, so no samm.csv to read either; check the path")
        else:
            raise AnnotationError(f"{data}: no samm.csv in the dataset folder; pass --annotations FILE")
    parsed = read_annotations(annotations)
    rejected = {r.row for r in parsed.rejected}  # reported with the failed clips at the end, once
    for problem in parsed.problems:
        if problem.row not in rejected:
            print(f"annotation {problem.severity}: {problem}", file=sys.stderr)
    dataset = load_dataset(data, parsed)
    dataset.check_usable()
    return dataset


#: Dataset issues that become a failed clip row anyway (reported once, at the end).
_REPORTED_AS_ROWS = ("no_folder",)


def _print_issues(dataset: Dataset) -> None:
    annotated = set(dataset.annotations.by_clip)
    for issue in dataset.issues:
        if issue.kind in _REPORTED_AS_ROWS or (issue.kind == "missing_frame" and " offset frame " not in issue.message):
            continue
        if issue.kind == "unreadable" and issue.clip in annotated:
            continue
        print(f"dataset warning: {issue}", file=sys.stderr)


def _report(report: Any) -> int:
    for row in report.failed:
        print(f"{row['status']}: {row['error']}", file=sys.stderr)
    summary = report.summary()
    if getattr(report, "unexpected", 0) and report.log is not None:
        summary += f"; details in {report.log}"
    print(summary)
    return 1 if report.failed else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) received: stop like Ctrl-C, keeping what is finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """Turn SIGTERM / SIGHUP into ``Terminated`` for the duration of a command (main thread only)."""
    def stop(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    handled = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    try:
        previous = {s: signal.signal(s, stop) for s in handled}
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


#: Errors whose message is the whole story (they name the path or value and the cause).
_CLEAR_ERRORS = (AnnotationError, InputError, FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError, IsADirectoryError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _crash_log(exc: BaseException, args: argparse.Namespace) -> Path | None:
    """Write ``exc``'s traceback to ``OUT/sammflow.log`` when OUT is a sammflow output folder,
    else to a file in the temporary folder (never into a folder sammflow did not make)."""
    from sammflow.outfolder import LOG_FILE, MANIFEST_FILE, PARAMS_FILE

    out = getattr(args, "out", None)
    candidates = []
    if out is not None and out.is_dir() and ((out / PARAMS_FILE).is_file() or (out / MANIFEST_FILE).is_file()):
        candidates.append(out / LOG_FILE)
    candidates.append(Path(tempfile.gettempdir()) / f"sammflow-error-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log")
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    text = f"\n=== {stamp} sammflow {__version__}: python -m sammflow {' '.join(sys.argv[1:])}\n"
    text += "".join(traceback.format_exception(exc))
    for path in candidates:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _signals():
        try:
            return _run(args)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            if args.command == "demo":
                kept = f"; nothing was written to {args.out}"  # built aside and renamed into place
            else:
                kept = (f"; finished clips are kept in {args.out} (the rest are 'pending' in its manifest.csv): "
                        "re-run the same command to resume")
            print(f"interrupted ({signal.Signals(signum).name}){kept}", file=sys.stderr)
            return 128 + int(signum)
        except _CLEAR_ERRORS as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - a bug must still be one line, with the details in a file
            log = _crash_log(exc, args)
            details = f" (details in {log})" if log else ""
            print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)}{details}", file=sys.stderr)
            return 2


def _options(build: Any, *what: Any) -> Any:
    """Build parameters from the command line; their validation errors are input errors."""
    try:
        return build(*what)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    from sammflow import export

    if args.command == "demo":
        from sammflow.demo import DemoConfig, generate_demo

        config = _options(lambda: DemoConfig(subjects=args.subjects, clips_per_subject=args.clips, frames=args.frames,
                                             amplitude=args.amplitude, jitter=args.jitter, seed=args.seed))
        bar = _Bar("frame", args.quiet)
        try:
            generate_demo(args.out, config, progress=bar)
        finally:
            bar.close()
        print(f"demo dataset: {config.subjects * config.clips_per_subject} clips × {config.frames} frames → {args.out} "
              f"(annotations {args.out / 'samm.csv'}, ground truth {args.out / 'ground_truth.json'})")
        return 0

    params = _options(_pipeline_params, args)
    gif = _options(_build, GifParams, args) if args.command == "gif" else None
    if args.command == "flows" and not export.is_normalized(args.data):
        raise InputError(f"{args.data}: not a 'normalize' output (no params.json of kind 'normalized'); use 'export' for raw frames")
    dataset = _load(args.data, args.annotations)
    _print_issues(dataset)
    workers = export.default_workers() if args.workers is None else max(1, args.workers)
    common = {"params": params, "workers": workers, "force": args.force}
    bar = _Bar("clip", args.quiet)
    try:
        if args.command == "normalize":
            report = export.normalize_dataset(dataset, args.out, progress=bar, **common)
        elif args.command == "flows":
            report = export.flows_from_normalized(dataset, args.out, progress=bar, **common)
        elif args.command == "gif":
            report = export.export_gifs(dataset, args.out, clips=args.clips, gif=gif, progress=bar, **common)
        else:
            report = export.export_flows(dataset, args.out, progress=bar, **common)
    finally:
        bar.close()
    return _report(report)
