"""``python -m sammflow`` and the ``sammflow`` command (``[project.scripts]`` in pyproject.toml): ``entry``.

Only ``signal`` and ``sys`` are imported here (and ``sammflow.pool``, as light), so a Ctrl-C
while the command's own imports are still running is caught too. A batch command's worker
processes are started first (``sammflow.pool.prestart``): they import the pipeline while this
process imports the command line. Worker processes are spawned and import this module, hence
the guard at the bottom.
"""

import signal
import sys
from pathlib import Path


def entry() -> int:
    """Run the command line (``sammflow.cli.main``); returns its exit code for ``sys.exit``."""
    try:
        from sammflow.pool import prestart

        prestart(sys.argv[1:])
        from sammflow.cli import main

        code = main(prog="sammflow" if Path(sys.argv[0]).name == "sammflow" else "python -m sammflow")
    except KeyboardInterrupt:  # Ctrl-C while the imports were still running: nothing started yet
        print("interrupted (SIGINT) before anything was written", file=sys.stderr)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: let the workers finish their last (atomic) writes
    return code


if __name__ == "__main__":  # guarded: worker processes are spawned and import this module
    sys.exit(entry())
