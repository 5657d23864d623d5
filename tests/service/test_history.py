"""Job history against a real server: list (newest first, paginated, per API key), delete,
input preview for formats a browser cannot show, and the zip of several results."""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from service_helpers import live_server, make_settings, png_bytes, service_tools, wait_for


def tiff_bytes(width: int = 90, height: int = 60) -> bytes:
    arr = np.random.default_rng(3).integers(0, 65535, (height, width, 3), dtype=np.uint16)
    buf = io.BytesIO()
    import tifffile

    tifffile.imwrite(buf, arr, photometric="rgb")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("home"), api_keys=["alice-key", "bob-key"])
    with live_server(settings, tools=service_tools()) as srv:
        yield srv


def _client(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30,
                        headers={"Authorization": f"Bearer {key}"})


def _submit(c: httpx.Client, data: bytes, name: str) -> str:
    r = c.post("/api/v1/tools/enhance-faces", files={"file": (name, data, "image/png")})
    assert r.status_code == 202, r.text
    job_id = r.json()["jobId"]
    wait_for(lambda: c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded")
    return job_id


def test_list_is_newest_first_paginated_and_scoped_by_key(server):
    with _client(server, "alice-key") as alice, _client(server, "bob-key") as bob:
        mine = [_submit(alice, png_bytes(40 + i, 30, seed=i), f"a{i}.png") for i in range(5)]
        theirs = _submit(bob, png_bytes(50, 40), "b.png")

        first = alice.get("/api/v1/jobs", params={"limit": 2}).json()
        assert [j["jobId"] for j in first["jobs"]] == mine[::-1][:2]
        assert first["jobs"][0]["inputName"] == "a4.png"
        assert first["jobs"][0]["status"] == "succeeded"
        assert first["jobs"][0]["thumbnailUrl"].endswith("/preview.webp")
        assert first["nextCursor"]
        seen = [j["jobId"] for j in first["jobs"]]
        cursor = first["nextCursor"]
        while cursor:
            page = alice.get("/api/v1/jobs", params={"limit": 2, "cursor": cursor}).json()
            seen += [j["jobId"] for j in page["jobs"]]
            cursor = page["nextCursor"]
        assert seen == mine[::-1]  # every job once, newest first, none of Bob's
        assert [j["jobId"] for j in bob.get("/api/v1/jobs").json()["jobs"]] == [theirs]

        # Another key's job cannot be deleted (it does not exist for that key).
        assert alice.delete(f"/api/v1/jobs/{theirs}").status_code == 404
        assert bob.get(f"/api/v1/jobs/{theirs}").status_code == 200

        bad = alice.get("/api/v1/jobs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
        assert alice.get("/api/v1/jobs", params={"limit": 0}).status_code in (400, 422)
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/api/v1/jobs").status_code == 401


def test_delete_removes_job_files_and_history_entry(server):
    with _client(server, "alice-key") as c:
        job_id = _submit(c, png_bytes(30, 30, seed=9), "gone.png")
        result = c.get(f"/api/v1/jobs/{job_id}").json()["result"]
        assert c.get(result["downloadUrl"]).status_code == 200
        assert c.delete(f"/api/v1/jobs/{job_id}").status_code == 204
        assert c.get(f"/api/v1/jobs/{job_id}").status_code == 404
        assert c.get(result["downloadUrl"]).status_code == 404
        assert job_id not in [j["jobId"] for j in c.get("/api/v1/jobs?limit=100").json()["jobs"]]
        assert not server.manager.job_dir(job_id).exists()


def test_input_preview_makes_tiff_viewable_and_zip_bundles_results(server):
    with _client(server, "alice-key") as c:
        tif = _submit(c, tiff_bytes(), "scan.tif")
        png = _submit(c, png_bytes(64, 48, seed=4), "scan.png")
        r = c.get(f"/api/v1/jobs/{tif}/input.webp")
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
        img = PILImage.open(io.BytesIO(r.content))
        assert img.format == "WEBP" and img.size == (90, 60)

        z = c.get("/api/v1/archive.zip", params={"jobs": f"{tif},{png}"})
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
        # TIFF input -> PNG result: both are scan_enhanced.png, and the zip keeps both.
        assert names == ["scan_enhanced.png", "scan_enhanced-1.png"], names
        assert c.get("/api/v1/archive.zip", params={"jobs": ""}).status_code == 400
        named = c.get("/api/v1/archive.zip", params={"jobs": tif, "name": "scans-2-of-3.zip"})
        assert named.headers["content-disposition"] == 'attachment; filename="scans-2-of-3.zip"'
        assert z.headers["content-disposition"] == 'attachment; filename="restora-results.zip"'
        for bad in ("../x.zip", "a b.zip", "x.png", ".zip", "x.zip\r\nSet-Cookie: a=b"):
            r = c.get("/api/v1/archive.zip", params={"jobs": tif, "name": bad})
            assert r.status_code == 400 and r.json()["field"] == "name", (bad, r.text)
    with _client(server, "bob-key") as bob:
        assert bob.get(f"/api/v1/jobs/{tif}/input.webp").status_code == 404


def test_a_failed_jobs_input_preview_answers_until_retention_removes_it(tmp_path):
    """A failed job keeps its input (and extra uploads) as long as a result is kept, so its
    history entry shows the input and the user could send it again; the janitor removes it
    with the job after ``result_ttl_s``. (A cancelled job's input still goes at once.)"""
    settings = make_settings(tmp_path / "home")
    with live_server(settings, tools=service_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        # the mask's aspect ratio is not the photo's: found when the job starts, so it fails
        r = c.post("/api/v1/tools/restore-photo",
                   files={"file": ("old.png", png_bytes(64, 48), "image/png"),
                          "mask": ("m.png", png_bytes(10, 50), "image/png")})
        assert r.status_code == 202, r.text
        job = r.json()["jobId"]
        snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job}").json())["status"]
                        in ("succeeded", "failed", "canceled") and s)
        assert snap["status"] == "failed" and snap["error"]["code"] == "invalid_parameter", snap
        job_dir = srv.manager.job_dir(job)
        assert (job_dir / "input" / "old.png").read_bytes() == png_bytes(64, 48)
        assert (job_dir / "extra" / "mask").is_file()

        preview = c.get(f"/api/v1/jobs/{job}/input.webp")
        assert preview.status_code == 200, preview.text
        assert preview.headers["content-type"] == "image/webp"
        assert PILImage.open(io.BytesIO(preview.content)).size == (64, 48)
        listed = {j["jobId"]: j for j in c.get("/api/v1/jobs").json()["jobs"]}
        assert listed[job]["status"] == "failed" and listed[job]["inputName"] == "old.png"

        # retention: the janitor's pass once result_ttl_s has gone by removes job and input
        assert srv.manager.cleanup(now=time.time() + settings.result_ttl_s + 1) == [job]
        gone = c.get(f"/api/v1/jobs/{job}/input.webp")
        assert gone.status_code == 404 and gone.json()["code"] == "job_not_found"
        assert not job_dir.exists()


def _ended(c: httpx.Client, job: str) -> dict:
    return wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job}").json())["status"]
                    in ("succeeded", "failed", "canceled") and s)


