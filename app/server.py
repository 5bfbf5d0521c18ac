"""`python -m app`: a local web app over a results folder.

    python -m app                          # serves ./results on http://127.0.0.1:7860/
    python -m app --results-dir runs --port 0

One page (`page.html`; its scripts and styles come from this package: no CDN, works offline) over
a small JSON API: a Starlette application served by uvicorn, whose synchronous handlers run in a
thread pool, so a long generation in one tab does not block the grid list in another:

    GET  /                                   the page
    GET  /api/grids                          grids in the results folder, with cell counts by status
    GET  /api/grid/<grid>                    one row per cell: status, progress, axes, final metrics
    GET  /api/grid/<grid>/curves             every cell's train/val loss curve (nats/token) by step
    GET  /api/cell/<grid>/<cell>/curve       one cell's curve
    GET  /api/generate?grid=&cell=&prompt=   Server-Sent Events, one `token` event per sampled token,
    POST /api/generate  {"grid", "cell", ...}  then `done` ({tokens, stop: "eot" | "max_tokens"})
    POST /api/validate  {"yaml": text}       -> {ok, error, name, cells}
    POST /api/start     {"yaml", "resume"?}  validates, then runs `python -m ablations.run` on it; a grid
                                             of that name on disk is refused (409) when its cells differ,
                                             and needs "resume": true when they are the same
    POST /api/stop      {"grid"}             SIGTERM the grid's live runners on this host
    GET  /api/runs                           grids started from the page: pid, running, log tail

A cell is `running` while its runner's claim heartbeat (ablations.claims) is alive and `stale` once
the runner is gone, whatever its files' times say; rows carry the phase (training step i/N,
evaluating, writing), elapsed time and an ETA, and grids their elapsed time and ETA.

Only 127.0.0.1 is bound, and requests whose Host is not localhost are refused (a DNS-rebinding
page cannot reach the API). The API refuses requests that a browser marks as coming from another
origin (`Origin`, `Sec-Fetch-Site`), and POST bodies must have exactly the media type
application/json (a cross-site form or "simple" fetch cannot send it without a CORS preflight, which
this server never grants). Every response forbids framing (`frame-ancestors 'none'`). Grid and cell
names are checked against the folder-name pattern and must resolve inside the results folder;
a grid folder that does not (a symlink out of it) is listed under `skipped` with the reason.
Errors are JSON `{"error": one line}`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ablations import records
from ablations.claims import claims_dir, is_stale, read_claim
from ablations.grid import Grid, load_grid, parse_grid_text
from ablations.records import cell_status
from research.errors import ConfigError, UserError

log = logging.getLogger(__name__)

#: grid and cell folder names as ablations.grid writes them; anything else (`..`, `/`) is refused
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: the largest request body accepted (a grid YAML is a few kB)
MAX_BODY = 1 << 20
#: the most tokens one request may ask for; the page's default is 300
MAX_NEW_TOKENS = 4000
#: the final metrics the grid table shows first; units as in results/README.md
HEADLINE = ["params", "val_loss", "val_ppl", "val_bpb", "test_ppl", "wall_s", "tokens_per_s"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
#: a cell's status: on disk (done, failed, partial, pending) or from its runner's claim (running, stale)
STATUSES = ("done", "running", "stale", "partial", "failed", "pending")
#: every response: no framing by any page (clickjacking), no content sniffing, nothing from elsewhere
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SECURITY_HEADER_BYTES = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
#: what Sec-Fetch-Site may say of a request to the API: from this app's own page, or typed by the user
OWN_SITES = {"same-origin", "none"}


class ApiError(Exception):
    """A request the client can fix; answered as JSON {"error": message} with this HTTP status."""

    def __init__(self, status: HTTPStatus, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.extra = extra  # more fields of the JSON answer, e.g. {"resume": true}


class ModelCache:
    """The last few loaded cells, most recent last. Keyed by the weights file and its mtime, so a
    cell trained again is reloaded rather than served stale."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cell_dir: Path):
        from research.checkpoint import load_cell

        weights = cell_dir / "model.pt"
        key = (str(cell_dir), weights.stat().st_mtime_ns if weights.exists() else 0)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loaded = load_cell(cell_dir)  # raises UserError for an unfinished cell
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return loaded

    def __len__(self) -> int:
        return len(self._items)


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


