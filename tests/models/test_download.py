"""Downloads against a real HTTP server on 127.0.0.1 (threaded, with Range support).

The server serves fixture bytes (a real tiny checkpoint from ../shared/conformance, so a finished
download is also loaded and run) and can misbehave on purpose: cut the connection after N bytes,
stall, answer 404/503, ignore Range, or hold a response until the test releases it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO, shared_path

from restora.config import Settings
from restora.errors import ChecksumMismatch, DownloadError, ModelNotInstalled, OfflineError
from restora.models.download import DownloadOptions, partial_path, pull
from restora.models.registry import RECORDED_HASHES, Registry

ENDLESS = 16 << 20
FAST = DownloadOptions(connect_timeout=2.0, read_timeout=2.0, retries=2, backoff=0.01,
                       progress=False)


@dataclass
class Behaviour:
    """What the server does for one path."""

    body: bytes
    status: int = 200
    cut_after: list[int] = field(default_factory=list)  # per request: drop after N body bytes
    fail_first: list[int] = field(default_factory=list)  # per request: answer this status
    stall_after: int | None = None  # send N bytes, then go silent
    ignore_range: bool = False
    gate_after: int | None = None  # send N bytes, then wait for `gate`
    headers: dict[str, str] = field(default_factory=dict)  # extra or replaced headers
    redirect: str | None = None  # answer 302 to this Location
    range_from_zero: bool = False  # answer any Range with 206 from byte 0 (a broken cache)
    endless: bool = False  # after the body, send zeros (no Content-Length) up to ENDLESS bytes


class FixtureServer:
    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.gate = threading.Event()
        self.stop = threading.Event()
        self.seen = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                server.requests.append((self.path, self.headers.get("Range")))
                server.seen.set()
                b = server.routes.get(self.path)
                if b is None:
                    return self._plain(404, b"not found")
                if b.fail_first:
                    return self._plain(b.fail_first.pop(0), b"try again")
                if b.redirect is not None:
                    self.send_response(302)
                    self.send_header("Location", b.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if b.status != 200:
                    return self._plain(b.status, b"no")
                start = 0
                rng = self.headers.get("Range")
                if rng and not b.ignore_range:
                    start = 0 if b.range_from_zero else int(
                        rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(b.body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(b.body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(b.body) - 1}/{len(b.body)}")
                else:
                    self.send_response(200)
                data = b.body[start:]
                extra = {"Content-Type": "application/octet-stream", **b.headers}
                if not b.endless:
                    extra.setdefault("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if b.endless:  # until the client hangs up; closing ends the body
                    self.close_connection = True
                    try:
                        self.wfile.write(data)
                        # bounded, so that a client that does not stop fails its test
                        # instead of filling the disk
                        for _ in range(ENDLESS // 65536):
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        pass
                    return None
                limit = b.cut_after.pop(0) if b.cut_after else None
                hold = b.stall_after if b.stall_after is not None else b.gate_after
                for i in range(0, len(data), 8192):
                    if limit is not None and i >= limit:
                        self.close_connection = True  # cut: the client sees a short body
                        return None
                    if hold is not None and i >= hold:
                        if b.stall_after is not None:
                            server.stop.wait(30)
                            self.close_connection = True
                            return None
                        server.gate.wait(60)
                        hold = None
                    try:
                        self.wfile.write(data[i:i + 8192])
                        self.wfile.flush()
                    except OSError:
                        return None
                return None

            def _plain(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    srv = FixtureServer()
    srv.thread.start()
    yield srv
    srv.stop.set()
    srv.gate.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    """A real tiny checkpoint (Real-ESRGAN x2 layout), 126 KB."""
    return shared_path("conformance", "rrdbnet_s2.tiny.pth").read_bytes()


def rrdb_hparams() -> dict:
    return json.loads(shared_path("conformance", "rrdbnet_s2.tiny.json").read_text())[
        "constructor_kwargs"]


def make_registry(tmp_path: Path, urls: list[str], body: bytes, *, sha256: str | None = "auto",
                  size: int | None = None, offline: bool = False) -> tuple[Registry, Settings]:
    entry = {"id": "remote-x2", "task": "upscale", "arch": "rrdbnet", "hparams": rrdb_hparams(),
             "filename": "remote_x2.pth", "urls": urls, "license": "test fixture",
             "commercial_use": True}
    if sha256 is not None:
        entry["sha256"] = hashlib.sha256(body).hexdigest() if sha256 == "auto" else sha256
    if size is not None:
        entry["size"] = size
    manifest = tmp_path / "models.json"
    manifest.write_text(json.dumps({"models": [entry]}))
    settings = Settings(home=tmp_path / "home", models=manifest, offline=offline)
    return Registry.from_settings(settings), settings


def test_download_is_verified_installed_and_loads(tmp_path: Path, server: FixtureServer,
                                                  payload: bytes) -> None:
    import torch

    from restora.models.runtime import Runtime

    server.routes["/x2.pth"] = Behaviour(payload)
    registry, settings = make_registry(tmp_path, [server.base + "/x2.pth"], payload,
                                       size=len(payload))
    spec = registry.get("remote-x2")
    assert not registry.is_installed(spec)
    path = pull(registry, spec, options=FAST)
    assert path == settings.models_dir / "remote_x2.pth"
    assert path.read_bytes() == payload
    assert not partial_path(path).exists()
    assert server.gets("/x2.pth") == [None]
    # Installed now: a second pull touches no network.
    assert pull(registry, spec, options=FAST) == path
    assert len(server.gets("/x2.pth")) == 1
    # The downloaded file is a working model.
    runtime = Runtime(settings, device="cpu")
    net = runtime.load("remote-x2")
    with torch.no_grad():
        out = net(torch.rand(1, 3, 8, 12))
    assert out.shape == (1, 3, 16, 24)


def test_resume_after_cut_connection(tmp_path: Path, server: FixtureServer,
                                     payload: bytes) -> None:
    cut = 6 * 8192
    server.routes["/x2.pth"] = Behaviour(payload, cut_after=[cut])
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    path = pull(registry, registry.get("remote-x2"), options=FAST)
    assert path.read_bytes() == payload
    # First request whole file, then a resume from exactly where the cut happened.
    assert server.gets("/x2.pth") == [None, f"bytes={cut}-"]


def test_partial_survives_failed_run_and_next_run_resumes(tmp_path: Path, server: FixtureServer,
                                                          payload: bytes) -> None:
    cut = 4 * 8192
    server.routes["/x2.pth"] = Behaviour(payload, cut_after=[cut])
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    spec = registry.get("remote-x2")
    no_retry = DownloadOptions(read_timeout=2, retries=0, progress=False)
    with pytest.raises(DownloadError):
        pull(registry, spec, options=no_retry)
    dest = registry.path(spec)
    assert not dest.exists()  # never a half file where the model is expected
    assert partial_path(dest).stat().st_size == cut
    pull(registry, spec, options=no_retry)
    assert dest.read_bytes() == payload
    assert server.gets("/x2.pth")[-1] == f"bytes={cut}-"


def test_server_that_ignores_range_restarts_cleanly(tmp_path: Path, server: FixtureServer,
                                                    payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload, cut_after=[3 * 8192], ignore_range=True)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    path = pull(registry, registry.get("remote-x2"), options=FAST)
    assert path.read_bytes() == payload  # the 200 answer replaced the partial, not appended
    assert server.gets("/x2.pth") == [None, f"bytes={3 * 8192}-"]


def test_wrong_hash_is_rejected_and_nothing_installed(tmp_path: Path, server: FixtureServer,
                                                      payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, sha256="0" * 64)
    spec = registry.get("remote-x2")
    with pytest.raises(ChecksumMismatch) as err:
        pull(registry, spec, options=FAST)
    assert err.value.code == "checksum_mismatch"
    assert hashlib.sha256(payload).hexdigest() in err.value.message
    assert "nothing was installed" in err.value.message
    dest = registry.path(spec)
    assert not dest.exists() and not partial_path(dest).exists()
    assert not registry.is_installed(spec)


def test_wrong_size_is_rejected(tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, sha256=None,
                                size=len(payload) + 10)
    spec = registry.get("remote-x2")
    with pytest.raises(ChecksumMismatch, match="bytes"):
        pull(registry, spec, options=FAST)
    assert not registry.path(spec).exists()
    assert not (registry.models_dir / RECORDED_HASHES).exists()


def test_404_fails_and_mirrors_are_tried_in_order(tmp_path: Path, server: FixtureServer,
                                                  payload: bytes) -> None:
    registry, _ = make_registry(tmp_path, [server.base + "/gone.pth"], payload)
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        pull(registry, registry.get("remote-x2"), options=FAST)
    assert err.value.code == "download_failed"
    assert len(server.gets("/gone.pth")) == 1  # a 404 is not retried

    server.routes["/mirror.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/gone.pth",
                                           server.base + "/mirror.pth"], payload)
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload


def test_5xx_is_retried_with_backoff(tmp_path: Path, server: FixtureServer,
                                     payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload, fail_first=[503, 502])
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    pull(registry, registry.get("remote-x2"), options=FAST)
    assert len(server.gets("/x2.pth")) == 3


def test_stalled_server_times_out(tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload, stall_after=2 * 8192)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    spec = registry.get("remote-x2")
    options = DownloadOptions(connect_timeout=2, read_timeout=0.3, retries=1, backoff=0.01,
                              progress=False)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="ReadTimeout"):
        pull(registry, spec, options=options)
    assert time.monotonic() - t0 < 5
    assert not registry.path(spec).exists()
    # The second attempt resumed from the bytes the first one got.
    assert server.gets("/x2.pth") == [None, f"bytes={2 * 8192}-"]


def test_connection_refused_is_a_download_error(tmp_path: Path, payload: bytes) -> None:
    registry, _ = make_registry(tmp_path, ["http://127.0.0.1:9/x.pth"], payload)
    with pytest.raises(DownloadError, match="ConnectError"):
        pull(registry, registry.get("remote-x2"),
             options=DownloadOptions(connect_timeout=1, retries=1, backoff=0.01, progress=False))


def test_offline_mode_never_touches_the_network(tmp_path: Path, server: FixtureServer,
                                                payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, settings = make_registry(tmp_path, [server.base + "/x2.pth"], payload,
                                       offline=True)
    assert settings.offline
    with pytest.raises(OfflineError) as err:
        pull(registry, registry.get("remote-x2"), offline=settings.offline, options=FAST)
    assert "restora models import FILE --id remote-x2" in err.value.message
    assert server.requests == []


def test_custom_model_without_url_or_file(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [
        {"id": "local-only", "task": "upscale", "arch": "rrdbnet", "path": "nope/x.pth"}]}))
    registry = Registry.from_settings(Settings(home=tmp_path / "h", models=manifest))
    with pytest.raises(ModelNotInstalled, match="no download URL"):
        pull(registry, registry.get("local-only"), options=FAST)


def test_unverified_model_records_its_hash_and_checks_later_pulls(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, sha256=None)
    spec = registry.get("remote-x2")
    path = pull(registry, spec, options=FAST)
    recorded = json.loads((registry.models_dir / RECORDED_HASHES).read_text())
    assert recorded == {"remote_x2.pth": hashlib.sha256(payload).hexdigest()}
    assert registry.expected_sha256(spec) == hashlib.sha256(payload).hexdigest()
    # The upstream file changes: a fresh pull is now checked against the recorded hash.
    path.unlink()
    server.routes["/x2.pth"] = Behaviour(payload[::-1])
    with pytest.raises(ChecksumMismatch):
        pull(registry, spec, options=FAST)
    assert not path.exists()


def _reader(stream, lines: queue.Queue) -> None:  # type: ignore[no-untyped-def]
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def test_two_processes_download_once(tmp_path: Path, server: FixtureServer,
                                     payload: bytes) -> None:
    """Process A downloads (held mid-body); B must wait on the lock and then find it installed."""
    server.routes["/x2.pth"] = Behaviour(payload, gate_after=4 * 8192)
    registry, settings = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    env = {**os.environ, "RESTORA_HOME": str(settings.home), "RESTORA_MODELS": str(settings.models),
           "PYTHONPATH": str(REPO / "src")}
    env.pop("RESTORA_OFFLINE", None)
    cmd = [sys.executable, "-m", "restora.cli", "models", "pull", "remote-x2", "--quiet"]
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = None
    try:
        assert server.seen.wait(60), "process A never reached the server"
        b = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(b.stderr, lines), daemon=True).start()
        got = lines.get(timeout=60)
        assert got is not None and "waiting for another process" in got, got
        server.gate.set()  # let A finish
        out_a, err_a = a.communicate(timeout=60)
        b.wait(timeout=60)
        out_b = b.stdout.read() if b.stdout else ""
    finally:
        server.gate.set()
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    assert a.returncode == 0, err_a
    assert b.returncode == 0
    assert "installed at" in out_a and "installed at" in out_b
    assert server.gets("/x2.pth") == [None]  # exactly one download
    assert registry.path(registry.get("remote-x2")).read_bytes() == payload


# --- servers that send something else than the file ---------------------------------------------

def test_html_page_with_200_is_refused_not_installed_nor_recorded(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    """A captive portal answers 200 with its login page: for a model without a published hash
    that page used to be installed as the model and its hash recorded as the trusted one."""
    page = b"<!DOCTYPE html><html><body>Log in to the hotel Wi-Fi</body></html>"
    server.routes["/typed.pth"] = Behaviour(page, headers={"Content-Type": "text/html"})
    server.routes["/sniffed.pth"] = Behaviour(b"\n  <HTML><body>proxy error</body></HTML>")
    for route in ("/typed.pth", "/sniffed.pth"):
        registry, _ = make_registry(tmp_path, [server.base + route], page, sha256=None)
        spec = registry.get("remote-x2")
        with pytest.raises(DownloadError, match="HTML page") as err:
            pull(registry, spec, options=FAST)
        assert err.value.code == "download_failed"
        dest = registry.path(spec)
        assert not dest.exists() and not partial_path(dest).exists()
        assert not (registry.models_dir / RECORDED_HASHES).exists()
        assert len(server.gets(route)) == 1  # not retried: the next mirror is tried instead


def test_gzip_encoded_body_is_refused(tmp_path: Path, server: FixtureServer,
                                      payload: bytes) -> None:
    """A server (or proxy) that gzips the file despite Accept-Encoding: identity: its bytes are
    not the file's, so they are neither installed nor recorded as the file's hash."""
    import gzip

    server.routes["/x2.pth"] = Behaviour(gzip.compress(payload),
                                         headers={"Content-Encoding": "gzip"})
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, sha256=None)
    spec = registry.get("remote-x2")
    with pytest.raises(DownloadError, match="Content-Encoding 'gzip'"):
        pull(registry, spec, options=FAST)
    assert not registry.path(spec).exists()
    assert not (registry.models_dir / RECORDED_HASHES).exists()


def test_endless_body_stops_at_the_pinned_size(tmp_path: Path, server: FixtureServer,
                                               payload: bytes) -> None:
    """A body that never ends used to be written until the disk was full."""
    server.routes["/x2.pth"] = Behaviour(payload, endless=True)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, size=len(payload))
    spec = registry.get("remote-x2")
    with pytest.raises(DownloadError, match=f"more than the {len(payload)} bytes"):
        pull(registry, spec, options=FAST)
    dest = registry.path(spec)
    assert not dest.exists() and not partial_path(dest).exists()


def test_announced_length_over_the_pinned_size_is_refused_before_reading(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload + b"\0" * 1000)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, size=len(payload))
    spec = registry.get("remote-x2")
    with pytest.raises(DownloadError, match="announces"):
        pull(registry, spec, options=FAST)
    assert not partial_path(registry.path(spec)).exists()


def test_partial_holding_other_bytes_is_fetched_again_whole(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    """A partial left by an earlier run with wrong bytes (a cut login page, an old release):
    the resumed file fails its hash, so the file is fetched once more from the start instead
    of failing this pull with checksum_mismatch."""
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    spec = registry.get("remote-x2")
    dest = registry.path(spec)
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(b"\xff" * 1000)
    assert pull(registry, spec, options=FAST).read_bytes() == payload
    assert server.gets("/x2.pth") == ["bytes=1000-", None]


def test_credentials_in_a_url_are_never_in_errors(tmp_path: Path, server: FixtureServer,
                                                  payload: bytes) -> None:
    url = server.base.replace("http://", "http://alice:s3cret@") + "/gone.pth?token=t0ps3cret"
    registry, _ = make_registry(tmp_path, [url], payload)
    with pytest.raises(DownloadError) as err:
        pull(registry, registry.get("remote-x2"), options=FAST)
    text = json.dumps(err.value.to_dict())
    assert "HTTP 404" in text and "/gone.pth" in text
    assert "alice" not in text and "s3cret" not in text and "t0ps3cret" not in text
    assert len(server.gets("/gone.pth?token=t0ps3cret")) == 1  # the real URL was used

    server.routes["/x2.pth"] = Behaviour(payload[::-1])
    url = server.base.replace("http://", "http://alice:s3cret@") + "/x2.pth"
    registry, _ = make_registry(tmp_path, [url], payload)
    with pytest.raises(ChecksumMismatch) as mismatch:
        pull(registry, registry.get("remote-x2"), options=FAST)
    assert "s3cret" not in json.dumps(mismatch.value.to_dict())


# --- the models folder cannot take the file ------------------------------------------------------

def test_disk_full_is_one_error_and_the_partial_resumes(tmp_path: Path, server: FixtureServer,
                                                        payload: bytes) -> None:
    """A child process whose file size limit (RLIMIT_FSIZE) is hit mid-download gets the
    same error as a full disk: one disk_full line, not an OSError traceback; the bytes it got
    stay in the partial and the next pull resumes from there."""
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, settings = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    env = {**os.environ, "RESTORA_HOME": str(settings.home),
           "RESTORA_MODELS": str(settings.models), "PYTHONPATH": str(REPO / "src")}
    env.pop("RESTORA_OFFLINE", None)
    limit = 40_000
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "from restora.cli import main\n"
            "sys.exit(main(['models', 'pull', 'remote-x2', '--quiet']))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error[disk_full]: "), done.stderr
    dest = registry.path(registry.get("remote-x2"))
    assert "next pull resumes" in lines[0] and str(partial_path(dest)) in lines[0]
    assert not dest.exists()
    assert partial_path(dest).stat().st_size == limit
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload
    assert server.gets("/x2.pth") == [None, f"bytes={limit}-"]


def test_a_file_larger_than_the_free_space_is_refused_before_downloading(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    from restora.errors import ModelStorageError

    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, size=10 ** 18)
    with pytest.raises(ModelStorageError, match="needs .* more bytes") as err:
        pull(registry, registry.get("remote-x2"), options=FAST)
    assert err.value.code == "disk_full"
    assert server.requests == []


def test_models_folder_that_cannot_be_written_is_one_error(tmp_path: Path, server: FixtureServer,
                                                           payload: bytes) -> None:
    from restora.errors import ModelStorageError

    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    home = registry.models_dir.parent
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("a file where RESTORA_HOME should be a folder")
    with pytest.raises(ModelStorageError, match="cannot write model 'remote-x2'") as err:
        pull(registry, registry.get("remote-x2"), options=FAST)
    assert err.value.code == "models_not_writable"
    assert server.requests == []


def test_http_proxy_and_no_proxy_from_the_environment_are_honoured(
        tmp_path: Path, server: FixtureServer, payload: bytes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY: the request goes to the proxy (here the fixture server, which sees the
    absolute URL); NO_PROXY naming the host: straight to the host (which does not exist)."""
    url = "http://models.example.invalid/x2.pth"
    server.routes[url] = Behaviour(payload)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base)
    registry, _ = make_registry(tmp_path, [url], payload)
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload
    assert server.gets(url) == [None]

    monkeypatch.setenv("NO_PROXY", "models.example.invalid")
    (tmp_path / "direct").mkdir()
    registry, _ = make_registry(tmp_path / "direct", [url], payload)
    with pytest.raises(DownloadError, match="ConnectError"):
        pull(registry, registry.get("remote-x2"), options=FAST)
    assert server.gets(url) == [None]


