"""What every request passes through: the host and origin checks, the security headers, JSON in
and out, and the one-line errors.

Only 127.0.0.1 is bound, and requests whose Host is not localhost are refused (a DNS-rebinding
page cannot reach the API). The API refuses requests that a browser marks as coming from another
origin (`Origin`, `Sec-Fetch-Site`), and POST bodies must have exactly the media type
application/json (a cross-site form or "simple" fetch cannot send it without a CORS preflight, which
this server never grants). Every response forbids framing (`frame-ancestors 'none'`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http import HTTPStatus

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: grid and cell folder names as ablations.grid writes them; anything else (`..`, `/`) is refused
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: the largest request body accepted (a grid YAML is a few kB)
MAX_BODY = 1 << 20
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
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



#: the pages themselves may be opened from a link; everything else only from these pages
PAGES = {"/", "/rate"}


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
            if scope["path"] not in PAGES:
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


def string_field(body: dict, key: str, example: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"send {{\"{key}\": {example}}}")
    return value