@dataclass
class GenerateRequest:
    grid: str
    cell: str
    prompt: str = ""
    max_tokens: int = 300
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, params: dict[str, Any]) -> GenerateRequest:
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown generate parameter '{sorted(unknown)[0]}'; "
                                                   f"expected {', '.join(cls.__dataclass_fields__)}")
        for key in ("grid", "cell"):
            if not params.get(key):
                raise ApiError(HTTPStatus.BAD_REQUEST, f"'{key}' is required: name the checkpoint as grid and cell")
        req = cls(grid=str(params["grid"]), cell=str(params["cell"]), prompt=str(params.get("prompt") or ""))
        req.max_tokens = _number(params, "max_tokens", int, req.max_tokens, 1, MAX_NEW_TOKENS)
        req.temperature = _number(params, "temperature", float, req.temperature, 0.0, 100.0)
        req.top_k = _number(params, "top_k", int, None, 0, None) or None  # 0 means no top-k filter
        top_p = _number(params, "top_p", float, None, 0.0, 1.0)
        req.top_p = top_p if top_p is not None and 0.0 < top_p < 1.0 else None  # 1 (or 0) means off
        req.seed = _number(params, "seed", int, None, 0, None)
        return req


def _number(params: dict, key: str, kind: type, default, low, high):
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        out = kind(value)
        if kind is int and isinstance(value, float) and value != out:
            raise ValueError
    except (TypeError, ValueError):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{key}: expected {kind.__name__}, got {value!r}") from None
    if (isinstance(out, float) and not math.isfinite(out)) or out < low or (high is not None and out > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{key}: must be {bounds}, got {value!r}")
    return out


def check_grid_text(text: str) -> Grid:
    """Validate grid YAML from the browser exactly as `python -m ablations.run` would the file."""
    return load_grid(None, raw=parse_grid_text(text))


class App:
    """What the handlers share: the results folder, the model cache and the grids started here."""

    def __init__(self, results_dir: Path, cache_size: int = 4):
        self.results_dir = Path(results_dir).resolve()
        self.models = ModelCache(cache_size)
        self.runs: list[Run] = []
        self._runs_lock = threading.Lock()

    # paths -----------------------------------------------------------------------------------
    def _child(self, parent: Path, name: str, what: str) -> Path:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} {name!r}: not a results folder name")
        path = (parent / name).resolve()
        if path.parent != parent.resolve() or not path.is_relative_to(self.results_dir):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{what} {name!r}: outside the results folder")
        if not path.is_dir():
            raise ApiError(HTTPStatus.NOT_FOUND, f"{what} '{name}' not found in {self.results_dir}")
        return path

    def grid_dir(self, grid: str) -> Path:
        return self._child(self.results_dir, grid, "grid")

    def cell_dir(self, grid: str, cell: str) -> Path:
        return self._child(self.grid_dir(grid), cell, "cell")

    # grids -----------------------------------------------------------------------------------
    def grid_names(self) -> tuple[list[str], list[dict]]:
        """Grid folders that can be shown, and the others with why they were skipped (a symlink out
        of the results folder, a name that is not a folder name, an unreadable folder)."""
        if not self.results_dir.is_dir():
            return [], []
        names, skipped = [], []
        for p in sorted(self.results_dir.iterdir()):
            if p.name.startswith((".", "_")) or not p.is_dir():
                continue
            try:
                self.grid_dir(p.name)
                if records.is_grid_dir(p):
                    names.append(p.name)
            except ApiError as e:
                skipped.append({"name": p.name, "reason": str(e)})
            except OSError as e:
                skipped.append({"name": p.name, "reason": f"unreadable ({e.strerror})"})
        return names, skipped

    def list_grids(self) -> dict:
        out, (names, skipped) = [], self.grid_names()
        for name in names:
            try:
                detail = self.grid_detail(name)
            except (ApiError, OSError) as e:
                skipped.append({"name": name, "reason": str(e)})
                continue
            counts = {s: 0 for s in STATUSES}
            for row in detail["rows"]:
                counts[row["status"]] += 1
            counts["running_cells"] = counts.pop("running")  # "running": whether the grid is
            out.append({"name": name, "description": detail["description"], "cells": len(detail["rows"]),
                        **counts, "running": detail["running"], "updated": detail["updated"],
                        "elapsed_s": detail["elapsed_s"], "eta_s": detail["eta_s"]})
        return {"grids": out, "skipped": skipped}

    def grid_detail(self, grid: str) -> dict:
        grid_dir = self.grid_dir(grid)
        record = _grid_record(grid_dir) or {}
        listed = [c for c in record.get("cells", []) if isinstance(c, dict) and NAME.fullmatch(str(c.get("id", "")))]
        ids = [c["id"] for c in listed]
        on_disk = sorted(p.name for p in grid_dir.iterdir() if p.is_dir() and NAME.fullmatch(p.name)
                         and (p / records.CONFIG).exists() and p.name not in ids)
        axes = [a for a in record.get("axes", []) if isinstance(a, str)]
        now = time.time()
        rows = [self._row(grid_dir, c, axes, now) for c in listed]
        rows += [self._row(grid_dir, {"id": cid}, axes, now) for cid in on_disk]
        updated = max([r["updated"] for r in rows if r["updated"]] + [grid_dir.stat().st_mtime])
        started_here = any(run["running"] for run in self.list_runs() if run["grid"] == grid)
        running = started_here or any(r["status"] == "running" for r in rows)
        names = {k for r in rows for k in r["metrics"]}
        metrics = [k for k in HEADLINE if k in names] + sorted(names - set(HEADLINE))
        return {"name": grid, "description": record.get("description", ""), "axes": axes, "metrics": metrics,
                "rows": rows, "running": running, "updated": updated, **grid_times(rows, running, now)}

    def _row(self, grid_dir: Path, listed: dict, axes: list[str], now: float) -> dict:
        """One cell: its status on disk, made `running` or `stale` by its runner's claim heartbeat
        (ablations.claims), so a long evaluation stays running and a killed runner shows at once."""
        cell_dir = grid_dir / listed["id"]
        status = cell_status(cell_dir)
        row = {"cell": listed["id"], "seed": listed.get("seed"), "status": status,
               "axes": {a: _short(listed.get("axes", {}).get(a)) for a in axes}, "metrics": {}, "progress": None,
               "step": None, "max_steps": None, "phase": None, "elapsed_s": None, "eta_s": None, "wall_s": None,
               "updated": _mtime(cell_dir)}
        if status == "done":
            metrics = records.read_metrics(cell_dir)
            row["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}  # NaN is not JSON
            row["progress"] = 1.0
            row["wall_s"] = row["metrics"].get("wall_s")
            return row
        if status == "failed":
            row["reason"] = records.read_error(cell_dir)
        claim = read_claim(grid_dir, listed["id"])
        if status == "partial" or claim is not None:
            curve = read_curve(cell_dir)
            row["step"], row["max_steps"] = curve["last_step"], curve["max_steps"]
            if row["step"] is not None and row["max_steps"]:
                row["progress"] = min(1.0, (row["step"] + 1) / row["max_steps"])
        if claim is None:
            return row
        row["runner"] = claim.get("runner")
        since = claim.get("since")
        if is_stale(claim):
            row["status"], row["phase"] = "stale", "runner gone (heartbeat stopped); re-run the grid to resume"
            return row
        row["status"] = "running"
        row["phase"] = cell_phase(cell_dir, row["step"], row["max_steps"])
        if isinstance(since, (int, float)):
            row["elapsed_s"] = max(0.0, now - since)
            if row["phase"].startswith("training step") and row["progress"]:
                row["eta_s"] = row["elapsed_s"] * (1 - row["progress"]) / row["progress"]
        return row

    def curve(self, grid: str, cell: str) -> dict:
        cell_dir = self.cell_dir(grid, cell)
        return {"cell": cell, "status": cell_status(cell_dir), **read_curve(cell_dir)}

    def grid_curves(self, grid: str) -> dict:
        rows = self.grid_detail(grid)["rows"]
        grid_dir = self.grid_dir(grid)
        return {"grid": grid, "unit": "nats/token",
                "cells": {r["cell"]: {"status": r["status"], **read_curve(grid_dir / r["cell"])}
                          for r in rows if r["status"] != "pending"}}

    # grid files from the page ---------------------------------------------------------------
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
                                                "overwrite its grid.json and summary: give this grid another name")
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

    # generation ------------------------------------------------------------------------------
    def load(self, req: GenerateRequest):
        cell_dir = self.cell_dir(req.grid, req.cell)
        try:
            return self.models.get(cell_dir)
        except UserError as e:
            raise ApiError(HTTPStatus.CONFLICT, str(e)) from None

    def stream(self, loaded, req: GenerateRequest, emit) -> dict:
        """Sample from `loaded`, calling `emit(event, data)` per token and once at the end.

        Each token event carries the new suffix of the decoded completion (decoding the growing id
        list, not the lone token, keeps word-level spacing and multi-byte BPE pieces right). While the
        completion ends in U+FFFD (half a UTF-8 character) the text is held back for the next token.
        """
        from research.generate import generate

        tok = loaded.tokenizer
        prompt_ids = tok.encode(req.prompt) if req.prompt else []
        head = tok.decode(prompt_ids)
        ids: list[int] = []
        sent = ""
        gen = torch.Generator().manual_seed(req.seed) if req.seed is not None else None

        def on_token(token: int) -> None:
            nonlocal sent
            ids.append(token)
            full = tok.decode(prompt_ids + ids)
            text = full[len(head):] if full.startswith(head) else tok.decode(ids)
            if text.endswith("\ufffd"):
                emit("token", {"token": token, "delta": ""})
            elif text.startswith(sent):
                emit("token", {"token": token, "delta": text[len(sent):]})
                sent = text
            else:  # an earlier piece decoded differently once completed: resend the whole completion
                emit("token", {"token": token, "delta": "", "text": text})
                sent = text

        t0 = time.perf_counter()
        out = generate(loaded.model, prompt_ids, req.max_tokens, tok.eot_id, temperature=req.temperature,
                       top_k=req.top_k, top_p=req.top_p, generator=gen, stream=on_token)
        seconds = time.perf_counter() - t0
        final = tok.decode(prompt_ids + out)
        text = final[len(head):] if final.startswith(head) else tok.decode(out)
        done = {"tokens": len(out), "stop": "max_tokens" if len(out) >= req.max_tokens else "eot",
                "text": text, "prompt": head, "seconds": seconds,
                "tokens_per_s": len(out) / seconds if seconds > 0 else None}
        emit("done", done)
        return done


