"""ASGI middleware of the service: body-size limit, bearer token, and a log without patient data.

Each runs before any route reads the request body, so an oversized or unauthenticated
upload is refused before it is parsed.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException

logger = logging.getLogger("medfusion.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Send a JSON error response ``{"detail": ...}`` (FastAPI's error shape)."""
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


def too_large(limit: int) -> HTTPException:
    """The 413 error of a request body over ``limit`` bytes."""
    return HTTPException(413, f"request body: expected at most {limit:,} bytes, received more")


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413.

    A declared ``Content-Length`` over the limit is refused before the body is read; a
    body without one (chunked) is counted as it arrives and refused once it passes the
    limit (raised inside the route's body parsing, which FastAPI turns into the response).

    Args:
        app: the ASGI application.
        limit: largest body in bytes.
    """

    def __init__(self, app: App, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await send_error(send, 413, too_large(self.limit).detail, {"Connection": "close"})
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large(self.limit)
            return message

        await self.app(scope, counted, send)


class BearerToken:
    """Requires ``Authorization: Bearer <token>`` on every path but the public ones (401 otherwise).

    Args:
        app: the ASGI application.
        token: the shared secret (compared in constant time).
        public: paths served without the token.
        public_prefixes: path prefixes served without the token (e.g. "/static/").
    """

    def __init__(self, app: App, token: str, public: tuple[str, ...], public_prefixes: tuple[str, ...]) -> None:
        self.app, self.token, self.public, self.prefixes = app, token.encode(), public, public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path not in self.public and not path.startswith(self.prefixes):
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, value = header.partition(b" ")
            if scheme.lower() != b"bearer" or not secrets.compare_digest(value.strip(), self.token):
                await send_error(send, 401, "expected the header 'Authorization: Bearer <token>', received "
                                 + ("another token" if scheme.lower() == b"bearer" else "none"),
                                 {"WWW-Authenticate": "Bearer"})
                return
        await self.app(scope, receive, send)


class AccessLog:
    """Logs one line per request: method, route template, status and latency.

    The route template (``/thumbnail/{item_id:path}``), never the requested path or its
    query string: ids, search text and uploads may hold patient data.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(not routed)"
            logger.info("%s %s %d %.1f ms", scope["method"], route, status, 1000 * (time.perf_counter() - started))
