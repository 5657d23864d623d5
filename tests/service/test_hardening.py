"""Small hostile inputs cannot stall the service: output caps, killable decode, bytes held per
client, body limits on every route, slow clients, keys out of logs, OPTIONS, downloads."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image as PILImage

from service_helpers import (live_server, make_settings, png_bytes, service_tools, wait_for)

from restora.service.app import create_app


def _final(c, job_id, timeout=30.0):
    return wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s, timeout=timeout)


def big_flat_png(width: int, height: int) -> bytes:
    """A tiny file declaring a big image (a flat colour compresses to almost nothing)."""
    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), (90, 120, 150)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), max_upload_bytes=400_000)
    with live_server(settings, tools=service_tools()) as server:
        yield server


@pytest.fixture
def c(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        yield client


# --- output size ---------------------------------------------------------------------------

def test_output_pixels_capped_at_submission(c):
    small = png_bytes(8, 8)
    # Topaz: 32000 x 32000 from an 8x8 input is refused before any work
    r = c.post("/api/v1/tools/face-recovery", files={"image": ("t.png", small, "image/png")},
               data={"output_width": "32000", "output_height": "32000"})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "output_too_large" and r.json()["status"] == 413
    # one side given: the other follows the input's aspect ratio, and is checked too
    r = c.post("/api/v1/tools/face-recovery", files={"image": ("t.png", small, "image/png")},
               data={"output_width": "12000"})  # 144 MP
    assert r.status_code == 413 and r.json()["code"] == "output_too_large"
    # CodeFormer: a 7000 x 7000 PNG of a few KB, upscale 2 = 196 MP
    tall = big_flat_png(7000, 7000)
    assert len(tall) < 400_000
    r = c.post("/api/process", files={"image": ("a.png", tall, "image/png")},
               data={"upscale": "2"})
    assert r.status_code == 413 and r.json()["code"] == "output_too_large"
    assert r.json()["status"] == "error"
    # SnapOtter enhance-faces with upscale 4
    r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", tall, "image/png")},
               data={"settings": json.dumps({"upscale": 4})})
    assert r.status_code == 413 and r.json()["code"] == "output_too_large"


def test_output_pixel_limit_is_configurable(tmp_path):
    settings = make_settings(tmp_path / "home", max_output_pixels=10_000)
    with live_server(settings, tools=service_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("a.png", png_bytes(200, 100), "image/png")})
        assert r.status_code == 413 and r.json()["code"] == "output_too_large"
        r = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("a.png", png_bytes(100, 100), "image/png")})
        assert r.status_code == 202
        assert _final(c, r.json()["jobId"])["status"] == "succeeded"


# --- cancel and timeout free the worker during decode --------------------------------------

def _slow_jpeg(height: int = 3000, width: int = 4000) -> bytes:
    arr = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "JPEG", progressive=True, quality=95)
    return buf.getvalue()


def test_cancel_during_decode_frees_the_worker(tmp_path):
    """One worker; job A decodes a 12 MP progressive JPEG (seconds of work here), is cancelled
    while decoding; job B, queued behind it, then runs and succeeds while A's decode would still
    be running in-process. Observed through the order of events, not through timing."""
    slow = _slow_jpeg()
    settings = make_settings(tmp_path / "home", workers=1, max_upload_bytes=60_000_000)
    with live_server(settings, tools=service_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        a = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("a.jpg", slow, "image/jpeg")}).json()["jobId"]
        wait_for(lambda: c.get(f"/api/v1/jobs/{a}").json()["progress"]["step"] == "decoding")
        b = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("b.png", png_bytes(), "image/png")}).json()["jobId"]
        assert c.post(f"/api/v1/jobs/{a}/cancel").json()["status"] == "canceled"
        snap_b = _final(c, b)
        assert snap_b["status"] == "succeeded"
        # A never produced anything, and its input was deleted at once
        assert c.get(f"/api/v1/jobs/{a}").json()["status"] == "canceled"
        assert not (srv.manager.job_dir(a) / "input").exists()
        wait_for(lambda: srv.manager.queue.running() == 0)


def test_timeout_during_decode_frees_the_worker(tmp_path):
    # 40 MP of noise: A's decode, posterize and encode take ~4 s here, twice the timeout, while
    # B (64 x 48) gets the same 2 s of its own; at 0.5 s a busy CI run once timed B out too
    slow = _slow_jpeg(5000, 8000)
    settings = make_settings(tmp_path / "home", workers=1, job_timeout_s=2.0,
                             max_upload_bytes=60_000_000)
    with live_server(settings, tools=service_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        a = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("a.jpg", slow, "image/jpeg")}).json()["jobId"]
        b = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("b.png", png_bytes(), "image/png")}).json()["jobId"]
        snap_a = _final(c, a)
        assert snap_a["status"] == "failed" and snap_a["error"]["code"] == "timeout"
        snap_b = _final(c, b)
        assert snap_b["status"] == "succeeded", snap_b


# --- bytes held ----------------------------------------------------------------------------

def test_failed_jobs_keep_their_input_and_a_damaged_one_previews_as_an_error(c, srv):
    """A failed job's input stays until retention (docs/service.md); when the input is what
    failed, its history preview is the decode's clear 4xx, never a trace."""
    broken = png_bytes(64, 48)[:-40] + b"\x00" * 40  # valid header, damaged data
    job = c.post("/api/v1/tools/enhance-faces",
                 files={"file": ("x.png", broken, "image/png")}).json()["jobId"]
    snap = _final(c, job)
    assert snap["status"] == "failed"
    assert (srv.manager.job_dir(job) / "input" / "x.png").read_bytes() == broken
    r = c.get(f"/api/v1/jobs/{job}/input.webp")
    assert r.status_code == 422 and r.json()["code"] == "corrupt_image", r.text
    ok = c.post("/api/v1/tools/enhance-faces",
                files={"file": ("y.png", png_bytes(), "image/png")}).json()["jobId"]
    assert _final(c, ok)["status"] == "succeeded"


