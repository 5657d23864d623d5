"""SnapOtter-style routes: async tools, job status, SSE progress, cancel, downloads."""

from __future__ import annotations

from typing import Any

from fastapi import File, Form, Header, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from restora.pipeline.options import EnhanceOptions, PhotoOptions
from restora.errors import InvalidParameter, RestoraError
from restora.service import params as P
from restora.service.middleware import client_id
from restora.service.jobs import is_valid_download_name
from restora.service.references import check_references, url_list
from restora.service.routing import Router
from restora.service.sse import job_events, parse_last_event_id
from restora.service.views import (JobNotFound, check_image, check_job_image,
                                   content_disposition, file_response, get_job, manager, owner,
                                   settings, snapshot)

settings_of = settings  # the route parameter named ``settings`` shadows it inside routes

router = Router(tags=["SnapOtter"])

_MEDIA = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


async def _submit(request: Request, tool: str, model: type[P.BaseModel],
                  options: type[P.BaseModel], file: UploadFile,
                  settings_raw: str | None, extra: dict[str, bytes] | None = None,
                  overrides: dict[str, Any] | None = None,
                  reference: list[UploadFile] | None = None) -> JSONResponse:
    s = settings(request)
    form = await request.form()  # already parsed for the parameters: no second read
    for name in ("file", "settings", "mask"):
        if len(form.getlist(name)) > 1:  # FastAPI would keep one and drop the others unsaid
            raise InvalidParameter(name, f"Send one '{name}' per job, not "
                                   f"{len(form.getlist(name))}; send each photo as its own job.")
    values = P.validate(model, {**P.parse_settings_json(settings_raw), **(overrides or {})})
    data = await file.read()
    job_options = P.as_options(options, values)
    check_job_image(data, s, tool, file.filename or "image",
                    values.model_dump(mode="json", by_alias=True),
                    job_options.model_dump(mode="json"))
    refs = await check_references(
        s, request.app.state.runtime, [await f.read() for f in reference or []],
        url_list(getattr(values, "reference_url", None), "referenceUrl"))
    extra = {**(extra or {}), **refs.extra_inputs()}
    m = manager(request)
    record = await run_in_threadpool(
        m.submit, tool, api="snapotter",
        params={**values.model_dump(mode="json", by_alias=True), **refs.params()},
        options=job_options, input_bytes=data,
        input_name=file.filename or "image", owner=owner(request),
        client=client_id(request.scope), extra_inputs=extra)
    return JSONResponse({"jobId": record.id, "async": True}, status_code=202)


@router.post("/api/v1/tools/enhance-faces", status_code=202,
             summary="Restore faces (GFPGAN / CodeFormer) as an async job")
async def enhance_faces(request: Request, file: UploadFile = File(...),
                        settings: str | None = Form(None),
                        clientJobId: str | None = Form(None),
                        reference: list[UploadFile] | None = File(None)) -> JSONResponse:
    """Multipart ``file`` plus ``settings`` JSON (see docs/service.md) and optional
    ``reference`` photos (repeatable; or ``referenceUrl`` in settings); 202 ``{jobId, async}``."""
    return await _submit(request, "enhance-faces", P.EnhanceSettings, EnhanceOptions, file,
                         settings, reference=reference)


@router.post("/api/v1/tools/restore-photo", status_code=202,
             summary="Repair an old photo as an async job")
async def restore_photo(request: Request, file: UploadFile = File(...),
                        settings: str | None = Form(None),
                        clientJobId: str | None = Form(None),
                        mask: UploadFile | None = File(None),
                        maskMode: str | None = Form(None)) -> JSONResponse:
    """Optional ``mask`` image (white = repair, the photo's size or aspect ratio) and
    ``maskMode`` (``replace`` | ``add``; also accepted inside ``settings``)."""
    extra: dict[str, bytes] = {}
    if mask is not None:
        mask_bytes = await mask.read()
        try:
            check_image(mask_bytes, settings_of(request))
        except RestoraError as exc:
            raise InvalidParameter("mask", f"mask: {exc.message}", reason=exc.code) from None
        extra["mask"] = mask_bytes
    overrides = {"maskMode": maskMode} if maskMode is not None else None
    return await _submit(request, "restore-photo", P.RestoreSettings, PhotoOptions, file,
                         settings, extra, overrides)


@router.get("/api/v1/jobs/{job_id}", summary="Job status snapshot")
async def job_status(request: Request, job_id: str) -> dict[str, Any]:
    record = await get_job(manager(request), job_id)
    return snapshot(record, settings(request))


@router.get("/api/v1/jobs/{job_id}/progress", summary="Job progress as Server-Sent Events")
async def job_progress(request: Request, job_id: str,
                       last_event_id: str | None = Header(None, alias="Last-Event-ID"),
                       lastEventId: str | None = None) -> StreamingResponse:
    m = manager(request)
    await get_job(m, job_id)
    start = parse_last_event_id(last_event_id if last_event_id is not None else lastEventId)
    stream = job_events(m.store, job_id, last_event_id=start,
                        heartbeat_s=settings(request).sse_heartbeat_s,
                        is_disconnected=request.is_disconnected, notifier=m.notifier)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/api/v1/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    m = manager(request)
    await get_job(m, job_id)
    record = await run_in_threadpool(m.cancel, job_id)
    if record is None:
        raise JobNotFound(f"No job with id '{job_id}'.", jobId=job_id)
    return snapshot(record, settings(request))


# HEAD (the router's twin of every GET route): FileResponse sends the GET's headers alone.
@router.get("/api/v1/download/{job_id}/{filename}", summary="Download a result or preview.webp")
async def download(request: Request, job_id: str, filename: str) -> Response:
    m = manager(request)
    record = await get_job(m, job_id)
    # Only the result (the name in downloadUrl), the preview and restore-photo's damage mask
    # are downloadable; inputs and temporary files never are.
    allowed = {"preview.webp", *(str(record.result.get(k)) for k in ("filename", "maskFilename")
                                 if record.result and record.result.get(k))}
    if not is_valid_download_name(filename) or filename not in allowed:
        raise JobNotFound(f"No file '{filename}' for job '{job_id}'.", jobId=job_id)
    path = m.job_dir(record.id) / "output" / filename
    if not path.is_file():
        raise JobNotFound(f"No file '{filename}' for job '{job_id}'.", jobId=job_id)
    ext = filename.rsplit(".", 1)[-1].lower()
    # our own header, not FileResponse(filename=...): Starlette gives a Unicode name no ASCII
    # fallback
    return await file_response(request, path, _MEDIA.get(ext, "application/octet-stream"),
                               headers={"Content-Disposition":
                                        content_disposition("inline", filename)})