def cell_phase(cell_dir: Path, step: int | None, max_steps: int | None) -> str:
    """What a running cell is doing, from the files the trainer writes in order: config.yaml, the
    training log (Lightning flushes it every 100 steps, so the step shown may lag), model.pt (then
    samples and evals), metrics.json, DONE."""
    if (cell_dir / records.METRICS).exists():
        return "writing results"
    if (cell_dir / "model.pt").exists():
        return "evaluating (samples, evals)"
    if not (cell_dir / records.CONFIG).exists():
        return "starting (loading data)"
    if step is None:
        return "training (no step logged yet)"
    if max_steps and step + 1 >= max_steps:
        return "evaluating (final validation)"
    return f"training step {step + 1}/{max_steps or '?'}"


def grid_times(rows: list[dict], running: bool, now: float) -> dict:
    """The grid's elapsed wall clock (seconds, from its first cell's start) and, while it runs, an
    estimate of the time left: the running cells' own estimates, plus the cells still waiting at
    the mean wall clock of the finished ones, shared among the live runners."""
    starts = [now - r["elapsed_s"] for r in rows if r["elapsed_s"] is not None]
    ends = []
    for r in rows:
        if r["status"] == "done" and r["wall_s"] and r["updated"]:
            starts.append(r["updated"] - r["wall_s"])
            ends.append(r["updated"])
    if not starts:
        return {"elapsed_s": None, "eta_s": None}
    elapsed = (now if running else max(ends or [now])) - min(starts)
    if not running:
        return {"elapsed_s": elapsed, "eta_s": None}
    live = [r for r in rows if r["status"] == "running"]
    waiting = sum(r["status"] in ("pending", "partial", "stale") for r in rows)
    walls = [r["wall_s"] for r in rows if r["status"] == "done" and r["wall_s"]]
    walls = walls or [r["elapsed_s"] + r["eta_s"] for r in live if r["eta_s"] is not None]
    own = [r["eta_s"] for r in live if r["eta_s"] is not None]
    if (waiting and not walls) or (live and not own):
        return {"elapsed_s": elapsed, "eta_s": None}
    eta = max(own, default=0.0) + waiting * (sum(walls) / len(walls) if walls else 0.0) / max(1, len(live))
    return {"elapsed_s": elapsed, "eta_s": eta}


