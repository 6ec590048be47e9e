"""A batch job's output folder, as a context manager that owns it while the job runs.

``OutputFolder`` checks the folder (never inside the dataset nor containing it, never a
non-empty folder sammflow did not make, never another command's output), locks it (one
writer at a time), plans the resume with ``sammflow.manifest.plan`` (refusing outputs of
other parameters unless ``force``, which removes them first), writes ``params.json`` when the
job starts and when it ends, rewrites ``manifest.csv`` after every clip, and appends what
needs attention to ``sammflow.log``. Leaving the ``with`` block, normally or not, writes the
final manifest, releases the lock and leaves a ``JobReport`` in ``folder.report``.

sammflow deletes only what it can prove it made: a folder counts as empty only if it holds
nothing but our log, our temporary files and the system's folder metadata (``.DS_Store``;
a user's hidden ``.notes`` makes it "not empty": refused, named); temporary files are
removed only by name (``sammflow.files.is_temp_name``, with sammflow's marker) and only in
a folder found to be ours.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sammflow
from sammflow.annotations import ClipAnnotation, RejectedRow
from sammflow.dataset import Dataset, InputError, safe_path
from sammflow.files import (
    append_text, is_temp_name, package_versions, read_csv, read_json, remove_stale_temp_files, write_atomic, write_csv,
)
from sammflow.manifest import (
    ALIGNMENT_COLUMNS, MANIFEST_COLUMNS, RECORDS, Plan, Refused, annotated_in_order, judge, plan, same_annotation,
)
from sammflow.features import FEATURES_FILE, array_name
from sammflow.kinds import output_stem
from sammflow.labels import loso_folds
from sammflow.params import PipelineParams
from sammflow.pipeline import ClipError
from sammflow.text import one_line

MANIFEST_FILE = "manifest.csv"
PARAMS_FILE = "params.json"
LOG_FILE = "sammflow.log"
#: Per-frame alignment records: in each clip folder of a normalized output, at the top of the others.
ALIGNMENT_FILE = "alignment.csv"
#: Write errors after which no further clip can succeed: the job stops instead of failing every clip.
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: Files the system (not the user) puts in folders: they do not make a folder "not empty".
SYSTEM_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
#: ``stage.name`` of every parameter outside the output hash.
UNHASHED = tuple(f"{stage}.{name}" for stage, values in PipelineParams().judging_dict().items() for name in values)

#: Seconds between rewrites of ``manifest.csv`` while clips finish: rewriting it after every
#: clip cost 8 ms a clip at SAMM's 159 rows (a tenth of a cold export). A clip finished since
#: the last rewrite is still ``pending`` there if the process is killed outright (SIGKILL,
#: power loss): a re-run recomputes it, its files being complete either way (atomic writes).
MANIFEST_INTERVAL = 0.5


@dataclass
class JobReport:
    """What a batch job did: one manifest row per annotated clip.

    ``resumed`` counts the clips kept from an earlier run with the same parameters, ``replaced``
    the files of an earlier run with other parameters removed (``force``), ``unexpected`` the
    clips that failed on an unexpected error (a bug: its traceback is in ``log``, the job's
    ``sammflow.log``, set if anything was written to it).
    """

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    log: Path | None = None
    replaced: int = 0
    unexpected: int = 0

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    def summary(self) -> str:
        text = f"{self.ok} of {len(self.rows)} clips ok, {len(self.failed)} failed → {self.out_dir}"
        if self.resumed:
            text += f" ({self.resumed} already done by an earlier run, kept)"
        if self.replaced:
            text += f" (replaced {self.replaced} files made with other parameters)"
        return text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_params(out_dir: Path, kind: str, params: PipelineParams | None, sources: dict[str, str], extra: dict[str, Any] | None = None,
                 *, created: str | None = None, running: bool = False) -> None:
    """``params.json``: every parameter, its hash, the inputs, package versions and the time.

    ``params`` holds what changes the outputs (and ``params_hash`` is its hash); ``settings``
    what does not (the device, the quality thresholds the manifest's verdicts used).
    ``created`` is when the folder's outputs were first started (default: now); ``finished``
    is ``null`` while a job is ``running`` (written when it starts) and the time it ended after.
    """
    content: dict[str, Any] = {
        "kind": kind,
        "params": params.output_dict() if params else None,
        "params_hash": params.hash if params else None,
        "settings": params.judging_dict() if params else None,
        **({"preset": params.preset or None, "preset_changes": params.preset_changes()} if params else {}),
        **sources,
        **(extra or {}),
        "versions": package_versions(),
        "created": created or _now(),
        "finished": None if running else _now(),
    }
    write_atomic(Path(out_dir) / PARAMS_FILE, (json.dumps(content, indent=2) + "\n").encode())


def os_error_text(exc: OSError) -> str:
    """An ``OSError``'s cause in words, lower case: ``file name too long``, ``permission denied``."""
    text = exc.strerror or type(exc).__name__
    return text[:1].lower() + text[1:]


def check_output_dir(out_dir: Path, dataset_root: Path) -> None:
    """Refuse an output folder inside the dataset (the dataset is never written to), one that
    contains the dataset, a file, and a path the system cannot use (a name too long, a loop of
    links). Raises ``InputError`` (a ``ValueError``)."""
    try:
        out = Path(out_dir).expanduser().resolve()
        root = Path(dataset_root).expanduser().resolve()
        if out == root or root in out.parents:
            raise InputError(f"{out_dir}: output folder is inside the dataset folder {dataset_root}; choose a folder outside it")
        if out in root.parents:
            raise InputError(f"{out_dir}: output folder contains the dataset folder {dataset_root}; choose a folder outside it")
        if out.exists() and not out.is_dir():
            raise InputError(f"{out_dir}: is a file, expected an output folder")
    except OSError as exc:
        raise InputError(f"{out_dir}: {os_error_text(exc)}") from None
    except RuntimeError:  # pathlib's "Symlink loop from ..."
        raise InputError(f"{out_dir}: too many levels of symbolic links (a link that points back to itself)") from None


def _is_our_params(content: Any) -> bool:
    return isinstance(content, dict) and "kind" in content and "params_hash" in content


def _is_our_manifest(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() == ",".join(MANIFEST_COLUMNS)
    except OSError:
        return False


def existing_output(folder: Path, kind: str, *, label: str | None = None) -> dict[str, Any] | None:
    """What sammflow output ``folder`` already holds, checked before a ``kind`` job writes there.

    Returns
    -------
    dict or None
        Its ``params.json`` content; ``{}`` when only our manifest is there; ``None`` when
        the folder holds nothing (or does not exist).

    Raises
    ------
    InputError
        A non-empty folder sammflow did not make, or another command's output. Messages
        name the folder as ``label`` (default: its path).
    """
    label = label or str(folder)
    if not folder.is_dir():
        return None
    params_path = folder / PARAMS_FILE
    content = read_json(params_path) if params_path.exists() else None
    if not (_is_our_params(content) or _is_our_manifest(folder / MANIFEST_FILE)):
        # hidden files count (a user's .notes is a user's file); only our own log and temporary
        # files (a first run killed before its manifest) and the system's folder metadata do not
        others = sorted(p.name for p in folder.iterdir() if p.name not in (LOG_FILE, *SYSTEM_FILES) and not is_temp_name(p.name))
        if others:
            raise InputError(f"{label}: folder is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
                             f"and was not made by sammflow; choose a new or empty output folder")
        return None
    if not _is_our_params(content):
        return {}
    if content["kind"] != kind:
        raise InputError(f"{label}: holds a '{content['kind']}' output; this job writes '{kind}': choose another output folder")
    return content


def _plain_name(name: str) -> bool:
    """A manifest value usable as one path component (a hand-edited manifest must not lead out)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


def clip_files(kind: str, out: Path, subject: str, clip: str, dataset: str = "samm") -> list[Path]:
    """The files a job of ``kind`` writes for one clip (of a dataset of kind ``dataset``) that exist in ``out``."""
    if not (_plain_name(subject) and _plain_name(clip)):
        return []
    if kind == "normalized":
        folder = out / subject / clip
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".png" or p.name == ALIGNMENT_FILE))
    stem = output_stem(dataset, subject, clip)
    paths = [out / "flows" / f"{stem}.png", out / array_name(subject, clip, dataset)] if kind == "flows" else [out / f"{stem}.gif"]
    return [path for path in paths if path.is_file()]


def outputs_present(kind: str, out: Path, row: dict[str, Any]) -> bool:
    """Whether the files a manifest row lists as its output are all in ``out``."""
    output = str(row.get("output") or "")
    try:
        path = safe_path(out, output)
    except InputError:
        return False
    if not output or path == out.resolve():
        return False
    if kind == "normalized":
        try:
            expected = int(row.get("frames") or -1)
        except ValueError:
            return False
        return (path / ALIGNMENT_FILE).is_file() and sum(1 for _ in path.glob("*.png")) == expected
    return path.is_file()


@dataclass(frozen=True)
class Preview:
    """What a job would do in its folder, before it runs (``OutputFolder.preview``).

    Attributes
    ----------
    holds : bool
        The folder holds an earlier sammflow output of this kind.
    refused : bool
        It holds finished outputs of other parameters or another input: the job refuses
        unless ``force``, which replaces them.
    why : tuple of str
        What differs (``"made with other parameters (flow.winsize 15 → 21)"``); empty for a resume.
    delete : tuple of Path
        The files replacing removes (when ``why``).
    kept, todo : int
        Clips a resume keeps, and clips the job computes.
    """

    holds: bool
    refused: bool
    why: tuple[str, ...]
    delete: tuple[Path, ...]
    kept: int
    todo: int


class JobLog:
    """``OUT/sammflow.log``, appended to only when something needs attention; each run's
    first entry is preceded by a header naming the run."""

    def __init__(self, path: Path, header: str) -> None:
        self.path, self.header, self.used = path, header, False

    def write(self, text: str) -> bool:
        """Append one entry; ``False`` if the log cannot be written (never the reason a run fails)."""
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        header = "" if self.used else f"\n=== {stamp} {self.header}\n"
        written = append_text(self.path, f"{header}{stamp} {text.rstrip()}\n")
        self.used = self.used or written
        return written


class OutputFolder:
    """One batch job's output folder: checked, locked, resumed or replaced, kept consistent.

    Parameters
    ----------
    out_dir : str or Path
    dataset : Dataset
        The input (the folder must lie outside it).
    kind : {"flows", "normalized", "gifs"}
    params : PipelineParams
    sources : dict
        The inputs, as written to params.json (``dataset``, ``annotations``, ``normalized``).
    items : sequence of ClipAnnotation or RejectedRow
        The clips this job does, in annotation order.
    extra : dict, optional
        More parameters that identify the outputs (``gif``).
    force : bool
    keep_others : bool
        Rows of clips not in ``items`` made earlier (a GIF subset) stay in the manifest.
    arrays : bool
        The job also writes each clip's ``arrays/sub{S}_{C}.npy`` (``sammflow.features``): a
        finished clip without one is computed again.

    Use as ``with OutputFolder(...) as folder:``; then ``folder.todo`` lists the clips to do,
    ``folder.record(index, row)`` records each, and ``folder.report`` is set on leaving.
    """

    def __init__(self, out_dir: str | Path, dataset: Dataset, *, kind: str, params: PipelineParams, sources: dict[str, str],
                 items: Sequence[ClipAnnotation | RejectedRow], extra: dict[str, Any] | None = None, force: bool = False,
                 keep_others: bool = False, arrays: bool = False) -> None:
        self.out = Path(out_dir).expanduser()
        self._written = float("-inf")  # when the manifest was last written (time.monotonic)
        self.dataset, self.kind, self.params, self.sources, self.extra = dataset, kind, params, sources, extra or {}
        self.items, self.force, self.keep_others, self.arrays = list(items), force, keep_others, arrays
        self.folds = loso_folds(clip.subject for clip in dataset.annotations.clips)  # of every valid clip: a GIF subset numbers them alike
        self.rows: list[dict[str, Any]] = []
        self.todo: list[tuple[int, ClipAnnotation]] = []
        self.resumed = self.replaced = self.unexpected = 0
        self.created: str | None = None
        self.report: JobReport | None = None
        self._lock_fd: int | None = None
        self.log = JobLog(self.out / LOG_FILE, f"{kind} job (sammflow {sammflow.__version__}): input "
                                               f"{sources.get('normalized') or sources.get('dataset', '')}, params hash {params.hash}, pid {os.getpid()}")

    # -- opening

    def __enter__(self) -> OutputFolder:
        for root in self.dataset.roots:
            check_output_dir(self.out, root)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.out}: cannot create the output folder ({exc.strerror or exc})") from exc
        self._lock()
        try:
            old_params, old_rows = self._previous()  # refuses a folder sammflow did not make: only ours are cleaned
            stale = remove_stale_temp_files(self.out)
            if stale:
                self.log.write(f"removed {len(stale)} temporary file(s) left by an interrupted run")
            self._plan(old_params, old_rows)
            try:
                self._write_manifest()  # before params.json: a row is never attributed to parameters that did not make it
                write_params(self.out, self.kind, self.params, self.sources, self.extra, created=self.created, running=True)
            except PermissionError as exc:
                raise InputError(f"{self.out}: cannot write to the output folder ({exc.strerror or exc})") from exc
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self.report = self._close(exc)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock, one run at a time is up to the user
            return
        try:
            fd = os.open(self.out, os.O_RDONLY)
        except OSError as exc:
            raise InputError(f"{self.out}: cannot open the output folder ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"{self.out}: another sammflow run is writing to this folder; "
                             f"wait for it to finish or choose another folder") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def _previous(self) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
        """The folder's params.json and manifest rows; refuses folders that are not ours."""
        content = existing_output(self.out, self.kind)
        if content is None:
            return None, []
        manifest_path = self.out / MANIFEST_FILE
        try:
            rows = read_csv(manifest_path) if manifest_path.exists() else []
        except (UnicodeDecodeError, csv.Error) as exc:  # edited by hand and saved in another encoding, say
            raise InputError(f"{manifest_path}: cannot read this manifest ({one_line(str(exc))}); "
                             f"restore it, or choose another output folder") from None
        return (content or None), rows

    def _planned(self, old_params: dict[str, Any] | None, old_rows: list[dict[str, str]], *, force: bool) -> Plan:
        """``sammflow.manifest.plan`` for this folder (raises ``Refused`` as it does)."""
        new = {"params": self.params.output_dict(), **self.sources, **self.extra}
        order = annotated_in_order(self.dataset.annotations) if self.keep_others else self.items
        return plan(self.items, order, old_params, old_rows, new, force=force, unhashed=UNHASHED,
                    resumable=lambda clip, old: same_annotation(clip, old) and outputs_present(self.kind, self.out, old)
                    and (not self.arrays or (self.out / array_name(clip.subject, clip.clip, clip.dataset)).is_file()))

    def preview(self) -> Preview:
        """What entering the folder would do, without doing it: no lock, nothing written or removed.

        Raises
        ------
        InputError
            As entering would, for a folder that is not usable at all (inside the dataset, not
            sammflow's, another command's output, an unreadable manifest).
        """
        for root in self.dataset.roots:
            check_output_dir(self.out, root)
        old_params, old_rows = self._previous()
        try:
            result, refused = self._planned(old_params, old_rows, force=self.force), False
        except Refused:
            result, refused = self._planned(old_params, old_rows, force=True), True
        delete = tuple(self._old_outputs(old_rows)) if result.replace else ()
        holds = old_params is not None or bool(old_rows)
        return Preview(holds, refused, tuple(result.replace), delete, result.resumed, len(result.todo))

    def _plan(self, old_params: dict[str, Any] | None, old_rows: list[dict[str, str]]) -> None:
        try:
            result = self._planned(old_params, old_rows, force=self.force)
        except Refused as exc:
            raise InputError(f"{self.out}: {exc}") from None
        if result.replace:
            self._remove_old_outputs(old_rows, result.replace)
        else:
            self._attach_records([r for r in result.rows if r.get("status") == "ok"])
        self.rows, self.todo, self.resumed, self.created = result.rows, result.todo, result.resumed, result.created
        if self.resumed:
            self.log.write(f"resumed: {self.resumed} clip(s) done by an earlier run with the same parameters kept, {len(self.todo)} to do")
        old_settings = (old_params or {}).get("settings")
        if self.resumed and old_settings is not None and old_settings.get("align") != self.params.judging_dict().get("align"):
            self.log.write(f"quality thresholds changed ({old_settings.get('align')} → {self.params.judging_dict().get('align')}): "
                           f"kept clips re-judged from their per-frame records")

    def _attach_records(self, kept: list[dict[str, Any]]) -> None:
        """Give kept rows their per-frame alignment records, so they are judged with today's thresholds."""
        if self.kind == "normalized":
            for row in kept:
                records = read_csv(self.out / str(row["subject"]) / str(row["clip"]) / ALIGNMENT_FILE)
                if records:
                    row[RECORDS] = records
            return
        by_clip: dict[str, list[dict[str, str]]] = {}
        for record in read_csv(self.out / ALIGNMENT_FILE):
            by_clip.setdefault(record.get("clip", ""), []).append(record)
        for row in kept:
            if row["clip"] in by_clip:
                row[RECORDS] = by_clip[row["clip"]]

    def _old_outputs(self, old_rows: list[dict[str, str]]) -> list[Path]:
        """The files of an earlier run that replacing it removes: every clip's outputs (of the
        earlier manifest's clips and of this job's), and the top-level ``alignment.csv``."""
        names = ({(r.get("subject", ""), r.get("clip", ""), r.get("dataset") or "samm") for r in old_rows}
                 | {(i.subject, i.clip, i.dataset) for i in self.items})
        files = [path for subject, clip, dataset in sorted(names) for path in clip_files(self.kind, self.out, subject, clip, dataset)]
        shared = {"flows": (ALIGNMENT_FILE, FEATURES_FILE), "gifs": (ALIGNMENT_FILE,)}.get(self.kind, ())
        return files + [self.out / name for name in shared if (self.out / name).is_file()]

    def _remove_old_outputs(self, old_rows: list[dict[str, str]], why: list[str]) -> None:
        """``force`` with other parameters: the outputs of the earlier run go before any new one is
        written, so the folder never holds maps of two parameter sets."""
        old = self._old_outputs(old_rows)
        for path in old:
            path.unlink(missing_ok=True)
        if self.kind == "normalized":  # clip and subject folders left empty
            for folder in sorted({p.parent for p in old} | {p.parent.parent for p in old}, key=lambda p: -len(p.parts)):
                if folder != self.out and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        removed = sum(p.name not in (ALIGNMENT_FILE, FEATURES_FILE) or self.kind == "normalized" for p in old)
        self.replaced = removed
        how = "--force" if self.force else "nothing was finished there"
        self.log.write(f"replacing ({how}): {'; '.join(why)}; removed {removed} output file(s) of the earlier run")

    # -- during the run

    def record(self, index: int, row: dict[str, Any], exc: BaseException | None = None) -> None:
        """Set one clip's row and rewrite the manifest (at once for a failure, otherwise at most
        every ``MANIFEST_INTERVAL``, and always when the job ends); log a failure (with the
        traceback of an unexpected one)."""
        if row["status"] == "failed":
            clip = row["clip"]
            left = clip_files(self.kind, self.out, str(row["subject"]), str(clip), str(row.get("dataset") or "samm"))
            if left:
                where = left[0].relative_to(self.out)
                row["error"] += f" (older files of this clip, made with the same parameters, are still there: {where})"
            detail = "".join(traceback.format_exception(exc)) if exc is not None and not isinstance(exc, ClipError) else ""
            self.unexpected += bool(detail)
            logged = self.log.write(f"failed: {row['error']}" + (f"\n{detail}" if detail else ""))
            if detail:  # an unexpected error: say where its traceback is (or that it could not be kept)
                where = "traceback in" if logged else "its traceback could not be written to"
                row["error"] += f" ({where} {self.log.path})"
        self.rows[index] = self._completed(row)
        if row["status"] != "ok" or time.monotonic() - self._written >= MANIFEST_INTERVAL:
            self._write_manifest()

    def _completed(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with its fold and, from its per-frame records, the quality verdict (judged
        with this run's thresholds)."""
        row["fold"] = self.folds.get(str(row["subject"]), "") if row.get("status") != "invalid_annotation" else ""
        if row.get(RECORDS):
            row.update(judge(row[RECORDS], self.params.align))
        return row

    def _write_manifest(self) -> None:
        self._written = time.monotonic()
        for row in self.rows:
            self._completed(row)
        try:
            records = [{"clip": r["clip"], **record} for r in self.rows if r["status"] == "ok" for record in r.get(RECORDS, ())]
            # a normalized output keeps its records in each clip folder; flows from aligned crops have none
            if self.kind != "normalized" and (records or (self.out / ALIGNMENT_FILE).exists()):
                write_csv(self.out / ALIGNMENT_FILE, records, ["clip", *ALIGNMENT_COLUMNS])
            write_csv(self.out / MANIFEST_FILE, self.rows, MANIFEST_COLUMNS)
        except OSError as exc:
            if exc.errno in FATAL_WRITE_ERRORS:
                raise InputError(f"{self.out}: cannot write the manifest ({exc.strerror})") from exc
            raise

    # -- closing

    def _close(self, interrupted: BaseException | None = None) -> JobReport:
        try:
            if interrupted is None:
                self._write_manifest()
                write_params(self.out, self.kind, self.params, self.sources, self.extra, created=self.created)
                failed = sum(r["status"] != "ok" for r in self.rows)
                if failed and self.log.used:
                    self.log.write(f"finished: {len(self.rows) - failed} of {len(self.rows)} clips ok, {failed} failed")
            else:
                pending = sum(r["status"] == "pending" for r in self.rows)
                if isinstance(interrupted, KeyboardInterrupt):
                    what = f"by {interrupted}" if str(interrupted) else "by SIGINT (Ctrl-C)"
                else:
                    what = f"by {type(interrupted).__name__}: {one_line(str(interrupted))}"
                expected = isinstance(interrupted, (KeyboardInterrupt, InputError))
                detail = "" if expected else "\n" + "".join(traceback.format_exception(interrupted))
                self.log.write(f"stopped {what}: {pending} clip(s) left pending; re-run to resume{detail}")
                try:
                    self._write_manifest()
                except Exception:  # noqa: BLE001 - the manifest on disk is from the last finished clip: still consistent
                    pass
        finally:
            self._unlock()
        return JobReport(self.out, self.rows, self.resumed, self.log.path if self.log.used else None, self.replaced, self.unexpected)
