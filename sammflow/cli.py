"""Command line: ``python -m sammflow {demo,normalize,flows,gif,export,report,evaluate} --help``.

Runs headless on a server. Long work shows a progress bar (tqdm, on stderr); each command
ends with one line per failed clip (naming it and the cause) and a one-line summary, and
exits 1 when any clip failed, 2 when the input as a whole is unusable (bad dataset folder,
annotation file or output folder; one line saying why), 130 / 143 when interrupted by
Ctrl-C / SIGTERM (finished clips are kept; re-run the same command to resume), 0 otherwise.
``--scheduler`` runs the clips on a Dask cluster (``sammflow.cluster``) with the same outputs.
No traceback is ever printed: unexpected errors are one line pointing to a log file that
holds the details (``OUT/sammflow.log``, or a ``sammflow-error-*.log`` in the temporary
folder, ``$TMPDIR``, when there is no output folder to log into).

Every option is checked once, before any work, and a bad value is one line naming its flag
(``--winsize must be odd ...``). Every message survives any path: a folder name that is not
valid UTF-8 is printed with its odd bytes as ``\\xNN`` (``sammflow.text.printable``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sammflow import __version__
from sammflow.annotations import AnnotationError, read_annotations
from sammflow.cluster import Scheduler
from sammflow.dataset import Dataset, InputError, load_dataset, merge
from sammflow.files import append_text
from sammflow.kinds import KINDS, parse_spec, resolve as resolve_kind
from sammflow.labels import megc_report
from sammflow.video import is_video
from sammflow.text import one_line, printable
from sammflow.params import PRESETS, STAGE_CLASSES, STAGES, GifParams, PipelineParams, declared, option

#: ``--workers`` above this many times the cores is refused as a mistake (a typo, a value for another machine).
MAX_WORKERS_PER_CORE = 4


def _say(text: str, *, err: bool = True) -> None:
    """Print one message (any path in it made printable: a print never fails)."""
    print(printable(text), file=sys.stderr if err else sys.stdout)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (not the whole usage) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, printable(f"error: {' '.join(message.split())} (see {self.prog} --help)") + "\n")


def _number(text: str) -> float:
    """A finite number (argparse ``type``): ``nan`` and ``inf`` are refused where parsed."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def flag_of(cls: type, name: str) -> str:
    """The command-line flag of a declared parameter, ``--`` included."""
    for f, p in declared(cls):
        if f.name == name:
            return option(f, p)
    raise KeyError(name)


def _preset_values(stage: str, name: str) -> str:
    """What the presets other than seed set a parameter to, for its help: ``; ststnet: tvl1``."""
    told = [f"{key}: {preset.values[stage][name]}" for key, preset in PRESETS.items() if name in preset.values.get(stage, {})]
    return f"; --preset {', '.join(told)}" if told else ""


