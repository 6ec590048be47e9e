"""Fresh processes timed from the outside, with the peak memory of each.

``run`` starts a command, waits for it with ``os.wait4`` and keeps, per command:

* its wall time (start-up included);
* ``rss_mb``: the largest resident set of any one process of the command — the command and
  every descendant it waited for (its worker pool) — from the kernel (``ru_maxrss`` of
  ``wait4``, exact, no sampling);
* ``cpu_s``: its CPU time, user + system, its waited-for descendants included;
* ``tree_mb``: the largest sum of the resident sets of the command's live processes (the
  command and all its descendants together), sampled from ``/proc`` every
  ``SAMPLE_SECONDS``, and at least ``rss_mb`` (a lower bound: a peak between two samples is
  missed; ``None`` where ``/proc`` is not there).

Every command run is recorded in ``RUNS`` (label, wall, both peaks), for the "peak RSS of any
command" row.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: Seconds between two samples of a command's process tree.
SAMPLE_SECONDS = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Ran:
    """A finished command."""

    label: str
    wall: float  # s, from start to exit (start-up included)
    stdout: str
    stderr: str
    rss_mb: float  # largest single process (kernel's ru_maxrss: the command and the descendants it waited for)
    tree_mb: float | None  # largest sum over the command's live processes (sampled)
    cpu_s: float  # user + system CPU time of the command and the descendants it waited for

    def cpu_share(self, cores: int) -> float:
        """CPU time ÷ (wall × ``cores``): 1.0 = every core busy for the whole run."""
        return self.cpu_s / (self.wall * cores) if self.wall > 0 else 0.0

    def json_line(self, key: str) -> str:
        """The last stdout line starting with ``{"key"`` (a result printed as JSON)."""
        return next(line for line in reversed(self.stdout.splitlines()) if line.startswith('{"' + key + '"'))


#: Every command ``run`` ran, in order.
RUNS: list[Ran] = []


class CommandFailed(RuntimeError):
    pass


def run(cmd: list[str], *, label: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float | None = None, ok_codes: tuple[int, ...] = (0,)) -> Ran:
    """Run ``cmd`` to its end; ``CommandFailed`` (with its stderr's end) if its exit code is not in
    ``ok_codes`` or it outlives ``timeout``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
        sampler = _TreeSampler(proc.pid)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - start
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    rss = usage.ru_maxrss / 1024
    # the sum is at least the largest process: a sample that missed its peak still gives that bound
    tree = None if sampler.peak_mb is None else max(sampler.peak_mb, rss)
    ran = Ran(label, wall, stdout, stderr, rss, tree, usage.ru_utime + usage.ru_stime)
    if proc.returncode not in ok_codes:
        raise CommandFailed(f"{label}: {' '.join(map(str, cmd))} failed ({proc.returncode}):\n{stderr[-3000:]}")
    RUNS.append(ran)
    return ran


def peak() -> tuple[Ran | None, Ran | None]:
    """The recorded commands with the largest single process and the largest sampled sum."""
    single = max(RUNS, key=lambda r: r.rss_mb, default=None)
    tree = max((r for r in RUNS if r.tree_mb is not None), key=lambda r: r.tree_mb or 0.0, default=None)
    return single, tree


class _TreeSampler:
    """Samples the summed RSS of ``pid`` and its descendants from ``/proc`` in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb: float | None = 0.0 if Path("/proc/self/statm").exists() else None
        self._stop = threading.Event()
        self._thread = None
        if self.peak_mb is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = _tree_rss_bytes(self.pid)
            self.peak_mb = max(self.peak_mb or 0.0, total / 2**20)
            self._stop.wait(SAMPLE_SECONDS)


def _tree_rss_bytes(root: int) -> int:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name (2nd field) is in parentheses and may hold spaces: split after it
        fields = stat[stat.rfind(b")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(frontier)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total
