import sys

from sammflow.cli import main

if __name__ == "__main__":  # guarded: worker processes are spawned and import this module
    sys.exit(main())
