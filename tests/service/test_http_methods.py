"""HTTP methods against a real server: HEAD on every GET route (without starting a stream),
`Allow` on OPTIONS and 405, and a documented `code` on every bare HTTP error."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from service_helpers import (REPO, http_fixture_server, live_server, make_settings,
                             png_bytes, serve_files, service_tools, wait_for)

#: headers a HEAD must answer exactly as the GET does (where the GET sends them)
SAME = ("content-type", "content-length", "etag", "last-modified", "content-disposition",
        "cache-control", "transfer-encoding", "accept-ranges")
#: each job takes about this long (10 bands), so a running one can be caught
STEP_S = 0.3


def _finish(c: httpx.Client, url: str) -> dict:
    return wait_for(lambda: (s := c.get(url).json())["status"]
                    in ("succeeded", "failed", "canceled") and s, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A live server, a client, a finished enhance-faces job and a finished Tengrai artwork."""
    settings = make_settings(tmp_path_factory.mktemp("home"), allow_loopback_fetch=True)
    with http_fixture_server(serve_files({"/p.png": png_bytes(40, 30, seed=3)})) as img_base, \
            live_server(settings, tools=service_tools(step_s=STEP_S)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/tools/enhance-faces",
                   files={"file": ("p.png", png_bytes(48, 32, seed=5), "image/png")})
        assert r.status_code == 202, r.text
        job = _finish(c, f"/api/v1/jobs/{r.json()['jobId']}")
        r = c.post("/v2/artworks/face-refiner", json={"imageUrl": f"{img_base}/p.png"})
        assert r.status_code == 202, r.text
        art = _finish(c, f"/v2/artworks/{r.json()['id']}")
        assert job["status"] == art["status"] == "succeeded", (job, art)
        yield c, job, art


def _get_urls(c: httpx.Client, job: dict, art: dict) -> list[str]:
    """A concrete URL for every GET route in the OpenAPI schema, and the documents' own."""
    values = {"job_id": job["jobId"], "filename": job["result"]["filename"],
              "artwork_id": art["id"]}
    query = {"/api/v1/archive.zip": f"?jobs={job['jobId']}"}
    urls = ["/openapi.json", "/docs", "/redoc"]
    for path, item in c.get("/openapi.json").json()["paths"].items():
        if "get" in item:
            # a new path parameter needs a value here: KeyError until it has one
            urls.append(re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
                        + query.get(path, ""))
    return urls


def test_every_get_route_answers_head_like_get(env):
    c, job, art = env
    urls = _get_urls(c, job, art)
    for needed in (f"/api/v1/jobs/{job['jobId']}", f"/api/v1/jobs/{job['jobId']}/input.webp",
                   f"/api/v1/jobs/{job['jobId']}/progress", "/api/v1/jobs", "/api/health",
                   "/healthz", "/readyz", "/metrics", f"/v2/artworks/{art['id']}",
                   f"/api/v1/archive.zip?jobs={job['jobId']}"):
        assert needed in urls, needed
    for url in urls:
        got, head = c.get(url), c.head(url)
        assert got.status_code == head.status_code == 200, (url, head.status_code)
        assert head.content == b"", url
        for name in SAME:
            if name == "content-length" and url == "/metrics":
                continue  # the scrape itself moves the counters
            assert head.headers.get(name) == got.headers.get(name), (url, name)
    # what GET refuses, HEAD refuses alike: the same status and error headers, no body
    for url in ("/api/v1/jobs/nope", "/api/v1/jobs/nope/input.webp", "/api/v1/jobs/nope/progress",
                f"/v2/artworks/{job['jobId']}", "/api/v1/jobs?limit=0"):
        got, head = c.get(url), c.head(url)
        assert got.status_code == head.status_code and got.status_code in (400, 404), url
        assert head.content == b"" and head.headers["content-type"] == "application/json"
        assert head.headers["content-length"] == got.headers["content-length"], url


def test_openapi_has_no_head_operations(env):
    c, _, _ = env
    paths = c.get("/openapi.json").json()["paths"]
    assert not [p for p, item in paths.items() if "head" in item]


def test_head_on_a_running_jobs_progress_sends_headers_without_starting_the_stream(env):
    c, _, _ = env
    r = c.post("/api/v1/tools/enhance-faces",
               files={"file": ("p.png", png_bytes(48, 32, seed=6), "image/png")})
    job_id = r.json()["jobId"]
    wait_for(lambda: c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "processing")
    start = time.monotonic()
    head = c.head(f"/api/v1/jobs/{job_id}/progress")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.headers["cache-control"] == "no-cache"
    # the next request on the same connection is answered while the job still runs: the HEAD
    # did not hold the connection open as a stream until the job's end
    assert c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "processing"
    assert time.monotonic() - start < 10 * STEP_S
    _finish(c, f"/api/v1/jobs/{job_id}")


# --- Allow: OPTIONS and 405 list what the path's routes serve ----------------------------------