def _is_runner(pid: int) -> bool:
    """Whether `pid` on this host is a grid runner (`-m ablations.run`), not a process that took a
    dead runner's pid."""
    try:
        return b"ablations.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _grid_record(grid_dir: Path) -> dict | None:
    """The grid's grid.json, or None when it is missing or unreadable (the page shows what it can)."""
    try:
        return records.read_grid(grid_dir, required=False) or None
    except UserError:
        return None


def _mtime(path: Path) -> float | None:
    """The newest mtime among the folder and its direct files: the log files change as a cell trains."""
    if not path.exists():
        return None
    times = [path.stat().st_mtime]
    times += [p.stat().st_mtime for p in path.iterdir() if p.is_file()]
    return max(times)


def _short(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)[:60]
    return value


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def read_curve(cell_dir: Path) -> dict:
    """Train and val loss (nats/token) by step from the cell's per-step log, which the logger
    rewrites as it trains: a half-written or missing file gives what could be read."""
    curves = records.read_curves(cell_dir)
    train = [[step, value] for step, value in curves.get("train/loss", [])]
    val = [[step, value] for step, value in curves.get("val/loss", [])]
    max_steps = records.max_steps(records.read_config(cell_dir))
    steps = [p[0] for p in train + val]
    return {"unit": "nats/token", "train": train, "val": val, "max_steps": max_steps,
            "last_step": int(max(steps)) if steps else None}


