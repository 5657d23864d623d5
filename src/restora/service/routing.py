"""HTTP methods per route: every GET route also answers HEAD, and what a path allows.

HTTP asks a server that supports GET on a resource to support HEAD (RFC 9110, 9.3.2), and
FastAPI's routes answer only the methods they declare: without a HEAD route, a HEAD fell through
to the static web-page mount and got a 404. :class:`Router` registers a HEAD twin with each GET
route, here in one place: the same endpoint, parameters and checks (a 404 for GET is a 404 for
HEAD), left out of the OpenAPI schema. uvicorn sends no body for a HEAD; a streamed answer
(SSE, the zip archive) is not even started (:class:`HeadRoute`).

:func:`allowed_methods` says which methods the routes really serve on a path, for ``Allow`` on
OPTIONS and on 405 answers.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Coroutine

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles

#: the methods a route may serve, in the order ``Allow`` lists them (OPTIONS last, always)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


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


async def _serves(route: Any, scope: dict[str, Any]) -> bool:
    """Whether a route that fully matched ``scope`` serves it: any route does, except the static
    web-page mount, which matches every path but serves GET and HEAD of its files only."""
    static = getattr(route, "app", None)
    if not isinstance(route, Mount) or not isinstance(static, StaticFiles):
        return True
    if scope["method"] not in ("GET", "HEAD"):
        return False
    try:
        response = await static.get_response(static.get_path(scope), scope)
    except (HTTPException, OSError):
        return False
    return response.status_code != 404  # html mode's 404.html page


async def allowed_methods(scope: dict[str, Any]) -> list[str]:
    """The methods the app serves on the request's path, the way its router would dispatch each
    one (the first route that fully matches takes it), with OPTIONS (answered for every served
    path by :class:`restora.service.middleware.OptionsMiddleware`); ``[]`` when no route serves
    the path at all."""
    router = getattr(scope.get("app"), "router", None)
    if router is None:
        return []
    base = {"type": "http", "path": scope["path"], "app": scope["app"],
            "root_path": scope.get("app_root_path", scope.get("root_path", "")),
            "headers": scope.get("headers", []), "query_string": b""}
    allowed = []
    for method in METHODS:
        probe = {**base, "method": method}
        for route in router.routes:
            match, child = route.matches(probe)
            if match is Match.FULL:
                if await _serves(route, {**probe, **child}):
                    allowed.append(method)
                break
    return [*allowed, "OPTIONS"] if allowed else []
