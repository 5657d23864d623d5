"""ASGI middleware: request body cap (413) and optional API keys (401), in each API's error shape.

Plain ASGI (not ``BaseHTTPMiddleware``) so SSE streams and uploads pass through unbuffered.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from restora.service.errors import error_body, style_for_path

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_error(send: Send, path: str, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(style_for_path(path), status, code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Reject bodies over ``max_bytes``: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "/")
        message = f"The request body is larger than the {self.max_bytes:,}-byte limit."
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_error(send, path, 413, "payload_too_large", message,
                                  [(b"connection", b"close")])
                return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_error(send, path, 413, "payload_too_large", message,
                                  [(b"connection", b"close")])


#: paths that never need a key: health, API docs, the web page
PUBLIC_PREFIXES = ("/api/health", "/docs", "/redoc", "/openapi.json")


def _needs_key(path: str) -> bool:
    if any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES):
        return False
    return path.startswith("/api/") or path.startswith("/v2/")


def presented_key(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer``, ``X-API-Key`` or ``?api_key=`` (EventSource)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = qs.get("api_key")
    return values[0] if values else None


class ApiKeyMiddleware:
    """When keys are configured, API routes answer 401 without a valid one."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.keys and scope.get("method") != "OPTIONS"
                and _needs_key(scope.get("path", "/"))):
            key = presented_key(scope)
            ok = key is not None and any(hmac.compare_digest(key.encode(), k) for k in self.keys)
            if not ok:
                await _send_error(send, scope.get("path", "/"), 401, "unauthorized",
                                  "A valid API key is required (Authorization: Bearer <key> or "
                                  "X-API-Key).", [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)
