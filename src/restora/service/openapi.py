"""The OpenAPI document as the service really behaves.

FastAPI's generated schema misses what the routes read by hand (the Topaz form, the CodeFormer
multipart/JSON body, the Tengrai JSON body), lists a 422 "validation error" on every route that
the service never sends (its validation errors are 400 ``invalid_parameter``), and knows none of
the real error answers. This module completes it once, at the first request for
``/openapi.json``: real request bodies from the same pydantic models the routes validate with,
and the real status codes with each API style's error body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from restora.service import params as P

_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "SnapOtterError": {"type": "object", "required": ["error", "code"], "properties": {
        "error": {"type": "string"}, "code": {"type": "string"}, "field": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
        "retryAfter": {"type": "integer"}}},
    "TopazError": {"type": "object", "required": ["message", "code", "status"], "properties": {
        "message": {"type": "string"}, "code": {"type": "string"},
        "status": {"type": "integer"}, "field": {"type": "string"}}},
    "CodeFormerError": {"type": "object", "required": ["status", "message", "code"],
                        "properties": {"status": {"type": "string", "enum": ["error"]},
                                       "message": {"type": "string"},
                                       "code": {"type": "string"}}},
    "JobAccepted": {"type": "object", "required": ["jobId", "async"], "properties": {
        "jobId": {"type": "string", "format": "uuid"}, "async": {"type": "boolean"},
        "process_id": {"type": "string"}, "status": {"type": "string"},
        "estimatedCredits": {"type": "integer"}}},
    "ProcessResult": {"type": "object", "required": ["status", "count", "results"],
                      "properties": {"status": {"type": "string", "enum": ["success"]},
                                     "count": {"type": "integer"},
                                     "results": {"type": "array", "items": {
                                         "type": "object", "properties": {
                                             "original_name": {"type": "string"},
                                             "filename": {"type": "string"},
                                             "image_url": {"type": "string", "format": "uri"},
                                             "image_base64": {"type": "string"}}}},
                                     "errors": {"type": "array", "items": {"type": "object"}}}},
    "Artwork": {"type": "object", "required": ["id", "artworkType", "parameters", "duration",
                                               "results", "status", "createdAt"],
                "properties": {"id": {"type": "string", "format": "uuid"},
                               "artworkType": {"type": "string", "enum": ["face_refiner"]},
                               "parameters": {"type": "object"},
                               "duration": {"type": "number"},
                               "results": {"type": "array", "items": {"type": "string"}},
                               "status": {"type": "string", "enum": [
                                   "starting", "processing", "succeeded", "failed",
                                   "canceled"]},
                               "createdAt": {"type": "string", "format": "date-time"},
                               "error": {"type": "string"}}},
    "TengraiError": {"type": "object", "required": ["message", "statusCode", "error"],
                     "properties": {"message": {"type": "string"},
                                    "statusCode": {"type": "integer"},
                                    "error": {"type": "string"}, "code": {"type": "string"},
                                    "field": {"type": "string"}}},
}

_REASONS = {400: "Invalid parameter, empty file or blocked URL", 401: "Missing or wrong API key",
            404: "No such job or file", 408: "The request body stalled",
            409: "The job was cancelled meanwhile, or cannot be retried",
            416: "The Range starts past the end of the file (range_not_satisfiable)",
            500: "A fault of the server (internal_error; the details are in its log)",
            413: "Body, file, image or requested output too large",
            415: "Not an image in a supported format", 422: "The image could not be decoded",
            429: "Queue full or client byte budget used (see Retry-After)",
            503: "A needed model is not installed, or the service is shutting down",
            504: "Processing took longer than sync_timeout_s"}

_SUBMIT = (400, 401, 408, 413, 415, 429, 500, 503)
_READ = (401, 404, 500)
_FILE = (400, 401, 404, 416, 500)  # 400: a malformed Range
#: answers of the file routes that carry no JSON body
_FILE_OK = {"206": "Partial content: the byte range asked for with Range",
            "304": "Not modified: If-None-Match or If-Modified-Since matched"}
#: (path, method) -> (error schema, error statuses)
_ROUTES: dict[tuple[str, str], tuple[str, tuple[int, ...]]] = {
    ("/api/v1/tools/enhance-faces", "post"): ("SnapOtterError", _SUBMIT),
    ("/api/v1/tools/restore-photo", "post"): ("SnapOtterError", _SUBMIT),
    ("/api/v1/tools/face-recovery", "post"): ("TopazError", _SUBMIT),
    ("/api/process", "post"): ("CodeFormerError", _SUBMIT + (409, 422, 504)),
    ("/v2/artworks/face-refiner", "post"): ("TengraiError", (400, 401, 408, 413, 429, 500,
                                                             503)),
    ("/v2/artworks/{artwork_id}", "get"): ("TengraiError", _READ),
    ("/v2/artworks/{artwork_id}/cancel", "post"): ("TengraiError", _READ),
    ("/api/v1/jobs/{job_id}", "get"): ("SnapOtterError", _READ),
    ("/api/v1/jobs/{job_id}", "delete"): ("SnapOtterError", _READ),
    ("/api/v1/jobs/{job_id}/retry", "post"): ("SnapOtterError", _READ + (409,)),
    ("/api/v1/jobs/{job_id}/progress", "get"): ("SnapOtterError", _READ),
    ("/api/v1/jobs/{job_id}/cancel", "post"): ("SnapOtterError", _READ),
    ("/api/v1/jobs/{job_id}/input.webp", "get"): ("SnapOtterError", _FILE),
    ("/api/v1/download/{job_id}/{filename}", "get"): ("SnapOtterError", _FILE),
    ("/api/v1/jobs", "get"): ("SnapOtterError", (400, 401, 500)),
    ("/api/v1/archive.zip", "get"): ("SnapOtterError", (400, 401, 404, 500)),
}


def _model_schema(model: type[Any], components: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema registered under components, returned as a ``$ref``."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _form_fields(model: type[Any]) -> dict[str, Any]:
    """Form fields are strings on the wire; the schema shows each one's real type and range."""
    return dict(model.model_json_schema().get("properties", {}))


