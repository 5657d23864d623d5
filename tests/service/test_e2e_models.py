"""End to end through the real face pipeline with the tiny conformance models (custom manifest).

One server process-wide Runtime (created by the app at startup, as ``restora serve`` does);
jobs run real detection, alignment, GFPGAN/CodeFormer and pasting on real photos.
"""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image as PILImage

from conftest import shared_path
from service_helpers import http_fixture_server, live_server, make_settings, serve_files, wait_for
from tiny_models import write_tiny_manifest

from restora.service.app import RUNTIME_FROM_SETTINGS
from restora.service.tools import default_tools


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    photos = shared_path("testdata", "photos")
    tmp = tmp_path_factory.mktemp("e2e")
    manifest = write_tiny_manifest(tmp)
    settings = make_settings(tmp / "home", models=manifest, device="cpu", threads=2,
                             allow_loopback_fetch=True)
    served = {"/04.jpg": (photos / "04.jpg").read_bytes()}
    with http_fixture_server(serve_files(served)) as img_base, \
            live_server(settings, tools=default_tools(),
                        runtime=RUNTIME_FROM_SETTINGS) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        yield srv, client, photos, img_base


def _final(c, job_id):
    return wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s, timeout=120, interval=0.1)


def test_models_loaded_once_in_app_runtime(env):
    srv, c, _, _ = env
    assert c.get("/api/health").json() == {"status": "online", "device": "cpu"}
    assert srv.app.state.runtime.registry.default("face-restoration").id == "tiny-gfpgan"


def test_snapotter_enhance_real_pipeline(env):
    srv, c, photos, _ = env
    src = (photos / "03.jpg").read_bytes()
    r = c.post("/api/v1/tools/enhance-faces",
               files={"file": ("03.jpg", src, "image/jpeg")},
               data={"settings": json.dumps({"model": "gfpgan", "seed": 3, "strength": 1.0})})
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "succeeded", snap
    res = snap["result"]
    assert res["facesDetected"] == 1 and len(res["faces"]) == 1
    # the seed's `model` is the restorer kind; the registry id is `modelId`
    assert res["model"] == "gfpgan" and res["modelId"] == "tiny-gfpgan"
    # enhance-faces output is always PNG, <stem>_enhanced.png (SnapOtter document)
    assert res["downloadUrl"].endswith("/03_enhanced.png") and res["format"] == "png"
    img = PILImage.open(io.BytesIO(c.get(res["downloadUrl"]).content))
    assert img.format == "PNG" and img.size == (400, 225)
    assert res["originalSize"] == len(src)
    # the same runtime served the job: the restorer is now loaded and cached
    assert "tiny-gfpgan" in srv.app.state.runtime.loaded()


def test_topaz_client_boxes_grain_and_resize_real_pipeline(env):
    srv, c, photos, _ = env
    face = c.post("/api/v1/tools/enhance-faces",
                  files={"file": ("03.jpg", (photos / "03.jpg").read_bytes(), "image/jpeg")})
    box = _final(c, face.json()["jobId"])["result"]["faces"][0]
    meta = json.dumps([{k: box[k] for k in ("x", "y", "w", "h", "score")}])
    r = c.post("/api/v1/tools/face-recovery",
               files={"image": ("03.jpg", (photos / "03.jpg").read_bytes(), "image/jpeg")},
               data={"iai_packed_metadata": meta, "grain": "true", "grain_model": "gaussian",
                     "output_width": "800", "output_format": "png", "seed": "4"})
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "succeeded", snap
    res = snap["result"]
    assert (res["width"], res["height"]) == (800, 450)
    assert res["credits"] == 1 and res["facesDetected"] == 1
    assert res["landmarkSource"] in ("detector", "box", "mixed")
    assert PILImage.open(io.BytesIO(c.get(res["downloadUrl"]).content)).size == (800, 450)


def test_tengrai_same_seed_same_output_real_pipeline(env):
    srv, c, _, img_base = env

    def run(seed):
        art = c.post("/v2/artworks/face-refiner",
                     json={"imageUrl": f"{img_base}/04.jpg", "seed": seed, "model": "gfpgan",
                           "outputFormat": "png"}).json()
        done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                        in ("succeeded", "failed") and a, timeout=120, interval=0.1)
        assert done["status"] == "succeeded", done
        return c.get(done["results"][0]).content

    assert run(11) == run(11)


def test_codeformer_space_process_real_pipeline(env):
    srv, c, photos, _ = env
    r = c.post("/api/process", files={"image": ("04.jpg", (photos / "04.jpg").read_bytes(),
                                                "image/jpeg")},
               data={"fidelity": "0.7", "upscale": "2"})
    assert r.status_code == 200, r.text
    item = r.json()["results"][0]
    img = PILImage.open(io.BytesIO(c.get(item["image_url"]).content))
    assert img.size == (450, 450)


def test_restore_photo_real_pipeline_and_colorize_needs_model(env):
    srv, c, photos, _ = env
    src = (photos / "05.jpg").read_bytes()
    r = c.post("/api/v1/tools/restore-photo", files={"file": ("05.jpg", src, "image/jpeg")},
               data={"settings": json.dumps({"fidelity": 0.6, "denoiseStrength": 60})})
    assert r.status_code == 202, r.text
    snap = _final(c, r.json()["jobId"])
    assert snap["status"] == "succeeded", snap
    res = snap["result"]
    for key in ("width", "height", "steps", "scratchCoverage", "facesEnhanced", "isGrayscale",
                "colorized", "downloadUrl", "previewUrl", "originalSize", "processedSize"):
        assert key in res
    assert (res["width"], res["height"]) == (191, 264)
    assert res["facesEnhanced"] >= 1 and res["colorized"] is False
    assert "face_enhancement" in res["steps"] and not any("-" in s for s in res["steps"])
    assert res["downloadUrl"].endswith("/05_restored.jpg")
    img = PILImage.open(io.BytesIO(c.get(res["downloadUrl"]).content))
    assert img.format == "JPEG" and img.size == (191, 264)
    # no colorization model in the tiny manifest: refused before the job is accepted
    r = c.post("/api/v1/tools/restore-photo", files={"file": ("05.jpg", src, "image/jpeg")},
               data={"settings": json.dumps({"colorize": True})})
    assert r.status_code == 503
    assert r.json()["code"] == "model_not_installed" and "restora models pull" in r.json()["error"]


def test_preload_loads_installed_face_models(env):
    from restora.service.app import preload_models

    srv, _, _, _ = env
    loaded = preload_models(srv.app.state.runtime)
    assert {"tiny-gfpgan", "tiny-codeformer", "tiny-parsenet",
            "retinaface-mobilenet0.25-facelibcfg"} <= set(loaded)
    assert set(loaded) <= set(srv.app.state.runtime.loaded())
