"""Reference photos for the face APIs: uploads and URLs checked at submission, read in the job.

Every API style accepts reference photos of people (``reference`` uploads, and a URL field named
in the style's own case: ``referenceUrl``, ``reference_url``, Topaz's ``reference_uri``). At
submission uploads are checked like the main image, and URLs are vetted like ``imageUrl`` (every
resolved address must be public): a private address is a 400 before any job exists. The job
fetches the URLs with the same SSRF-safe client and hands everything to ``enhance_faces``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from restora.errors import InvalidParameter, RestoraError
from restora.pipeline.identity import MAX_REFERENCES
from restora.service.fetch import BlockedURL, check_url
from restora.service.settings import ServiceSettings

#: Job params key holding the (vetted) reference URLs; uploads are extra inputs ``reference-N``.
URLS_PARAM = "referenceUrls"
UPLOAD_PREFIX = "reference-"


@dataclass
class References:
    """What a request sent: uploaded bytes and vetted URLs."""

    uploads: list[bytes] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.uploads or self.urls)

    def extra_inputs(self) -> dict[str, bytes]:
        return {f"{UPLOAD_PREFIX}{i}": data for i, data in enumerate(self.uploads)}

    def params(self) -> dict[str, Any]:
        return {URLS_PARAM: list(self.urls)} if self.urls else {}


def url_list(value: Any, field_name: str) -> list[str]:
    """A URL field given as one string or a list of strings."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(u, str) and u for u in items):
        raise InvalidParameter(field_name, f"{field_name} must be a URL or a list of URLs.")
    return list(items)


async def check_references(s: ServiceSettings, runtime: Any, uploads: list[bytes],
                           urls: list[str], *, upload_field: str = "reference",
                           url_field: str = "referenceUrl") -> References:
    """Validate reference uploads and URLs (400 naming the field) and require a
    face-recognition model (503 with the install command) when any was sent."""
    from restora.service.views import check_image

    if len(uploads) + len(urls) > MAX_REFERENCES:
        raise InvalidParameter(upload_field, f"At most {MAX_REFERENCES} reference photos per "
                               f"request, got {len(uploads) + len(urls)}.")
    for i, data in enumerate(uploads):
        try:
            check_image(data, s)
        except RestoraError as exc:
            raise InvalidParameter(upload_field, f"{upload_field} {i + 1}: {exc.message}",
                                   reason=exc.code) from None
    for url in urls:
        try:
            await run_in_threadpool(check_url, url, allow_loopback=s.allow_loopback_fetch)
        except BlockedURL as exc:  # the same error as a blocked imageUrl, naming this field
            raise BlockedURL(f"{url_field}: {exc.message}", field=url_field) from None
    if (uploads or urls) and runtime is not None:
        registry = runtime.registry
        if not registry.installed("face-recognition"):
            raise runtime.not_installed(registry.default("face-recognition"))
    return References(list(uploads), list(urls))


def job_references(ctx: Any) -> list[Any]:
    """The job's reference photos decoded like the input: uploads, then the URLs fetched
    SSRF-safe (every hop checked again). A bad one fails the job with its own error."""
    from restora.service.fetch import fetch
    from restora.service.tools import decode_input

    raw: list[bytes] = []
    i = 0
    while (path := ctx.extra_input(f"{UPLOAD_PREFIX}{i}")) is not None:
        raw.append(path.read_bytes())
        i += 1
    s = ctx.settings
    for url in ctx.params.get(URLS_PARAM) or []:
        ctx.progress("fetching", 1)
        raw.append(fetch(url, max_bytes=min(s.fetch_max_bytes, s.max_bytes),
                         timeout_s=s.fetch_timeout_s, max_redirects=s.fetch_max_redirects,
                         allow_loopback=s.allow_loopback_fetch).content)
    # the same decode as the input: within its limits, in a killable child when configured
    return [decode_input(ctx, data)[1] for data in raw]


def reference_kwargs(ctx: Any) -> dict[str, Any]:
    """``{"reference": [...]}`` for the enhancer when the job has reference photos, else {}."""
    refs = job_references(ctx)
    return {"reference": refs} if refs else {}
