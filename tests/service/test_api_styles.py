"""Every API style's success and error shapes, API keys, CORS, body limit, missing models."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from service_helpers import live_server, make_settings, png_bytes, service_tools, wait_for


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), max_upload_bytes=400_000)
    with live_server(settings, tools=service_tools()) as server:
        yield server


@pytest.fixture
def c(srv):
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        yield client


def _post_tool(c, tool, settings=None, data=None, name="a.png"):
    form = {} if settings is None else {"settings": settings if isinstance(settings, str)
                                        else json.dumps(settings)}
    return c.post(f"/api/v1/tools/{tool}", data=form,
                  files={"file": (name, png_bytes() if data is None else data, "image/png")})


# --- SnapOtter ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tool,settings,field", [
    ("enhance-faces", {"strenght": 0.5}, "strenght"),
    ("enhance-faces", {"strength": 1.5}, "strength"),
    ("enhance-faces", {"strength": "0.5"}, "strength"),
    ("enhance-faces", {"model": "dalle"}, "model"),
    ("enhance-faces", {"upscale": 3}, "upscale"),
    ("enhance-faces", {"faces": [{"x": 1, "y": 2, "w": -3, "h": 4}]}, "faces.0.w"),
    ("enhance-faces", "{not json", "settings"),
    ("enhance-faces", "[1, 2]", "settings"),
    ("restore-photo", {"denoiseStrength": 101}, "denoiseStrength"),
    ("restore-photo", {"colourize": True}, "colourize"),
    ("restore-photo", {"mode": "extreme"}, "mode"),
])
def test_snapotter_settings_errors_name_the_field(c, tool, settings, field):
    r = _post_tool(c, tool, settings)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid_parameter" and body["field"] == field
    assert isinstance(body["error"], str) and field.split(".")[0] in body["error"]


def test_snapotter_input_errors(c):
    r = c.post("/api/v1/tools/enhance-faces", data={"settings": "{}"})
    assert r.status_code == 400 and r.json()["field"] == "file"
    r = _post_tool(c, "enhance-faces", data=b"")
    assert r.status_code == 400 and r.json()["code"] == "empty_file"
    r = _post_tool(c, "enhance-faces", data=b"%PDF-1.4 definitely not an image" * 4)
    assert r.status_code == 415 and r.json()["code"] == "unsupported_format"
    r = c.get("/api/v1/jobs/does-not-exist")
    assert r.status_code == 404 and r.json()["code"] == "job_not_found" and r.json()["error"]
    r = c.post("/api/v1/jobs/does-not-exist/cancel")
    assert r.status_code == 404


def test_body_limit_413_with_and_without_content_length(c):
    big = b"\x89PNG\r\n\x1a\n" + b"0" * 500_000
    r = _post_tool(c, "enhance-faces", data=big)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

    def chunks():
        yield b"x" * 300_000
        yield b"y" * 300_000

    r = c.post("/api/process", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["status"] == "error" and "limit" in r.json()["message"]


_STYLE_OF = {"/api/v1/tools/enhance-faces": "snapotter", "/api/v1/tools/restore-photo": "snapotter",
             "/api/v1/tools/face-recovery": "topaz", "/api/process": "codeformer"}


def _error_of(path: str, r: httpx.Response) -> tuple[str, str]:
    """(code, message) from the error body in the shape of ``path``'s API style."""
    body = r.json()
    style = _STYLE_OF[path]
    if style == "codeformer":
        assert body["status"] == "error", body
        return body["code"], body["message"]
    if style == "topaz":
        assert body["status"] == r.status_code and body["field"] == "body", body
        return body["code"], body["message"]
    assert body["field"] == "body", body
    return body["code"], body["error"]


