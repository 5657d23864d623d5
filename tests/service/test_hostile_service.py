"""A bounded hostile set through the real server: hostile files, SSRF payloads and seeded
schema fuzz on every API style. Nothing may answer 5xx, and no job may end in an internal error.
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from service_helpers import live_server, make_settings, png_bytes, service_tools, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import test_hostile as H  # noqa: E402  (the io layer's header bombs)
from test_ssrf import BLOCKED  # noqa: E402


def _png(arr: np.ndarray, **info) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "PNG", **info)
    return buf.getvalue()


def _rotated_thin_jpeg() -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90: 300 x 1 becomes 1 x 300
    buf = io.BytesIO()
    PILImage.new("RGB", (300, 1), (10, 20, 30)).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def hostile_files() -> dict[str, bytes]:
    good = png_bytes(32, 24)
    jpeg = io.BytesIO()
    PILImage.new("RGB", (64, 48), (1, 2, 3)).save(jpeg, "JPEG", progressive=True)
    j = jpeg.getvalue()
    bad_crc = bytearray(good)
    bad_crc[29] ^= 0xFF
    files = {
        "png_bomb": H._png_bomb(), "gif_bomb": H._gif_bomb(), "bmp_bomb": H._bmp_bomb(),
        "tiff_bomb": H._tiff_bomb(), "tga_bomb": H._tga_bomb(), "psd_bomb": H._psd_bomb(),
        "hdr_bomb": H._hdr_bomb(),
        "thin_4000x1": _png(np.zeros((1, 4000, 3), np.uint8)),
        "thin_1x4000": _png(np.zeros((4000, 1, 3), np.uint8)),
        "thin_400x1": _png(np.zeros((1, 400, 3), np.uint8)),
        "thin_rotated_300x1": _rotated_thin_jpeg(),
        "one_pixel": _png(np.zeros((1, 1, 3), np.uint8)),
        "truncated_png": good[: len(good) // 2], "truncated_jpeg": j[: len(j) // 2],
        "jpeg_header_only": j[:120], "bad_crc_png": bytes(bad_crc),
        "png_signature_only": b"\x89PNG\r\n\x1a\n",
        "png_zero_size": b"\x89PNG\r\n\x1a\n" + H._png_chunk(
            b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)) + H._png_chunk(
            b"IDAT", zlib.compress(b"")) + H._png_chunk(b"IEND", b""),
        "random_bytes": random.Random(5).randbytes(2048),
        "zip_polyglot": b"\x89PNG\r\n\x1a\n" + b"PK\x03\x04" + b"\x00" * 200,
        "empty": b"",
    }
    return files


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), max_upload_bytes=2_000_000,
                             queue_depth=200, max_client_bytes=50_000_000)
    with live_server(settings, tools=service_tools()) as server:
        yield server


@pytest.fixture
def c(srv):
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        yield client


def _no_5xx_job(c, job_id):
    snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s, timeout=60)
    if snap["status"] == "failed":
        err = snap["error"]
        assert err["code"] != "internal_error" and int(err.get("httpStatus", 400)) < 500, err
    return snap


@pytest.mark.parametrize("name", sorted(hostile_files()))
def test_hostile_files_never_5xx(c, name):
    data = hostile_files()[name]
    answers = [
        c.post("/api/v1/tools/enhance-faces", files={"file": (name, data, "image/png")}),
        c.post("/api/v1/tools/restore-photo", files={"file": (name, data, "image/png")},
               data={"settings": json.dumps({"faceEnhancement": False})}),
        c.post("/api/v1/tools/face-recovery", files={"image": (name, data, "image/png")}),
    ]
    for r in answers:
        assert r.status_code < 500, (name, r.status_code, r.text)
        if r.status_code == 202:
            _no_5xx_job(c, r.json()["jobId"])
    r = c.post("/api/process", json={"image_base64": base64.b64encode(data).decode(),
                                     "upscale": 1})
    assert r.status_code < 500, (name, r.status_code, r.text)


def test_ssrf_payloads_refused_everywhere(c):
    for url in BLOCKED:
        r = c.post("/v2/artworks/face-refiner", json={"imageUrl": url})
        assert r.status_code == 400, (url, r.status_code, r.text)
        assert r.json()["code"] in ("url_blocked", "invalid_parameter")
        r = c.post("/api/v1/tools/face-recovery",
                   files={"image": ("a.png", png_bytes(), "image/png")},
                   data={"reference_uri": url})
        assert r.status_code == 400 and r.json()["code"] in ("url_blocked", "invalid_parameter")
        r = c.post("/v2/artworks/face-refiner",
                   json={"imageUrl": "https://example.com/a.png", "webhook": url})
        assert r.status_code == 400, (url, r.status_code)


_VALUES = [None, True, False, 0, -1, 1, 2, 3, 4, 0.5, 1.5, -0.1, 1e308, float("1e-300"),
           2**31, 2**63, -(2**63), "", "auto", "0.5", "true", "x" * 5000, "\u0000", "\ud7ff",
           [], [1, 2], {}, {"x": 1}, [[1, 2, 3, 4, 0.5]], [{"x": 1, "y": 1, "w": 5, "h": 5}],
           "search", "upright"]
_SNAP_KEYS = ["model", "strength", "onlyCenterFace", "sensitivity", "fidelity", "upscale",
              "bgUpscale", "faceUpsample", "detector", "seed", "faces", "orientation", "junk",
              "__proto__"]
_TOPAZ_KEYS = ["strength", "creativity", "grain", "grain_model", "grain_density", "grain_size",
               "grain_strength", "seed", "iai_packed_metadata", "output_width",
               "output_height", "output_format", "input_width", "input_height", "junk"]
_CF_KEYS = ["fidelity", "upscale", "background_enhance", "face_upsample", "return_base64",
            "junk"]
_TG_KEYS = ["imageUrl", "model", "denoising", "seed", "webhook", "outputFormat", "junk"]


def test_seeded_schema_fuzz_never_5xx(c):
    rng = random.Random(1234)
    img = png_bytes(24, 16)
    b64 = base64.b64encode(img).decode()
    accepted: list[str] = []
    for i in range(240):
        kind = i % 4
        pick = lambda keys: {k: rng.choice(_VALUES) for k in rng.sample(keys, rng.randint(1, 4))}
        if kind == 0:
            r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", img, "image/png")},
                       data={"settings": json.dumps(pick(_SNAP_KEYS))})
        elif kind == 1:
            form = {k: (json.dumps(v) if not isinstance(v, str) else v)
                    for k, v in pick(_TOPAZ_KEYS).items()}
            r = c.post("/api/v1/tools/face-recovery",
                       files={"image": ("a.png", img, "image/png")}, data=form)
        elif kind == 2:
            r = c.post("/api/process", json={"image_base64": b64, **pick(_CF_KEYS)})
        else:
            body = pick(_TG_KEYS)
            body.setdefault("imageUrl", rng.choice(["http://10.0.0.1/a.png", "ftp://x/", 5]))
            r = c.post("/v2/artworks/face-refiner", json=body)
        assert r.status_code < 500, (i, r.status_code, r.text)
        if r.status_code == 202 and "jobId" in r.json():
            accepted.append(r.json()["jobId"])
    for job_id in accepted:
        _no_5xx_job(c, job_id)


#: JSON that ``json.loads`` itself refuses with something other than a syntax error: nesting
#: past the parser's recursion limit, and an integer past Python's 4300-digit conversion limit
_DEEP = "[" * 100_000 + "]" * 100_000
_LONG_INT = "1" + "0" * 5000


def test_malformed_json_is_a_400_in_every_field_that_reads_json(c):
    img = png_bytes(24, 16)
    for raw in (_DEEP, '{"seed": %s}' % _LONG_INT):
        r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", img, "image/png")},
                   data={"settings": raw})
        assert r.status_code == 400 and r.json()["field"] == "settings", r.text
    for raw in ("[%s, 1, 1, 1]" % _LONG_INT, json.dumps("[%s, 1, 1, 1]" % _LONG_INT), _DEEP):
        r = c.post("/api/v1/tools/face-recovery", files={"image": ("a.png", img, "image/png")},
                   data={"iai_packed_metadata": raw})
        assert r.status_code == 400 and r.json()["field"] == "iai_packed_metadata", r.text
    for raw in (_DEEP, '{"upscale": %s}' % _LONG_INT):
        r = c.post("/api/process", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "invalid_parameter", r.text
        r = c.post("/v2/artworks/face-refiner", content=raw,
                   headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body", r.text
    r = c.post("/v2/artworks/face-refiner", json=["http://93.184.215.14/a.png"])
    assert r.status_code == 400 and r.json()["field"] == "body", r.text
    # a history cursor is base64 JSON: one the server never gave out is a 400 too
    deep = "[" * 3000 + "]" * 3000  # past the recursion limit, short enough for a URL
    for raw in (deep, '[%s, "x"]' % ("1" + "0" * 400), '[%s, "x"]' % _LONG_INT):
        cursor = base64.urlsafe_b64encode(raw.encode()).decode()
        r = c.get("/api/v1/jobs", params={"cursor": cursor})
        assert r.status_code == 400 and r.json()["field"] == "cursor", r.text


def test_two_images_for_a_one_image_job_are_refused_not_dropped(c):
    a, b = png_bytes(24, 16), png_bytes(32, 24)
    for path, field in (("/api/v1/tools/enhance-faces", "file"),
                        ("/api/v1/tools/restore-photo", "file"),
                        ("/api/v1/tools/face-recovery", "image")):
        r = c.post(path, files=[(field, ("a.png", a, "image/png")),
                                (field, ("b.png", b, "image/png"))])
        assert r.status_code == 400, (path, r.text)
        body = r.json()  # SnapOtter's shape says "error", Topaz's "message"
        message = body.get("error") or body.get("message")
        assert "one" in message and body["field"] == field, body
    r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", a, "image/png")},
               data={"settings": ["{}", '{"strength": 0.5}']})
    assert r.status_code == 400 and r.json()["field"] == "settings", r.text
    # one of each is still fine
    r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", a, "image/png")},
               data={"settings": "{}"})
    assert r.status_code == 202, r.text
    _no_5xx_job(c, r.json()["jobId"])


def test_a_server_fault_is_a_json_500_without_its_traceback(tmp_path: Path):
    """The job store's table gone under a running server: the request fails inside our code.
    The client gets the API's error shape, code internal_error, and no detail of the fault."""
    import sqlite3

    settings = make_settings(tmp_path)
    with live_server(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        db = next(tmp_path.rglob("jobs.db"))
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE jobs")
        r = client.get("/api/v1/jobs")
        assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["code"] == "internal_error", body
        assert "Traceback" not in r.text and "sqlite" not in r.text.lower(), r.text
        r = client.get("/v2/artworks/nope")  # Tengrai's shape for the same fault
        assert r.status_code == 500 and r.json()["statusCode"] == 500, r.text
