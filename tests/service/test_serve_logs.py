"""`restora serve` with RESTORA_LOG_FORMAT=json: every line it prints is one JSON object, uvicorn's
startup lines and access log included (what log shippers expect from a container)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from service_helpers import free_port, png_bytes, wait_for


def _serve(tmp_path: Path, fmt: str) -> tuple[list[str], list[str]]:
    """Run `restora serve`, make three requests (one refused), stop it: (stdout, stderr) lines."""
    port = free_port()
    env = {**os.environ, "RESTORA_HOME": str(tmp_path / "home"), "RESTORA_DEVICE": "cpu",
           "RESTORA_LOG_FORMAT": fmt}
    env.pop("RESTORA_MODELS", None)
    out, err = tmp_path / f"{fmt}.out", tmp_path / f"{fmt}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "restora.cli", "serve", "--port",
                                 str(port)], env=env, stdout=fo, stderr=fe)
        try:
            def up() -> bool:
                assert proc.poll() is None, err.read_text()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
                except httpx.HTTPError:
                    return False

            wait_for(up, timeout=60, interval=0.1)
            assert httpx.get(f"http://127.0.0.1:{port}/no/such/page").status_code == 404
            # no weights in this home: 503 with the install command
            r = httpx.post(f"http://127.0.0.1:{port}/api/v1/tools/enhance-faces",
                           files={"file": ("a.png", png_bytes(), "image/png")})
            assert r.status_code == 503
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) in (0, -signal.SIGTERM)
    return ([ln for ln in out.read_text().splitlines() if ln.strip()],
            [ln for ln in err.read_text().splitlines() if ln.strip()])


def test_json_logs_are_json_lines_uvicorns_included(tmp_path: Path) -> None:
    stdout, stderr = _serve(tmp_path, "json")
    records = []
    for line in stdout + stderr:
        records.append(json.loads(line))  # fails on any plain-text line
    messages = [r["msg"] for r in records]
    assert any("serving on http://127.0.0.1:" in m for m in messages)
    assert any("Application startup complete" in m for m in messages)  # uvicorn.error
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any('"GET /no/such/page HTTP/1.1" 404' in r["msg"] for r in access)
    assert any('"POST /api/v1/tools/enhance-faces HTTP/1.1" 503' in r["msg"] for r in access)
    assert all(set(r) >= {"ts", "level", "logger", "msg", "node"} for r in records)


def test_text_logs_keep_uvicorns_own_format(tmp_path: Path) -> None:
    stdout, stderr = _serve(tmp_path, "text")
    assert any(ln.startswith("restora: serving on http://127.0.0.1:") for ln in stderr)
    assert any("GET /no/such/page HTTP/1.1" in ln and "404" in ln for ln in stdout + stderr)
