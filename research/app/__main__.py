"""`python -m research.app`: see `research.app.server`."""

import sys

from research.app.server import main
from research.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
