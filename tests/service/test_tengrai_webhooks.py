"""Tengrai face-refiner and Standard Webhooks delivery to a real local receiver."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from restora.service.params import refiner_seed
from service_helpers import http_fixture_server, live_server, make_settings, png_bytes, wait_for

IMAGE = png_bytes(72, 56, seed=3)


def _serve_image(req):
    body = b"this is not an image" if req.path.startswith("/bad") else IMAGE
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


class Receiver:
    """Records every POST; answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict, bytes, int]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, req) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length", "0")))
        with self.lock:
            status = 500 if len(self.calls) < self.fail_first else 204
            self.calls.append(({k.lower(): v for k, v in req.headers.items()}, body, status))
        req.send_response(status)
        req.send_header("Content-Length", "0")
        req.end_headers()


@pytest.fixture
def env(tmp_path):
    settings = make_settings(tmp_path / "home", allow_loopback_fetch=True,
                             allow_loopback_webhooks=True)
    with http_fixture_server(_serve_image) as img_base, live_server(settings) as srv:
        yield srv, img_base


def test_refiner_artwork_webhook_signed_retried_and_once(env):
    srv, img_base = env
    receiver = Receiver(fail_first=1)
    with http_fixture_server(receiver) as hook_base, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/v2/artworks/face-refiner",
                   json={"imageUrl": f"{img_base}/photo.png", "seed": 42, "denoising": 2,
                         "webhook": f"{hook_base}/hook", "outputFormat": "webp"})
        assert r.status_code == 202, r.text
        art = r.json()
        assert art["artworkType"] == "face_refiner" and art["status"] == "starting"
        assert art["parameters"]["seed"] == 42 and art["parameters"]["denoising"] == 2
        assert art["results"] == [] and art["duration"] == 0 and art["createdAt"]

        done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                        == "succeeded" and a)
        assert done["duration"] > 0
        assert isinstance(done["results"][0], str)  # Tengrai: results is string[]
        res = done["resultDetails"][0]
        assert res["url"] == done["results"][0] and res["url"].startswith(srv.url + "/api/")
        assert res["format"] == "webp" and res["seed"] == refiner_seed(42) == 67
        assert c.get(res["url"]).content[8:12] == b"WEBP"

        # first attempt answered 500, the retry 204; no more after that
        wait_for(lambda: len(receiver.calls) >= 2, timeout=10)
        time.sleep(0.8)
        assert [s for _, _, s in receiver.calls] == [500, 204]

    wh = Webhook(srv.settings.webhook_secret)
    for headers, body, _ in receiver.calls:
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            assert name in headers
        payload = wh.verify(body, headers)  # raises if the signature is wrong
        # the body is the artwork itself (Tengrai: "POST the final artwork result")
        assert payload["id"] == art["id"] and payload["status"] == "succeeded"
        assert payload["artworkType"] == "face_refiner" and len(payload["results"]) == 1
    # the retry is the same message (same id), so receivers can de-duplicate
    assert receiver.calls[0][0]["webhook-id"] == receiver.calls[1][0]["webhook-id"]
    tampered = dict(receiver.calls[0][0])
    with pytest.raises(Exception):
        wh.verify(receiver.calls[0][1] + b" ", tampered)


def test_same_seed_same_output_and_seed_transform(env):
    srv, img_base = env
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        def run(seed):
            art = c.post("/v2/artworks/face-refiner",
                         json={"imageUrl": f"{img_base}/p.png", "seed": seed,
                               "outputFormat": "png"}).json()
            done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                            in ("succeeded", "failed") and a)
            assert done["status"] == "succeeded", done
            return done["resultDetails"][0], c.get(done["results"][0]).content

        r1, a = run(7)
        r2, b = run(7)
        r3, d = run(8)
        assert a == b and a != d
        assert r1["seed"] == r2["seed"] == 7 * 6 // 5 + 17 == 25
        assert r3["seed"] == 26