def guard(app: ASGIApp, port: Callable[[], int]) -> ASGIApp:
    """ASGI middleware: refuse a Host that is not this machine (DNS rebinding) and API requests a
    browser marks as sent by another origin; add SECURITY_HEADERS to every response."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = Headers(scope=scope)
        try:
            host = (headers.get("host") or "").rsplit(":", 1)[0]
            if host not in LOCAL_HOSTS:
                raise ApiError(HTTPStatus.FORBIDDEN, f"Host '{host}' refused: open the app at http://127.0.0.1")
            if scope["path"] != "/":  # the page itself may be opened from a link; the API only from the page
                check_origin(headers, port())
        except ApiError as e:
            return await error_response(e.status, str(e))(scope, receive, secured(send))
        await app(scope, receive, secured(send))

    def secured(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADER_BYTES]
            await send(message)

        return wrapped

    return middleware


def check_origin(headers: Headers, port: int) -> None:
    """Refuse what another page (another origin: a site, or another port of this host) sends the
    API: a browser names the sender in `Origin` (POST, cross-origin fetch) and `Sec-Fetch-Site`
    (every request). Clients without either (curl, Python) are not browsers and cannot carry a
    visitor's request."""
    origin = headers.get("origin")
    if origin is not None and origin not in {f"http://{h}:{port}" for h in LOCAL_HOSTS}:
        raise ApiError(HTTPStatus.FORBIDDEN, f"Origin '{origin}' refused: the API answers only this app's page")
    site = headers.get("sec-fetch-site")
    if site is not None and site not in OWN_SITES:
        raise ApiError(HTTPStatus.FORBIDDEN, f"a {site} request refused: the API answers only this app's page")


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers={"Cache-Control": "no-store"})