def test_unusable_proxy_setting_is_one_download_error(
        tmp_path: Path, server: FixtureServer, payload: bytes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/x2.pth"] = Behaviour(payload)
    monkeypatch.setenv("HTTP_PROXY", "http://user:pw@proxy.invalid::")
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    with pytest.raises(DownloadError, match="proxy settings of the environment") as err:
        pull(registry, registry.get("remote-x2"), options=FAST)
    assert "pw" not in err.value.message
    assert server.requests == []


def test_import_into_a_folder_that_cannot_take_it_is_one_error(tmp_path: Path,
                                                               payload: bytes) -> None:
    from restora.errors import ModelStorageError
    from restora.models.download import import_file

    registry, _ = make_registry(tmp_path, ["https://models.invalid/x2.pth"], payload)
    home = registry.models_dir.parent
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("a file where RESTORA_HOME should be a folder")
    source = tmp_path / "x2.pth"
    source.write_bytes(payload)
    with pytest.raises(ModelStorageError, match="cannot write model 'remote-x2'") as err:
        import_file(registry, source, "remote-x2")
    assert err.value.code == "models_not_writable"


def test_killed_download_is_resumed_by_another_process(tmp_path: Path, server: FixtureServer,
                                                       payload: bytes) -> None:
    """Process A is killed mid-download (its lock dies with it); this process then resumes
    A's partial with a Range request instead of starting over or waiting forever."""
    import signal

    server.routes["/x2.pth"] = Behaviour(payload, gate_after=5 * 8192)
    registry, settings = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    env = {**os.environ, "RESTORA_HOME": str(settings.home), "RESTORA_MODELS": str(settings.models),
           "PYTHONPATH": str(REPO / "src")}
    env.pop("RESTORA_OFFLINE", None)
    a = subprocess.Popen([sys.executable, "-m", "restora.cli", "models", "pull", "remote-x2",
                          "--quiet"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    dest = registry.path(registry.get("remote-x2"))
    try:
        assert server.seen.wait(60), "process A never reached the server"
        deadline = time.monotonic() + 60
        while (not partial_path(dest).exists() or partial_path(dest).stat().st_size < 5 * 8192):
            assert time.monotonic() < deadline, "process A wrote nothing"
            time.sleep(0.05)
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=60)
    kept = partial_path(dest).stat().st_size
    server.routes["/x2.pth"] = Behaviour(payload)
    waited: list[str] = []
    assert pull(registry, registry.get("remote-x2"), options=FAST,
                on_wait=waited.append).read_bytes() == payload
    assert waited == []  # the dead process's lock was free at once
    assert server.gets("/x2.pth") == [None, f"bytes={kept}-"]


def test_a_complete_partial_answered_416_is_installed_without_a_new_download(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    """Killed after the last byte but before the rename: the resume asks for bytes past the
    end, the server answers 416, and the partial (size and hash right) is installed."""
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload, size=len(payload))
    dest = registry.path(registry.get("remote-x2"))
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(payload)
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload
    assert server.gets("/x2.pth") == [f"bytes={len(payload)}-"]


def test_a_resume_answered_from_the_wrong_byte_starts_over(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    server.routes["/x2.pth"] = Behaviour(payload, range_from_zero=True)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    dest = registry.path(registry.get("remote-x2"))
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(payload[:5000])
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload
    assert server.gets("/x2.pth") == ["bytes=5000-", None]


@pytest.mark.parametrize(("location", "reason"), [
    ("/loop.pth", "TooManyRedirects"),
    ("file:///etc/passwd", "unsupported protocol 'file://'"),
    ("ftp://127.0.0.1/x2.pth", "unsupported protocol 'ftp://'"),
])
def test_bad_redirects_are_one_download_error(tmp_path: Path, server: FixtureServer,
                                              payload: bytes, location: str,
                                              reason: str) -> None:
    server.routes["/loop.pth"] = Behaviour(payload, redirect=location)
    registry, _ = make_registry(tmp_path, [server.base + "/loop.pth"], payload)
    spec = registry.get("remote-x2")
    with pytest.raises(DownloadError, match=reason):
        pull(registry, spec, options=FAST)
    assert not registry.path(spec).exists() and not partial_path(registry.path(spec)).exists()


def test_a_symlinked_models_folder_is_pulled_into_and_loaded_from(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    from restora.models.runtime import Runtime

    server.routes["/x2.pth"] = Behaviour(payload)
    registry, settings = make_registry(tmp_path, [server.base + "/x2.pth"], payload,
                                       size=len(payload))
    elsewhere = tmp_path / "big-disk" / "models"
    elsewhere.mkdir(parents=True)
    settings.models_dir.parent.mkdir(parents=True)
    settings.models_dir.symlink_to(elsewhere, target_is_directory=True)
    pull(registry, registry.get("remote-x2"), options=FAST)
    assert (elsewhere / "remote_x2.pth").read_bytes() == payload
    assert Runtime(settings, device="cpu", engine="torch").load("remote-x2").module is not None


def test_a_complete_partial_answered_416_without_a_known_size_is_installed(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    """A model with a hash but no published size (as the DDColor entries): the 416's
    `bytes */N` says the partial is whole, so it is checked and installed, not fetched again."""
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    dest = registry.path(registry.get("remote-x2"))
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(payload)
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload
    assert server.gets("/x2.pth") == [f"bytes={len(payload)}-"]


def test_a_whole_length_partial_of_other_bytes_answered_416_is_fetched_again(
        tmp_path: Path, server: FixtureServer, payload: bytes) -> None:
    """Same length, wrong bytes, no published size: the hash refuses it and the file comes
    again whole; nothing wrong is installed."""
    server.routes["/x2.pth"] = Behaviour(payload)
    registry, _ = make_registry(tmp_path, [server.base + "/x2.pth"], payload)
    dest = registry.path(registry.get("remote-x2"))
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(bytes(len(payload)))
    assert pull(registry, registry.get("remote-x2"), options=FAST).read_bytes() == payload
    assert server.gets("/x2.pth")[-1] is None  # the last request was a whole-file GET