def test_a_failed_job_is_sent_again_as_a_new_job_with_its_input_and_options(server):
    """POST /api/v1/jobs/{id}/retry: the failed job's stored input, mask, tool, options and
    request params go into a new job (through the normal submission); the failed job stays.
    A finished job answers 409 not_retryable; an unknown or another key's job 404."""
    photo, mask = png_bytes(64, 48, seed=5), png_bytes(10, 50, seed=6)
    with _client(server, "alice-key") as c:
        r = c.post("/api/v1/tools/restore-photo",
                   files={"file": ("old.png", photo, "image/png"),
                          "mask": ("m.png", mask, "image/png")},
                   data={"settings": '{"denoise": false}'})
        assert r.status_code == 202, r.text
        failed = r.json()["jobId"]
        assert _ended(c, failed)["status"] == "failed"

        r = c.post(f"/api/v1/jobs/{failed}/retry")
        assert r.status_code == 202, r.text
        body = r.json()
        again = body["jobId"]
        assert again != failed and body["retryOf"] == failed and body["tool"] == "restore-photo"
        old, new = server.manager.store.get(failed), server.manager.store.get(again)
        assert (new.tool, new.api, new.options, new.params, new.input_name) == \
            (old.tool, old.api, old.options, old.params, old.input_name)
        assert new.options["denoise"] is False
        new_dir = server.manager.job_dir(again)
        assert (new_dir / "input" / "old.png").read_bytes() == photo
        assert (new_dir / "extra" / "mask").read_bytes() == mask
        # the same input and mask fail the same way, in a job of their own
        snap = _ended(c, again)
        assert snap["status"] == "failed" and snap["error"]["code"] == "invalid_parameter"
        listed = [j["jobId"] for j in c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]]
        assert listed.index(again) < listed.index(failed)  # both kept, the new one first

        done = _submit(c, png_bytes(32, 32, seed=7), "fine.png")
        r = c.post(f"/api/v1/jobs/{done}/retry")
        assert r.status_code == 409 and r.json()["code"] == "not_retryable", r.text
        assert "succeeded" in r.json()["error"]

        r = c.post("/api/v1/jobs/00000000-0000-4000-8000-000000000000/retry")
        assert r.status_code == 404 and r.json()["code"] == "job_not_found"
    with _client(server, "bob-key") as bob:  # another key's job does not exist for bob
        r = bob.post(f"/api/v1/jobs/{failed}/retry")
        assert r.status_code == 404 and r.json()["code"] == "job_not_found"


