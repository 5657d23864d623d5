"""Tengrai-style routes: the face-refiner artwork (fetched from ``imageUrl``)."""

from __future__ import annotations

import secrets
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from restora.errors import InvalidParameter
from restora.service import params as P
from restora.service.middleware import client_id
from restora.service.fetch import BlockedURL, check_url
from restora.service.references import check_references, url_list
from restora.service.routing import Router
from restora.service.views import (JobNotFound, artwork, base_url, get_job, manager, owner,
                                   settings)
from restora.service.webhooks import validate_webhook_url

router = Router(tags=["Tengrai"])


@router.post("/v2/artworks/face-refiner", status_code=202, summary="Refine faces in an image URL")
async def create_face_refiner(request: Request) -> JSONResponse:
    """JSON ``{imageUrl, model?, denoising?, seed?, webhook?, outputFormat?}``; 202 artwork.

    The seed is transformed to ``floor(seed * 1.2) + 17`` before use (see docs/service.md).
    """
    s = settings(request)
    body = P.loads_json(await request.body(), "body", "The body must be JSON.")
    if not isinstance(body, dict):
        raise InvalidParameter("body", "The JSON body must be an object.")
    req = P.validate(P.RefinerRequest, body)
    try:
        await run_in_threadpool(check_url, req.imageUrl, allow_loopback=s.allow_loopback_fetch)
    except BlockedURL as exc:
        raise BlockedURL(f"imageUrl: {exc.message}", field="imageUrl") from None
    refs = await check_references(s, request.app.state.runtime, [],
                                  url_list(req.referenceUrl, "referenceUrl"))
    if req.webhook:
        await run_in_threadpool(validate_webhook_url, req.webhook, s, field="webhook")
    seed = req.seed if req.seed is not None else secrets.randbelow(2147483647) + 1
    seed_used = P.refiner_seed(seed)
    job_params: dict[str, Any] = {**req.model_dump(mode="json"), "seed": seed,
                                  "seedUsed": seed_used, **refs.params()}
    # the URL's last path segment, decoded: "%E5%86%99.jpg" names the result "写_refined..."
    name = unquote(PurePosixPath(urlsplit(req.imageUrl).path).name) or "image"
    record = await run_in_threadpool(
        manager(request).submit, "face-refiner", api="tengrai", params=job_params,
        options=P.refiner_options(req, seed_used), input_bytes=None, input_name=name,
        webhook_url=req.webhook, owner=owner(request),
        client=client_id(request.scope))
    return JSONResponse(artwork(record, base=base_url(request)), status_code=202)


@router.get("/v2/artworks/{artwork_id}", summary="Get a face-refiner artwork")
async def get_artwork(request: Request, artwork_id: str) -> dict[str, Any]:
    return artwork(await get_job(manager(request), artwork_id, api="tengrai"),
                   base=base_url(request))


@router.post("/v2/artworks/{artwork_id}/cancel", summary="Cancel a face-refiner artwork")
async def cancel_artwork(request: Request, artwork_id: str) -> dict[str, Any]:
    m = manager(request)
    await get_job(m, artwork_id, api="tengrai")
    record = await run_in_threadpool(m.cancel, artwork_id)
    if record is None:  # deleted (DELETE, expiry) between the lookup and the cancel
        raise JobNotFound(f"No job with id '{artwork_id}' (it may have expired).",
                          jobId=artwork_id)
    return artwork(record, base=base_url(request))
