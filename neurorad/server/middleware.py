"""ASGI middleware of ``neurorad serve``: security headers and a request-body size limit.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``), so it adds no task or thread per request
and never buffers a response.

* Headers (OWASP Secure Headers Project): every response gets ``X-Content-Type-Options:
  nosniff``, ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``; responses of
  ``/api/*`` and ``/web/api/*`` (JSON, result files, the CSRF token of a sign-in) get
  ``Cache-Control: no-store`` unless the endpoint chose its own.
* Body limit: a request whose body is larger than ``max_body_bytes`` (by ``Content-Length``
  or while it streams) is answered 413 before the endpoint sees it; ``large_body_paths``
  (the DICOM upload) have ``max_large_body_bytes`` instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer")]
_NO_STORE_PREFIXES = ("/api/", "/web/api/")


def _too_large_error(limit: int):
    from fastapi import HTTPException

    return HTTPException(413, f"request body larger than {limit} bytes")


class HardeningMiddleware:
    """Security headers on every response; 413 for request bodies over the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = 1 << 20, max_large_body_bytes: int = 2 << 30,
                 large_body_paths: tuple[str, ...] = ("/api/instances",)) -> None:
        self.app = app
        self.max_body_bytes, self.max_large_body_bytes = int(max_body_bytes), int(max_large_body_bytes)
        self.large_body_paths = large_body_paths

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.max_large_body_bytes if path in self.large_body_paths else self.max_body_bytes
        no_store = path.startswith(_NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _ALWAYS if k not in present]
                if no_store and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await self._too_large(send_with_headers, limit)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # an HTTPException: FastAPI's body parsing passes it on as the answer (413)
                    raise _too_large_error(limit)
            return message

        await self.app(scope, limited_receive, send_with_headers)

    @staticmethod
    async def _too_large(send, limit: int) -> None:
        body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class AdmissionGate:
    """At most ``max_in_flight`` requests inside the application at once; the others wait in the
    event loop, holding no thread, no database connection and no lock (``/api/health`` passes
    by). This bounds what a burst of clients can occupy: connections stay below the pool
    (neurorad.store.db), and a request that finishes its endpoint is not stuck behind hundreds
    of queued ones while it still holds a connection."""

    def __init__(self, app: ASGIApp, max_in_flight: int = 32, bypass: tuple[str, ...] = ("/api/health",)) -> None:
        self.app, self.max_in_flight, self.bypass = app, int(max_in_flight), bypass
        self._gates: dict[int, Any] = {}

    def _gate(self):
        import asyncio

        loop = asyncio.get_running_loop()
        gate = self._gates.get(id(loop))
        if gate is None:
            gate = self._gates[id(loop)] = asyncio.Semaphore(self.max_in_flight)
        return gate

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.bypass:
            await self.app(scope, receive, send)
            return
        async with self._gate():
            await self.app(scope, receive, send)
