"""Real servers and a small real enhancer for the service tests.

``posterize_enhance`` stands in for the neural face pipeline where a test is about the service
(queueing, SSE, durability, cancel, webhooks): it really processes the decoded pixels band by
band, reports progress and honours cancel, so timing and cancellation are observable.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import uvicorn
from PIL import Image as PILImage

from restora.pipeline.options import EnhanceOptions
from restora.pipeline.results import EnhanceResult, Face
from restora.service.app import create_app
from restora.service.jobs import JobContext
from restora.service.settings import ServiceSettings
from restora.service.tools import default_tools

REPO = Path(__file__).resolve().parents[2]
#: how long :func:`live_server` waits for uvicorn to report it started
SERVER_START_TIMEOUT_S = 60.0


def make_enhancer(step_s: float = 0.0, steps: int = 10) -> Callable[..., EnhanceResult]:
    """An enhancer that posterizes the image in ``steps`` bands, ``step_s`` seconds each."""

    def enhance(ctx: JobContext, image: Any, options: EnhanceOptions, *, lo: float = 5,
                hi: float = 90, reference: list[Any] | None = None) -> EnhanceResult:
        progress = ctx.sub_progress(lo, hi)
        pixels = image.pixels.copy()
        shift = 5 if pixels.dtype == np.uint8 else 13
        bands = np.array_split(np.arange(pixels.shape[0]), steps)
        seed = options.seed
        for i, rows in enumerate(bands):
            ctx.check_cancel()
            if len(rows):
                pixels[rows] = (pixels[rows] >> shift) << shift
            if step_s:
                time.sleep(step_s)
            progress("restoring", 100.0 * (i + 1) / steps)
        if seed is not None:  # a seed-dependent touch, so "same seed -> same output" is testable
            rng = np.random.Generator(np.random.PCG64(int(seed)))
            n = min(8, pixels.shape[1])
            pixels[0, :n] = rng.integers(0, 255, (n, 3))
        faces = [Face(x=int(f["x"]), y=int(f["y"]), w=int(f["w"]), h=int(f["h"]),
                      score=float(f.get("score", 1.0)), landmarks=())
                 for f in (options.face_dicts() or [])]
        return EnhanceResult(image=image.with_pixels(pixels, image.alpha), faces=faces,
                             faces_detected=len(faces), model="test-posterize",
                             model_kind="test", reason="test enhancer")

    return enhance


def service_tools(step_s: float = 0.0, steps: int = 10) -> dict:
    return default_tools(make_enhancer(step_s, steps))


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(home: Path, **overrides: Any) -> ServiceSettings:
    base: dict[str, Any] = dict(home=home, port=free_port(), sse_heartbeat_s=0.3,
                                webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                webhook_backoff_s=0.2)
    base.update(overrides)
    return ServiceSettings(**base)


@dataclass
class LiveServer:
    url: str
    app: Any
    settings: ServiceSettings

    @property
    def manager(self) -> Any:
        return self.app.state.manager


@contextmanager
def live_server(settings: ServiceSettings, *, tools: dict | None = None,
                runtime: Any = None) -> Iterator[LiveServer]:
    """A real uvicorn server on 127.0.0.1 in a thread."""
    app = create_app(settings, tools=tools if tools is not None else service_tools(),
                     runtime=runtime)
    from restora.service.protocol import uvicorn_config

    config = uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=1,
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # generous: the whole suite on 2 shared cores can take tens of seconds to start the app
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the test server thread for 127.0.0.1:{settings.port} ended "
                               "before uvicorn reported it started (see its log above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not report started on 127.0.0.1:{settings.port} "
                               f"within {SERVER_START_TIMEOUT_S:g} s")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{settings.port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(10)


def serve_files(served: dict[str, bytes]) -> Callable[[BaseHTTPRequestHandler], None]:
    """An :func:`http_fixture_server` handler answering each path in ``served`` with its bytes
    (200) and any other path with an empty 404."""

    def handler(req: BaseHTTPRequestHandler) -> None:
        body = served.get(req.path, b"")
        req.send_response(200 if body else 404)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    return handler


@contextmanager
def http_fixture_server(handler: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A tiny threaded HTTP server whose GET/POST are answered by ``handler(request)``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            handler(self)

        def do_POST(self) -> None:  # noqa: N802
            handler(self)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
