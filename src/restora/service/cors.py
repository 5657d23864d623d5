"""CORS whose refused preflights answer in the API's error shape.

Starlette's ``CORSMiddleware`` answers a preflight it refuses with a plain-text 400
("Disallowed CORS origin, headers"); clients of this API read errors as JSON with a ``code``, so
the refusal becomes ``cors_not_allowed`` in the path's API style, naming what was refused.
Everything else (allowed preflights, simple requests) is Starlette's.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from restora.service.errors import error_response

#: Starlette's plain-text refusal starts with this; what follows names the refused parts
_REFUSAL = "Disallowed CORS "


class JsonCORSMiddleware(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                text = bytes(response.body).decode("utf-8", "replace")
                if response.status_code == 400 and text.startswith(_REFUSAL):
                    refused = text.removeprefix(_REFUSAL)
                    kept = {k: v for k, v in response.headers.items()
                            if k.lower() not in ("content-length", "content-type")}
                    response = error_response(
                        None, 400, "cors_not_allowed",
                        f"This server does not allow this cross-origin request ({refused} "
                        f"refused for origin {headers['origin']!r}); see RESTORA_CORS_ORIGINS.",
                        extra={"refused": [p.strip() for p in refused.split(",")]},
                        headers=kept, path=scope["path"])
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
