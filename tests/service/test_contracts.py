"""The seed documents' contracts, field by field, as a client written from each document sees them."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from service_helpers import (http_fixture_server, live_server, make_enhancer, make_settings,
                             png_bytes, wait_for)
from test_jobs_sse import parse_sse

from restora.service.tools import default_tools

CALLS: list[dict[str, Any]] = []


def _recording_enhancer():
    """The posterizing test enhancer, also recording the keyword arguments each job got."""
    inner = make_enhancer(step_s=0.02)

    def enhance(ctx, image, options, **kwargs):
        CALLS.append({"tool": ctx.job.tool, **options.model_dump(),
                      "references": [(r.width, r.height) for r in kwargs.get("reference") or []]})
        return inner(ctx, image, options, **kwargs)

    return enhance


def jpeg_bytes(width=64, height=48) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(1).integers(0, 255, (height, width, 3), np.uint8)
                       ).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _serve(req):
    if req.path.startswith("/bad"):
        body, ctype = b"this is not an image at all", "text/plain"
    elif req.path.startswith("/redirect-private"):
        req.send_response(302)
        req.send_header("Location", "http://10.0.0.1/x.png")
        req.send_header("Content-Length", "0")
        req.end_headers()
        return
    else:
        body, ctype = png_bytes(40, 30, seed=3), "image/png"
    req.send_response(200)
    req.send_header("Content-Type", ctype)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), allow_loopback_fetch=True)
    with http_fixture_server(_serve) as img_base, \
            live_server(settings, tools=default_tools(_recording_enhancer())) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        yield srv, c, img_base


def _final(c, job_id):
    return wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s)


# --- SnapOtter -------------------------------------------------------------------------------

def test_enhance_faces_output_always_png_and_model_kind(env):
    _, c, _ = env
    r = c.post("/api/v1/tools/enhance-faces", files={"file": ("portrait.jpg", jpeg_bytes(),
                                                              "image/jpeg")})
    snap = _final(c, r.json()["jobId"])
    res = snap["result"]
    assert res["downloadUrl"].endswith("/portrait_enhanced.png")
    assert res["filename"] == "portrait_enhanced.png" and res["format"] == "png"
    assert PILImage.open(io.BytesIO(c.get(res["downloadUrl"]).content)).format == "PNG"
    # `model` is the restorer kind the document names; Restora's model id is `modelId`
    assert res["model"] == "test" and res["modelId"] == "test-posterize"


def test_sse_stage_is_human_text_percent_integer_step_is_machine_id(env):
    _, c, _ = env
    job = c.post("/api/v1/tools/enhance-faces",
                 files={"file": ("a.png", png_bytes(), "image/png")}).json()["jobId"]
    _final(c, job)
    frames = [f for f in parse_sse(c.get(f"/api/v1/jobs/{job}/progress").text) if "id" in f]
    processing = [f["data"] for f in frames if f["data"].get("phase") == "processing"]
    assert processing
    for d in processing:
        assert isinstance(d["percent"], int)
        assert d["stage"].endswith("...") and " " in d["stage"] or d["stage"][0].isupper()
        assert "step" in d
    stages = {d["stage"] for d in processing}
    assert "Enhancing faces..." in stages  # the document's example text
    assert "restoring" in {d["step"] for d in processing}
    # the result arrives as `event: progress` with phase complete, then `event: complete`
    assert [f["event"] for f in frames[-2:]] == ["progress", "complete"]
    assert frames[-2]["data"]["phase"] == "complete" and frames[-2]["data"]["percent"] == 100
    assert frames[-2]["data"]["result"]["jobId"] == job
    snap = c.get(f"/api/v1/jobs/{job}").json()
    assert snap["progress"] == {"phase": "complete", "stage": "Done", "step": "done",
                                "percent": 100}


def test_only_result_and_preview_are_downloadable(env):
    srv, c, img_base = env
    art = c.post("/v2/artworks/face-refiner", json={"imageUrl": f"{img_base}/p.png"}).json()
    done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                    in ("succeeded", "failed") and a)
    assert done["status"] == "succeeded", done
    jid = art["id"]
    assert c.get(done["results"][0]).status_code == 200
    assert c.get(f"/api/v1/download/{jid}/preview.webp").status_code == 200
    for name in ("source.bin", "p.png", "input", "jobs.db", "preview.webp.part"):
        assert c.get(f"/api/v1/download/{jid}/{name}").status_code == 404, name


# --- Tengrai ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model,kind", [("tengrai-20231128-m-d.safetensors", "gfpgan"),
                                        ("tengrai-20240423-m-f.safetensors", "codeformer")])
def test_tengrai_documented_models_and_auto_format_is_webp(env, model, kind):
    _, c, img_base = env
    CALLS.clear()
    r = c.post("/v2/artworks/face-refiner", json={"imageUrl": f"{img_base}/p.png", "model": model})
    assert r.status_code == 202, r.text
    art = r.json()
    assert art["parameters"]["model"] == model and art["duration"] == 0
    assert isinstance(art["duration"], (int, float)) and art["results"] == []
    done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                    in ("succeeded", "failed") and a)
    assert done["status"] == "succeeded"
    assert all(isinstance(u, str) and u.startswith("http") for u in done["results"])
    assert done["resultDetails"][0]["format"] == "webp"  # outputFormat auto = WebP
    assert c.get(done["results"][0]).content[8:12] == b"WEBP"
    assert [x["model"] for x in CALLS if x["tool"] == "face-refiner"] == [kind]


def test_tengrai_absent_model_not_echoed_as_null_and_blocked_url_code(env):
    _, c, img_base = env
    art = c.post("/v2/artworks/face-refiner", json={"imageUrl": f"{img_base}/p.png"}).json()
    assert "model" not in art["parameters"] and "webhook" not in art["parameters"]
    r = c.post("/v2/artworks/face-refiner", json={"imageUrl": "http://169.254.169.254/x.png"})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "url_blocked" and body["statusCode"] == 400
    assert body["error"] == "Bad Request" and "imageUrl" in body["message"]


def test_tengrai_duration_is_a_number_while_running(tmp_path):
    settings = make_settings(tmp_path / "home", allow_loopback_fetch=True)
    with http_fixture_server(_serve) as img_base, \
            live_server(settings, tools=default_tools(make_enhancer(step_s=0.15))) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        art = c.post("/v2/artworks/face-refiner", json={"imageUrl": f"{img_base}/p.png"}).json()
        running = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                           == "processing" and a)
        assert isinstance(running["duration"], (int, float)) and running["duration"] >= 0
        later = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["duration"]
                         > running["duration"] and a)
        assert later["status"] in ("processing", "succeeded")


# --- Topaz -----------------------------------------------------------------------------------

def test_topaz_strength_defaults_to_one_and_new_fields_accepted(env):
    _, c, img_base = env
    CALLS.clear()
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(64, 48), "image/png")},
               data={"input_width": "64", "input_height": "48",
                     "reference_uri": f"{img_base}/ref.png"})
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "succeeded", snap
    assert CALLS[-1]["strength"] == 1.0
    # fetched, decoded and handed to the face pipeline (tests/service/test_identity_api.py
    # shows the real pipeline matching faces to it)
    assert CALLS[-1]["references"] == [(40, 30)]


def test_topaz_reference_uri_is_ssrf_checked_and_must_be_an_image(env):
    _, c, img_base = env
    # (loopback is allowed in this fixture, so a private address shows the block)
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(), "image/png")},
               data={"reference_uri": "http://192.168.1.1/x.png"})
    assert r.status_code == 400 and r.json()["code"] == "url_blocked"
    assert r.json()["field"] == "reference_uri" and r.json()["status"] == 400
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(), "image/png")},
               data={"reference_uri": f"{img_base}/bad"})
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "failed" and snap["error"]["code"] == "unsupported_format"
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(), "image/png")},
               data={"reference_uri": f"{img_base}/redirect-private"})
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "failed" and snap["error"]["code"] == "url_blocked"


@pytest.mark.parametrize("meta", [
    "[[4, 5, 20, 24, 0.9], [30, 10, 12, 12, 0.7]]",
    "[4, 5, 20, 24, 0.9, 30, 10, 12, 12, 0.7]",
    json.dumps("[[4, 5, 20, 24, 0.9], [30, 10, 12, 12, 0.7]]"),
    json.dumps({"faces": [{"box": [4, 5, 20, 24], "score": 0.9},
                          {"x": 30, "y": 10, "w": 12, "h": 12, "score": 0.7}]}),
])
def test_topaz_iai_packed_metadata_forms(env, meta):
    _, c, _ = env
    CALLS.clear()
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(64, 48), "image/png")},
               data={"iai_packed_metadata": meta})
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    faces = snap["result"]["faces"]
    assert [(f["x"], f["y"], f["w"], f["h"]) for f in faces] == [(4, 5, 20, 24), (30, 10, 12, 12)]
    assert [round(f["score"], 2) for f in faces] == [0.9, 0.7]


def test_topaz_bad_packed_metadata_names_field(env):
    _, c, _ = env
    for meta, field in (("[1, 2, 3]", "iai_packed_metadata"),
                        ("[[1, 2, 3, 4, 0.5, 9]]", "iai_packed_metadata[0]")):
        r = c.post("/api/v1/tools/face-recovery",
                   files={"image": ("t.png", png_bytes(), "image/png")},
                   data={"iai_packed_metadata": meta})
        assert r.status_code == 400 and r.json()["field"] == field, r.text


# --- CodeFormer Space ------------------------------------------------------------------------

def test_codeformer_image_url_absolute_and_bad_item_fails_alone(env):
    srv, c, _ = env
    good = png_bytes(32, 24)
    bad = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # a PNG signature with a broken body
    r = c.post("/api/process", data={"upscale": "1"},
               files=[("image", ("good.png", good, "image/png")),
                      ("image", ("bad.png", bad, "image/png")),
                      ("image", ("good2.png", good, "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["count"] == 2
    assert [x["original_name"] for x in body["results"]] == ["good.png", "good2.png"]
    assert body["errors"][0]["original_name"] == "bad.png"
    assert body["errors"][0]["code"] in ("corrupt_image", "unsupported_format")
    url = body["results"][0]["image_url"]
    assert url.startswith(srv.url + "/api/v1/download/")
    # a page on another origin can fetch it as is
    assert httpx.get(url, headers={"Origin": "https://elsewhere.example"}).status_code == 200
    # one image only, and it is bad: the request fails with that image's error
    r = c.post("/api/process", json={"image_base64": base64.b64encode(bad).decode()})
    assert r.status_code in (415, 422) and r.json()["status"] == "error"


def test_codeformer_public_url_setting(tmp_path):
    settings = make_settings(tmp_path / "home", public_url="https://restora.example/base/")
    with live_server(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/process", json={"image_base64": base64.b64encode(png_bytes()).decode(),
                                         "upscale": 1})
        url = r.json()["results"][0]["image_url"]
        assert url.startswith("https://restora.example/base/api/v1/download/")


def test_model_is_a_seed_value_when_faces_used_different_restorers() -> None:
    """``auto`` may restore faces with different restorers; ``model`` stays in the seed's enum
    (the restorer of most faces) and ``modelKind`` says "mixed"."""
    from restora.io.image import Image
    from restora.pipeline.results import EnhanceResult, Face
    from restora.service.tools import _face_fields

    def face(kind: str, model: str) -> Face:
        return Face(0, 0, 10, 10, 0.9, ((1.0, 1.0),) * 5,
                    restoration={"model": model, "kind": kind, "fidelity": None})

    result = EnhanceResult(image=Image(np.zeros((8, 8, 3), np.uint8)),
                           faces=[face("gfpgan", "gfpgan-v1.4"), face("codeformer", "codeformer"),
                                  face("gfpgan", "gfpgan-v1.4")],
                           faces_detected=3, model="gfpgan-v1.4+codeformer", model_kind="mixed")
    d = _face_fields(result)
    assert d["model"] == "gfpgan"
    assert d["modelKind"] == "mixed"
    assert d["modelId"] == "gfpgan-v1.4+codeformer"