def _request_bodies(components: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    topaz_props = {"image": {"type": "string", "format": "binary"},
                   **_form_fields(P.FaceRecoverySettings)}
    cf_props = {"image": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or many image files"},
                **_form_fields(P.CodeFormerSettings)}
    cf_json = {"type": "object", "properties": {
        "image_base64": {"type": "string", "description": "base64 or a data: URL"},
        "images_base64": {"type": "array", "items": {"type": "string"}},
        **_form_fields(P.CodeFormerSettings)}}
    return {
        ("/api/v1/tools/face-recovery", "post"): {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": topaz_props}}}},
        ("/api/process", "post"): {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": cf_props}},
            "application/json": {"schema": cf_json}}},
        ("/v2/artworks/face-refiner", "post"): {"required": True, "content": {
            "application/json": {"schema": _model_schema(P.RefinerRequest, components)}}},
    }


#: (path, method) -> (success status, schema name)
_SUCCESS = {
    ("/api/v1/tools/enhance-faces", "post"): ("202", "JobAccepted"),
    ("/api/v1/tools/restore-photo", "post"): ("202", "JobAccepted"),
    ("/api/v1/tools/face-recovery", "post"): ("202", "JobAccepted"),
    ("/api/process", "post"): ("200", "ProcessResult"),
    ("/v2/artworks/face-refiner", "post"): ("202", "Artwork"),
    ("/v2/artworks/{artwork_id}", "get"): ("200", "Artwork"),
    ("/v2/artworks/{artwork_id}/cancel", "post"): ("200", "Artwork"),
}


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_ERROR_SCHEMAS)
    bodies = _request_bodies(components)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # the service answers validation errors with 400
            if (path, method) in bodies:
                op["requestBody"] = bodies[(path, method)]
            if (path, method) in _SUCCESS:
                status, name = _SUCCESS[(path, method)]
                for other in ("200", "202"):
                    if other != status:
                        responses.pop(other, None)
                responses[status] = {"description": "Success", "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
            style, codes = _ROUTES.get((path, method), ("SnapOtterError", ()))
            if codes is _FILE:
                for status, text in _FILE_OK.items():
                    responses[status] = {"description": text}
            for status in codes:
                responses[str(status)] = {
                    "description": _REASONS[status],
                    "content": {"application/json": {
                        "schema": {"$ref": f"#/components/schemas/{style}"}}}}
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    """Serve :func:`build`'s document at ``/openapi.json`` (built once)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
