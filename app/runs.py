"""Grids started from the page: validate grid YAML as the runner would, start `python -m ablations.run`
on it in a child process, stop a grid's live runners on this host, and list what was started here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from ablations.claims import claims_dir, is_stale, read_claim
from ablations.grid import Grid, load_grid, parse_grid_text
from app.browse import _grid_record
from app.web import ApiError
from research.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A grid started from the page: `python -m ablations.run` in a child process."""

    grid: str
    proc: subprocess.Popen
    yaml_path: Path
    log_path: Path
    started: float = field(default_factory=time.time)

    def stop(self) -> None:
        """SIGTERM the runner and its workers (a session of their own); their claims go stale and the
        next run of the same grid resumes the cells from their checkpoints."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def to_dict(self) -> dict:
        code = self.proc.poll()
        return {"pid": self.proc.pid, "grid": self.grid, "running": code is None, "returncode": code,
                "started": self.started, "yaml": str(self.yaml_path), "log": str(self.log_path),
                "log_tail": _tail(self.log_path, 15)}



def check_grid_text(text: str) -> Grid:
    """Validate grid YAML from the browser exactly as `python -m ablations.run` would the file."""
    return load_grid(None, raw=parse_grid_text(text))



class Runs:
    """The grid runs of `App` (needs `results_dir` and `grid_dir`)."""

    results_dir: Path

    def __init__(self):
        self.runs: list[Run] = []
        self._runs_lock = threading.Lock()

    def validate(self, text: str) -> dict:
        try:
            grid = check_grid_text(text)
        except UserError as e:
            return {"ok": False, "error": str(e), "name": None, "cells": []}
        return {"ok": True, "error": None, "name": grid.name, "cells": [c.id for c in grid.cells],
                "results": str(self.results_dir / grid.name)}

    def start(self, text: str, resume: bool = False) -> dict:
        """Start a grid in a child runner. A grid of the same name already on disk is refused when
        its cells differ (it would overwrite that grid's grid.json and summary), and, when they are
        the same, started only with `resume` (the runner keeps finished cells)."""
        checked = self.validate(text)
        if not checked["ok"]:
            raise ApiError(HTTPStatus.BAD_REQUEST, checked["error"])
        name = checked["name"]
        with self._runs_lock:
            if any(r.grid == name and r.proc.poll() is None for r in self.runs):
                raise ApiError(HTTPStatus.CONFLICT, f"grid '{name}' is already running from this app; wait for it "
                                                    "to finish or stop it")
            self._check_collision(name, checked["cells"], resume)
            work = self.results_dir / "_app"
            work.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            yaml_path = work / f"{name}-{stamp}.yaml"
            log_path = work / f"{name}-{stamp}.log"
            yaml_path.write_text(text)
            with open(log_path, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "ablations.run", str(yaml_path), "--results-dir",
                                         str(self.results_dir)], stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            run = Run(name, proc, yaml_path, log_path)
            self.runs.append(run)
        log.info("started grid %s (pid %d), log %s", name, proc.pid, log_path)
        return {**checked, **run.to_dict()}

    def _check_collision(self, name: str, cells: list[str], resume: bool) -> None:
        grid_dir = self.results_dir / name
        if not grid_dir.exists():
            return
        record = _grid_record(grid_dir)
        old = [c.get("id") for c in (record or {}).get("cells", []) if isinstance(c, dict)]
        if record is None or set(old) != set(cells):
            differ = len(set(old) ^ set(cells)) if record is not None else len(cells)
            raise ApiError(HTTPStatus.CONFLICT, f"grid '{name}' already exists in {self.results_dir} with a "
                                                f"different definition ({differ} cells differ); starting it would "
                                                "overwrite its grid record and summary: give this grid another name")
        if not resume:
            raise ApiError(HTTPStatus.CONFLICT, f"grid '{name}' already exists with this definition: resume it "
                                                "(finished cells are kept)?", resume=True)

    def stop(self, grid: str) -> dict:
        """Stop a running grid: the runner started here (with its workers), and any runner on this
        host whose claim heartbeat holds one of the grid's cells. Runners on other hosts are listed,
        not touched. Their claims go stale; starting the grid again resumes it."""
        grid_dir = self.grid_dir(grid)
        stopped: list[int] = []
        with self._runs_lock:
            for run in self.runs:
                if run.grid == grid and run.proc.poll() is None:
                    run.stop()
                    stopped.append(run.proc.pid)
        elsewhere = []
        folder = claims_dir(grid_dir)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            claim = read_claim(grid_dir, path.stem)
            if claim is None or is_stale(claim):
                continue
            pid = int(claim.get("pid", -1))
            if claim.get("host") != socket.gethostname():
                elsewhere.append(str(claim.get("runner")))
            elif pid not in stopped and _is_runner(pid):
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
        if not stopped and not elsewhere:
            raise ApiError(HTTPStatus.CONFLICT, f"grid '{grid}' has no live runner to stop")
        log.info("stopped grid %s: pids %s", grid, stopped)
        return {"grid": grid, "stopped": stopped, "elsewhere": elsewhere}

    def list_runs(self) -> list[dict]:
        with self._runs_lock:
            return [r.to_dict() for r in self.runs]

    def close(self) -> None:
        """Stop the grids started here; the runner resumes them on the next run of the same file."""
        with self._runs_lock:
            for run in self.runs:
                run.stop()
            for run in self.runs:
                try:
                    run.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait()


def _is_runner(pid: int) -> bool:
    """Whether `pid` on this host is a grid runner (`-m ablations.run`), not a process that took a
    dead runner's pid."""
    try:
        return b"ablations.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False



def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""

