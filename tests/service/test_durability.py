"""Restart durability: a server process killed with SIGKILL mid-job, restarted on the same home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from service_helpers import free_port, png_bytes, wait_for

SCRIPT = Path(__file__).with_name("run_server.py")


def start(home: Path, port: int, step_s: float) -> subprocess.Popen:
    env = {**os.environ, "RESTORA_HOME": str(home)}
    env.pop("RESTORA_MODELS", None)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(home), str(port), str(step_s)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, interval=0.1)
    return proc


def test_sigkill_mid_job_then_restart(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(home, port, step_s=0.5)  # 20 bands x 0.5 s: still running when killed
    try:
        ids = []
        for i in range(3):
            r = httpx.post(f"{url}/api/v1/tools/enhance-faces",
                           files={"file": (f"p{i}.png", png_bytes(seed=i), "image/png")})
            assert r.status_code == 202
            ids.append(r.json()["jobId"])
        wait_for(lambda: httpx.get(f"{url}/api/v1/jobs/{ids[0]}").json()["status"]
                 == "processing")
        assert httpx.get(f"{url}/api/v1/jobs/{ids[1]}").json()["status"] == "queued"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    proc = start(home, port, step_s=0.0)
    try:
        def final(job_id: str) -> dict | None:
            snap = httpx.get(f"{url}/api/v1/jobs/{job_id}").json()
            return snap if snap["status"] in ("succeeded", "failed", "canceled") else None

        first = wait_for(lambda: final(ids[0]), timeout=30)
        assert first["status"] == "failed"
        assert first["error"] == {"code": "interrupted", "message": "interrupted by restart"}
        for job_id in ids[1:]:
            snap = wait_for(lambda: final(job_id), timeout=30)
            assert snap["status"] == "succeeded", snap
            assert httpx.get(url + snap["result"]["downloadUrl"]).status_code == 200
        # the SSE stream of the interrupted job ends with its failure
        text = httpx.get(f"{url}/api/v1/jobs/{ids[0]}/progress", timeout=10).text
        assert "event: failed" in text and "interrupted by restart" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_cli_serve_starts_and_stops(tmp_path):
    """`restora serve --port` starts the real app (Runtime created at startup) and exits on TERM."""
    port = free_port()
    env = {**os.environ, "RESTORA_HOME": str(tmp_path / "home"), "RESTORA_DEVICE": "cpu"}
    env.pop("RESTORA_MODELS", None)
    proc = subprocess.Popen([sys.executable, "-m", "restora.cli", "serve", "--port", str(port),
                             "--workers", "2", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).json() == {
                    "status": "online", "device": "cpu"}
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, interval=0.1)
        # no weights in this home: the missing model is a 503 naming bundle and command
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/tools/enhance-faces",
                       files={"file": ("a.png", png_bytes(), "image/png")})
        assert r.status_code == 503 and "restora models pull" in r.json()["error"]
    finally:
        proc.send_signal(signal.SIGTERM)
        # graceful stop; uvicorn re-raises the caught SIGTERM once shut down
        assert proc.wait(15) in (0, -signal.SIGTERM)