ALLOW = {
    "/api/v1/tools/enhance-faces": "POST, OPTIONS",
    "/api/v1/tools/face-recovery": "POST, OPTIONS",
    "/api/v1/jobs/nope": "GET, HEAD, DELETE, OPTIONS",
    "/api/v1/jobs/nope/progress": "GET, HEAD, OPTIONS",
    "/api/v1/jobs/nope/cancel": "POST, OPTIONS",
    "/api/v1/jobs/nope/retry": "POST, OPTIONS",
    "/api/v1/jobs": "GET, HEAD, OPTIONS",
    "/api/v1/download/nope/x.png": "GET, HEAD, OPTIONS",
    "/api/process": "POST, OPTIONS",
    "/api/health": "GET, HEAD, OPTIONS",
    "/v2/artworks/face-refiner": "GET, HEAD, POST, OPTIONS",  # GET: the {artwork_id} route
    "/v2/artworks/nope": "GET, HEAD, OPTIONS",
    "/healthz": "GET, HEAD, OPTIONS",
    "/openapi.json": "GET, HEAD, OPTIONS",
    "/": "GET, HEAD, OPTIONS",  # the web page
    "/index.html": "GET, HEAD, OPTIONS",
}
#: paths no route serves (the static mount has no such file)
UNSERVED = ("/nope", "/api/v1/nothing", "/api/v1/jobs/a/b/c", "/v2/nothing", "/api/process/x")


@pytest.mark.parametrize("path", list(ALLOW))
def test_options_and_405_list_the_methods_the_path_serves(env, path):
    c, _, _ = env
    r = c.options(path)
    assert r.status_code == 204, r.text
    assert r.headers["allow"] == ALLOW[path]
    for method in ("PUT", "PATCH", "GET", "POST"):
        if method in ALLOW[path].split(", "):
            continue
        r = c.request(method, path)
        assert r.status_code == 405, (method, r.status_code, r.text)
        assert r.headers["allow"] == ALLOW[path], method


@pytest.mark.parametrize("path", UNSERVED)
def test_a_path_no_route_serves_is_404_for_every_method(env, path):
    c, _, _ = env
    for method in ("OPTIONS", "GET", "HEAD", "POST", "DELETE"):
        r = c.request(method, path)
        assert r.status_code == 404, (method, r.status_code)
        assert "allow" not in r.headers, method
        if method != "HEAD":
            body = r.json()
            assert body["code"] == "not_found" and (body.get("error") or body["message"])
    # a CORS preflight is the CORS layer's, whatever the path (unchanged)
    r = c.options(path, headers={"Origin": "https://app.example",
                                 "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and "POST" in r.headers["access-control-allow-methods"]


# --- every error answer has a documented code ---------------------------------------------------

def _documented_codes() -> dict[int, set[str]]:
    """HTTP status -> the codes docs/service.md's error table lists for it."""
    text = (REPO / "docs" / "service.md").read_text()
    rows = text[text.index("| HTTP | codes |"):].splitlines()[2:]
    codes: dict[int, set[str]] = {}
    for row in rows:
        if not row.startswith("|"):
            break
        status, cell = row.strip("|").split("|", 1)
        codes[int(status)] = set(re.findall(r"`([a-z_]+)`", cell))
    return codes


@pytest.mark.parametrize("method, path, shape", [
    ("PUT", "/api/v1/jobs/nope", "snapotter"),
    ("GET", "/api/v1/tools/enhance-faces", "snapotter"),
    ("POST", "/index.html", "snapotter"),  # the web page's files
    ("GET", "/api/v1/tools/face-recovery", "topaz"),
    ("GET", "/api/process", "codeformer"),
    ("POST", "/api/health", "codeformer"),
    ("DELETE", "/v2/artworks/nope", "tengrai"),
])
def test_405_is_a_documented_code_in_each_api_style(env, method, path, shape):
    c, _, _ = env
    r = c.request(method, path)
    assert r.status_code == 405 and r.headers["allow"], r.text
    body = r.json()
    assert body["code"] == "method_not_allowed"
    assert body["code"] in _documented_codes()[405]
    if shape == "snapotter":
        assert body["error"] == "Method Not Allowed"
    elif shape == "topaz":
        assert body["status"] == 405 and body["message"]
    elif shape == "codeformer":
        assert body["status"] == "error" and body["message"]
    else:
        assert body["statusCode"] == 405 and body["error"] == "Method Not Allowed"


def test_bare_http_errors_have_documented_codes(env):
    c, job, _ = env
    documented = _documented_codes()
    for method, path in (("GET", "/nope"), ("POST", "/nope"), ("OPTIONS", "/nope"),
                         ("GET", "/api/v1/nothing"), ("DELETE", "/v2/nothing"),
                         ("PATCH", "/api/v1/jobs"), ("PUT", "/healthz")):
        r = c.request(method, path)
        assert r.json()["code"] in documented[r.status_code], (method, path, r.text)


def test_a_bad_range_on_a_download_is_a_documented_error(env):
    """FileResponse answered a malformed or unsatisfiable ``Range`` in plain text, no code."""
    c, job, _ = env
    documented = _documented_codes()
    url = job["result"]["downloadUrl"]
    size = len(c.get(url).content)
    for method in ("GET", "HEAD"):
        r = c.request(method, url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        assert r.headers["content-type"] == "application/json"
        r = c.request(method, url, headers={"Range": "pages=1-2"})
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    r = c.get(url, headers={"Range": f"bytes={size}-"})
    assert r.json()["code"] == "range_not_satisfiable" in documented[416], r.text
    r = c.get(url, headers={"Range": "pages=1-2"})
    body = r.json()
    assert body["code"] == "invalid_parameter" and body["field"] == "Range", r.text
    assert "bytes" in body["error"]
    # a Range that If-Range disqualifies is ignored, as before: the whole file
    r = c.get(url, headers={"Range": "pages=1-2", "If-Range": '"other"'})
    assert r.status_code == 200 and len(r.content) == size
