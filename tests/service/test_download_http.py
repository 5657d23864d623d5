"""HTTP semantics of the file routes (result downloads, ``preview.webp``, ``input.webp``) against
a real server: HEAD answers like GET without a body; conditional requests get 304 Not Modified
when their validator matches (RFC 9110, 13.1 and 13.2.2), ranges still work."""

from __future__ import annotations

from email.utils import formatdate, parsedate_to_datetime

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


def _previews(snap: dict) -> list[str]:
    """Every file route with validators: the result, its preview and the input's preview."""
    return [*_files(snap), f"/api/v1/jobs/{snap['jobId']}/input.webp"]


def _not_modified(r: httpx.Response, etag: str) -> None:
    assert r.status_code == 304, (r.status_code, r.request.headers)
    assert r.content == b"" and r.headers["etag"] == etag
    assert "content-type" not in r.headers


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_gives_304_with_weak_comparison_lists_and_star(job, method):
    c, snap = job
    # (input.webp is GET-only: a HEAD of it is not answered by its route)
    for url in _previews(snap) if method == "GET" else _files(snap):
        full = c.get(url)
        etag = full.headers["etag"]
        assert full.status_code == 200 and etag.startswith('"'), url
        for value in (etag, f"W/{etag}", f'"other", {etag}', f'W/"x",{etag}', "*"):
            _not_modified(c.request(method, url, headers={"If-None-Match": value}), etag)
        for value in ('"other"', f'W/"{etag.strip(chr(34))}x"', '""'):
            r = c.request(method, url, headers={"If-None-Match": value})
            assert r.status_code == 200, (url, value)
            if method == "GET":
                assert r.content == full.content


def test_if_modified_since_gives_304_unless_if_none_match_is_sent(job):
    c, snap = job
    for url in _previews(snap):
        full = c.get(url)
        etag, modified = full.headers["etag"], full.headers["last-modified"]
        when = parsedate_to_datetime(modified).timestamp()
        _not_modified(c.get(url, headers={"If-Modified-Since": modified}), etag)
        later = formatdate(when + 3600, usegmt=True)
        _not_modified(c.get(url, headers={"If-Modified-Since": later}), etag)
        for since in (formatdate(when - 1, usegmt=True), "yesterday", ""):
            r = c.get(url, headers={"If-Modified-Since": since})
            assert r.status_code == 200 and r.content == full.content, (url, since)
        # If-None-Match takes precedence: a stale tag is a full answer whatever the date says
        r = c.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
        assert r.status_code == 200 and r.content == full.content
        _not_modified(c.get(url, headers={"If-None-Match": etag,
                                          "If-Modified-Since": formatdate(0, usegmt=True)}),
                      etag)


def test_ranges_are_unchanged_and_come_after_the_conditions(job):
    c, snap = job
    url = snap["result"]["downloadUrl"]
    full = c.get(url)
    etag = full.headers["etag"]
    r = c.get(url, headers={"Range": "bytes=2-11"})
    assert r.status_code == 206 and r.content == full.content[2:12]
    assert r.headers["content-range"] == f"bytes 2-11/{len(full.content)}"
    r = c.get(url, headers={"Range": "bytes=2-11", "If-None-Match": '"other"'})
    assert r.status_code == 206 and r.content == full.content[2:12]
    r = c.get(url, headers={"Range": "bytes=2-11", "If-Range": etag})
    assert r.status_code == 206 and r.content == full.content[2:12]
    r = c.get(url, headers={"Range": "bytes=2-11", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == full.content
    # RFC 9110 13.2.2: If-None-Match is evaluated before Range
    _not_modified(c.get(url, headers={"Range": "bytes=2-11", "If-None-Match": etag}), etag)
    assert c.get(url, headers={"Range": "bytes=999999-"}).status_code == 416


def test_a_missing_file_is_404_whatever_the_validators(job):
    c, snap = job
    for url in (f"/api/v1/download/{snap['jobId']}/p.png", "/api/v1/download/nope/preview.webp",
                "/api/v1/jobs/nope/input.webp"):
        r = c.get(url, headers={"If-None-Match": "*"})
        assert r.status_code == 404, url
