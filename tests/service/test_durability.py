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
