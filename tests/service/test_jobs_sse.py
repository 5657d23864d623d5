"""SnapOtter-style jobs against a real uvicorn server: submit, status, SSE, cancel, downloads."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from service_helpers import (live_server, make_settings, png_bytes, service_tools, wait_for)


def parse_sse(text: str) -> list[dict]:
    """Split an SSE body into frames: {'id', 'event', 'data'} or {'comment'}."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        frame: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                frame[key] = value[1:] if value.startswith(" ") else value
        if "data" in frame:
            frame["data"] = json.loads(frame["data"])
        frames.append(frame)
    return frames


def submit(client: httpx.Client, data: bytes, settings: dict | None = None,
           tool: str = "enhance-faces", name: str = "face.png") -> httpx.Response:
    form = {"settings": json.dumps(settings)} if settings is not None else {}
    return client.post(f"/api/v1/tools/{tool}", files={"file": (name, data, "image/png")},
                       data=form)


@pytest.fixture
def server(tmp_path):
    with live_server(make_settings(tmp_path / "home"), tools=service_tools(step_s=0.08)) as srv:
        yield srv


def test_enhance_job_end_to_end_with_sse_replay(server):
    src = png_bytes(80, 60)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = submit(c, src, {"strength": 0.5, "model": "gfpgan"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["async"] is True and len(body["jobId"]) == 36
        job_id = body["jobId"]

        # Read the stream until the first few processing frames, then drop the connection.
        seen: list[dict] = []
        with c.stream("GET", f"/api/v1/jobs/{job_id}/progress") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            buf = ""
            for chunk in resp.iter_text():
                buf += chunk
                frames = [f for f in parse_sse(buf) if "id" in f]
                if sum(1 for f in frames if f["data"]["phase"] == "processing") >= 3:
                    seen = frames
                    break
        last_id = seen[-1]["id"]
        assert [int(f["id"]) for f in seen] == sorted(int(f["id"]) for f in seen)

        # Reconnect with Last-Event-ID: only newer frames, ending with the final one.
        resp = c.get(f"/api/v1/jobs/{job_id}/progress", headers={"Last-Event-ID": last_id})
        rest = [f for f in parse_sse(resp.text) if "id" in f]
        assert rest and all(int(f["id"]) > int(last_id) for f in rest)
        assert rest[-1]["event"] == "complete"
        final = rest[-1]["data"]
        assert final["phase"] == "complete" and final["percent"] == 100
        assert rest[-2]["event"] == "progress" and rest[-2]["data"] == final
        for f in seen + rest[:-1]:
            assert f["event"] == "progress"
            assert set(f["data"]) >= {"phase", "stage", "percent"}
        percents = [f["data"]["percent"] for f in seen + rest[:-2]]
        assert percents == sorted(percents)

        result = final["result"]
        for key in ("downloadUrl", "previewUrl", "originalSize", "processedSize",
                    "facesDetected", "faces", "model"):
            assert key in result
        assert result["originalSize"] == len(src)
        assert result["downloadUrl"] == f"/api/v1/download/{job_id}/face_enhanced.png"

        # Connecting after the end still gives the final event (and only it, given the id).
        again = parse_sse(c.get(f"/api/v1/jobs/{job_id}/progress",
                                headers={"Last-Event-ID": rest[-1]["id"]}).text)
        # the final result comes as `event: progress` with phase complete (SnapOtter's
        # document) and as `event: complete`, both under the final id
        assert [f["event"] for f in again if "event" in f] == ["progress", "complete"]
        assert again[-2]["data"] == again[-1]["data"] and again[-2]["id"] == again[-1]["id"]
        full = [f for f in parse_sse(c.get(f"/api/v1/jobs/{job_id}/progress").text) if "id" in f]
        assert full[0]["data"]["phase"] == "queued" and full[-1]["event"] == "complete"

        snap = c.get(f"/api/v1/jobs/{job_id}").json()
        assert snap["status"] == "succeeded" and snap["result"] == result
        assert snap["progress"]["percent"] == 100

        # The result is the real posterized image and the preview is a real WebP.
        out = c.get(result["downloadUrl"])
        assert out.status_code == 200 and out.headers["content-type"] == "image/png"
        arr = np.asarray(PILImage.open(io.BytesIO(out.content)))
        src_arr = np.asarray(PILImage.open(io.BytesIO(src)))
        assert arr.shape == src_arr.shape
        assert np.array_equal(arr, (src_arr >> 5) << 5)
        assert result["processedSize"] == len(out.content)
        prev = c.get(result["previewUrl"])
        assert prev.status_code == 200 and prev.content[8:12] == b"WEBP"
        assert c.get(f"/api/v1/download/{job_id}/..%2Fjobs.db").status_code == 404
        assert c.get(f"/api/v1/download/{job_id}/nope.png").status_code == 404


def test_a_last_event_id_past_any_sequence_number_replays_the_final_event(server):
    """An id larger than the database's integers (a client's garbage) is "after everything":
    the stream gives the final event again instead of breaking off with a server error."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        job_id = submit(c, png_bytes(24, 16)).json()["jobId"]
        wait_for(lambda: c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded")
        for kwargs in ({"headers": {"Last-Event-ID": str(2**64)}},
                       {"params": {"lastEventId": str(10**30)}}):
            r = c.get(f"/api/v1/jobs/{job_id}/progress", **kwargs)
            assert r.status_code == 200
            events = [f["event"] for f in parse_sse(r.text) if "event" in f]
            assert events == ["progress", "complete"], r.text


def test_heartbeat_comments_while_waiting(tmp_path):
    settings = make_settings(tmp_path / "home", sse_heartbeat_s=0.2)
    with live_server(settings, tools=service_tools(step_s=0.6, steps=2)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        job_id = submit(c, png_bytes()).json()["jobId"]
        frames = parse_sse(c.get(f"/api/v1/jobs/{job_id}/progress").text)
        assert any(f.get("comment", "").startswith("heartbeat") for f in frames)
        assert frames[-1]["event"] == "complete"


def test_cancel_queued_and_running(tmp_path):
    settings = make_settings(tmp_path / "home", workers=1)
    with live_server(settings, tools=service_tools(step_s=0.2, steps=50)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        running = submit(c, png_bytes()).json()["jobId"]
        queued = submit(c, png_bytes(seed=1)).json()["jobId"]
        wait_for(lambda: c.get(f"/api/v1/jobs/{running}").json()["status"] == "processing")
        assert c.get(f"/api/v1/jobs/{queued}").json()["status"] == "queued"

        r = c.post(f"/api/v1/jobs/{queued}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        r = c.post(f"/api/v1/jobs/{running}/cancel")
        assert r.json()["status"] == "canceled"
        assert r.json()["error"]["code"] == "cancelled"
        frames = parse_sse(c.get(f"/api/v1/jobs/{running}/progress").text)
        assert frames[-1]["event"] == "failed" and frames[-1]["data"]["code"] == "cancelled"
        # the worker stops and is free again: a new job completes
        nxt = submit(c, png_bytes(seed=2)).json()["jobId"]
        srv.manager.tools["enhance-faces"] = service_tools()["enhance-faces"]
        wait_for(lambda: c.get(f"/api/v1/jobs/{nxt}").json()["status"] == "succeeded")
        assert c.get(f"/api/v1/jobs/{running}").json()["status"] == "canceled"
        # cancelling a finished job changes nothing
        assert c.post(f"/api/v1/jobs/{nxt}/cancel").json()["status"] == "succeeded"


def test_timeout_counts_from_start_of_execution(tmp_path):
    settings = make_settings(tmp_path / "home", workers=1, job_timeout_s=2.0)
    with live_server(settings, tools=service_tools(step_s=0.1, steps=3)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        # Each job runs ~0.3 s: ten queued back to back take 1.5x the limit in total,
        # yet none times out because the clock starts when a job starts running. (Each job has
        # ~6x its run time in hand: with 2x, a busy CI machine once timed one out.)
        ids = [submit(c, png_bytes(seed=i)).json()["jobId"] for i in range(10)]
        for job_id in ids:
            wait_for(lambda: c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded")
        srv.manager.tools["enhance-faces"] = service_tools(step_s=0.5, steps=10)["enhance-faces"]
        slow = submit(c, png_bytes()).json()["jobId"]
        snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{slow}").json())["status"] == "failed"
                        and s)
        assert snap["error"]["code"] == "timeout"
        assert snap["finishedAt"] is not None


def test_a_timeout_is_recorded_before_the_job_is_told_to_stop():
    """The watchdog records the timeout before it sets the job's cancel event: a tool that
    stops at once would otherwise end the job as cancelled first (the store keeps the first
    final state), which a busy CI machine once did to the test above."""
    import threading
    import time

    from restora.service.queue import InProcessQueue

    seen: list[str] = []
    done = threading.Event()

    def on_timeout(job_id: str) -> None:
        time.sleep(0.2)  # a slow store write
        seen.append(f"timeout {job_id}")

    def run(job_id: str, cancel: threading.Event) -> None:
        cancel.wait(10)
        seen.append(f"stopped {job_id}")
        done.set()

    queue = InProcessQueue(run, workers=1, depth=1, timeout_s=0.2, on_timeout=on_timeout)
    queue.start()
    try:
        queue.submit("a")
        assert done.wait(10)
    finally:
        queue.stop()
    assert seen == ["timeout a", "stopped a"]


def test_failed_job_reports_error_code(server):
    bad = png_bytes()[:60]  # real PNG header, truncated: passes sniffing, fails decoding
    with httpx.Client(base_url=server.url, timeout=30) as c:
        job_id = submit(c, bad).json()["jobId"]
        frames = parse_sse(c.get(f"/api/v1/jobs/{job_id}/progress").text)
        assert frames[-1]["event"] == "failed"
        assert frames[-1]["data"]["code"] == "corrupt_image"
        snap = c.get(f"/api/v1/jobs/{job_id}").json()
        assert snap["status"] == "failed" and snap["error"]["code"] == "corrupt_image"


def test_queue_full_gives_429_with_retry_after(tmp_path):
    settings = make_settings(tmp_path / "home", workers=1, queue_depth=2)
    with live_server(settings, tools=service_tools(step_s=0.3, steps=20)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        first = submit(c, png_bytes()).json()["jobId"]
        wait_for(lambda: c.get(f"/api/v1/jobs/{first}").json()["status"] == "processing")
        assert submit(c, png_bytes()).status_code == 202
        assert submit(c, png_bytes()).status_code == 202
        r = submit(c, png_bytes())
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["code"] == "queue_full" and "error" in r.json()
        for job in (first,):
            c.post(f"/api/v1/jobs/{job}/cancel")


def test_ttl_cleanup_removes_job_and_files(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        job_id = submit(c, png_bytes()).json()["jobId"]
        wait_for(lambda: c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded")
        job_dir = server.manager.job_dir(job_id)
        assert job_dir.is_dir()
        assert server.manager.cleanup(now=time.time()) == []  # not expired yet
        removed = server.manager.cleanup(now=time.time() + server.settings.result_ttl_s + 1)
        assert removed == [job_id]
        assert not job_dir.exists()
        r = c.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 404 and r.json()["code"] == "job_not_found"
