"""Atomic cell claims, so several runners (processes, machines, SLURM tasks) share one grid.

A runner owns a cell while `<grid>/.claims/<cell>.json` exists with its identity: host, pid, a
runner name unique to it (`host:pid` for a local runner, `slurm:<job>` for a SLURM array task,
where `<job>` is `<array job id>_<task id>`) and, under SLURM, the job id. The file is created
with O_CREAT | O_EXCL, which the filesystem makes atomic: of two runners racing for a cell
exactly one wins. While it trains, the owner touches its claims every `HEARTBEAT_S` seconds.

A claim is taken back only by the runner that wrote it (a requeued SLURM task keeps its job id)
and taken over by another only when its owner is truly dead: for a SLURM owner, when SLURM no
longer knows its job (a pending or requeued job keeps its cell); for a local owner, a dead pid on
this host; for any owner where neither can be asked, no heartbeat for `stale_after()` seconds.
Taking over renames the stale file to a unique name first: only one of several runners
recovering the same cell succeeds at the rename, so recovery is atomic too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from research.cell import claims_dir

HEARTBEAT_S = 30.0

#: SLURM job states (squeue %T) of a job that has not run yet or waits to run again
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD",
                 "SUSPENDED", "STOPPED"}


def stale_after() -> float:
    """Seconds without a heartbeat after which a claim whose owner cannot be asked is presumed dead."""
    return float(os.environ.get("ABLATIONS_CLAIM_STALE_S", 300))


@dataclass
class Claim:
    path: Path
    owner: dict


def slurm_job() -> str | None:
    """This process's SLURM job as squeue names it (`<array job>_<task>` in an array), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def runner_name() -> str:
    """A name no other live runner has: the SLURM job (kept across requeues), else host:pid."""
    job = slurm_job()
    return f"slurm:{job}" if job else f"{socket.gethostname()}:{os.getpid()}"


def slurm_job_state(job: str) -> str | None:
    """SLURM's state of `job` (RUNNING, PENDING, ...), "GONE" when SLURM no longer lists it, or None
    when SLURM cannot be asked from here (no squeue, or it failed for another reason)."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    states = out.stdout.split()
    if out.returncode == 0:
        return states[0] if states else "GONE"
    return "GONE" if "invalid job id" in out.stderr.lower() else None


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


def owner_state(owner: dict) -> str:
    """`running`, `requeued` (a SLURM owner waiting to run again: alive), or `stale` (dead)."""
    job = owner.get("slurm_job")
    if job:
        state = slurm_job_state(job)
        if state == "GONE":
            return "stale"
        if state in SLURM_WAITING:
            return "requeued"  # it held the cell, so it ran before: SLURM will start it again
        if state is not None:
            return "running"
    elif owner.get("host") == socket.gethostname():
        return "running" if _pid_alive(int(owner.get("pid", -1))) else "stale"
    return "stale" if owner.get("age_s", 0.0) > stale_after() else "running"


def is_stale(owner: dict) -> bool:
    return owner_state(owner) == "stale"


def try_claim(grid_dir: Path, cell_id: str, runner: str | None = None) -> Claim | None:
    """Claim `cell_id` for this process; None when another live runner holds it.

    `runner` defaults to `runner_name()`; a claim written under the same runner name is this
    runner's own (a requeued SLURM task finding the claim of its previous run) and is taken back.
    """
    folder = claims_dir(grid_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cell_id}.json"
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "runner": runner or runner_name(),
             "slurm_job": slurm_job(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = read_claim(grid_dir, cell_id)
            if current is None:  # released between our attempt and the read: try again
                continue
            if current.get("runner") == owner["runner"]:
                owner["since"] = current.get("since", owner["since"])  # the same run, resumed
            elif not is_stale(current):
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
    """Remove the claim, unless another runner has since taken it over."""
    try:
        current = json.loads(claim.path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    if current.get("runner") == claim.owner["runner"] and current.get("pid") == claim.owner["pid"]:
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
