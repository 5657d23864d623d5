"""Topaz-style route: face recovery with grain, client face boxes, output size and credits."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from restora.errors import InvalidParameter
from restora.service import params as P
from restora.service.middleware import client_id
from restora.service.finishing import credits_for
from restora.service.references import check_references
from restora.service.routing import Router
from restora.service.views import check_job_image, manager, owner, settings
from restora.service.webhooks import validate_webhook_url

router = Router(tags=["Topaz"])

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_FLOATS = ("strength", "creativity", "grain_density", "grain_size", "grain_strength")
_INTS = ("seed", "output_width", "output_height", "input_width", "input_height")


def _coerce(key: str, raw: str) -> Any:
    text = raw.strip()
    if key in ("grain", "only_reference_faces"):
        if text.lower() not in _BOOL:
            raise InvalidParameter(key, f"{key} must be true or false.")
        return _BOOL[text.lower()]
    try:
        if key in _FLOATS:
            return float(text)
        if key in _INTS:
            return int(text)
    except ValueError:
        raise InvalidParameter(key, f"{key} must be a number, not {raw!r}.") from None
    return raw


@router.post("/api/v1/tools/face-recovery", status_code=202,
             summary="Recover faces (Topaz-style) with optional film grain and resize")
async def face_recovery(request: Request) -> JSONResponse:
    """Multipart ``image`` plus form fields (see docs/service.md); 202 ``{jobId, async, ...}``."""
    s = settings(request)
    form = await request.form()
    image: tuple[str, bytes] | None = None
    values: dict[str, Any] = {}
    reference: list[bytes] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key == "reference":  # Restora extension: a reference upload
                reference.append(await value.read())
                continue
            if key not in ("image", "file"):
                raise InvalidParameter(key, f"Unknown file field '{key}'; use 'image'.")
            if image is not None:  # one job per request: a second image would be dropped unsaid
                raise InvalidParameter("image", "Send one 'image' per request; send each photo "
                                       "as its own request.")
            image = (value.filename or "image", await value.read())
        elif key == "reference_uri":  # repeatable: one identity per photo
            values.setdefault(key, []).append(value.strip())
        else:
            values[key] = _coerce(key, value)
    if image is None:
        raise InvalidParameter("image", "No image was sent (multipart field 'image').")
    opts = P.validate(P.FaceRecoverySettings, values)
    faces = P.parse_faces(opts.iai_packed_metadata) if opts.iai_packed_metadata else None
    options = opts.options(faces)
    request_params = opts.model_dump(mode="json", exclude={"iai_packed_metadata"})
    check_job_image(image[1], s, "face-recovery", image[0], request_params,
                    options.model_dump(mode="json"))
    refs = await check_references(s, request.app.state.runtime, reference,
                                  list(opts.reference_uri or []), url_field="reference_uri")
    job_params = {**request_params, **refs.params()}
    if opts.webhook_url:
        await run_in_threadpool(validate_webhook_url, opts.webhook_url, s, field="webhook_url")
    record = await run_in_threadpool(
        manager(request).submit, "face-recovery", api="topaz", params=job_params,
        options=options, input_bytes=image[1], input_name=image[0],
        webhook_url=opts.webhook_url, owner=owner(request),
        client=client_id(request.scope),
        extra_inputs=refs.extra_inputs())
    body: dict[str, Any] = {"jobId": record.id, "async": True, "process_id": record.id,
                            "status": record.status}
    if opts.output_width and opts.output_height:
        body["estimatedCredits"] = credits_for(opts.output_width, opts.output_height)
    return JSONResponse(body, status_code=202)
