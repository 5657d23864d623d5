"""Job history routes used by the web page (and any client): list, delete, input preview, zip.

* ``GET /api/v1/jobs`` lists the caller's jobs (scoped by API key), newest first, paginated.
* ``DELETE /api/v1/jobs/{jobId}`` removes a job, its files and its history entry.
* ``GET /api/v1/jobs/{jobId}/input.webp`` is a browser-viewable preview of the uploaded input,
  so a before/after comparison works for TIFF, HEIC, RAW, PSD, EXR... inputs.
* ``GET /api/v1/archive.zip?jobs=a,b`` bundles the results of several jobs in one download.
* ``POST /api/v1/jobs/{jobId}/retry`` sends a failed job's stored input again as a new job.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

from fastapi import Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from restora.errors import InvalidParameter, RestoraError
from restora.service import history
from restora.service.fetch import check_url
from restora.service.middleware import client_id
from restora.service.routing import Router
from restora.service.store import SUCCEEDED
from restora.service.webhooks import validate_webhook_url
from restora.service.jobs import safe_filename
from restora.service.views import (JobNotFound, check_job_image, content_disposition,
                                   file_response, get_job, manager, owner, settings, snapshot)

router = Router(tags=["History"])

#: longest side of the input preview: enough to compare at 100 % on most screens
INPUT_PREVIEW_SIDE = 2048


async def _own_job(request: Request, job_id: str) -> Any:
    """The job, or 404 when it belongs to another API key (as if it did not exist)."""
    m = manager(request)
    record = await get_job(m, job_id)
    who = await run_in_threadpool(history.owner_for, m.store, job_id)
    if who is not None and who != owner(request):
        raise JobNotFound(f"No job with id '{job_id}' (it may have expired).", jobId=job_id)
    return record


@router.get("/api/v1/jobs", summary="The caller's jobs, newest first (paginated)")
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=history.MAX_PAGE),
                    cursor: Optional[str] = None, tool: Optional[str] = None,
                    status: Optional[str] = None) -> dict[str, Any]:
    m = manager(request)
    s = settings(request)
    page = await run_in_threadpool(history.list_jobs, m.store, owner(request), limit=limit,
                                   cursor=cursor, tool=tool, status=status, tools=m.tools)
    return {"jobs": [history.summary(r, snapshot(r, s)) for r in page.records],
            "nextCursor": page.next_cursor, "limit": limit}


@router.delete("/api/v1/jobs/{job_id}", summary="Delete a job and its files", status_code=204)
async def delete_job(request: Request, job_id: str) -> Response:
    await _own_job(request, job_id)
    await run_in_threadpool(manager(request).delete, job_id)
    return Response(status_code=204)


@router.post("/api/v1/jobs/{job_id}/retry", status_code=202,
             summary="Send a failed job's input again, as a new job")
async def retry_job(request: Request, job_id: str) -> JSONResponse:
    """The failed job's stored input and extra uploads, with its tool, options and request
    params, submitted as a new job through the same checks as an upload (input limits, the
    client's byte budget, queue capacity, models); the failed job stays in the history."""
    record = await _own_job(request, job_id)
    m = manager(request)
    s = settings(request)
    data, extra = await run_in_threadpool(m.stored_inputs, record)
    if data is not None:  # against the limits in force now, as an upload would be
        check_job_image(data, s, record.tool, record.input_name, record.params, record.options)
    else:  # an input fetched by URL: vetted again like a new imageUrl (DNS may have changed)
        await run_in_threadpool(check_url, record.params["imageUrl"],
                                allow_loopback=s.allow_loopback_fetch)
    if record.webhook_url:
        await run_in_threadpool(validate_webhook_url, record.webhook_url, s)
    client = client_id(request.scope)
    size = len(data or b"") + sum(len(v) for v in extra.values())
    budget = m.client_bytes
    # what the upload middleware does for a request body: hold the bytes while submitting
    if budget is not None and size and not await budget.reserve_settled(client, size):
        raise RestoraError(f"This client already has {budget.limit:,} bytes of uploads and "
                           "unfinished jobs on the server; retry when they finish.",
                           code="too_many_bytes", http_status=429, retry_after=10)
    try:
        new = await run_in_threadpool(
            m.submit, record.tool, api=record.api, params=record.params,
            options=record.options, input_bytes=data, input_name=record.input_name,
            webhook_url=record.webhook_url, owner=owner(request), client=client,
            extra_inputs=extra or None)
    finally:
        if budget is not None and size:
            budget.release(client, size)
    return JSONResponse({"jobId": new.id, "async": True, "status": new.status,
                         "tool": new.tool, "retryOf": record.id}, status_code=202)


def _input_preview(storage: Any, job_id: str, input_name: str, s: Any) -> Path:
    """The cached preview, made on first request from the stored input (or fetched source)."""
    from restora.io import Limits, decode, make_preview

    cached = storage.path(job_id, "preview", "input.webp")
    if cached is not None:
        return cached
    source = (storage.path(job_id, "input", input_name)
              or storage.path(job_id, "output", "source.bin"))  # fetched by URL (Tengrai)
    if source is None:
        raise JobNotFound("This job's input is no longer stored.", jobId=job_id)
    image = decode(source.read_bytes(), limits=Limits.from_settings(s))
    return storage.save(job_id, "preview", "input.webp", make_preview(image, INPUT_PREVIEW_SIDE))


@router.get("/api/v1/jobs/{job_id}/input.webp", summary="Browser preview of the job's input")
async def input_preview(request: Request, job_id: str) -> Response:
    record = await _own_job(request, job_id)
    m = manager(request)
    path = await run_in_threadpool(_input_preview, m.storage, record.id, record.input_name,
                                   settings(request))
    return await file_response(request, path, "image/webp",
                               headers={"Cache-Control": "private, max-age=86400"})


def _archive(entries: list[tuple[str, Path]]) -> Iterator[bytes]:
    """A zip of the files, built in a spooled temporary file and streamed out in chunks."""
    with tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024) as tmp:
        # Stored, not deflated: the results are already compressed images.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, path in entries:
                zf.write(path, name)
        tmp.seek(0)
        while chunk := tmp.read(1 << 20):
            yield chunk


