"""Error bodies in each API style's own shape, chosen from the request path.

* SnapOtter (``/api/v1/...``): ``{"error", "code", "field"?, "details"?}``
* Topaz (``/api/v1/tools/face-recovery``): ``{"message", "code", "status", "field"?}``
* CodeFormer Space (``/api/process``, ``/api/health``): ``{"status": "error", "message"}``
* Tengrai (``/v2/...``): ``{"message", "statusCode", "error"}`` (``error`` = reason phrase)
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from restora.errors import RestoraError

SNAPOTTER, TOPAZ, CODEFORMER, TENGRAI = "snapotter", "topaz", "codeformer", "tengrai"


def style_for_path(path: str) -> str:
    if path.startswith("/v2/"):
        return TENGRAI
    if path.startswith("/api/v1/tools/face-recovery"):
        return TOPAZ
    if path in ("/api/process", "/api/health") or path.startswith("/api/process/"):
        return CODEFORMER
    return SNAPOTTER


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(style: str, status: int, code: str, message: str,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    if style == CODEFORMER:
        return {"status": "error", "message": message, "code": code}
    if style == TENGRAI:
        return {"message": message, "statusCode": status, "error": _reason(status), "code": code,
                **({"field": extra["field"]} if "field" in extra else {})}
    if style == TOPAZ:
        return {"message": message, "code": code, "status": status, **extra}
    return {"error": message, "code": code, **extra}


def error_response(request: Request | None, status: int, code: str, message: str, *,
                   extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                   path: str | None = None) -> JSONResponse:
    style = style_for_path(path if path is not None else request.url.path if request else "/")
    return JSONResponse(error_body(style, status, code, message, extra), status_code=status,
                        headers=headers)


def restora_error_response(request: Request, exc: RestoraError) -> JSONResponse:
    headers: dict[str, str] = {}
    retry = exc.details.get("retry_after")
    if retry is not None:
        headers["Retry-After"] = str(int(retry))
    extra = {k: v for k, v in exc.details.items() if k != "retry_after"}
    if retry is not None:
        extra["retryAfter"] = int(retry)
    return error_response(request, exc.http_status, exc.code, exc.message, extra=extra,
                          headers=headers or None)


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form", "path")]
    field = ".".join(loc) or "body"
    message = f"{field}: {first.get('msg', 'invalid value')}"
    details = [{"field": ".".join(str(p) for p in e.get("loc", ())
                                  if p not in ("body", "query", "form", "path")),
                "message": e.get("msg", "")} for e in errors]
    return error_response(request, 400, "invalid_parameter", message,
                          extra={"field": field, "details": details})


_PART_TOO_LARGE = re.compile(r"(?:Part|Field) exceeded maximum size of (\d+)KB")


def _body_message(detail: str) -> str:
    """A human sentence for a body parser's refusal (Starlette's terse multipart errors)."""
    too_large = _PART_TOO_LARGE.search(detail)
    if too_large:
        return (f"A form field is larger than {too_large.group(1)} KB; send images and other "
                "large data as file uploads (with a filename).")
    return f"The request body could not be read: {detail[:1].lower()}{detail[1:]}"


async def _http_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    from restora.service.routing import allowed_methods

    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else _reason(status)
    if status == 400:
        # Only the body parsers raise a bare 400 (Starlette's form/multipart parser, FastAPI's
        # "error parsing the body"): a malformed request, so the documented code for one.
        return error_response(request, 400, "invalid_parameter", _body_message(message),
                              extra={"field": "body"})
    headers = dict(exc.headers) if exc.headers else {}
    if status in (404, 405):
        # The static web-page mount takes every request no route takes, whatever the path:
        # its 404 or 405 becomes a 405 with the methods the path's routes really serve, or a
        # 404 when no route serves the path at all.
        allowed = await allowed_methods(request.scope)
        if request.method not in allowed:
            status = 405 if allowed else 404
            message = _reason(status)
            headers.pop("Allow", None)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
    code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
            413: "payload_too_large"}.get(status, "http_error")
    return error_response(request, status, code, message, headers=headers or None)


def _internal_response(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this answer, so the traceback still reaches the server's log;
    # the client gets the API's error shape and no detail of the fault. uvicorn then drops the
    # connection: "close" keeps a client from sending its next request into it.
    return error_response(request, 500, "internal_error",
                          "The server failed on this request; the error is in its log.",
                          headers={"Connection": "close"})


def install(app: Any) -> None:
    """Register the handlers on a FastAPI app."""
    app.add_exception_handler(Exception, _internal_response)
    app.add_exception_handler(RestoraError, restora_error_response)
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(StarletteHTTPException, _http_response)