@pytest.mark.parametrize("path", list(_STYLE_OF))
@pytest.mark.parametrize("kwargs, needle", [
    ({"content": b"not a multipart body",
      "headers": {"content-type": "multipart/form-data; boundary=X"}}, "invalid multipart"),
    ({"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, "boundary"),
    # a form field (not a file) past the parser's 1 MB part limit, in a body within ours
    ({"data": {"settings": "x" * 1_100_000},
      "files": {"file": ("a.png", png_bytes(), "image/png")}}, "as file uploads"),
])
def test_body_parser_errors_are_documented_codes_in_each_style(big_srv, path, kwargs, needle):
    """The form parser's own refusals are a 400 ``invalid_parameter`` (``field: body``) with a
    human message in the route's error shape, not an undocumented ``http_error``."""
    with httpx.Client(base_url=big_srv.url, timeout=30) as c:
        r = c.post(path, **kwargs)
    assert r.status_code == 400, r.text
    code, message = _error_of(path, r)
    assert code == "invalid_parameter", r.text
    assert needle in message.lower(), r.text


@pytest.fixture(scope="module")
def big_srv(tmp_path_factory):
    """A server whose body limit is above the form parser's 1 MB per-field limit."""
    settings = make_settings(tmp_path_factory.mktemp("home"), max_upload_bytes=4_000_000)
    with live_server(settings, tools=service_tools()) as server:
        yield server


# --- CodeFormer Space --------------------------------------------------------------------------

def test_codeformer_health_and_process_multipart_and_base64(c):
    assert c.get("/api/health").json() == {"status": "online", "device": "cpu"}
    a, b = png_bytes(40, 30, seed=5), png_bytes(32, 32, seed=6)
    r = c.post("/api/process", files=[("image", ("one.png", a, "image/png")),
                                      ("image", ("two.png", b, "image/png"))],
               data={"fidelity": "0.7", "upscale": "1", "return_base64": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["count"] == 2
    names = [x["original_name"] for x in body["results"]]
    assert names == ["one.png", "two.png"]
    for item, src in zip(body["results"], (a, b)):
        assert item["filename"].endswith(".png")
        assert item["image_url"].startswith(c.base_url.join("/api/v1/").__str__())
        decoded = base64.b64decode(item["image_base64"])
        assert decoded == c.get(item["image_url"]).content
        out = np.asarray(PILImage.open(io.BytesIO(decoded)))
        assert out.shape == np.asarray(PILImage.open(io.BytesIO(src))).shape

    r = c.post("/api/process", json={"image_base64": base64.b64encode(a).decode(),
                                     "fidelity": 0.3})
    assert r.status_code == 200 and r.json()["count"] == 1
    assert "image_base64" not in r.json()["results"][0]
    r = c.post("/api/process", json={"images_base64": [
        "data:image/png;base64," + base64.b64encode(a).decode(), base64.b64encode(b).decode()]})
    assert r.json()["count"] == 2


def test_codeformer_job_cancelled_or_timed_out_meanwhile_is_not_a_server_error(tmp_path):
    """A job of a synchronous /api/process that ends cancelled (another request, the web page)
    or past ``job_timeout_s`` carries no HTTP status of its own: the answer is 409 / 504 with
    the job's code, not 500."""
    import threading

    settings = make_settings(tmp_path / "home", job_timeout_s=1.5)
    with live_server(settings, tools=service_tools(step_s=0.3)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        img = base64.b64encode(png_bytes(24, 16)).decode()
        answers: list[httpx.Response] = []
        sync = threading.Thread(target=lambda: answers.append(
            c.post("/api/process", json={"image_base64": img, "upscale": 1})))
        sync.start()
        job = wait_for(lambda: c.get("/api/v1/jobs", params={"status": "processing"}
                                     ).json()["jobs"])[0]
        assert c.post(f"/api/v1/jobs/{job['jobId']}/cancel").json()["status"] == "canceled"
        sync.join(30)
        r = answers[0]
        assert r.status_code == 409 and r.json()["code"] == "cancelled", r.text
        r = c.post("/api/process", json={"image_base64": img, "upscale": 1})  # 3 s of work
        assert r.status_code == 504 and r.json()["code"] == "timeout", r.text
        assert r.json()["status"] == "error"


@pytest.mark.parametrize("kwargs,needle", [
    ({"json": {"fidelity": 0.5}}, "image"),
    ({"json": {"image_base64": "!!!notbase64"}}, "image_base64"),
    ({"json": {"image_base64": base64.b64encode(b"GIF89a-not-really").decode()}}, "image"),
    ({"json": {"image_base64": base64.b64encode(png_bytes()).decode(), "upscale": 3}},
     "upscale"),
    ({"json": {"image_base64": base64.b64encode(png_bytes()).decode(), "fidelity": 2}},
     "fidelity"),
    ({"json": {"image_base64": base64.b64encode(png_bytes()).decode(), "colour": 1}}, "colour"),
    ({"files": {"image": ("a.png", png_bytes(), "image/png")}, "data": {"upscale": "two"}},
     "upscale"),
    # digits str.isdigit() accepts and int() does not: superscripts, more than 4300 of them
    ({"files": {"image": ("a.png", png_bytes(), "image/png")}, "data": {"upscale": "\u00b2"}},
     "upscale"),
    ({"files": {"image": ("a.png", png_bytes(), "image/png")}, "data": {"upscale": "2" * 5000}},
     "upscale"),
    ({"content": b"not json", "headers": {"content-type": "application/json"}}, "multipart"),
])
def test_codeformer_errors(c, kwargs, needle):
    r = c.post("/api/process", **kwargs)
    assert r.status_code in (400, 415, 422), r.text
    body = r.json()
    assert body["status"] == "error" and isinstance(body["message"], str)
    assert needle.lower() in body["message"].lower()


# --- Topaz -------------------------------------------------------------------------------------

def test_topaz_face_recovery_grain_resize_credits_and_client_faces(c):
    meta = json.dumps({"faces": [{"x": 4, "y": 5, "w": 20, "h": 24, "score": 0.9},
                                 {"box": [30, 10, 12, 12], "score": 0.7}]})
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(64, 48), "image/png")},
               data={"grain": "true", "grain_model": "silver", "grain_strength": "0.4",
                     "grain_size": "2", "grain_density": "0.8", "seed": "9",
                     "iai_packed_metadata": meta, "output_width": "1600",
                     "output_height": "1200", "output_format": "jpeg"})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["async"] is True and accepted["process_id"] == accepted["jobId"]
    assert accepted["estimatedCredits"] == 1
    snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{accepted['jobId']}").json())["status"]
                    in ("succeeded", "failed") and s)
    assert snap["status"] == "succeeded", snap
    res = snap["result"]
    assert (res["width"], res["height"]) == (1600, 1200) and res["credits"] == 1
    assert (res["originalWidth"], res["originalHeight"]) == (64, 48)
    assert res["outputMegapixels"] == 1.92
    assert res["facesDetected"] == 2 and res["faces"][1]["x"] == 30
    img = PILImage.open(io.BytesIO(c.get(res["downloadUrl"]).content))
    assert img.format == "JPEG" and img.size == (1600, 1200)


@pytest.mark.parametrize("data,field", [
    ({"grain_model": "sepia"}, "grain_model"),
    ({"grain_size": "9"}, "grain_size"),
    ({"grain_density": "0.01"}, "grain_density"),
    ({"grain": "maybe"}, "grain"),
    ({"strength": "strong"}, "strength"),
    ({"output_width": "0"}, "output_width"),
    ({"iai_packed_metadata": "{oops"}, "iai_packed_metadata"),
    ({"iai_packed_metadata": '[{"x": 1, "y": 1, "w": 0, "h": 3}]'}, "iai_packed_metadata[0].w"),
    ({"sharpen": "1"}, "sharpen"),
])
def test_topaz_errors_name_the_field(c, data, field):
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("t.png", png_bytes(), "image/png")}, data=data)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid_parameter" and body["field"] == field
    assert body["status"] == 400 and isinstance(body["message"], str)


