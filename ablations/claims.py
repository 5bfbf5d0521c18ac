"""Atomic cell claims, so several runners (processes, machines, SLURM tasks) share one grid.

A runner owns a cell while `<grid>/.claims/<cell>.json` exists with its identity. The file is
created with O_CREAT | O_EXCL, which the filesystem makes atomic: of two runners racing for a
cell exactly one wins. While it trains, the owner touches its claims every `HEARTBEAT_S` seconds.
A claim is stale, and may be taken over, when its owner is a dead process on this host or when
it has not been touched for `stale_after()` seconds (a runner on another machine that died).
Taking over renames the stale file to a unique name first: only one of several runners
recovering the same cell succeeds at the rename, so recovery is atomic too.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_S = 30.0


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim from another host is presumed dead."""
    return float(os.environ.get("ABLATIONS_CLAIM_STALE_S", 300))


@dataclass
class Claim:
    path: Path
    owner: dict


def claims_dir(grid_dir: Path) -> Path:
    return Path(grid_dir) / ".claims"


def read_claim(grid_dir: Path, cell_id: str) -> dict | None:
    path = claims_dir(grid_dir) / f"{cell_id}.json"
    try:
        data = json.loads(path.read_text())
        data["age_s"] = time.time() - path.stat().st_mtime
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(owner: dict) -> bool:
    if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
        return True
    return owner.get("age_s", 0.0) > stale_after()


def try_claim(grid_dir: Path, cell_id: str, runner: str) -> Claim | None:
    """Claim `cell_id` for this process; None when another live runner holds it."""
    folder = claims_dir(grid_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cell_id}.json"
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "runner": runner, "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = read_claim(grid_dir, cell_id)
            if current is None:  # released between our attempt and the read: try again
                continue
            # a requeued SLURM task comes back under its old name: its claim is its own
            if current.get("runner") != runner and not is_stale(current):
                return None
            tomb = folder / f".{cell_id}.stale.{uuid.uuid4().hex[:8]}"
            try:
                os.rename(path, tomb)  # only one recovering runner wins this rename
            except FileNotFoundError:
                return None
            tomb.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        return Claim(path, owner)
    return None


def release(claim: Claim) -> None:
    claim.path.unlink(missing_ok=True)


class Heartbeat:
    """Touches the claims this runner holds, from a daemon thread, so others see it alive."""

    def __init__(self, interval: float = HEARTBEAT_S):
        self.interval = interval
        self.claims: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="claim-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for path in list(self.claims):
                try:
                    os.utime(path)
                except FileNotFoundError:
                    self.claims.discard(path)
