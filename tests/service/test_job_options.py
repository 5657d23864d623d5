"""Every API style stores validated pipeline options on the job; the worker validates again."""

from __future__ import annotations

import json

import httpx
import pytest

from restora.pipeline.options import EnhanceOptions, PhotoOptions
from restora.service.store import FAILED
from service_helpers import (http_fixture_server, live_server, make_settings, png_bytes,
                             service_tools, wait_for)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), allow_loopback_fetch=True)
    with live_server(settings, tools=service_tools()) as server:
        yield server


def _options(srv, job_id):
    return srv.manager.store.get(job_id).options


def test_each_api_style_stores_its_options(srv):
    png = png_bytes()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/tools/enhance-faces", files={"file": ("a.png", png, "image/png")},
                   data={"settings": json.dumps({"strength": 0.3, "onlyCenterFace": True,
                                                 "detector": "auto", "orientation": "search"})})
        assert _options(srv, r.json()["jobId"]) == EnhanceOptions(
            strength=0.3, only_center_face=True, orientation="search").model_dump(mode="json")

        r = c.post("/api/v1/tools/restore-photo", files={"file": ("a.png", png, "image/png")},
                   data={"settings": json.dumps({"denoiseStrength": 60, "mode": "heavy"})})
        assert _options(srv, r.json()["jobId"]) == PhotoOptions(
            denoise_strength=60).model_dump(mode="json")

        r = c.post("/api/v1/tools/face-recovery", files={"image": ("a.png", png, "image/png")},
                   data={"creativity": "0.25", "seed": "7"})
        assert _options(srv, r.json()["jobId"]) == EnhanceOptions(  # Topaz strength: 1.0
            strength=1.0, fidelity=0.75, seed=7).model_dump(mode="json")

        r = c.post("/api/process", files={"image": ("a.png", png, "image/png")},
                   data={"background_enhance": "true"})
        assert r.status_code == 200, r.text
        job_id = r.json()["results"][0]["image_url"].split("/")[-2]
        assert _options(srv, job_id) == EnhanceOptions(
            model="codeformer", upscale=2, bg_upscale=True).model_dump(mode="json")

        def serve_png(req):
            req.send_response(200)
            req.send_header("Content-Type", "image/png")
            req.end_headers()
            req.wfile.write(png)

        with http_fixture_server(serve_png) as base:
            r = c.post("/v2/artworks/face-refiner",
                       json={"imageUrl": f"{base}/a.png", "denoising": 2, "seed": 10})
            assert r.status_code == 202, r.text
            opts = _options(srv, r.json()["id"])
        assert opts == EnhanceOptions(strength=0.4, seed=(10 * 6) // 5 + 17).model_dump(
            mode="json")


def test_worker_revalidates_stored_options(srv):
    """A row whose options no longer validate (another version wrote it) fails, it never runs
    the pipeline with them."""
    m = srv.manager
    job_id = "00000000-0000-4000-8000-000000000001"
    d = m.job_dir(job_id)
    (d / "input").mkdir(parents=True)
    (d / "output").mkdir()
    (d / "input" / "a.png").write_bytes(png_bytes())
    m.store.create(job_id, tool="enhance-faces", api="snapotter", params={},
                   options={"strength": 7}, input_name="a.png")
    m.queue.submit(job_id)
    record = wait_for(lambda: (r := m.store.get(job_id)) and r.is_final and r)
    assert record.status == FAILED
    assert record.error["code"] == "invalid_parameter" and record.error["field"] == "strength"
