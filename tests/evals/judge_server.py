"""A local chat-completions server for the judge tests: real HTTP on 127.0.0.1, scripted replies.

`JudgeServer(script, default)` answers `POST /v1/chat/completions` with the next `Reply` of
`script`, then with `default` (a Reply, or a function of the request body returning one). Every
request is recorded (body and headers), so tests can count them and check what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the assistant message (200 only)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (longer than the client timeout = a timeout)
    error: str = "server error"  # the error message of a non-200 reply
    usage: tuple[int, int] = (50, 20)  # prompt, completion tokens
    raw: str | None = None  # send this body as is (e.g. an HTML error page from a proxy) instead of JSON


def grade_json(grammar=8, creativity=6, consistency=7, plot=5, age_group="C", **extra) -> str:
    obj = {"assessment": "Mostly fine.", "grammar": grammar, "creativity": creativity,
           "consistency": consistency, "plot": plot, "age_group": age_group, **extra}
    return json.dumps(obj)


def ok(**scores) -> Reply:
    return Reply(content=grade_json(**scores))


def garbage(text: str = "Grammar: 8/10, Creativity: 6/10 -- sorry, no JSON today") -> Reply:
    return Reply(content=text)


def rate_limited(retry_after: str | None = None) -> Reply:
    return Reply(status=429, headers={"Retry-After": retry_after} if retry_after else {}, error="rate limited")


def server_error(status: int = 500) -> Reply:
    return Reply(status=status)


def slow(seconds: float) -> Reply:
    return Reply(content=grade_json(), delay=seconds)


class JudgeServer:
    def __init__(self, script: list[Reply] | None = None, default: Reply | Callable[[dict], Reply] | None = None):
        self.script = list(script or [])
        self.default = default if default is not None else ok()
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()  # wakes delayed replies at shutdown
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def next_reply(self, body: dict) -> Reply:
        with self.lock:
            if self.script:
                return self.script.pop(0)
        return self.default(body) if callable(self.default) else self.default

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self.send(404, {"error": {"message": f"no route {self.path}"}})
                reply = server.next_reply(body)
                if reply.delay and server.closing.wait(reply.delay):
                    return
                if reply.raw is not None:
                    return self.send(reply.status, reply.raw, reply.headers)
                if reply.status != 200:
                    return self.send(reply.status, {"error": {"message": reply.error, "type": "test"}}, reply.headers)
                prompt_tokens, completion_tokens = reply.usage
                self.send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply.content}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                }, reply.headers)

            def send(self, status: int, obj: dict | str, headers: dict | None = None):
                data = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
                    pass

        return Handler

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
