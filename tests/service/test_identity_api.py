"""Reference photos and per-face identity through every face API (real HTTP, real pipeline)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import shared_path
from service_helpers import (http_fixture_server, live_server, make_settings, png_bytes,
                             serve_files, wait_for)
from tiny_models import write_tiny_manifest

from restora.service.app import RUNTIME_FROM_SETTINGS
from restora.service.tools import default_tools

PRIVATE = ("http://127.0.0.1:1/ref.jpg", "http://10.1.2.3/ref.jpg", "http://169.254.169.254/",
           "http://192.168.0.10/ref.png", "http://[::1]/ref.png")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    photos = shared_path("testdata", "photos")
    tmp = tmp_path_factory.mktemp("identity-api")
    settings = make_settings(tmp / "home", models=write_tiny_manifest(tmp), device="cpu",
                             threads=2, allow_loopback_fetch=True)
    served = {"/05.jpg": (photos / "05.jpg").read_bytes()}
    with http_fixture_server(serve_files(served)) as base, \
            live_server(settings, tools=default_tools(), runtime=RUNTIME_FROM_SETTINGS) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        yield client, photos, base


def _final(c, job_id):
    return wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s, timeout=180, interval=0.1)


def _left(faces):
    return min(range(len(faces)), key=lambda i: faces[i]["x"])


def test_reference_urls_blocked_for_private_addresses_like_image_url(tmp_path):
    with live_server(make_settings(tmp_path / "home")) as srv, \
            httpx.Client(base_url=srv.url, timeout=10) as c:
        img = png_bytes()
        for url in PRIVATE:
            r = c.post("/api/v1/tools/face-recovery", files={"image": ("a.png", img, "image/png")},
                       data={"reference_uri": url})
            assert r.status_code == 400, (url, r.text)
            assert r.json()["message"].startswith("reference_uri:"), r.text
            r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", img, "image/png")},
                       data={"settings": json.dumps({"referenceUrl": [url]})})
            assert r.status_code == 400 and "referenceUrl" in r.text, (url, r.text)
            r = c.post("/v2/artworks/face-refiner",
                       json={"imageUrl": "http://93.184.215.14/a.png", "referenceUrl": url})
            assert r.status_code == 400 and r.json()["message"].startswith("referenceUrl:")
            r = c.post("/api/process", files={"image": ("a.png", img, "image/png")},
                       data={"reference_url": url})
            assert r.status_code == 400 and "reference_url" in r.text, (url, r.text)


def test_topaz_reference_uri_is_used(env):
    c, photos, base = env
    src = (photos / "06.png").read_bytes()
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("06.png", src, "image/png")},
               data={"reference_uri": f"{base}/05.jpg", "only_reference_faces": "true",
                     "input_width": "726", "input_height": "838", "seed": "1"})
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "succeeded", snap
    res = snap["result"]
    left = _left(res["faces"])
    assert res["identityModel"] == "dlib-resnet"
    assert res["references"][0]["face"] == left and res["references"][0]["distance"] < 0.55
    assert [f["restored"] for f in res["faces"]] == [i == left for i in range(2)]
    assert res["faces"][left]["reference"]["index"] == 0
    for face in res["faces"]:
        assert face["identity"]["verdict"] in ("same", "uncertain", "changed", "unknown")
    assert not any("input_width" in w for w in res["warnings"])  # the size was right


def test_snapotter_reference_upload_and_codeformer_space(env):
    c, photos, _ = env
    src = (photos / "06.png").read_bytes()
    ref = (photos / "05.jpg").read_bytes()
    r = c.post("/api/v1/tools/enhance-faces",
               files=[("file", ("06.png", src, "image/png")),
                      ("reference", ("05.jpg", ref, "image/jpeg"))],
               data={"settings": json.dumps({"model": "gfpgan", "seed": 2,
                                             "onlyReferenceFaces": True})})
    assert r.status_code == 202, r.text
    res = _final(c, r.json()["jobId"])["result"]
    left = _left(res["faces"])
    assert res["references"][0]["face"] == left
    assert [f["restored"] for f in res["faces"]] == [i == left for i in range(2)]
    # CodeFormer Space: a reference upload; the job's own result has the match
    r = c.post("/api/process", files=[("image", ("06.png", src, "image/png")),
                                      ("reference", ("05.jpg", ref, "image/jpeg"))],
               data={"upscale": "1", "only_reference_faces": "true"},
               timeout=600)  # synchronous: three CodeFormer forwards for the matched face
    assert r.status_code == 200, r.text
    job_id = urlsplit(r.json()["results"][0]["image_url"]).path.split("/")[4]
    res = c.get(f"/api/v1/jobs/{job_id}").json()["result"]
    assert res["references"][0]["face"] == _left(res["faces"])
    tried = res["faces"][_left(res["faces"])]["restoration"]["tried"]
    assert len(tried) == 3 and all("referenceDistance" in t for t in tried)


def test_a_reference_without_a_face_fails_the_job_clearly(env):
    c, photos, _ = env
    r = c.post("/api/v1/tools/enhance-faces",
               files=[("file", ("03.jpg", (photos / "03.jpg").read_bytes(), "image/jpeg")),
                      ("reference", ("noise.png", png_bytes(), "image/png"))])
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "failed" and snap["error"]["code"] == "invalid_parameter"
    assert "no face" in snap["error"]["message"]


def test_snapotter_reference_url_may_be_one_string(env):
    """``referenceUrl`` is "URL or list of URLs" (docs/service.md): one URL as a plain string
    is accepted like a list of one."""
    c, photos, base = env
    r = c.post("/api/v1/tools/enhance-faces",
               files={"file": ("03.jpg", (photos / "03.jpg").read_bytes(), "image/jpeg")},
               data={"settings": json.dumps({"referenceUrl": f"{base}/05.jpg"})})
    assert r.status_code == 202, r.text
    c.post(f"/api/v1/jobs/{r.json()['jobId']}/cancel")  # accepted is the point; save the CPU
    r = c.post("/api/v1/tools/enhance-faces",
               files={"file": ("a.png", png_bytes(), "image/png")},
               data={"settings": json.dumps({"referenceUrl": "http://10.1.2.3/ref.jpg"})})
    assert r.status_code == 400 and r.json()["code"] == "url_blocked", r.text
    r = c.post("/api/v1/tools/enhance-faces",
               files={"file": ("a.png", png_bytes(), "image/png")},
               data={"settings": json.dumps({"referenceUrl": [f"{base}/05.jpg"] * 9})})
    assert r.status_code == 400 and "At most 8 reference photos" in r.json()["error"], r.text


@pytest.mark.parametrize("model,status,code", [
    ("nope", 400, "invalid_parameter"),  # no such model
    ("tiny-gfpgan", 400, "invalid_parameter"),  # not a face-recognition model
    ("sface", 503, "model_not_installed"),  # known, not installed here
])
def test_identity_model_is_checked_at_submission(env, model, status, code):
    """Like ``detector``: a bad ``identityModel`` is refused before a job exists, naming the
    field, instead of failing the job once faces are found."""
    c, _, _ = env
    r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", png_bytes(), "image/png")},
               data={"settings": json.dumps({"identityModel": model})})
    assert r.status_code == status and r.json()["code"] == code, r.text
    if status == 400:
        assert r.json()["field"] == "identityModel"