def test_a_retry_is_refused_at_the_request_when_its_result_cannot_be_written(server):
    """A retry passes the submission's result check (the job's tool, input name, upscale,
    output size and format, from its record): a failed job asking for a 17000 px wide WebP is
    answered 413 ``output_too_large`` with the message the job failed with, and no job is
    created. The failed job is submitted past the API, whose check would refuse it."""
    from restora.service import params as P
    from restora.service.history import owner_of_key

    opts = P.validate(P.FaceRecoverySettings, {"output_width": 17000, "output_format": "webp"})
    with _client(server, "alice-key") as c:
        record = server.manager.submit(
            "face-recovery", api="topaz",
            params=opts.model_dump(mode="json", exclude={"iai_packed_metadata"}),
            options=opts.options(None), input_bytes=png_bytes(64, 8), input_name="t.png",
            owner=owner_of_key("alice-key"))
        failed = _ended(c, record.id)
        assert failed["status"] == "failed" and failed["error"]["code"] == "output_too_large"

        def ids() -> set[str]:
            return {j["jobId"] for j in c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]}

        before = ids()
        assert record.id in before
        r = c.post(f"/api/v1/jobs/{record.id}/retry")
        assert r.status_code == 413, r.text
        body = r.json()
        assert body["code"] == "output_too_large", body
        assert body["error"] == failed["error"]["message"], body  # the job's own words
        assert ids() == before