# --- cross-cutting: CORS, keys, docs -----------------------------------------------------------

def test_cors_preflight_and_headers_on_every_style(c):
    for path in ("/api/v1/tools/enhance-faces", "/api/process", "/v2/artworks/face-refiner",
                 "/api/v1/tools/face-recovery", "/api/health"):
        r = c.options(path, headers={"Origin": "https://app.example",
                                     "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200, path
        assert r.headers["access-control-allow-origin"] in ("*", "https://app.example")
        assert "POST" in r.headers["access-control-allow-methods"]
    r = c.get("/api/health", headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    r = c.get("/api/v1/jobs/nope", headers={"Origin": "https://app.example"})
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == "*"


def test_refused_cors_preflight_answers_in_the_api_error_shape(tmp_path):
    """A preflight from an origin (or with a method or header) the server does not allow gets a
    400 with code cors_not_allowed in the path's API style, not Starlette's plain text; allowed
    origins and simple requests are unchanged."""
    settings = make_settings(tmp_path / "home", cors_origins=["https://ok.example"])
    with live_server(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        pre = {"Access-Control-Request-Method": "POST"}
        r = c.options("/api/v1/tools/enhance-faces", headers={"Origin": "https://evil.example",
                                                              **pre})
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["code"] == "cors_not_allowed" and body["refused"] == ["origin"]
        assert "https://evil.example" in body["error"] and "RESTORA_CORS_ORIGINS" in body["error"]
        assert "access-control-allow-origin" not in r.headers
        r = c.options("/v2/artworks/face-refiner", headers={"Origin": "https://evil.example",
                                                            **pre})
        assert r.status_code == 400 and r.json()["statusCode"] == 400  # the Tengrai shape
        assert r.json()["code"] == "cors_not_allowed"
        r = c.options("/api/process", headers={"Origin": "https://evil.example", **pre})
        assert r.json() == {"status": "error", "code": "cors_not_allowed",
                            "message": r.json()["message"]}
        r = c.options("/api/v1/tools/enhance-faces", headers={"Origin": "https://ok.example",
                                                              **pre})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://ok.example"
        r = c.get("/api/health", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_openapi_lists_every_route(c):
    paths = c.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/tools/enhance-faces", "/api/v1/tools/restore-photo",
              "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/progress",
              "/api/v1/jobs/{job_id}/cancel", "/api/v1/download/{job_id}/{filename}",
              "/api/process", "/api/health", "/v2/artworks/face-refiner",
              "/v2/artworks/{artwork_id}", "/api/v1/tools/face-recovery"):
        assert p in paths


def test_api_keys(tmp_path):
    settings = make_settings(tmp_path / "home", api_keys=["k-one", "k-two"])
    with live_server(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/api/health").status_code == 200  # public
        r = _post_tool(c, "enhance-faces")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.post("/api/process", json={})
        assert r.status_code == 401 and r.json()["status"] == "error"
        r = c.post("/v2/artworks/face-refiner", json={}, headers={"Authorization": "Bearer bad"})
        assert r.status_code == 401 and r.json()["statusCode"] == 401
        assert r.json()["error"] == "Unauthorized"
        r = c.post("/api/v1/tools/face-recovery", headers={"X-API-Key": "nope"})
        assert r.status_code == 401 and r.json()["status"] == 401
        r = c.post("/api/v1/tools/enhance-faces", headers={"Authorization": "Bearer k-two"},
                   files={"file": ("a.png", png_bytes(), "image/png")})
        assert r.status_code == 202
        job = r.json()["jobId"]
        assert c.get(f"/api/v1/jobs/{job}", headers={"X-API-Key": "k-one"}).status_code == 200
        assert c.get(f"/api/v1/jobs/{job}").status_code == 401
        # EventSource cannot send headers: the key may come as a query parameter
        text = c.get(f"/api/v1/jobs/{job}/progress?api_key=k-one").text
        assert "event: complete" in text
        # preflight never needs a key
        r = c.options("/api/process", headers={"Origin": "https://x.example",
                                               "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200


def test_missing_model_is_503_naming_bundle_and_command(tmp_path, monkeypatch):
    from restora.models.runtime import Runtime
    from restora.service.tools import default_tools

    monkeypatch.delenv("RESTORA_MODELS", raising=False)
    settings = make_settings(tmp_path / "home", device="cpu")
    runtime = Runtime(settings)
    with live_server(settings, tools=default_tools(), runtime=runtime) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = _post_tool(c, "enhance-faces", {"model": "codeformer"})
        assert r.status_code == 503
        body = r.json()
        assert body["code"] == "model_not_installed"
        assert body["bundle"] and f"restora models pull {body['bundle']}" in body["error"]
        r = c.post("/api/process", json={"image_base64": base64.b64encode(png_bytes()).decode()})
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert "restora models pull" in r.json()["message"]


def test_web_page_mounted_at_root_when_present(c):
    from restora.service.app import STATIC_DIR

    r = c.get("/")
    if (STATIC_DIR / "index.html").is_file():
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    else:
        assert r.status_code == 404
    # API routes still win over the static mount, and unknown API paths are JSON errors
    assert c.get("/api/health").json()["status"] == "online"
    r = c.get("/api/v1/unknown")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def _recovery_ids(c) -> set[str]:
    return {j["jobId"] for j in c.get("/api/v1/jobs", params={"tool": "face-recovery",
                                                              "limit": 100}).json()["jobs"]}


def _webp_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buf, "WEBP")
    return buf.getvalue()


def test_a_result_wider_than_its_format_allows_is_refused_at_submission(c):
    """WebP stores at most 16383 px per side: a 17000 px wide WebP result is answered 413
    ``output_too_large`` by the submission itself (the header gives the input's size), with
    the message the job would fail with, and no job is created. The format may be asked for
    (``output_format``) or follow the input (``auto`` on a WebP keeps WebP)."""
    before = _recovery_ids(c)
    for name, data, form in (
            ("t.png", png_bytes(64, 8), {"output_width": "17000", "output_format": "webp"}),
            ("t.webp", _webp_bytes(64, 8), {"output_width": "17000"})):
        r = c.post("/api/v1/tools/face-recovery", files={"image": (name, data, "image/png")},
                   data=form)
        assert r.status_code == 413, r.text
        body = r.json()
        assert body["code"] == "output_too_large" and body["status"] == 413, body
        assert "16,383" in body["message"] and "PNG" in body["message"], body
    assert _recovery_ids(c) == before


def test_a_job_past_the_submission_check_still_fails_before_any_work(srv, c):
    """The job repeats the check when it starts: a job submitted without the API's check (an
    older node, a row written by another version) fails with the same error."""
    from restora.service import params as P

    opts = P.validate(P.FaceRecoverySettings, {"output_width": 17000, "output_format": "webp"})
    record = srv.manager.submit("face-recovery", api="topaz",
                                params=opts.model_dump(mode="json", exclude={"iai_packed_metadata"}),
                                options=opts.options(None), input_bytes=png_bytes(64, 8),
                                input_name="t.png")
    snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{record.id}").json())["status"]
                    in ("succeeded", "failed") and s)
    assert snap["status"] == "failed", snap
    assert snap["error"]["code"] == "output_too_large", snap
    assert "16,383" in snap["error"]["message"] and "PNG" in snap["error"]["message"]