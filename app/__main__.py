"""`python -m app`: see `app.server`."""

import sys

from app.server import main
from research.errors import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