def test_a_retry_is_charged_to_the_clients_byte_budget_like_an_upload(tmp_path):
    """The retried input counts against ``max_client_bytes`` as an upload would: with another
    unfinished job holding most of the budget, the retry is 429 too_many_bytes (nothing is
    created); once that job ends (cancelled here), the same retry is accepted."""
    photo, mask = png_bytes(64, 48, seed=5), png_bytes(10, 50, seed=6)
    big = png_bytes(120, 100, seed=8)
    limit = 40_000
    assert len(big) + len(photo) + len(mask) > limit > len(big) + 2_000  # room for multipart
    settings = make_settings(tmp_path / "home", workers=1, max_client_bytes=limit)
    with live_server(settings, tools=service_tools(step_s=0.5, steps=120)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/tools/restore-photo",
                   files={"file": ("old.png", photo, "image/png"),
                          "mask": ("m.png", mask, "image/png")})
        assert r.status_code == 202, r.text
        failed = r.json()["jobId"]
        assert _ended(c, failed)["status"] == "failed"

        r = c.post("/api/v1/tools/enhance-faces", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 202, r.text
        slow = r.json()["jobId"]  # a minute of (fake) work: its input is held until it ends
        before = {j["jobId"] for j in c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]}
        refused = c.post(f"/api/v1/jobs/{failed}/retry")
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_bytes" and refused.headers["retry-after"]
        after = {j["jobId"] for j in c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]}
        assert after == before  # no job was created

        assert c.post(f"/api/v1/jobs/{slow}/cancel").json()["status"] == "canceled"
        r = c.post(f"/api/v1/jobs/{failed}/retry")
        assert r.status_code == 202, r.text
        assert _ended(c, r.json()["jobId"])["status"] == "failed"  # the same mask, again


@pytest.mark.parametrize("field, value", [("status", "nope"), ("status", "complete"),
                                          ("tool", "nope"), ("tool", "enhance_faces")])
def test_a_filter_value_that_can_never_match_is_a_400_naming_the_field(server, field, value):
    """``status`` and ``tool`` take the values a job can have: anything else is a typo that
    would silently list nothing, so it is refused, listing the allowed values."""
    with _client(server, "alice-key") as c:
        r = c.get("/api/v1/jobs", params={field: value})
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["code"] == "invalid_parameter" and body["field"] == field, body
        allowed = {"status": ["canceled", "failed", "processing", "queued", "succeeded"],
                   "tool": ["codeformer", "enhance-faces", "face-recovery", "face-refiner",
                            "restore-photo"]}[field]
        assert body["allowed"] == allowed, body
        assert all(v in body["error"] for v in allowed), body

        # every allowed value (and an empty one, as in `?tool=&status=`) is a filter
        _submit(c, png_bytes(20, 20, seed=11), "f.png")
        for ok in allowed:
            page = c.get("/api/v1/jobs", params={field: ok})
            assert page.status_code == 200, page.text
            assert all(j[field] == ok for j in page.json()["jobs"]), page.json()
        assert c.get("/api/v1/jobs", params={field: ""}).json()["jobs"]
        assert c.get("/api/v1/jobs", params={"status": "succeeded", "tool": "enhance-faces"}
                     ).json()["jobs"]


def test_the_archive_limit_is_a_setting_and_its_refusal_says_it(tmp_path):
    """archive_max_jobs bounds one zip; asking for more is a 400 on `jobs` carrying `limit`
    (what the web page reads to ask for several zips instead)."""
    settings = make_settings(tmp_path, archive_max_jobs=2)
    with live_server(settings, tools=service_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        jobs = [_submit(c, png_bytes(40, 30, seed=i), f"p{i}.png") for i in range(3)]
        r = c.get("/api/v1/archive.zip", params={"jobs": ",".join(jobs)})
        assert r.status_code == 400, r.text
        body = r.json()  # this API's error shape: the message in `error`, details beside it
        assert body["code"] == "invalid_parameter" and body["field"] == "jobs"
        assert body["limit"] == 2 and "1 to 2" in body["error"]
        z = c.get("/api/v1/archive.zip", params={"jobs": ",".join(jobs[:2])})
        assert z.status_code == 200
        assert zipfile.ZipFile(io.BytesIO(z.content)).namelist() == ["p0_enhanced.png",
                                                                    "p1_enhanced.png"]