@router.get("/api/v1/archive.zip", summary="The results of several jobs as one zip")
async def archive(request: Request, jobs: str = Query(..., description="job ids, comma-separated"),
                  name: Optional[str] = Query(None, description="the zip's file name (default "
                                              "restora-results.zip)")) -> StreamingResponse:
    if name is not None and (safe_filename(name) != name or not name.lower().endswith(".zip")):
        raise InvalidParameter("name", "name must be a plain file name ending in .zip (letters, "
                               "digits, '.', '_', '-').")
    ids = [j for j in (part.strip() for part in jobs.split(",")) if j]
    m = manager(request)
    limit = settings(request).archive_max_jobs
    if not ids or len(ids) > limit:
        raise InvalidParameter("jobs", f"jobs must name 1 to {limit} job ids.", limit=limit)
    entries: list[tuple[str, Path]] = []
    used: set[str] = set()
    for job_id in dict.fromkeys(ids):
        record = await _own_job(request, job_id)
        if record.status != SUCCEEDED or not record.result:
            continue  # a failed or unfinished job has nothing to download
        filename = str(record.result.get("filename") or "")
        path = m.storage.path(record.id, "output", filename) if filename else None
        if path is None:
            continue
        unique, n = filename, 1
        # two inputs with the same name: keep both results (case-blind: macOS and Windows
        # would extract "Foto.png" and "foto.png" into one file)
        while unique.casefold() in used:
            stem, dot, ext = filename.rpartition(".")
            unique = f"{stem}-{n}.{ext}" if dot else f"{filename}-{n}"
            n += 1
        used.add(unique.casefold())
        entries.append((unique, path))
    if not entries:
        raise JobNotFound("None of these jobs has a finished result to download.")
    return StreamingResponse(_archive(entries), media_type="application/zip", headers={
        "Content-Disposition": content_disposition("attachment", name or "restora-results.zip")})
