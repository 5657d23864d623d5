"""CodeFormer Space-style routes: synchronous ``/api/process`` and ``/api/health``.

``/api/process`` still goes through the job queue (so limits and the worker pool apply) and
waits for its jobs; the client sees one synchronous answer.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from restora.errors import InputError, InvalidParameter, RestoraError
from restora.service import params as P
from restora.service.middleware import client_id
from restora.service.references import check_references, url_list
from restora.service.routing import Router
from restora.service.store import SUCCEEDED
from restora.service.views import absolute, base_url, check_job_image, manager, owner, settings

router = Router(tags=["CodeFormer Space"])

_BOOL = {"true": True, "1": True, "yes": True, "on": True,
         "false": False, "0": False, "no": False, "off": False}
_OPTIONS = ("fidelity", "upscale", "background_enhance", "face_upsample", "return_base64",
            "only_reference_faces")
#: HTTP status of a job's end that is not a RestoraError of its own (those carry
#: ``httpStatus``): cancelled by a request, past ``job_timeout_s``, lost with its worker
_END_STATUS = {"cancelled": 409, "timeout": 504, "interrupted": 503}


def device_name(runtime: Any) -> str:
    device = str(getattr(runtime, "device", "cpu") or "cpu")
    return "cuda" if device.startswith("cuda") else "cpu"


@router.get("/api/health", summary="Service health and compute device")
async def health(request: Request) -> dict[str, str]:
    return {"status": "online", "device": device_name(request.app.state.runtime)}


def _coerce_form(values: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in values.items():
        text = raw.strip().lower()
        if key in ("background_enhance", "face_upsample", "return_base64", "only_reference_faces"):
            if text not in _BOOL:
                raise InvalidParameter(key, f"{key} must be true or false.")
            out[key] = _BOOL[text]
        elif key == "upscale":
            try:  # int() refuses some of what isdigit() accepts: "²", over 4300 digits
                if not text.isdigit():
                    raise ValueError(text)
                out[key] = int(text)
            except ValueError:
                raise InvalidParameter(key, "upscale must be 1, 2 or 4.") from None
        elif key == "fidelity":
            try:
                out[key] = float(text)
            except ValueError:
                raise InvalidParameter(key, "fidelity must be a number from 0 to 1.") from None
        else:
            out[key] = raw
    return out


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidParameter(field, f"{field} must be a base64 string.")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]  # data URL
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(field, f"{field} is not valid base64.") from None


async def _read_inputs(request: Request
                      ) -> tuple[list[tuple[str, bytes]], dict[str, Any], list[bytes]]:
    """(images, options, reference photo bytes) from a multipart form or a JSON body."""
    ctype = request.headers.get("content-type", "")
    images: list[tuple[str, bytes]] = []
    references: list[bytes] = []
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        options: dict[str, str] = {}
        urls: list[str] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key == "reference":
                    references.append(await value.read())
                    continue
                if key not in ("image", "images"):
                    raise InvalidParameter(key, f"Unknown file field '{key}'; use 'image'.")
                images.append((value.filename or f"image{len(images)}", await value.read()))
            elif key == "reference_url":
                urls.append(value)
            elif key in _OPTIONS:
                options[key] = value
            else:
                raise InvalidParameter(key, f"Unknown field '{key}'.")
        coerced = _coerce_form(options)
        if urls:
            coerced["reference_url"] = urls
        return images, coerced, references
    body = P.loads_json(await request.body(), "body",
                        "Send multipart 'image' files or a JSON body.")
    if not isinstance(body, dict):
        raise InvalidParameter("body", "The JSON body must be an object.")
    if "image_base64" in body:
        images.append(("image", _b64(body.pop("image_base64"), "image_base64")))
    if "images_base64" in body:
        items = body.pop("images_base64")
        if not isinstance(items, list):
            raise InvalidParameter("images_base64", "images_base64 must be a list.")
        for i, item in enumerate(items):
            images.append((f"image{i}", _b64(item, f"images_base64[{i}]")))
    if "reference_base64" in body:
        items = body.pop("reference_base64")
        for i, item in enumerate([items] if isinstance(items, str) else items
                                 if isinstance(items, list) else [None]):
            references.append(_b64(item, f"reference_base64[{i}]"))
    body.pop("filename", None)
    return images, body, references


@router.post("/api/process", summary="Restore faces with CodeFormer (synchronous)")
async def process(request: Request) -> JSONResponse:
    """Each image is its own job; a bad image fails only its item (listed in ``errors``), the
    request fails only when every image does. ``image_url`` is absolute (``public_url`` or the
    request's base URL) so a page on another origin can use it."""
    s = settings(request)
    images, raw_options, reference = await _read_inputs(request)
    if not images:
        raise InvalidParameter("image", "No image was sent ('image' file or image_base64).")
    options = P.validate(P.CodeFormerSettings, raw_options)
    enhance_options = options.options()
    refs = await check_references(s, request.app.state.runtime, reference,
                                  url_list(options.reference_url, "reference_url"),
                                  url_field="reference_url")
    m = manager(request)
    job_params = {**options.model_dump(mode="json"), **refs.params()}
    checked_options = enhance_options.model_dump(mode="json")
    # per item: a submitted job, or the error that stopped it before submission
    items: list[tuple[str, Any, RestoraError | None]] = []
    try:
        for name, data in images:
            try:
                check_job_image(data, s, "codeformer", name, job_params, checked_options)
            except InputError as exc:
                if len(images) == 1:
                    raise
                items.append((name, None, exc))
                continue
            items.append((name, await run_in_threadpool(
                m.submit, "codeformer", api="codeformer", params=job_params,
                options=enhance_options, input_bytes=data, input_name=name,
                owner=owner(request), client=client_id(request.scope),
                extra_inputs=refs.extra_inputs()), None))
    except RestoraError:
        for _, r, _e in items:  # a request-level error (queue full...): withdraw what was sent
            if r is not None:
                await run_in_threadpool(m.cancel, r.id)
        raise
    records = [r for _, r, _e in items if r is not None]
    deadline = time.monotonic() + s.sync_timeout_s
    done: dict[str, Any] = {}
    for r in records:
        # Wait on the job's notifications (any node's worker may run it), reading the store only
        # when woken; subscribing before the first read loses no wake-up.
        sub = m.notifier.subscribe(r.id)
        try:
            check = True
            while True:
                if check:
                    rec = await run_in_threadpool(m.store.get, r.id)
                    if rec is not None and rec.is_final:
                        done[r.id] = rec
                        break
                if time.monotonic() > deadline or await request.is_disconnected():
                    for x in records:
                        await run_in_threadpool(m.cancel, x.id)
                    raise RestoraError("Processing took too long.", code="timeout",
                                       http_status=504)
                check = await sub.wait(min(1.0, max(0.05, deadline - time.monotonic())))
        finally:
            m.notifier.unsubscribe(r.id, sub)
    base = base_url(request)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    first_error: tuple[int, str, str] | None = None
    for name, r, exc in items:
        if exc is not None:
            err = (exc.http_status, exc.code, exc.message)
        elif done[r.id].status != SUCCEEDED:
            e = done[r.id].error or {}
            err = (int(e.get("httpStatus") or _END_STATUS.get(e.get("code"), 500)),
                   e.get("code", "failed"), e.get("message", "failed"))
        else:
            res = done[r.id].result or {}
            item: dict[str, Any] = {"original_name": name, "filename": res.get("filename"),
                                    "image_url": absolute(res.get("downloadUrl"), base)}
            if options.return_base64:
                path = m.job_dir(r.id) / "output" / str(res.get("filename"))
                item["image_base64"] = base64.b64encode(
                    await run_in_threadpool(path.read_bytes)).decode()
            results.append(item)
            continue
        first_error = first_error or err
        errors.append({"original_name": name, "status": err[0], "code": err[1],
                       "message": err[2]})
    if not results and first_error is not None:
        return JSONResponse({"status": "error", "message": first_error[2],
                             "code": first_error[1]}, status_code=first_error[0])
    body: dict[str, Any] = {"status": "success", "count": len(results), "results": results}
    if errors:
        body["errors"] = errors
    return JSONResponse(body)
