"""The request-body deadline must not cut a progress stream that outlives it."""

from __future__ import annotations

import httpx

from service_helpers import live_server, make_settings, png_bytes, service_tools


def test_sse_stream_outlives_the_body_timeout(tmp_path):
    settings = make_settings(tmp_path / "home", body_timeout_s=0.3)
    with live_server(settings, tools=service_tools(step_s=0.08, steps=20)) as srv:
        r = httpx.post(srv.url + "/api/v1/tools/enhance-faces", timeout=30,
                       files={"file": ("a.png", png_bytes(), "image/png")})
        job_id = r.json()["jobId"]
        kinds = []
        with httpx.stream("GET", f"{srv.url}/api/v1/jobs/{job_id}/progress",
                          timeout=30) as s:
            for line in s.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line[7:])
                    if line[7:] in ("complete", "failed"):
                        break
        assert kinds[-1] == "complete" and kinds.count("progress") > 3
