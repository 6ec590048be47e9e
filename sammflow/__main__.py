import sys

from sammflow.cli import main

sys.exit(main())
