"""User-facing errors: one clear line, no traceback.

Anything a user can fix (a YAML typo, a missing file, an offline dataset) raises a `UserError`
whose message names the key or file and the fix. Entry points catch it, print it on stderr and
exit non-zero; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable


class UserError(Exception):
    """Bad input the user can fix; the message is the whole story."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class DivergedError(RuntimeError):
    """Training produced a non-finite loss: the cell fails with this reason, the grid goes on."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run an entry point, turning a UserError into `error: ...` on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished cells are kept, re-run the same command to resume", file=sys.stderr)
        return 130
