"""`python -m app`: a local web app over a results folder.

    python -m app                          # serves ./results on http://127.0.0.1:7860/
    python -m app --results-dir runs --port 0

One page (`page.html`; its scripts and styles come from this package: no CDN, works offline) over
a small JSON API: a Starlette application served by uvicorn, whose synchronous handlers run in a
thread pool, so a long generation in one tab does not block the grid list in another:

    GET  /                                   the page
    GET  /api/grids                          grids in the results folder, with cell counts by status
    GET  /api/grid/<grid>                    one row per cell: status, progress, axes, final metrics; and
                                             per configuration (app.configs): label, seeds, mean/std/n
    GET  /api/grid/<grid>/curves             every cell's train/val loss curve (nats/token) by step, and
                                             per configuration the mean with its min-max band
    GET  /api/cell/<grid>/<cell>/curve       one cell's curve
    GET  /api/generate?grid=&cell=&prompt=   Server-Sent Events, one `token` event per sampled token,
    POST /api/generate  {"grid", "cell", ...}  then `done` ({tokens, stop: "eot" | "max_tokens"})
    POST /api/validate  {"yaml": text}       -> {ok, error, name, cells}
    POST /api/start     {"yaml", "resume"?}  validates, then runs `python -m ablations.run` on it; a grid
                                             of that name on disk is refused (409) when its cells differ,
                                             and needs "resume": true when they are the same
    POST /api/stop      {"grid"}             SIGTERM the grid's live runners on this host
    GET  /api/runs                           grids started from the page: pid, running, log tail
    GET  /rate                               the Rate page: blind pairwise ratings of stored stories
    GET  /api/rate/<grid>?rater=             the rater's next unrated pair (app.rating)
    POST /api/rate/<grid> {"rater", "pair", "choices", "note"?}

The handlers live by what they do: `browse` (grids, cells, curves; a cell's status, phase and ETA
come from ablations.status, as the terminal's), `runs` (grids started from the page), `generation` (prompting a
checkpoint) and `rating` (blind human comparison of stories); `web` holds the host and origin
checks, security headers and JSON helpers every request passes through. Errors are JSON
`{"error": one line}`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import socket
import threading
import time
from http import HTTPStatus
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app.browse import Browsing
from app.generation import GenerateRequest, Generation, event_stream
from app.rating import Rating
from app.runs import Runs
from app.web import ApiError, error_response, guard, json_body, json_response, string_field
from research.errors import ConfigError, UserError

log = logging.getLogger(__name__)


class App(Browsing, Runs, Generation, Rating):
    """What the handlers share: the results folder, the model cache and the grids started here."""

    def __init__(self, results_dir: Path, cache_size: int = 4):
        self.results_dir = Path(results_dir).resolve()
        Runs.__init__(self)
        Generation.__init__(self, cache_size)
        Rating.__init__(self)


def make_app(results_dir: Path, cache_size: int = 4) -> Starlette:
    """The Starlette application over `results_dir`; `app.state.core` is its `App`."""
    core = App(results_dir, cache_size)

    def page(request: Request) -> Response:
        name = "rate.html" if request.url.path == "/rate" else "page.html"
        html = importlib.resources.files("app").joinpath(name).read_bytes()
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
        text = string_field(await json_body(request), "yaml", '"...grid text..."')
        return json_response(await run_in_threadpool(core.validate, text))

    async def start(request: Request) -> Response:
        body = await json_body(request)
        text = string_field(body, "yaml", '"...grid text..."')
        return json_response(await run_in_threadpool(core.start, text, body.get("resume") is True))

    async def stop(request: Request) -> Response:
        name = string_field(await json_body(request), "grid", '"name"')
        return json_response(await run_in_threadpool(core.stop, name))

    async def rate(request: Request) -> Response:
        grid = request.path_params["grid"]
        if request.method == "GET":
            return json_response(await run_in_threadpool(core.next_pair, grid, request.query_params.get("rater")))
        return json_response(await run_in_threadpool(core.rate, grid, await json_body(request)))

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
        Route("/rate", page),
        Route("/api/rate/{grid}", rate, methods=["GET", "POST"]),
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
        self.socket.listen(128)  # connections wait in the backlog from now, not refused until uvicorn starts
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
