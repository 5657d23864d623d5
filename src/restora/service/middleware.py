"""ASGI middleware: request body cap (413) and optional API keys (401), in each API's error shape.

Plain ASGI (not ``BaseHTTPMiddleware``) so SSE streams and uploads pass through unbuffered.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, parse_qsl, urlencode

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


class _Refused(Exception):
    """The body was refused (too large, too slow, over the client's byte budget) and the error
    answer is already sent; whatever the app does next is dropped."""


class ClientBytes:
    """Bytes held per client (API key, else IP address): request bodies being received plus the
    stored inputs of its unfinished jobs. One lock-protected dict; the event loop and the
    workers both update it."""

    def __init__(self, limit: int) -> None:
        import threading

        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        #: frees what a client holds for jobs that have ended unseen by this process
        #: (``JobManager.settle_held``; blocking: called off the event loop)
        self.settle: Callable[[str], object] | None = None

    async def reserve_settled(self, client: str, n: int) -> bool:
        """:meth:`reserve`; where that would refuse, first settle the client's ended jobs."""
        if self.reserve(client, n):
            return True
        if self.settle is None:
            return False
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.settle, client)
        return self.reserve(client, n)

    def reserve(self, client: str, n: int) -> bool:
        with self._lock:
            held = self._held.get(client, 0)
            if held + n > self.limit:
                return False
            self._held[client] = held + n
            return True

    def add(self, client: str, n: int) -> None:
        """Count ``n`` bytes whatever the limit (a job accepted while its body was counted)."""
        with self._lock:
            self._held[client] = self._held.get(client, 0) + n

    def release(self, client: str, n: int) -> None:
        with self._lock:
            left = self._held.get(client, 0) - n
            if left > 0:
                self._held[client] = left
            else:
                self._held.pop(client, None)

    def held(self, client: str) -> int:
        with self._lock:
            return self._held.get(client, 0)


def client_id(scope: Scope) -> str:
    """Who a request's bytes are charged to: its API key (hashed), else its IP address."""
    import hashlib

    key = presented_key(scope)
    if key:
        return "key:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"


class BodyLimitMiddleware:
    """Request bodies: at most ``max_bytes`` (413, by Content-Length up front, else while
    streaming, chunked included), at most ``body_timeout_s`` between two pieces (408, against
    slow-body attacks), and at most the client's byte budget in flight (429).

    The error answer is sent here, at the moment of the fault, so it is the same whichever
    route (and body parser, which would turn any exception into a 400) is reading the body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float | None = None,
                 client_bytes: ClientBytes | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.client_bytes = client_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import asyncio

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
        started = refused = False
        client = client_id(scope) if self.client_bytes is not None else ""
        charged = 0

        async def refuse(status: int, code: str, text: str,
                         headers: list[tuple[bytes, bytes]] | None = None) -> None:
            nonlocal refused
            if not started and not refused:
                refused = True
                await _send_error(send, path, status, code, text,
                                  [(b"connection", b"close"), *(headers or [])])
            refused = True
            raise _Refused()

        body_done = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen, charged, body_done
            if refused:
                return {"type": "http.disconnect"}
            try:
                # Only the body has a deadline: after it, receive() waits for the client to
                # disconnect (a streaming response such as SSE listens for that for minutes).
                if self.body_timeout_s and not body_done:
                    msg = await asyncio.wait_for(receive(), self.body_timeout_s)
                else:
                    msg = await receive()
            except asyncio.TimeoutError:
                await refuse(408, "request_timeout", f"The request body stalled for more than "
                             f"{self.body_timeout_s:g} s.")
            if msg["type"] == "http.request":
                body_done = not msg.get("more_body", False)
                n = len(msg.get("body", b""))
                seen += n
                if seen > self.max_bytes:
                    await refuse(413, "payload_too_large", message)
                if self.client_bytes is not None and n:
                    if not await self.client_bytes.reserve_settled(client, n):
                        await refuse(429, "too_many_bytes", "This client already has "
                                     f"{self.client_bytes.limit:,} bytes of uploads and "
                                     "unfinished jobs on the server; retry when they finish.",
                                     [(b"retry-after", b"10")])
                    charged += n
            return msg

        async def guarded_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return  # the error answer went out already
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _Refused:
            pass
        except Exception:
            if not refused:
                raise
        finally:
            if charged and self.client_bytes is not None:
                self.client_bytes.release(client, charged)


#: paths that never need a key: health, API docs, the web page
PUBLIC_PREFIXES = ("/api/health", "/docs", "/redoc", "/openapi.json")


def _needs_key(path: str) -> bool:
    if any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES):
        return False
    return path.startswith("/api/") or path.startswith("/v2/")


def presented_key(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer``, ``X-API-Key`` or ``?api_key=`` (EventSource)."""
    if _KEY_SLOT in scope:
        return scope[_KEY_SLOT]
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


_KEY_SLOT = "restora.api_key"


def strip_api_key(scope: Scope) -> None:
    """Remember the presented key in the scope, then drop ``api_key`` from the query string:
    the server's access log prints the scope's query string, and a key must never be logged."""
    if scope.get("type") != "http":
        return
    key = presented_key(scope)
    qs = scope.get("query_string", b"")
    if b"api_key" in qs.lower() or b"api%5fkey" in qs.lower():
        kept = [(k, v) for k, v in parse_qsl(qs.decode("latin-1"), keep_blank_values=True)
                if k.lower() != "api_key"]
        scope["query_string"] = urlencode(kept).encode("latin-1")
    scope[_KEY_SLOT] = key


class ApiKeyMiddleware:
    """When keys are configured, API routes answer 401 without a valid one. ``?api_key=`` is
    removed from the query string in every case (it must not reach the access log)."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        strip_api_key(scope)
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


class OptionsMiddleware:
    """Answer every ``OPTIONS`` request itself, so one that is not a CORS preflight (those the
    CORS layer outside answers) never reaches the static-file mount: 204 with ``Allow`` listing
    the methods the routes serve on that path, or 404 when none serves it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "OPTIONS":
            from restora.service.routing import allowed_methods

            allowed = await allowed_methods(scope)
            if not allowed:
                await _send_error(send, scope.get("path", "/"), 404, "not_found", "Not Found")
                return
            await send({"type": "http.response.start", "status": 204,
                        "headers": [(b"allow", ", ".join(allowed).encode()),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