def test_bytes_per_client_are_capped(tmp_path):
    settings = make_settings(tmp_path / "home", workers=1, max_client_bytes=700_000,
                             max_upload_bytes=2_000_000)
    blob = png_bytes(330, 330, seed=2)  # ~330 KB of noise
    assert 300_000 < len(blob) < 350_000
    with live_server(settings, tools=service_tools(step_s=0.3, steps=40)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        first = c.post("/api/v1/tools/enhance-faces",
                       files={"file": ("a.png", blob, "image/png")})
        assert first.status_code == 202
        second = c.post("/api/v1/tools/enhance-faces",
                        files={"file": ("b.png", blob, "image/png")})
        assert second.status_code == 202  # ~660 KB held: still within 700 KB
        r = c.post("/api/v1/tools/enhance-faces", files={"file": ("c.png", blob, "image/png")})
        assert r.status_code == 429 and r.json()["code"] == "too_many_bytes"
        assert r.headers["retry-after"]
        for j in (first.json()["jobId"], second.json()["jobId"]):
            c.post(f"/api/v1/jobs/{j}/cancel")
        assert srv.app.state.client_bytes.held("ip:127.0.0.1") == 0
        r = c.post("/api/v1/tools/enhance-faces", files={"file": ("c.png", blob, "image/png")})
        assert r.status_code == 202


def test_bytes_of_a_job_ended_elsewhere_are_freed_before_refusing(tmp_path):
    """A job this process accepted but another process ended (a worker process, another
    node's reaper or cancel: here its final state is written to the store directly) no longer
    counts against its client: the next upload that would be refused settles it first."""
    from restora.service.store import CANCELED, PROCESSING, QUEUED

    settings = make_settings(tmp_path / "home", workers=1, max_client_bytes=500_000,
                             max_upload_bytes=2_000_000)
    blob = png_bytes(330, 330, seed=3)
    with live_server(settings, tools=service_tools(step_s=0.3, steps=40)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        first = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", blob, "image/png")})
        assert first.status_code == 202
        job = first.json()["jobId"]
        wait_for(lambda: srv.app.state.client_bytes.held("ip:127.0.0.1") == len(blob),
                 timeout=10)
        assert srv.app.state.store.finish(job, CANCELED, from_statuses=(QUEUED, PROCESSING),
                                          error={"code": "cancelled", "message": "elsewhere"})
        second = c.post("/api/v1/tools/enhance-faces",
                        files={"file": ("b.png", blob, "image/png")})
        assert second.status_code == 202, second.text
        # only b's stored input (its request body is released just after the response)
        wait_for(lambda: srv.app.state.client_bytes.held("ip:127.0.0.1") == len(blob),
                 timeout=10)
        c.post(f"/api/v1/jobs/{second.json()['jobId']}/cancel")
        assert srv.app.state.client_bytes.held("ip:127.0.0.1") == 0


# --- request bodies and slow clients -------------------------------------------------------

@pytest.mark.parametrize("path,field", [("/api/v1/tools/enhance-faces", "file"),
                                        ("/api/v1/tools/restore-photo", "file"),
                                        ("/api/v1/tools/face-recovery", "image"),
                                        ("/api/process", "image")])
def test_chunked_body_over_limit_is_413_on_every_route(c, path, field):
    boundary = "XyZ"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(10):
            yield b"\x00" * 60_000  # 600 KB in all, no Content-Length

    r = c.post(path, content=body(),
               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, (path, r.status_code, r.text)
    assert r.json()["code"] == "payload_too_large"


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s


def test_slow_headers_are_cut_off(tmp_path):
    settings = make_settings(tmp_path / "home", header_timeout_s=0.5)
    with live_server(settings, tools=service_tools()) as srv:
        s = _raw(settings.port)
        closed = False
        request = b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: a\r\n" * 200
        for i in range(len(request)):  # one byte every 50 ms: 100+ s if never cut off
            try:
                s.sendall(request[i:i + 1])
            except OSError:
                closed = True
                break
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:  # a reset (unread bytes in the server's buffer) is a close too
                closed = True
                break
        s.close()
        assert closed, "the server kept a trickling request open"
        # an idle connection that never sends anything is closed as well
        s = _raw(settings.port)
        s.settimeout(20)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        s.close()
        # normal requests are unaffected
        assert httpx.get(srv.url + "/api/health").status_code == 200


def test_slow_body_gets_408(tmp_path):
    settings = make_settings(tmp_path / "home", body_timeout_s=0.5)
    with live_server(settings, tools=service_tools()):
        s = _raw(settings.port)
        s.sendall(b"POST /api/process HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"image_base64\": \"")
        s.settimeout(20)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 408"), data[:100]


# --- keys never logged, OPTIONS, downloads -------------------------------------------------

def test_api_key_never_in_access_log(tmp_path):
    settings = make_settings(tmp_path / "home", api_keys=["s3cret-key-value"])
    app = create_app(settings, tools=service_tools(), runtime=None)
    from restora.service.protocol import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, settings, log_level="info", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Grab()
    logging.getLogger("uvicorn.access").addHandler(handler)
    try:
        base = f"http://127.0.0.1:{settings.port}"
        r = httpx.get(base + "/api/v1/jobs/nope?api_key=s3cret-key-value&x=1")
        assert r.status_code == 404  # authenticated (not 401) and then not found
        r = httpx.get(base + "/api/v1/jobs/nope?API_KEY=s3cret-key-value")
        assert r.status_code == 401  # only the documented name authenticates...
        wait_for(lambda: len(records) >= 2)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
        server.should_exit = True
        thread.join(10)
    assert records and all("s3cret" not in line for line in records), records
    assert any("/api/v1/jobs/nope" in line and "x=1" in line for line in records)


def test_options_answered_by_cors_not_static(c):
    for path, method in (("/api/v1/tools/enhance-faces", "POST"), ("/", "GET"),
                         ("/index.html", "GET"), ("/api/health", "GET"),
                         ("/v2/artworks/face-refiner", "POST")):
        r = c.options(path)
        assert r.status_code == 204, (path, r.status_code)
        assert method in r.headers["allow"].split(", ")
        r = c.options(path, headers={"Origin": "https://app.example"})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


def test_only_small_simple_inputs_decode_in_process():
    from restora.io import Limits
    from restora.service.tools import _quick_to_decode

    limits = Limits()
    assert _quick_to_decode(png_bytes(64, 48), limits)
    assert not _quick_to_decode(big_flat_png(2000, 1500), limits)  # 3 MP: the killable child
    many_scans = io.BytesIO()
    PILImage.new("RGB", (64, 48)).save(many_scans, "JPEG", progressive=True)
    data = many_scans.getvalue()
    sos = data.index(b"\xff\xda")
    # the same scan repeated: a small JPEG whose decode work is scans x pixels
    hostile = data[:sos] + data[sos:-2] * 40 + b"\xff\xd9"
    assert not _quick_to_decode(hostile, limits)
