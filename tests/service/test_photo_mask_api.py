"""The restore-photo API's damage mask: multipart ``mask`` + ``maskMode`` in, ``maskUrl`` out.
A real server on 127.0.0.1, a real photo, no models (the classical path)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image as PILImage

from conftest import shared_path
from restora.io import decode
from restora.pipeline.photo.fill import FEATHER
from restora.service.tools import default_tools
from service_helpers import live_server, make_settings, wait_for


def _blob_mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[40:70, 60:100] = True
    cv2.line(m.view(np.uint8), (10, h - 20), (w - 10, h - 40), 1, 5)
    return m


def _near(user: np.ndarray) -> np.ndarray:
    d = 2 * (1 + FEATHER) + 1
    return cv2.dilate(user.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                       (d, d))) > 0


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def test_api_mask_upload_mask_mode_and_mask_url(tmp_path: Path) -> None:
    img = decode(shared_path("testdata", "photos", "06.png"))
    src = shared_path("testdata", "photos", "06.png").read_bytes()
    user = _blob_mask(img.height, img.width)
    mask_bytes = _png(np.where(user, 255, 0).astype(np.uint8), "L")
    settings = make_settings(tmp_path / "home", device="cpu", threads=2)
    with live_server(settings, tools=default_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        def run(**kw):
            r = c.post("/api/v1/tools/restore-photo", **kw)
            assert r.status_code == 202, r.text
            return wait_for(lambda: (s := c.get(f"/api/v1/jobs/{r.json()['jobId']}").json())
                            ["status"] in ("succeeded", "failed") and s, timeout=120)

        snap = run(files={"file": ("06.png", src, "image/png"),
                          "mask": ("mask.png", mask_bytes, "image/png")},
                   data={"settings": json.dumps({"faceEnhancement": False,
                                                 "maskMode": "replace"})})
        assert snap["status"] == "succeeded", snap
        res = snap["result"]
        assert res["maskUrl"].endswith("/06_mask.png")
        got = c.get(res["maskUrl"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        served = np.asarray(PILImage.open(io.BytesIO(got.content))) == 255
        assert served[user].all() and not (served & ~_near(user)).any()
        assert res["reports"]["scratch-removal"]["detector"] == "user"
        # maskMode as its own form field; no mask: every result still has its maskUrl
        snap = run(files={"file": ("06.png", src, "image/png"),
                          "mask": ("mask.png", mask_bytes, "image/png")},
                   data={"maskMode": "add", "settings": json.dumps({"faceEnhancement": False})})
        assert snap["result"]["reports"]["scratch-removal"]["userMask"]["mode"] == "add"
        snap = run(files={"file": ("06.png", src, "image/png")},
                   data={"settings": json.dumps({"faceEnhancement": False})})
        assert c.get(snap["result"]["maskUrl"]).status_code == 200
        # refused before a job exists: a mask that is no image, a bad mode
        r = c.post("/api/v1/tools/restore-photo",
                   files={"file": ("06.png", src, "image/png"),
                          "mask": ("mask.png", b"garbage", "image/png")})
        assert r.status_code == 400 and r.json()["code"] == "invalid_parameter"
        r = c.post("/api/v1/tools/restore-photo", files={"file": ("06.png", src, "image/png")},
                   data={"maskMode": "subtract"})
        assert r.status_code == 400 and "maskMode" in r.text
