"""SSRF-safe fetch: address tricks, DNS names, redirects, byte and time caps."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from restora.service.fetch import BlockedURL, FetchError, blocked_reason, check_url, fetch
from service_helpers import http_fixture_server, live_server, make_settings, png_bytes

BLOCKED = [
    # loopback in every spelling
    "http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://0x7f000001/",
    "http://0x7f.0.0.1/", "http://0177.0.0.1/", "http://017700000001/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/", "http://[2002:7f00:1::]/",
    # names that resolve to loopback
    "http://localhost/", "http://LOCALHOST./", "http://localhost:8080/x",
    # unspecified
    "http://0.0.0.0/", "http://0/", "http://[::]/",
    # cloud metadata and link-local
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[fe80::1]/",
    "http://100.100.100.200/", "http://[::ffff:169.254.169.254]/", "http://0xa9fea9fe/",
    # private, CGNAT, ULA, multicast, reserved, documentation
    "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/", "http://100.64.0.1/",
    "http://100.127.255.254/", "http://[fd00::1]/", "http://[fc00::5]/", "http://224.0.0.1/",
    "http://[ff02::1]/", "http://240.0.0.1/", "http://255.255.255.255/", "http://192.0.2.10/",
    "http://198.18.0.1/",
    # not http(s), credentials, junk
    "file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/", "dict://x/",
    "http://user:pass@example.com/", "http://a@127.0.0.1/", "http:///nohost",
    "http://exa mple.com/",
    "http://example.com\r\nX: y/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_blocked_addresses(url):
    with pytest.raises(BlockedURL) as info:
        check_url(url)
    assert info.value.code == "url_blocked" and info.value.http_status == 400


def test_public_literals_pass_the_check():
    for url, ip in [("http://1.1.1.1/", "1.1.1.1"), ("https://8.8.8.8:8443/a", "8.8.8.8"),
                    ("http://[2606:4700:4700::1111]/", "2606:4700:4700::1111")]:
        target = check_url(url)
        assert str(target.address) == ip


def test_loopback_allowed_only_by_setting_and_nothing_else():
    assert check_url("http://127.0.0.1:9/", allow_loopback=True).address.is_loopback
    for url in ("http://10.0.0.1/", "http://169.254.169.254/", "http://0.0.0.0/",
                "http://[fd00::1]/", "http://100.64.0.1/"):
        with pytest.raises(BlockedURL):
            check_url(url, allow_loopback=True)


def test_reason_names_the_class():
    import ipaddress

    assert blocked_reason(ipaddress.ip_address("169.254.169.254")) == "cloud metadata"
    assert blocked_reason(ipaddress.ip_address("100.64.1.1")) == "carrier-grade NAT"
    assert blocked_reason(ipaddress.ip_address("fd12::1")) == "unique local"
    assert "loopback" in blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert blocked_reason(ipaddress.ip_address("93.184.216.34")) is None


def _redirect_to(location: str):
    def handler(req):
        req.send_response(302)
        req.send_header("Location", location)
        req.send_header("Content-Length", "0")
        req.end_headers()
    return handler


@pytest.mark.parametrize("location", [
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/", "http://0.0.0.0:80/",
    "http://[fd00::1]/", "http://[::ffff:192.168.0.1]/", "file:///etc/passwd",
])
def test_every_redirect_is_checked_again(location):
    # The first hop is allowed (loopback opened for the test); the redirect target is not.
    with http_fixture_server(_redirect_to(location)) as base:
        with pytest.raises(BlockedURL):
            fetch(base + "/img", max_bytes=10_000, timeout_s=5, allow_loopback=True)


def test_redirect_to_loopback_blocked_when_loopback_not_allowed():
    with http_fixture_server(_redirect_to("http://127.0.0.1:1/")) as base:
        with pytest.raises(BlockedURL):  # even the first hop (a loopback server) is refused
            fetch(base + "/img", max_bytes=10_000, timeout_s=5)


def test_fetch_connects_to_checked_address_and_keeps_host_header():
    seen = {}
    body = png_bytes()

    def handler(req):
        seen["host"] = req.headers.get("Host")
        req.send_response(200)
        req.send_header("Content-Type", "image/png")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    with http_fixture_server(handler) as base:
        port = base.rsplit(":", 1)[1]
        got = fetch(f"http://localhost:{port}/a.png", max_bytes=10**6, timeout_s=5,
                    allow_loopback=True)
    assert got.content == body and got.content_type == "image/png"
    assert seen["host"] == f"localhost:{port}"


def test_redirect_limit_and_byte_and_time_caps():
    with http_fixture_server(_redirect_to("/again")) as base:
        with pytest.raises(FetchError, match="redirects"):
            fetch(base + "/", max_bytes=100, timeout_s=5, max_redirects=2, allow_loopback=True)

    def big(req):  # no Content-Length: the cap must hold while streaming
        req.send_response(200)
        req.end_headers()
        for _ in range(64):
            req.wfile.write(b"x" * 65536)

    with http_fixture_server(big) as base:
        with pytest.raises(FetchError, match="larger than"):
            fetch(base + "/", max_bytes=1_000_000, timeout_s=10, allow_loopback=True)

    def slow(req):
        req.send_response(200)
        req.send_header("Content-Length", "100000")
        req.end_headers()
        try:
            for _ in range(100):
                req.wfile.write(b"x" * 100)
                req.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    with http_fixture_server(slow) as base:
        t0 = time.monotonic()
        with pytest.raises(FetchError):
            fetch(base + "/", max_bytes=10**6, timeout_s=1.0, allow_loopback=True)
        assert time.monotonic() - t0 < 3.0


def test_route_rejects_ssrf_image_url_with_tengrai_error(tmp_path):
    with live_server(make_settings(tmp_path / "home")) as srv, \
            httpx.Client(base_url=srv.url, timeout=10) as c:
        for url in ("http://127.0.0.1:1/x.png", "http://169.254.169.254/", "http://0x7f000001/",
                    "http://[::ffff:127.0.0.1]/", "http://localhost/", "file:///etc/passwd"):
            r = c.post("/v2/artworks/face-refiner", json={"imageUrl": url})
            assert r.status_code == 400, (url, r.text)
            body = r.json()
            assert body["statusCode"] == 400 and body["error"] == "Bad Request"
            assert body["message"].startswith("imageUrl:")


def test_localhost_resolves_to_loopback_here():
    # Guard for the DNS-name cases above: the name must really resolve to loopback.
    addrs = {info[4][0] for info in socket.getaddrinfo("localhost", 80)}
    assert addrs and all(a in ("127.0.0.1", "::1") for a in addrs)
