"""Shared route helpers: the app's objects, input checks, and JSON views of a job per API."""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from restora.errors import EmptyFile, FileTooLarge, RestoraError, UnsupportedFormat
from restora.service.jobs import JobManager
from restora.service.settings import ServiceSettings
from restora.service.store import CANCELED, FAILED, PROCESSING, QUEUED, SUCCEEDED, JobRecord


def base_url(request: Request) -> str:
    """Where absolute links point: the configured ``public_url``, else the request's base."""
    configured = request.app.state.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


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


def check_image(data: bytes, s: ServiceSettings, *, scale: int = 1,
                output_size: tuple[int | None, int | None] | None = None,
                tool: str | None = None, input_name: str | None = None,
                output_format: str | None = None) -> str:
    """Reject empty, oversized or non-image uploads before a job is created; returns format.

    The header is read (no pixel decoded) so inputs over the pixel or frame limits, and results
    over the output-pixel limit (``scale`` x the input, or ``output_size`` with one side
    optional), are refused at once with 413 instead of failing minutes later in a job. With
    ``tool`` (the job's), the result must also fit the format it will be written in
    (``output_format`` or the tool's rule: a WebP side is at most 16383 px), by the same check
    the job runs when it starts (:func:`restora.service.tools.check_result`).
    """
    from restora.io import Limits, probe_size, sniff_format
    from restora.service.finishing import target_size
    from restora.service.tools import check_output_pixels, check_result

    if not data:
        raise EmptyFile("The uploaded file is empty.")
    if len(data) > s.max_bytes:
        raise FileTooLarge(f"The file is {len(data):,} bytes, larger than the "
                           f"{s.max_bytes:,}-byte limit.", size=len(data), limit=s.max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat("The file is not an image in a supported format.")
    size = probe_size(data, limits=Limits.from_settings(s))
    result: tuple[int, int] | None = None
    if output_size is not None and any(output_size):
        ow, oh = output_size
        if ow and oh:
            result = ow, oh
        elif size is not None:
            result = target_size(size[0], size[1], ow, oh)
    elif size is not None:
        result = size[0] * scale, size[1] * scale
    if result is not None:
        if tool is None:
            check_output_pixels(s, *result)
        else:
            check_result(s, tool, input_name, fmt, *result, output_format)
    return fmt


def check_job_image(data: bytes, s: ServiceSettings, tool: str, input_name: str | None,
                    params: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """:func:`check_image` for a job as its record stores it (request ``params``, pipeline
    ``options`` as JSON): the upscale, output size and format the job reads when it starts, so
    an upload and a retry of the same job are checked alike."""
    from restora.service.tools import requested_format

    return check_image(data, s, scale=int(options.get("upscale") or 1),
                       output_size=(params.get("output_width"), params.get("output_height")),
                       tool=tool, input_name=input_name,
                       output_format=requested_format(tool, params))


async def get_job(m: JobManager, job_id: str, api: str | None = None) -> JobRecord:
    record = await run_in_threadpool(m.store.get, job_id)
    if record is None or (api is not None and record.api != api):
        raise JobNotFound(f"No job with id '{job_id}' (it may have expired).", jobId=job_id)
    return record


_ETAG = re.compile(r'(?:W/)?"([^"]*)"')
#: what a 304 repeats from the 200 it stands for (RFC 9110, 15.4.5)
_NOT_MODIFIED_HEADERS = ("cache-control", "content-location", "etag", "expires", "vary")


def not_modified(headers: Headers, etag: str, mtime: float) -> bool:
    """Whether a GET/HEAD's validators match the file (RFC 9110, 13.2.2): ``If-None-Match``
    (weak comparison, ``*`` matches any file) when sent, else ``If-Modified-Since``."""
    if_none_match = ", ".join(headers.getlist("if-none-match"))
    if if_none_match:
        if if_none_match.strip() == "*":
            return True
        return etag.removeprefix("W/").strip('"') in _ETAG.findall(if_none_match)
    since = headers.getlist("if-modified-since")
    if len(since) != 1:
        return False  # absent, or more than one member: ignored
    try:
        date = parsedate_to_datetime(since[0])
    except (TypeError, ValueError, IndexError):
        return False  # not an HTTP-date: ignored
    if date.tzinfo is None:
        date = date.replace(tzinfo=timezone.utc)
    return int(mtime) <= date.timestamp()  # Last-Modified has whole seconds


_NOT_ASCII = re.compile(r"[^A-Za-z0-9._-]+")


def _ascii_part(text: str) -> str:
    return re.sub(r"_+", "_", _NOT_ASCII.sub("_", text)).strip("._-")


def ascii_fallback(filename: str, default: str = "download") -> str:
    """``filename`` in ASCII for clients that ignore ``filename*``: accents dropped (NFKD),
    other non-ASCII characters made ``_``; a stem with nothing left becomes ``default``."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", filename)
                    if not unicodedata.combining(ch))
    stem, dot, ext = plain.rpartition(".")
    if not dot:
        stem, ext = plain, ""
    stem, ext = _ascii_part(stem) or default, _ascii_part(ext)
    return f"{stem}.{ext}" if ext else stem


def content_disposition(disposition: str, filename: str) -> str:
    """A ``Content-Disposition`` value (RFC 6266) naming ``filename``: a plain quoted
    ``filename`` for an ASCII name, else the UTF-8 name in ``filename*`` (RFC 8187) after an
    ASCII ``filename`` fallback. (Starlette sends only ``filename*`` for such a name.) Names
    here come from :func:`restora.service.jobs.safe_filename`, so no quote or backslash needs
    escaping."""
    if filename.isascii():
        return f'{disposition}; filename="{filename}"'
    return (f'{disposition}; filename="{ascii_fallback(filename)}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}")


async def file_response(request: Request, path: Path, media_type: str,
                        **kwargs: Any) -> Response:
    """``FileResponse(path, ...)`` (ranges, HEAD), or 304 Not Modified when the request's
    validators match its ETag or Last-Modified; conditions come before ``Range``."""
    try:
        stat = await run_in_threadpool(os.stat, path)
    except FileNotFoundError:  # deleted since the caller looked (DELETE, expiry)
        raise JobNotFound(f"No file '{path.name}' for this job (it may have expired)."
                          ) from None
    response = FileResponse(path, media_type=media_type, stat_result=stat, **kwargs)
    if not_modified(request.headers, response.headers["etag"], stat.st_mtime):
        return Response(status_code=304, headers={
            k: response.headers[k] for k in _NOT_MODIFIED_HEADERS if k in response.headers})
    return _range_error(request, response, stat.st_size) or response


def _range_error(request: Request, response: FileResponse, size: int) -> Response | None:
    """A ``Range`` that FileResponse would refuse in plain text, refused in the API's error
    shape instead: 416 ``range_not_satisfiable`` (with ``Content-Range: bytes */size``), or 400
    ``invalid_parameter`` (``field: Range``). Checked under FileResponse's own conditions (a
    GET/HEAD whose ``If-Range``, if any, matches) with its own parser."""
    from restora.errors import InvalidParameter
    from restora.service.errors import error_response, restora_error_response

    http_range = request.headers.get("range")
    if http_range is None or request.method not in ("GET", "HEAD"):
        return None
    try:  # Starlette's own (private) range rules: if they move, its plain answers stand
        from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

        should_use, parse = response._should_use_range, response._parse_range_header
    except (ImportError, AttributeError):
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and not should_use(if_range):
        return None
    try:
        parse(http_range, size)
    except MalformedRangeHeader as exc:
        return restora_error_response(request, InvalidParameter(
            "Range", f"Range: {exc.content[:1].lower()}{exc.content[1:]}"))
    except RangeNotSatisfiable:
        return error_response(request, 416, "range_not_satisfiable",
                              f"The range starts past the end of the file ({size:,} bytes).",
                              headers={"Content-Range": f"bytes */{size}"})
    return None


#: machine step id (reported by tools and pipelines) -> the human ``stage`` text clients show
STAGE_TEXT = {
    "queued": "Waiting in queue...", "starting": "Starting...", "fetching": "Fetching image...",
    "decoding": "Reading image...", "decode": "Reading image...", "analyse": "Analysing photo...",
    "detect": "Detecting faces...", "align": "Aligning faces...", "load": "Loading models...",
    "restore": "Enhancing faces...",
    "restoring": "Enhancing faces...", "face-enhancement": "Enhancing faces...",
    "face_enhancement": "Enhancing faces...", "upscale": "Upscaling...",
    "paste": "Blending faces...", "scratch-removal": "Removing scratches...",
    "scratch_removal": "Removing scratches...", "denoise": "Reducing noise...",
    "colorize": "Colorizing...", "resizing": "Resizing...", "grain": "Adding film grain...",
    "encoding": "Saving result...", "done": "Done",
}


def stage_text(step: str | None) -> str:
    if not step:
        return "Processing..."
    return STAGE_TEXT.get(step) or (step.replace("-", " ").replace("_", " ").capitalize() + "...")


def progress_view(data: dict[str, Any]) -> dict[str, Any]:
    """A stored progress frame as clients get it: ``stage`` human text, ``percent`` an integer,
    the machine step id in ``step`` (Restora's extension)."""
    out = dict(data)
    if "stage" in out or out.get("phase") in ("processing", "queued"):
        out["step"] = out.get("stage")
        out["stage"] = stage_text(out.get("stage"))
    if "percent" in out and out["percent"] is not None:
        out["percent"] = int(float(out["percent"]))  # floor: never 100 before the end
    return out


_PHASE = {QUEUED: "queued", PROCESSING: "processing", SUCCEEDED: "complete", FAILED: "failed",
          CANCELED: "failed"}


def snapshot(record: JobRecord, s: ServiceSettings) -> dict[str, Any]:
    """SnapOtter-style job status, always available while the job is retained."""
    body: dict[str, Any] = {
        "jobId": record.id, "tool": record.tool, "status": record.status,
        "progress": progress_view({
            "phase": _PHASE[record.status], "percent": record.percent,
            "stage": "done" if record.status == SUCCEEDED else record.stage}),
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


def absolute(url: str | None, base: str | None) -> str | None:
    """``url`` (a path) made absolute against ``base`` (public URL or request base URL)."""
    if not url or not base or not url.startswith("/"):
        return url
    return base.rstrip("/") + url


def artwork(record: JobRecord, now: float | None = None, base: str | None = None
            ) -> dict[str, Any]:
    """Tengrai artwork object for a face-refiner job.

    ``results`` is the documented ``string[]`` of image URLs; their details (preview, format,
    size, seed used) are in ``resultDetails``. ``duration`` is always a number: seconds of
    execution so far while running, the total once finished, 0 while waiting.
    """
    import time

    p = record.params
    if record.started_at is None:
        duration = 0.0
    else:
        end = record.finished_at or (now if now is not None else time.time())
        duration = round(max(0.0, end - record.started_at), 3)
    results: list[str] = []
    details: list[dict[str, Any]] = []
    if record.status == SUCCEEDED and record.result:
        r = record.result
        results.append(absolute(r.get("downloadUrl"), base))
        details.append({"url": absolute(r.get("downloadUrl"), base),
                        "previewUrl": absolute(r.get("previewUrl"), base),
                        "format": r.get("format"), "width": r.get("width"),
                        "height": r.get("height"), "seed": r.get("seedUsed")})
    params = {k: p.get(k) for k in ("imageUrl", "model", "denoising", "seed", "outputFormat",
                                    "webhook") if p.get(k) is not None}
    body: dict[str, Any] = {
        "id": record.id, "artworkType": "face_refiner", "parameters": params,
        "duration": duration, "results": results, "status": _ARTWORK_STATUS[record.status],
        "createdAt": iso(record.created_at), "resultDetails": details,
    }
    if record.error is not None:
        body["error"] = record.error.get("message")
        body["errorCode"] = record.error.get("code")
    return body


def webhook_payloads(s: ServiceSettings) -> dict[str, Any]:
    """The JSON ``data`` of a finished job's webhook, per API style (API nodes and workers
    build the same outbox rows)."""
    return {"tengrai": lambda r: artwork(r, base=s.public_url),
            "snapotter": lambda r: snapshot(r, s),
            "topaz": lambda r: snapshot(r, s)}