def json_response(obj) -> Response:
    body = json.dumps(obj, default=str, allow_nan=False).encode()
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


async def json_body(request: Request) -> dict:
    """The request's JSON object; the media type must be exactly application/json (a cross-site form
    or "simple" fetch can send `text/plain; x=application/json`, never this without a preflight)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as JSON (Content-Type: application/json)")
    length = int(request.headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body is {length} bytes; the limit is {MAX_BODY}")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body is {len(raw)} bytes; the limit is {MAX_BODY}")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return body


def _field(body: dict, key: str, example: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"send {{\"{key}\": {example}}}")
    return value


def make_app(results_dir: Path, cache_size: int = 4) -> Starlette:
    """The Starlette application over `results_dir`; `app.state.core` is its `App`."""
    core = App(results_dir, cache_size)

    def page(request: Request) -> Response:
        html = importlib.resources.files("app").joinpath("page.html").read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    def grids(request: Request) -> Response:
        return json_response({"results_dir": str(core.results_dir), **core.list_grids()})

    def grid(request: Request) -> Response:
        return json_response(core.grid_detail(request.path_params["grid"]))

    def grid_curves(request: Request) -> Response:
        return json_response(core.grid_curves(request.path_params["grid"]))

    def curve(request: Request) -> Response:
        return json_response(core.curve(request.path_params["grid"], request.path_params["cell"]))

    def runs(request: Request) -> Response:
        return json_response({"runs": core.list_runs()})

    async def validate(request: Request) -> Response:
        text = _field(await json_body(request), "yaml", '"...grid text..."')
        return json_response(await run_in_threadpool(core.validate, text))

    async def start(request: Request) -> Response:
        body = await json_body(request)
        text = _field(body, "yaml", '"...grid text..."')
        return json_response(await run_in_threadpool(core.start, text, body.get("resume") is True))

    async def stop(request: Request) -> Response:
        name = _field(await json_body(request), "grid", '"name"')
        return json_response(await run_in_threadpool(core.stop, name))

    async def generate(request: Request) -> Response:
        params = await json_body(request) if request.method == "POST" else dict(request.query_params)
        req = GenerateRequest.parse(params)
        loaded = await run_in_threadpool(core.load, req)  # errors before the stream starts are plain JSON
        return StreamingResponse(event_stream(core, loaded, req), media_type="text/event-stream; charset=utf-8",
                                 headers={"Cache-Control": "no-store"})

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, str(exc), **exc.extra)

    async def user_error(request: Request, exc: UserError) -> Response:
        return error_response(HTTPStatus.BAD_REQUEST, str(exc))

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == HTTPStatus.NOT_FOUND:
            return error_response(exc.status_code, f"no such page: {request.method} {request.url.path}")
        return error_response(exc.status_code, exc.detail)

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR,
                              f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])

    routes = [
        Route("/", page),
        Route("/api/grids", grids),
        Route("/api/grid/{grid}", grid),
        Route("/api/grid/{grid}/curves", grid_curves),
        Route("/api/cell/{grid}/{cell}/curve", curve),
        Route("/api/runs", runs),
        Route("/api/generate", generate, methods=["GET", "POST"]),
        Route("/api/validate", validate, methods=["POST"]),
        Route("/api/start", start, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("app", "static")]), name="static"),  # uPlot, MIT
    ]
    handlers = {ApiError: api_error, UserError: user_error, HTTPException: not_found, Exception: internal}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.core = core
    app.state.port = 0
    app.add_middleware(guard, port=lambda: app.state.port)
    return app


def event_stream(core: App, loaded, req: GenerateRequest) -> Iterator[str]:
    """Server-Sent Events from a sampling thread: each `token`, then `done` (or `error`). When the
    client goes away Starlette closes this generator, which stops the sampling at the next token."""
    events: queue.Queue = queue.Queue(maxsize=256)
    cancelled = threading.Event()

    def put(item) -> None:
        while not cancelled.is_set():  # a full queue (a reader that went away) must not block for ever
            try:
                return events.put(item, timeout=0.5)
            except queue.Full:
                continue
        raise GenerationCancelled

    def work() -> None:
        try:
            core.stream(loaded, req, lambda event, data: put((event, data)))
            put(None)
        except GenerationCancelled:
            return
        except Exception as e:  # noqa: BLE001 - the headers are sent: report in the stream, keep the server up
            log.exception("generation failed for %s/%s", req.grid, req.cell)
            try:
                put(("error", {"error": f"{type(e).__name__}: {e}".splitlines()[0]}))
                put(None)
            except GenerationCancelled:
                return

    threading.Thread(target=work, daemon=True, name="generate").start()
    try:
        while (item := events.get()) is not None:
            event, data = item
            yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
    finally:
        cancelled.set()


class GenerationCancelled(Exception):
    """The client closed the stream: sampling stops."""


class Server:
    """uvicorn serving `make_app` on 127.0.0.1 in a background thread (port 0 picks a free one)."""

    def __init__(self, results_dir: Path, port: int = 7860, cache_size: int = 4):
        import uvicorn

        self.app = make_app(results_dir, cache_size)
        self.core: App = self.app.state.core
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.port = self.app.state.port = self.socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve in this thread until `stop()` (or Ctrl-C)."""
        self.uvicorn.run(sockets=[self.socket])

    def start(self) -> Server:
        self._thread = threading.Thread(target=self.run, daemon=True, name="uvicorn")
        self._thread.start()
        deadline = time.time() + 30
        while not self.uvicorn.started and time.time() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()
        self.core.close()


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", type=Path, default=None,
                   help="the grids' results folder (default: $ABLATIONS_RESULTS or ./results)")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860; 0 picks a free one)")
    p.add_argument("--models", type=int, default=4, help="how many loaded checkpoints to keep in memory")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: sampling one token at a time from a small model is "
                        "latency-bound, and on a busy machine 2 threads measured 200x slower than 1)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[app] %(message)s")
    results = args.results_dir or Path(os.environ.get("ABLATIONS_RESULTS", "results"))
    if args.models < 1:
        raise ConfigError(f"--models {args.models}: keep at least 1 checkpoint in memory")
    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: use at least 1 thread")
    torch.set_num_threads(args.threads)
    try:
        server = Server(results, args.port, args.models)
    except OSError as e:
        raise UserError(f"--port {args.port}: cannot listen on 127.0.0.1 ({e.strerror}); pick another port, "
                        "or --port 0 for a free one") from None
    print(f"serving {server.core.results_dir} on http://127.0.0.1:{server.port}/", flush=True)
    try:
        server.run()  # uvicorn stops on SIGINT / SIGTERM
    finally:
        server.socket.close()
        server.core.close()  # stops the grids started here too
    return 0
