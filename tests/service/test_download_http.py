"""HTTP semantics of the file routes (result downloads, ``preview.webp``, ``input.webp``) against
a real server: HEAD answers like GET without a body."""

from __future__ import annotations

import httpx
import pytest

from service_helpers import live_server, make_settings, png_bytes, service_tools, wait_for

#: headers a HEAD must answer exactly as the GET does
SAME = ("content-type", "content-length", "etag", "last-modified", "content-disposition",
        "accept-ranges")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A live server, a client, and one finished enhance-faces job's snapshot."""
    settings = make_settings(tmp_path_factory.mktemp("home"))
    with live_server(settings, tools=service_tools()) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("p.png", png_bytes(96, 64, seed=5), "image/png")})
        assert r.status_code == 202, r.text
        job_id = r.json()["jobId"]
        snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job_id}").json())["status"]
                        in ("succeeded", "failed", "canceled") and s)
        assert snap["status"] == "succeeded", snap
        yield c, snap


def _files(snap: dict) -> list[str]:
    return [snap["result"]["downloadUrl"], snap["result"]["previewUrl"]]


def test_head_on_a_download_answers_like_get_without_a_body(job):
    c, snap = job
    for url in _files(snap):
        got, head = c.get(url), c.head(url)
        assert got.status_code == head.status_code == 200, (url, head.status_code, head.text)
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(got.content) > 0
        for name in SAME:
            assert head.headers.get(name) == got.headers.get(name), (url, name)
        # a byte range too
        part, part_head = (m(url, headers={"Range": "bytes=0-9"}) for m in (c.get, c.head))
        assert part.status_code == part_head.status_code == 206
        assert part_head.content == b"" and len(part.content) == 10
        for name in ("content-range", "content-length", "etag"):
            assert part_head.headers[name] == part.headers[name], name
    # what GET refuses, HEAD refuses alike (the error's headers, no body)
    job_id = snap["jobId"]
    for url in (f"/api/v1/download/{job_id}/p.png", "/api/v1/download/nope/preview.webp"):
        got, head = c.get(url), c.head(url)
        assert got.status_code == head.status_code == 404, url
        assert head.content == b"" and head.headers["content-type"] == "application/json"
