"""sammflow.pool: batch commands start their workers before their own imports (``prestart``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sammflow.pool
from sammflow.cli import build_parser
from sammflow.pool import BATCH_COMMANDS, prestart


@pytest.fixture
def started(monkeypatch):
    """The pool sizes ``prestart`` asks for (none is really started), on a machine of 4 cores."""
    sizes: list[int] = []
    monkeypatch.setattr(sammflow.pool, "available_cores", lambda: 4)
    monkeypatch.setattr(sammflow.pool, "get_pool", sizes.append)
    return sizes


@pytest.mark.parametrize("argv, size", [
    (["export", "D", "O"], 4),                      # one per core, as --workers' default
    (["normalize", "D", "O", "-q"], 4),
    (["export", "D", "O", "-j", "2"], 2),
    (["export", "D", "O", "-j3"], 3),
    (["export", "D", "O", "--workers=2"], 2),
    (["export", "D", "O", "--work", "2"], 2),       # argparse's abbreviation
    (["export", "D", "O", "-j", "99"], 4),          # never more than the cores (run_clips' own limit)
    (["export", "D", "O", "-j", "1"], 0),           # one worker runs in the main process
    (["export", "D", "O", "-j", "x"], 0),           # argparse's error to come: nothing started
    (["export", "D", "O", "-j"], 0),
    (["export", "D", "O", "--scheduler", "local:2"], 0),  # the cluster's workers run the clips
    (["export", "D", "O", "--sched=local:2"], 0),
    (["export", "-h"], 0),
    (["export", "--help"], 0),
    (["demo", "D"], 0),
    (["--version"], 0),
    ([], 0),
])
def test_prestart_starts_what_the_command_will_ask_for(started, argv, size):
    assert prestart(argv) == size
    assert started == ([size] if size else [])


def test_batch_commands_are_the_ones_with_workers():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    with_workers = {name for name, sub in commands.items() if any("--workers" in a.option_strings for a in sub._actions)}
    assert with_workers == set(BATCH_COMMANDS)


class _Pool:
    def __init__(self, size: int) -> None:
        self.size = size


def test_a_larger_started_pool_serves_a_job_with_fewer_clips(monkeypatch):
    monkeypatch.setattr(sammflow.pool, "_POOLS", {4: _Pool(4), 8: _Pool(8)})
    assert sammflow.pool.get_pool(2).size == 4  # the smallest one large enough
    assert sammflow.pool.get_pool(8).size == 8


def test_the_pool_module_stays_light():
    # it is imported before the command line's imports: nothing heavy may come with it
    code = "import sys, sammflow.pool; print(sorted(m for m in ('numpy', 'cv2', 'sammflow.params', 'sammflow.workers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
