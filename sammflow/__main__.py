import signal
import sys

if __name__ == "__main__":  # guarded: worker processes are spawned and import this module
    try:
        from sammflow.cli import main

        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the imports were still running: nothing started yet
        print("interrupted (SIGINT) before anything was written", file=sys.stderr)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: let the workers finish their last (atomic) writes
    sys.exit(code)