def _add_params(parser: argparse.ArgumentParser, cls: type, title: str, stage: str = "") -> None:
    """One flag per declared parameter of ``cls`` (``sammflow.params.param``): its flag name, help and default.

    A flag not given is absent from the parsed namespace (``argparse.SUPPRESS``), so that a
    preset's value applies unless the flag is given (``_build``).
    """
    group = parser.add_argument_group(title)
    for f, p in declared(cls):
        flag = flag_of(cls, f.name)
        choices = f"; one of {', '.join(map(str, p.choices))}" if p.choices and not isinstance(f.default, str) else ""
        help_text = f"{p.help}{choices} (default: {f.default}{_preset_values(stage, f.name)})"
        dest = f"{cls.__name__}.{f.name}"
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            kind = _number if isinstance(f.default, float) else type(f.default)
            group.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def _flagged(cls: type, message: str, name: str | None = None) -> str:
    """A parameter class's message told with flags: the field it is about (``name``, leading the
    message: ``winsize must be odd`` → ``--winsize must be odd``), and any other field it names
    (a rule between two values: ``min_face must be <= max_side`` → ``... <= --detect-max-side``)."""
    message = one_line(message)
    if name is not None:
        flag = flag_of(cls, name)
        message = flag + message[len(name):] if message.startswith(f"{name} ") else f"{flag}: {message}"
    for f, _ in declared(cls):
        if f.name != name:
            message = re.sub(rf"(?<![\w'-]){f.name}(?![\w'-])", flag_of(cls, f.name), message)  # not a quoted value
    return message


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The parameters of ``cls`` given on the command line, by field name."""
    return {f.name: getattr(args, f"{cls.__name__}.{f.name}") for f, _ in declared(cls) if hasattr(args, f"{cls.__name__}.{f.name}")}


def _build(cls: type, args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """A parameter set from the flags given, over ``base`` (a preset's values), over the defaults.

    Each given value is checked on its own first, so that a bad one is named by its flag
    (``--winsize must be odd``, not the field name); raises ``InputError``.
    """
    values = given(cls, args)
    for name, value in values.items():
        try:
            cls(**{name: value})
        except ValueError as exc:
            raise InputError(_flagged(cls, str(exc), name)) from None
    try:
        return cls(**{**(base or {}), **values})
    except ValueError as exc:  # a rule between two values
        raise InputError(_flagged(cls, str(exc))) from None


def _pipeline_params(args: argparse.Namespace) -> PipelineParams:
    """Every parameter: the ``--preset``'s values (commands that have one), overridden by the flags given."""
    preset = getattr(args, "preset", "seed")  # commands without flow parameters: the defaults, which are seed's
    if preset not in PRESETS:
        raise InputError(f"--preset must be one of {list(PRESETS)}, got {preset!r}")
    values = PRESETS[preset].values
    stages = {stage: _build(cls, args, values.get(stage)) for stage, cls in STAGE_CLASSES.items()}
    try:
        params = PipelineParams(**stages, preset=preset)
    except ValueError as exc:  # a rule between two stages (DIS scales a crop size cannot hold)
        message = str(exc)
        for cls in STAGE_CLASSES.values():
            message = _flagged(cls, message)
        raise InputError(message) from None
    if args.command in ("export", "flows"):  # a flow method this OpenCV lacks is one line, before any work
        from sammflow.flow import FlowMethodUnavailable, require_method

        try:
            require_method(params.flow.method)
        except FlowMethodUnavailable as exc:
            raise InputError(str(exc)) from None
    return params


def _workers(requested: int | None) -> int:
    """``--workers``: one per core if not given; fewer than one, or more than
    ``MAX_WORKERS_PER_CORE`` × the cores, is refused. ``sammflow.workers.run_clips`` then
    never starts more than the cores or the clips to do."""
    from sammflow.workers import available_cores

    cores = available_cores()
    if requested is None:
        return cores
    if requested < 1:
        raise InputError(f"--workers must be >= 1, got {requested}")
    if requested > MAX_WORKERS_PER_CORE * cores:
        raise InputError(f"--workers {requested}: more than {MAX_WORKERS_PER_CORE} × the {cores} core(s) of this machine; "
                         f"use at most {MAX_WORKERS_PER_CORE * cores}, or leave it out for one per core")
    return requested


def _scheduler(args: argparse.Namespace) -> Scheduler | None:
    """``--scheduler``, checked (``Scheduler.parse``); refused with ``--workers``, whose processes
    a cluster's workers replace."""
    if args.scheduler is None:
        return None
    from sammflow.workers import available_cores

    scheduler = Scheduler.parse(args.scheduler, max_local=MAX_WORKERS_PER_CORE * available_cores())
    if args.workers is not None:
        raise InputError("--workers/-j: not with --scheduler, whose workers run the clips (--scheduler local:N starts N of them; "
                         "on a cluster, `dask worker --nworkers N` on each machine)")
    return scheduler


#: Demo options: flag → (DemoConfig field, lowest, highest).
_DEMO_OPTIONS = {"--subjects": ("subjects", 1, 99), "--clips": ("clips_per_subject", 1, 20), "--frames": ("frames", 5, 10_000),
                 "--amplitude": ("amplitude", 0.0, 100.0), "--jitter": ("jitter", 0.0, 100.0), "--seed": ("seed", 0, None)}


#: ``demo --labelled``'s defaults: enough subjects and clips for leave-one-subject-out (72 clips, 24 per
#: class), few frames (onset, apex and offset are all a recognition check reads).
_LABELLED_DEMO = {"--subjects": 12, "--clips": 6, "--frames": 9}


def _demo_config(args: argparse.Namespace) -> Any:
    """The demo's ``DemoConfig`` from its flags, each checked and named by its flag."""
    from sammflow.demo import DemoConfig

    defaults = _LABELLED_DEMO if args.labelled else {"--subjects": 3, "--clips": 2, "--frames": 36}
    values = {"--subjects": args.subjects, "--clips": args.clips, "--frames": args.frames, "--amplitude": args.amplitude,
              "--jitter": args.jitter, "--seed": args.seed}
    values = {flag: defaults[flag] if value is None else value for flag, value in values.items()}
    for flag, value in values.items():
        _, low, high = _DEMO_OPTIONS[flag]
        if high is None and value < low:
            raise InputError(f"{flag} must be >= {low:g}, got {value:g}")
        if high is not None and not low <= value <= high:
            raise InputError(f"{flag} must be in [{low:g}, {high:g}], got {value:g}")
    try:
        return DemoConfig(kind=args.kind, labelled=args.labelled, **{_DEMO_OPTIONS[flag][0]: value for flag, value in values.items()})
    except ValueError as exc:  # DemoConfig checks --kind: "kind must be one of [...]" → "--kind must be one of [...]"
        message = one_line(str(exc))
        flags = {name: flag for flag, (name, _, _) in _DEMO_OPTIONS.items()} | {"kind": "--kind"}
        name = message.split(" ", 1)[0]
        raise InputError(flags[name] + message[len(name):] if name in flags else message) from None


def build_parser(prog: str = "python -m sammflow") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="SAMM-style micro-expression clips → aligned face crops → onset→apex optical flow → 28×28 flow maps.",
    )
    parser.add_argument("--version", action="version", version=f"sammflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def dataset_command(name: str, help_text: str, data_help: str, *, optional_data: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("data", type=Path, help=data_help, **({"nargs": "?"} if optional_data else {}))
        p.add_argument("out", type=Path, help="output folder (created; must be outside the dataset folder)")
        p.add_argument("--annotations", "-a", type=Path, help="the annotation file: samm.csv or SAMM_Micro_FACS_Codes_v2.xlsx, "
                            "CASME2-coding-*.xlsx, smic.xlsx, cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx, MMEW_Micro_Exp.xlsx "
                            "(default: the kind's file in DATA, or the one a normalize run recorded)")
        p.add_argument("--kind", default="auto", metavar="|".join(["auto", *KINDS]),
                       help="the dataset's kind (layout and annotation format); default auto: from the annotation file's name, "
                            "then the folder's layout")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        p.add_argument("--workers", "-j", type=int, default=None,
                       help="worker processes (default: one per core); never more are started than cores or clips to do, "
                            f"and more than {MAX_WORKERS_PER_CORE} × the cores is refused; not with --scheduler")
        p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run the clips on a Dask cluster: a scheduler address (tcp://host:8786) or local:N (a local cluster "
                            "of N worker processes, at most "
                            f"{MAX_WORKERS_PER_CORE} × the cores); workers must see DATA and OUT at the same paths. The cluster's "
                            "workers replace --workers, which is then refused")
        p.add_argument("--force", action="store_true",
                       help="recompute every clip, even those OUT already holds; if OUT was made with other parameters "
                            "(or from another input folder), remove its outputs first instead of refusing")
        return p

    from sammflow.demo import KINDS as DEMO_KINDS, LAYOUTS as DEMO_LAYOUTS

    demo = sub.add_parser("demo", help="write a demo dataset in the layout of SAMM or another dataset (its annotations, ground truth)",
                          description="Write a demo dataset, generated from scikit-image's astronaut photograph: frames with head "
                                      "jitter and a known local motion, in the layout, frame size and annotation format of the "
                                      "dataset --kind names (SAMM: grey 2040×1088 frames and samm.csv), and ground_truth.json.")
    demo.add_argument("out", type=Path, help="new or empty folder")
    demo.add_argument("--kind", default="samm", metavar="|".join(DEMO_KINDS),
                      help="dataset layout and annotation file: "
                           + "; ".join(f"{name}: {layout.annotations}, {layout.size[0]}×{layout.size[1]} "
                                       f"{'colour' if layout.colour else 'grey'}" for name, layout in DEMO_LAYOUTS.items())
                           + " (default: samm)")
    demo.add_argument("--subjects", type=int, default=None, help="number of subjects, 1-99 (default: 3; --labelled: 12)")
    demo.add_argument("--clips", type=int, default=None, help="clips per subject, 1-20 (default: 2; --labelled: 6)")
    demo.add_argument("--frames", type=int, default=None, help="frames per clip, 5-10000 (default: 36; --labelled: 9)")
    demo.add_argument("--amplitude", type=_number, default=4.0, help="peak local motion at apex, frame px, 0-100 (default: 4)")
    demo.add_argument("--jitter", type=_number, default=1.5, help="per-frame head jitter std, frame px, 0-100 (default: 1.5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: 0)")
    demo.add_argument("--labelled", action="store_true",
                      help="a recognition benchmark: each clip shows the facial motion of one MEGC2019 class (negative: brows "
                           "lowered and drawn together; positive: lip corners up and out; surprise: brows raised), balanced per "
                           "subject, varied per subject and clip, annotated with an emotion of that class (for 'sammflow evaluate')")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    def stages(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
        for stage in names:
            _add_params(p, STAGE_CLASSES[stage], STAGES[stage], stage)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", default="seed", metavar="|".join(PRESETS),
                       help="set every flow and map parameter at once; flags given override it. "
                            + "; ".join(f"{name}: {preset.title}" for name, preset in PRESETS.items()) + " (default: seed)")
        p.add_argument("--arrays", action="store_true",
                       help="also write OUT/features.npz: u, v, optical strain (N, S, S) float32 in crop px, X (N, S, S, 3) = "
                            "u, v, strain each min-max normalised, with labels (emotion, label_megc, objective_class), subjects "
                            "and leave-one-subject-out folds, for the clips that succeeded")

    p = dataset_command("normalize", "align every frame of every annotated clip to its apex face crop",
                        "dataset folder: DATA/<subject>/<clip>/<subject>_<frame>.jpg")
    stages(p, ("annotations", "detect", "align"))

    p = dataset_command("flows", "flow maps sub{SUBJECT}_{CLIP}.png from aligned crops (a normalize output)",
                        "a folder written by 'normalize'")
    model_options(p)
    stages(p, ("flow", "encode"))

    p = dataset_command("gif", "onset→apex GIFs of aligned crops", "dataset folder or a 'normalize' output")
    p.add_argument("--clip", "-c", action="append", dest="clips", metavar="CLIP", help="clip id, e.g. 006_1_2 (repeatable; default: all)")
    _add_params(p, GifParams, "animation")
    stages(p, ("annotations", "detect", "align"))

    p = dataset_command("export", "raw frames → flow maps + manifest.csv + params.json (aligns only onset and apex)",
                        "dataset folder (any kind: --kind), or a video file (with --onset/--offset or --events); "
                        "left out with --dataset", optional_data=True)
    p.add_argument("--dataset", action="append", dest="datasets", metavar="KIND=PATH[,annotations=FILE]",
                   help="a dataset of a composite (repeatable, one per kind: samm, casme2, smic, casme3a, mmew); OUT is then "
                        "the only positional argument. Subjects and clips are prefixed by their kind (samm-006), so "
                        "leave-one-subject-out folds never mix two people")
    p.add_argument("--onset", type=int, help="a video's event: first frame (0-based frame index of the video); its apex: "
                                              "--apex N (a number), else spotted")
    p.add_argument("--offset", type=int, help="a video's event: last frame")
    p.add_argument("--events", type=Path, help="a video's events: a CSV with onset, offset and optionally apex, emotion, name columns")
    model_options(p)
    stages(p, list(STAGE_CLASSES))

    from sammflow.recognition import DEFAULT_MODEL, DEFAULT_SEED, LABEL_SOURCES, MODELS

    p = sub.add_parser("evaluate", help="recognition check: train a baseline with leave-one-subject-out folds on a features.npz, "
                                        "report UF1 / UAR",
                       description="Train a baseline on OUT/features.npz (export --arrays) with leave-one-subject-out folds (its fold "
                                   "column): per held-out subject a fresh model, seeded from (--seed, fold), trained for a fixed "
                                   "number of epochs on the other subjects only (no early stopping, no selection on a test fold), "
                                   "then predicting the held-out clips. Reports UF1 and UAR of the pooled predictions with 95%% "
                                   "bootstrap intervals over subjects, overall and per dataset, and writes OUT/evaluation.json "
                                   "(and OUT/evaluation-MODEL.json): parameters, seeds, versions, confusion matrix, per-subject "
                                   "accuracy, every clip's prediction. The features file is only read.")
    p.add_argument("features", type=Path, help="a features.npz written by 'sammflow export --arrays'")
    p.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS), metavar="|".join(MODELS),
                   help="; ".join(f"{m.name}: {m.title}" for m in MODELS.values()) + f" (default: {DEFAULT_MODEL})")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs of a CNN, solver iterations of logreg (default: "
                        + ", ".join(f"{m.name} {m.epochs}" for m in MODELS.values()) + ")")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of every fold's model, >= 0 (default: {DEFAULT_SEED})")
    p.add_argument("--labels", default="megc", choices=list(LABEL_SOURCES),
                   help="megc: the MEGC2019 classes (label_megc; clips outside it are left out); emotion: the dataset's own "
                        "emotions (default: megc)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = sub.add_parser("report", help="OUT/report.html: one self-contained HTML file summarising an output folder (for a lab meeting)",
                       description="Write OUT/report.html, one self-contained HTML file (images, charts and plotly.js inside; it "
                                   "opens offline) summarising an output folder of export, normalize, flows or gif: the dataset and "
                                   "its annotation problems, alignment quality, the normalized grid, a sample of flow maps, clips in "
                                   "detail, and every parameter with the command that reproduces the folder. Crops and flows the "
                                   "folder does not hold are recomputed from the dataset its params.json records.")
    p.add_argument("out", type=Path, help="an output folder written by sammflow (params.json, manifest.csv)")
    p.add_argument("--clips", type=_clip_list, default=None, metavar="C1,C2",
                   help="clips shown in detail, comma-separated (default: the first 3 of the flow-map sample)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    return parser


def _clip_list(text: str) -> list[str]:
    """``--clips A,B`` (argparse ``type``): clip ids, none empty."""
    clips = [c.strip() for c in text.split(",")]
    if not all(clips):
        raise argparse.ArgumentTypeError(f"expected clip ids separated by commas, got {text!r}")
    return clips


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
        self.bar.set_postfix_str(printable(label), refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load(data: Path, annotations: Path | None, kind: str = "auto") -> Dataset:
    from sammflow.export import is_normalized, normalized_params

    recorded = normalized_params(data) if is_normalized(data) else {}
    if kind == "auto" and recorded.get("dataset_kind"):
        kind = recorded["dataset_kind"]
    if annotations is None and recorded.get("annotations"):
        annotations = Path(recorded["annotations"])
    if kind != "auto" and kind not in KINDS:
        raise InputError(f"--kind must be one of {['auto', *KINDS]}, got {kind!r}")
    kind, found = resolve_kind(data, annotations, kind)
    if found is None:
        wanted = ", ".join(KINDS[kind].annotation_files[:2])
        if not data.exists():
            raise FileNotFoundError(f"{data}: dataset folder not found, so no annotation file ({wanted}) to read either; check the path")
        raise AnnotationError(f"{data}: no {KINDS[kind].title} annotation file ({wanted}) in the dataset folder; pass --annotations FILE"
                              f"{'' if kind != 'samm' else ' (or --kind, if it is another dataset)'}")
    parsed = read_annotations(found, dataset=kind)
    rejected = {r.row for r in parsed.rejected}  # reported with the failed clips at the end, once
    for problem in parsed.problems:
        if problem.row not in rejected:
            _say(f"annotation {problem.severity}: {problem}")
    dataset = load_dataset(data, parsed, by_id=bool(recorded))  # a normalize output: <subject>/<clip id>/ whatever the kind
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
        _say(f"dataset warning: {issue}")


def _report(report: Any) -> int:
    for row in report.failed:
        _say(f"{row['status']}: {row['error']}")
    summary = report.summary()
    if getattr(report, "unexpected", 0) and report.log is not None:
        summary += f"; details in {report.log}"
    _say(summary, err=False)
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
    return one_line(str(exc)) or type(exc).__name__


def _clear_message(exc: BaseException) -> str | None:
    """The one-line message of an error the user can act on, or ``None`` for a bug."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:  # the system refused a path: name it and why
        from sammflow.outfolder import os_error_text

        return f"{exc.filename}: {os_error_text(exc)}"
    if isinstance(exc, _CLEAR_ERRORS):
        return _one_line(exc)
    return None


def _crash_log(exc: BaseException, args: argparse.Namespace) -> tuple[Path | None, bool]:
    """Write ``exc``'s traceback to ``OUT/sammflow.log`` when OUT is a sammflow output folder,
    else to a new ``sammflow-error-*.log`` in the temporary folder (never into a folder sammflow
    did not make). Returns the file (``None`` if none could be written) and whether it is in OUT."""
    from sammflow.outfolder import LOG_FILE, MANIFEST_FILE, PARAMS_FILE

    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    text = f"\n=== {stamp} sammflow {__version__}: python -m sammflow {' '.join(sys.argv[1:])}\n"
    text += "".join(traceback.format_exception(exc))
    out = getattr(args, "out", None)
    try:  # the error may be about OUT itself (a name too long): asking about it may fail again
        ours = out is not None and out.is_dir() and ((out / PARAMS_FILE).is_file() or (out / MANIFEST_FILE).is_file())
    except (OSError, ValueError):
        ours = False
    if ours and append_text(out / LOG_FILE, text):
        return out / LOG_FILE, True
    try:  # a new file of its own (O_EXCL, unpredictable name): never appended to someone else's file or link
        fd, name = tempfile.mkstemp(prefix=f"sammflow-error-{datetime.now():%Y%m%d-%H%M%S}-", suffix=".log")
        os.close(fd)
    except OSError:
        return None, False
    if append_text(Path(name), text):
        return Path(name), False
    return None, False


def _holds_manifest(out: Path) -> bool:
    """Whether OUT has a manifest (so an interrupted job left finished clips and 'pending' rows there)."""
    from sammflow.outfolder import MANIFEST_FILE

    try:
        return (out / MANIFEST_FILE).is_file()
    except (OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m sammflow") -> int:
    """Run one command; returns its exit code (``sys.exit`` it, as ``python -m sammflow`` and the
    ``sammflow`` script do). A bad command line exits 2 from argparse, in one line."""
    args = build_parser(prog).parse_args(argv)
    with _signals():
        try:
            return _run(args)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            if args.command in ("demo", "report", "evaluate") or not _holds_manifest(args.out):  # built aside, renamed into place
                kept = f"; nothing was written to {args.out}"
            else:
                kept = (f"; finished clips are kept in {args.out} (the rest are 'pending' in its manifest.csv): "
                        "re-run the same command to resume")
            _say(f"interrupted ({signal.Signals(signum).name}){kept}")
            return 128 + int(signum)
        except Exception as exc:  # noqa: BLE001 - a bug must still be one line, with the details in a file
            message = _clear_message(exc)
            if message is not None:
                _say(f"error: {message}")
                return 2
            log, in_out = _crash_log(exc, args)
            if log is None:
                try:
                    temporary = tempfile.gettempdir()
                except OSError:  # no usable one at all
                    temporary = "($TMPDIR)"
                where = f" (its traceback could not be written, neither to the output folder nor to the temporary folder {temporary})"
            elif in_out:
                where = f" (details in {log})"
            else:
                where = f" (details in the temporary folder, as there is no output folder to log into: {log})"
            _say(f"error: unexpected {type(exc).__name__}: {_one_line(exc)}{where}")
            return 2


def _run(args: argparse.Namespace) -> int:
    from sammflow import export

    if args.command == "demo":
        from sammflow.demo import generate_demo

        config = _demo_config(args)
        bar = _Bar("frame", args.quiet)
        try:
            generate_demo(args.out, config, progress=bar)
        finally:
            bar.close()
        _say(f"demo dataset ({config.kind}): {config.subjects * config.clips_per_subject} clips × {config.frames} frames → {args.out} "
             f"(annotations {args.out / config.annotations}, ground truth {args.out / 'ground_truth.json'})", err=False)
        return 0

    if args.command == "report":
        return _write_report(args)
    if args.command == "evaluate":
        return _evaluate(args)

    # every option first, before anything is read or written
    apex = getattr(args, "AnnotationParams.apex", "")
    if args.command == "export" and apex.isdigit():  # --apex N: a video event's apex frame, not an apex policy
        args.video_apex = int(apex)
        delattr(args, "AnnotationParams.apex")
    params = _pipeline_params(args)
    gif = _build(GifParams, args) if args.command == "gif" else None
    workers = _workers(args.workers)
    scheduler = _scheduler(args)
    if args.command == "flows" and not export.is_normalized(args.data):
        raise InputError(f"{args.data}: not a 'normalize' output (no params.json of kind 'normalized'); use 'export' for raw frames")
    dataset, params = _open(args, params)
    if args.command == "gif" and args.clips:
        known = set(dataset.annotations.by_clip) | {r.clip for r in dataset.annotations.rejected}
        unknown = sorted(set(args.clips) - known)
        if unknown:
            raise InputError(f"--clip {', '.join(unknown)}: not annotated in {dataset.annotations.source}")
    _print_issues(dataset)
    common = {"params": params, "workers": workers, "force": args.force, "scheduler": scheduler}
    if args.command in ("export", "flows"):
        common["arrays"] = args.arrays
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
    code = _report(report)
    if params.annotations.megc2019:
        for line in megc_report(report.rows):
            _say(line, err=False)
    return code


def _evaluate(args: argparse.Namespace) -> int:
    """``evaluate FEATURES``: the LOSO run (``sammflow.recognition``), its table, and evaluation.json beside FEATURES."""
    from sammflow.recognition import EvaluationError, evaluate, load_labelled, table, write_evaluation

    args.out = args.features.parent  # for an interruption's message and the crash log (an export folder's sammflow.log)
    try:
        data = load_labelled(args.features, labels=args.labels)
        bar = _Bar("fold", args.quiet)
        try:
            result = evaluate(data, args.model, seed=args.seed, epochs=args.epochs, progress=bar)
        finally:
            bar.close()
    except EvaluationError as exc:  # not a features file, nothing to evaluate, a bad option: one line naming it
        raise InputError(str(exc)) from None
    for line in table(result):
        _say(line, err=False)
    paths = write_evaluation(result)
    _say(f"→ {paths[0]} (and {paths[1].name})", err=False)
    return 0


def _write_report(args: argparse.Namespace) -> int:
    """``report OUT``: OUT/report.html (``sammflow.report``); prints its path and size."""
    from sammflow.report import ReportError, write_report

    progress = None if args.quiet else (lambda text: _say(f"report: {text}"))
    try:
        path = write_report(args.out, clips=args.clips, progress=progress)
    except ReportError as exc:  # not an output folder, an unknown clip: one line
        raise InputError(str(exc)) from None
    _say(f"{path} ({path.stat().st_size / 1e6:.1f} MB)", err=False)
    return 0


def _open(args: argparse.Namespace, params: PipelineParams) -> tuple[Dataset, PipelineParams]:
    """The command's dataset, resolved with the annotation parameters, and those parameters:
    DATA, a video (export: its events extracted, and their apexes spotted where none is
    given), or the composite of ``--dataset`` specs (export)."""
    specs = getattr(args, "datasets", None)
    event_flags = [flag for flag, value in (("--onset", getattr(args, "onset", None)), ("--offset", getattr(args, "offset", None)),
                                            ("--events", getattr(args, "events", None)), ("--apex N", getattr(args, "video_apex", None)))
                   if value is not None]
    if specs:
        if args.data is not None:
            raise InputError(f"--dataset: OUT is then the only positional argument, got {args.data} and {args.out}")
        if event_flags:
            raise InputError(f"{event_flags[0]}: only for a video, not with --dataset")
        parts = [_load(path, annotations, kind) for kind, path, annotations in map(_dataset_spec, specs)]
        return merge(parts).resolved(params.annotations), params
    if args.data is None:
        raise InputError("DATA is missing: give a dataset folder or a video file and OUT, or --dataset KIND=PATH … and OUT")
    if args.command == "export" and is_video(args.data):
        folder, spotted = _video(args)
        if spotted and params.annotations.apex == "annotated":  # an event without an apex: spotted, not rejected
            params = dataclasses.replace(params, annotations=dataclasses.replace(params.annotations, apex="auto"))
        return _load(folder, None, "samm").resolved(params.annotations), params
    if event_flags:
        raise InputError(f"{event_flags[0]}: only for a video file (DATA is {args.data})")
    return _load(args.data, args.annotations, args.kind).resolved(params.annotations), params


def _video(args: argparse.Namespace) -> tuple[Path, bool]:
    """A video's events extracted to frames (``sammflow.video.extract``, cached): the folder, and
    whether an event has no apex."""
    from sammflow.cache import cache_dir
    from sammflow.video import CACHE_FOLDER, VideoEvent, extract, read_events

    if args.events is not None:
        if args.onset is not None or args.offset is not None or getattr(args, "video_apex", None) is not None:
            raise InputError("--events: give the events either in the file or as --onset/--apex/--offset, not both")
        try:
            events = read_events(args.events)
        except ValueError as exc:  # one line naming the file, the row and the cause
            raise InputError(str(exc)) from None
    elif args.onset is None or args.offset is None:
        raise InputError(f"{args.data}: a video needs its event: --onset N --offset N (and --apex N, else it is spotted), or --events FILE")
    else:
        try:
            events = [VideoEvent(args.onset, args.offset, getattr(args, "video_apex", None))]
        except ValueError as exc:
            raise InputError(f"--onset/--apex/--offset: {exc}") from None
    bar = _Bar("frame", args.quiet)
    try:
        folder = extract(args.data, events, cache=cache_dir() / CACHE_FOLDER, progress=bar)
    except ValueError as exc:  # not a video, an event outside it ...: one line naming the file and the cause
        raise InputError(str(exc)) from None
    finally:
        bar.close()
    return folder, any(event.apex is None for event in events)


def _dataset_spec(spec: str) -> tuple[str, Path, Path | None]:
    """``--dataset KIND=PATH[,annotations=FILE]`` → (kind, path, annotation file or None) (``sammflow.kinds.parse_spec``)."""
    try:
        return parse_spec(spec)
    except ValueError as exc:
        raise InputError(f"--dataset {exc}") from None
