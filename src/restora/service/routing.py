"""HTTP methods per route: every GET route also answers HEAD.

HTTP asks a server that supports GET on a resource to support HEAD (RFC 9110, 9.3.2), and
FastAPI's routes answer only the methods they declare: without a HEAD route, a HEAD fell through
to the static web-page mount and got a 404. :class:`Router` registers a HEAD twin with each GET
route, here in one place: the same endpoint, parameters and checks (a 404 for GET is a 404 for
HEAD), left out of the OpenAPI schema. uvicorn sends no body for a HEAD; a streamed answer
(SSE, the zip archive) is not even started (:class:`HeadRoute`).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Coroutine

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.responses import StreamingResponse


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


class HeadRoute(APIRoute):
    """The HEAD twin of a GET route. A :class:`StreamingResponse` keeps its status and headers
    but its stream is closed unstarted: a HEAD on an SSE progress stream answers at once
    instead of holding the connection until the job ends."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def head_handler(request: Request) -> Response:
            response = await handler(request)
            if isinstance(response, StreamingResponse):
                close = getattr(response.body_iterator, "aclose", None)
                if close is not None:
                    await close()
                response.body_iterator = _no_body()
            return response

        return head_handler


class Router(APIRouter):
    """``APIRouter`` whose GET routes also answer HEAD (a :class:`HeadRoute` twin, not in the
    OpenAPI schema)."""

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        methods = {m.upper() for m in kwargs.get("methods") or ["GET"]}
        if "GET" in methods and "HEAD" not in methods:
            super().add_api_route(path, endpoint, **{
                **kwargs, "methods": ["HEAD"], "include_in_schema": False,
                "route_class_override": HeadRoute})