def test_refiner_validation_and_errors_in_tengrai_shape(env):
    srv, img_base = env
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        cases = [
            ({"imageUrl": f"{img_base}/p.png", "denoising": 6}, "denoising"),
            ({"imageUrl": f"{img_base}/p.png", "seed": 0}, "seed"),
            ({"imageUrl": f"{img_base}/p.png", "seed": 2147483648}, "seed"),
            ({"imageUrl": f"{img_base}/p.png", "outputFormat": "gif"}, "outputFormat"),
            ({"imageUrl": f"{img_base}/p.png", "colour": 1}, "colour"),
            ({}, "imageUrl"),
        ]
        for body, field in cases:
            r = c.post("/v2/artworks/face-refiner", json=body)
            assert r.status_code == 400, body
            j = r.json()
            assert j["statusCode"] == 400 and j["error"] == "Bad Request"
            assert field in j["message"] and j.get("field") == field
        r = c.get("/v2/artworks/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 404
        assert r.json() == {"message": r.json()["message"], "statusCode": 404,
                            "error": "Not Found", "code": "job_not_found"}


def test_webhook_must_be_https_public_without_the_setting(tmp_path):
    settings = make_settings(tmp_path / "home", allow_loopback_fetch=True)
    with http_fixture_server(_serve_image) as img_base, live_server(settings) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        for hook in ("http://127.0.0.1:9/h", "https://127.0.0.1/h", "https://10.0.0.1/h",
                     "https://[::1]/h", "ftp://x/h", "https://[::1/h", "https://x:99999/h"):
            r = c.post("/v2/artworks/face-refiner",
                       json={"imageUrl": f"{img_base}/p.png", "webhook": hook})
            assert r.status_code == 400, (hook, r.text)
            assert r.json()["message"].startswith("webhook:")
            r = c.post("/api/v1/tools/face-recovery",
                       files={"image": ("a.png", png_bytes(), "image/png")},
                       data={"webhook_url": hook})
            assert r.status_code == 400, (hook, r.text)
            assert r.json()["field"] == "webhook_url"


def test_failed_job_webhook_once(env):
    srv, img_base = env
    receiver = Receiver()
    with http_fixture_server(receiver) as hook_base, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        art = c.post("/v2/artworks/face-refiner",
                     json={"imageUrl": f"{img_base}/bad.png", "webhook": f"{hook_base}/h"}).json()
        done = wait_for(lambda: (a := c.get(f"/v2/artworks/{art['id']}").json())["status"]
                        == "failed" and a)
        assert "not an image" in done["error"] or "format" in done["error"]
        wait_for(lambda: len(receiver.calls) >= 1, timeout=10)
        time.sleep(0.8)
        # cancelling a failed artwork changes nothing and sends nothing
        assert c.post(f"/v2/artworks/{art['id']}/cancel").json()["status"] == "failed"
        time.sleep(0.5)
    assert len(receiver.calls) == 1
    payload = Webhook(srv.settings.webhook_secret).verify(receiver.calls[0][1],
                                                          receiver.calls[0][0])
    assert payload["id"] == art["id"] and payload["status"] == "failed" and payload["error"]


def test_topaz_job_webhook_carries_result_with_credits(env):
    srv, _ = env
    receiver = Receiver()
    with http_fixture_server(receiver) as hook_base, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/tools/face-recovery",
                   files={"image": ("t.png", IMAGE, "image/png")},
                   data={"webhook_url": f"{hook_base}/topaz", "output_height": "112"})
        assert r.status_code == 202, r.text
        wait_for(lambda: len(receiver.calls) >= 1, timeout=10)
        time.sleep(0.5)
    assert len(receiver.calls) == 1
    payload = Webhook(srv.settings.webhook_secret).verify(receiver.calls[0][1],
                                                          receiver.calls[0][0])
    assert payload["type"] == "job.succeeded"
    data = payload["data"]
    assert data["jobId"] == r.json()["jobId"] and data["status"] == "succeeded"
    assert data["result"]["credits"] == 1
    assert (data["result"]["width"], data["result"]["height"]) == (144, 112)


def test_pending_deliveries_resume_after_restart_and_give_up(tmp_path):
    """Deliveries live in the store: a new dispatcher (a restarted server) sends what is pending,
    and a receiver that keeps failing is given up after ``webhook_max_attempts``."""
    from restora.service.store import JobStore
    from restora.service.webhooks import WebhookDispatcher

    settings = make_settings(tmp_path / "home", allow_loopback_webhooks=True,
                             webhook_max_attempts=3, webhook_backoff_s=0.05)
    settings.service_dir.mkdir(parents=True)
    store = JobStore(settings.effective_database_url)
    ok, bad = Receiver(), Receiver(fail_first=100)
    try:
        with http_fixture_server(ok) as ok_base, http_fixture_server(bad) as bad_base:
            body = '{"type":"job.succeeded","data":{"id":"j1"}}'
            assert store.add_delivery("msg_1", "j1", "succeeded", f"{ok_base}/h", body)
            assert not store.add_delivery("msg_dup", "j1", "succeeded", f"{ok_base}/h", body)
            assert store.add_delivery("msg_2", "j2", "failed", f"{bad_base}/h", body)
            dispatcher = WebhookDispatcher(settings, store, {})
            dispatcher.start()
            try:
                wait_for(lambda: store.get_delivery("msg_1")["state"] == "delivered")
                gave_up = wait_for(lambda: (d := store.get_delivery("msg_2"))["state"] == "failed"
                                   and d)
            finally:
                dispatcher.stop()
    finally:
        store.close()
    assert gave_up["attempts"] == 3 and gave_up["last_error"] == "HTTP 500"
    assert len(ok.calls) == 1 and ok.calls[0][0]["webhook-id"] == "msg_1"
    assert Webhook(settings.webhook_secret).verify(ok.calls[0][1], ok.calls[0][0])["data"] == {
        "id": "j1"}
    assert len(bad.calls) == 3
