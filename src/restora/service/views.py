"""Shared route helpers: the app's objects, input checks, and JSON views of a job per API."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from restora.errors import EmptyFile, FileTooLarge, RestoraError, UnsupportedFormat
from restora.service.jobs import JobManager
from restora.service.settings import ServiceSettings
from restora.service.store import CANCELED, FAILED, PROCESSING, QUEUED, SUCCEEDED, JobRecord


def manager(request: Request) -> JobManager:
    return request.app.state.manager


def settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def owner(request: Request) -> str:
    """Whose job this request submits or lists: a hash of its API key (``""`` without keys)."""
    from restora.service.history import owner_of_key
    from restora.service.middleware import presented_key

    if not settings(request).api_keys:
        return ""
    return owner_of_key(presented_key(request.scope))


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class JobNotFound(RestoraError):
    code = "job_not_found"
    http_status = 404


def check_image(data: bytes, s: ServiceSettings) -> str:
    """Reject empty, oversized or non-image uploads before a job is created; returns format."""
    from restora.io import sniff_format

    if not data:
        raise EmptyFile("The uploaded file is empty.")
    if len(data) > s.max_bytes:
        raise FileTooLarge(f"The file is {len(data):,} bytes, larger than the "
                           f"{s.max_bytes:,}-byte limit.", size=len(data), limit=s.max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat("The file is not an image in a supported format.")
    return fmt


async def get_job(m: JobManager, job_id: str, api: str | None = None) -> JobRecord:
    record = await run_in_threadpool(m.store.get, job_id)
    if record is None or (api is not None and record.api != api):
        raise JobNotFound(f"No job with id '{job_id}' (it may have expired).", jobId=job_id)
    return record


_PHASE = {QUEUED: "queued", PROCESSING: "processing", SUCCEEDED: "complete", FAILED: "failed",
          CANCELED: "failed"}


def snapshot(record: JobRecord, s: ServiceSettings) -> dict[str, Any]:
    """SnapOtter-style job status, always available while the job is retained."""
    body: dict[str, Any] = {
        "jobId": record.id, "tool": record.tool, "status": record.status,
        "progress": {"phase": _PHASE[record.status], "stage": record.stage,
                     "percent": round(record.percent, 2)},
        "createdAt": iso(record.created_at), "startedAt": iso(record.started_at),
        "finishedAt": iso(record.finished_at),
        "expiresAt": iso(record.finished_at + s.result_ttl_s) if record.finished_at else None,
    }
    if record.result is not None:
        body["result"] = record.result
    if record.error is not None:
        body["error"] = record.error
    return body


_ARTWORK_STATUS = {QUEUED: "starting", PROCESSING: "processing", SUCCEEDED: "succeeded",
                   FAILED: "failed", CANCELED: "canceled"}


def artwork(record: JobRecord) -> dict[str, Any]:
    """Tengrai artwork object for a face-refiner job."""
    p = record.params
    duration = (round(record.finished_at - record.started_at, 3)
                if record.finished_at and record.started_at else None)
    results: list[dict[str, Any]] = []
    if record.status == SUCCEEDED and record.result:
        r = record.result
        results.append({"url": r.get("downloadUrl"), "previewUrl": r.get("previewUrl"),
                        "format": r.get("format"), "width": r.get("width"),
                        "height": r.get("height"), "seed": r.get("seedUsed")})
    body: dict[str, Any] = {
        "id": record.id, "artworkType": "face_refiner",
        "parameters": {k: p.get(k) for k in ("imageUrl", "model", "denoising", "seed",
                                             "outputFormat", "webhook")},
        "duration": duration, "results": results, "status": _ARTWORK_STATUS[record.status],
        "createdAt": iso(record.created_at),
    }
    if record.error is not None:
        body["error"] = record.error.get("message")
    return body
