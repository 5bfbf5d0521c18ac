"""What the runner, the launchers and the SLURM job print: one prefixed line on stderr, and durations.

Below the runner in the import order, so the trainer's helpers (ablations.requeue) can speak
without importing the runner that imports them.
"""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"[ablations] {message}", file=sys.stderr, flush=True)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
