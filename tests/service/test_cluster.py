"""Scale-out: 2 API nodes and 3 worker processes on real PostgreSQL and Redis.

Every node is its own OS process started like ``restora serve`` / ``restora worker`` (settings
from the environment); workers share a storage folder with the API nodes. The tests kill
processes with SIGKILL and SIGSTOP, so what survives is what the store, the leases and the task
engine guarantee, not anything held in memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import select

from real_servers import free_port, postgres_server, redis_server
from restora.service.catalog import worker_models
from restora.service.store import JobStore
from service_helpers import http_fixture_server, png_bytes, wait_for

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
SCRIPT = HERE / "run_node.py"
STEP_S = 0.05  # 20 bands: a 1 s job


class Node:
    def __init__(self, role: str, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.role, self.port, self.proc, self.log = role, port, proc, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(30)


class Cluster:
    def __init__(self, tmp: Path, db_url: str, queue_url: str, hook_url: str) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.hook_url = hook_url
        self.env = {
            **os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{HERE}",
            "RESTORA_HOME": str(tmp / "home"), "RESTORA_STORAGE_DIR": str(tmp / "storage"),
            "RESTORA_DATABASE_URL": db_url, "RESTORA_QUEUE_URL": queue_url,
            "RESTORA_LEASE_S": "2", "RESTORA_QUEUE_HEARTBEAT_S": "3",
            "RESTORA_REAPER_INTERVAL_S": "0.5", "RESTORA_JOB_TIMEOUT_S": "300",
            "RESTORA_SSE_HEARTBEAT_S": "1", "RESTORA_QUEUE_DEPTH": "500",
            "RESTORA_PRELOAD": "false", "RESTORA_ALLOW_LOOPBACK_WEBHOOKS": "true",
            "RESTORA_WEBHOOK_BACKOFF_S": "0.2",
            # workers re-advertise their models every second: a killed worker's advert is
            # stale after 3 s (the model test below waits for that)
            "RESTORA_ADVERT_INTERVAL_S": "1",
            "RESTORA_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "RESTORA_LOG_FORMAT": "json",
            # the killable decode child costs seconds per job on a loaded 2-core machine and
            # is tested on its own (test_hardening); here it would only slow every job
            "RESTORA_DECODE_IN_SUBPROCESS": "false"}
        self.env.pop("RESTORA_MODELS", None)
        self.apis: list[Node] = []
        self.workers: list[Node] = []
        self.store = JobStore(db_url)

    def _start(self, role: str, step_s: float = STEP_S) -> Node:
        port = free_port()
        log = self.tmp / f"{role}-{port}.log"
        proc = subprocess.Popen([sys.executable, str(SCRIPT), role, str(port), str(step_s)],
                                env=self.env, stdout=subprocess.DEVNULL,
                                stderr=log.open("wb"))
        node = Node(role, port, proc, log)
        path = "/readyz"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{role} exited: {log.read_text()[-3000:]}")
            try:
                return httpx.get(node.url + path, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, interval=0.1)
        return node

    def start_api(self, **env: str) -> Node:
        """An API node; ``env``: settings of its own (RESTORA_* variables)."""
        saved = self.env
        self.env = {**saved, **env}
        try:
            node = self._start("api")
        finally:
            self.env = saved
        self.apis.append(node)
        return node

    def start_worker(self, role: str = "worker", step_s: float = STEP_S) -> Node:
        node = self._start(role, step_s)
        self.workers.append(node)
        return node

    def worker_of(self, job_id: str) -> Node:
        record = self.store.get(job_id)
        pid = int(record.worker_id.split(":")[1])
        return next(w for w in self.workers if w.proc.pid == pid)

    def stop(self) -> None:
        for node in self.apis + self.workers:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
                node.proc.terminate()
        for node in self.apis + self.workers:
            try:
                node.proc.wait(15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)
        self.store.close()


class Hooks:
    """A webhook receiver counting deliveries per job."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, req: Any) -> None:
        body = json.loads(req.rfile.read(int(req.headers["Content-Length"])))
        with self.lock:
            self.received.append(body)
        req.send_response(204)
        req.end_headers()

    def count(self, job_id: str) -> int:
        with self.lock:
            return sum(1 for b in self.received if b["data"].get("jobId", b["data"].get("id"))
                       == job_id)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[Cluster, Hooks]]:
    tmp = tmp_path_factory.mktemp("cluster")
    hooks = Hooks()
    with postgres_server() as pg, redis_server() as redis_url, \
            http_fixture_server(hooks) as hook_base:
        c = Cluster(tmp, pg.create_db(), redis_url, f"{hook_base}/hook")
        try:
            c.start_api()
            c.start_api()
            for _ in range(3):
                c.start_worker()
            yield c, hooks
        finally:
            c.stop()


def submit(api: Node, *, webhook: str | None = None, seed: int = 0) -> str:
    data: dict[str, str] = {"seed": str(seed)}
    if webhook:
        data["webhook_url"] = webhook
    r = httpx.post(api.url + "/api/v1/tools/face-recovery", data=data, timeout=30,
                   files={"image": ("a.png", png_bytes(48, 40, seed), "image/png")})
    assert r.status_code == 202, r.text
    return r.json()["jobId"]


def stream(api: Node, job_id: str, last_id: int | None = None,
           stop_after: int | None = None) -> list[tuple[int, str, dict]]:
    """Read SSE frames until the final one (or ``stop_after`` frames): (id, event, data)."""
    headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
    frames: list[tuple[int, str, dict]] = []
    with httpx.stream("GET", f"{api.url}/api/v1/jobs/{job_id}/progress", headers=headers,
                      timeout=httpx.Timeout(30, read=30)) as r:
        assert r.status_code == 200
        cur: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line == "":
                if "id" in cur:
                    frames.append((int(cur["id"]), cur["event"], json.loads(cur["data"])))
                    if cur["event"] in ("complete", "failed"):
                        return frames
                    if stop_after is not None and len(frames) >= stop_after:
                        return frames
                cur = {}
                continue
            key, _, value = line.partition(": ")
            cur[key] = value
    return frames


def unique(seqs: list[int]) -> list[int]:
    """Frame ids in order, each once (the final event is sent as two frames with one id)."""
    return list(dict.fromkeys(seqs))


def finals(c: Cluster, job_id: str) -> list[str]:
    return [e.kind for e in c.store.events_after(job_id) if e.kind in ("complete", "failed")]


def test_40_jobs_across_both_api_nodes_with_sse_on_the_other(cluster):
    c, hooks = cluster
    a, b = c.apis
    ids = [submit((a, b)[i % 2], webhook=c.hook_url, seed=i) for i in range(40)]
    results: dict[str, list] = {}

    def watch(i: int, job_id: str) -> None:
        results[job_id] = stream((b, a)[i % 2], job_id, last_id=0)

    threads = [threading.Thread(target=watch, args=(i, j)) for i, j in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    used_workers = set()
    for i, job_id in enumerate(ids):
        frames = results[job_id]
        assert frames[-1][1] == "complete", frames[-1]
        seqs = unique([f[0] for f in frames])
        assert seqs == sorted(seqs)
        assert seqs == [e.seq for e in c.store.events_after(job_id)]  # nothing missed
        assert finals(c, job_id) == ["complete"]
        record = c.store.get(job_id)
        assert record.status == "succeeded" and record.attempts == 1
        used_workers.add(record.worker_id)
        # the result downloads from either node (shared storage)
        url = record.result["downloadUrl"]
        for node in (a, b):
            assert httpx.get(node.url + url, timeout=30).status_code == 200
    assert len(used_workers) == 3
    wait_for(lambda: all(hooks.count(j) == 1 for j in ids), timeout=60)
    time.sleep(1.0)
    assert all(hooks.count(j) == 1 for j in ids)  # and never a second time


def test_kill_9_of_a_worker_mid_job_redelivers_it_once(cluster):
    c, hooks = cluster
    a, b = c.apis
    job_id = submit(a, webhook=c.hook_url, seed=101)
    wait_for(lambda: (r := c.store.get(job_id)).status == "processing" and r.percent > 20,
             timeout=60, interval=0.02)
    victim = c.worker_of(job_id)
    first = c.store.get(job_id).worker_id
    t_kill = time.monotonic()
    victim.kill(signal.SIGKILL)
    c.workers.remove(victim)
    record = wait_for(lambda: (r := c.store.get(job_id)).is_final and r, timeout=120)
    redelivered_after = time.monotonic() - t_kill
    assert record.status == "succeeded", record.error
    assert record.worker_id != first and record.attempts == 2
    assert redelivered_after < 120
    assert finals(c, job_id) == ["complete"]
    wait_for(lambda: hooks.count(job_id) == 1, timeout=30)
    frames = stream(b, job_id, last_id=0)
    assert frames[-1][1] == "complete"
    c.start_worker()


def test_kill_9_of_an_api_node_while_streaming_then_resume_on_the_other(cluster):
    c, _ = cluster
    a, b = c.apis
    job_id = submit(b, seed=202)
    got = stream(a, job_id, last_id=0, stop_after=3)
    assert got and got[-1][1] == "progress"
    a.kill(signal.SIGKILL)
    c.apis.remove(a)
    rest = stream(b, job_id, last_id=got[-1][0])
    seqs = unique([f[0] for f in got + rest])
    assert seqs == [e.seq for e in c.store.events_after(job_id)]  # contiguous, nothing missed
    assert rest[-1][1] == "complete"
    c.apis.insert(0, c._start("api"))


def test_cancel_on_one_node_stops_the_job_on_its_worker(cluster):
    c, hooks = cluster
    a, b = c.apis
    # A job runs 20 bands x 0.05 s = 1 s on a worker; on a loaded machine the cancel can arrive
    # after it succeeded, so try again with a new job (a bounded number of times) rather than
    # skip: one of them must be cancelled while it runs.
    for attempt in range(5):
        job_id = submit(a, webhook=c.hook_url, seed=303 + 10 * attempt)
        wait_for(lambda: c.store.get(job_id).status in ("processing", "succeeded"), timeout=60,
                 interval=0.01)
        r = httpx.post(f"{b.url}/api/v1/jobs/{job_id}/cancel", timeout=30)
        assert r.status_code == 200
        if c.store.get(job_id).status != "succeeded":
            break
    record = c.store.get(job_id)
    assert record.status == "canceled"
    frames = stream(a, job_id, last_id=0)
    assert frames[-1][1] == "failed" and frames[-1][2]["status"] == "canceled"
    assert finals(c, job_id) == ["failed"]
    # the worker stopped working on it: its lease is released and it takes new jobs
    nxt = submit(b, seed=304)
    wait_for(lambda: c.store.get(nxt).status == "succeeded", timeout=60)
    wait_for(lambda: hooks.count(job_id) == 1, timeout=30)


def test_worker_restart_loses_no_queued_job(cluster):
    c, hooks = cluster
    a, b = c.apis
    ids = [submit((a, b)[i % 2], webhook=c.hook_url, seed=400 + i) for i in range(12)]
    # a graceful restart and a crash, while jobs wait and run
    c.workers[0].kill(signal.SIGTERM)
    c.workers.pop(0)
    c.workers[0].kill(signal.SIGKILL)
    c.workers.pop(0)
    c.start_worker()
    c.start_worker()
    for job_id in ids:
        record = wait_for(lambda: (r := c.store.get(job_id)).is_final and r, timeout=120)
        assert record.status == "succeeded", (record.status, record.error)
        assert finals(c, job_id) == ["complete"]
    wait_for(lambda: all(hooks.count(j) == 1 for j in ids), timeout=60)


def freeze_outside_a_transaction(store: JobStore, node: Node) -> None:
    """SIGSTOP ``node`` where it holds no open transaction. Stopped inside one, it keeps the job
    row locked until PostgreSQL ends the idle session (15 s): the test's own update of the row
    then waits, the lease runs out meanwhile, and the job may end as ``interrupted`` before the
    time limit is seen (both are correct final states; this test is about the time limit)."""
    from sqlalchemy import text

    for _ in range(50):
        node.kill(signal.SIGSTOP)
        time.sleep(0.3)  # the other nodes' transactions are far shorter than this
        with store.engine.connect() as conn:
            open_tx = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'")).scalar()
        if not open_tx:
            return
        node.proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("the worker was inside a transaction at every stop")


def test_timeout_is_enforced_when_the_worker_hangs(cluster):
    """SIGSTOP freezes the worker mid-job: the reaper on another node fails the job at the
    time limit; when the worker wakes up its result is discarded (one final state)."""
    c, _ = cluster
    a, _b = c.apis
    store = c.store
    job_id = submit(a, seed=505)
    wait_for(lambda: store.get(job_id).status == "processing", timeout=60, interval=0.01)
    frozen = c.worker_of(job_id)
    freeze_outside_a_transaction(store, frozen)
    try:
        # simulate a job that has run for longer than the limit (300 s) without waiting for it
        with store.engine.begin() as conn:
            from sqlalchemy import update

            from restora.service.store import jobs
            conn.execute(update(jobs).where(jobs.c.id == job_id)
                         .values(started_at=time.time() - 1000))
        record = wait_for(lambda: (r := store.get(job_id)).is_final and r, timeout=30)
        assert record.status == "failed" and record.error["code"] == "timeout"
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    time.sleep(3.0)  # the worker wakes, loses its lease and must not write a second outcome
    assert finals(c, job_id) == ["failed"]
    assert store.get(job_id).error["code"] == "timeout"


def test_synchronous_codeformer_route_waits_for_a_remote_worker(cluster):
    c, _ = cluster
    r = httpx.post(c.apis[1].url + "/api/process", timeout=60,
                   files={"image": ("a.png", png_bytes(40, 32, 9), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "success" and r.json()["count"] == 1


def test_health_readiness_and_metrics(cluster):
    c, _ = cluster
    api, worker = c.apis[0], c.workers[0]
    assert httpx.get(api.url + "/healthz").json() == {"status": "ok", "role": "api"}
    assert httpx.get(api.url + "/readyz").json()["status"] == "ready"
    assert httpx.get(worker.url + "/readyz").json()["role"] == "worker"
    text = httpx.get(api.url + "/metrics").text
    assert "restora_queue_depth" in text and "restora_jobs_running" in text
    w = Counter()
    for node in c.workers:
        body = httpx.get(node.url + "/metrics").text
        for line in body.splitlines():
            if line.startswith("restora_job_seconds_count{"):
                w[line.split("{")[1].split("}")[0]] += float(line.rsplit(" ", 1)[1])
    assert any("outcome=\"succeeded\"" in k for k in w)
    # structured logs carry the job id
    logs = "".join(n.log.read_text() for n in c.workers)
    lines = [json.loads(x) for x in logs.splitlines() if x.startswith("{")]
    assert any(x.get("jobId") and "job succeeded" in x["msg"] for x in lines)


def test_a_worker_whose_stopped_job_keeps_running_exits_for_a_restart(cluster):
    """A job that ignores its cancel (here: 3 s bands between checks) past hang_grace_s makes
    its worker exit with status 75, so a supervisor starts a clean process."""
    c, _ = cluster
    for w in c.workers:
        w.kill(signal.SIGTERM)
    c.workers.clear()
    c.env["RESTORA_HANG_GRACE_S"] = "0.5"
    try:
        slow = c.start_worker(step_s=3.0)
    finally:
        c.env.pop("RESTORA_HANG_GRACE_S")
    job_id = submit(c.apis[0], seed=606)
    wait_for(lambda: c.store.get(job_id).status == "processing", timeout=60, interval=0.02)
    assert httpx.post(f"{c.apis[1].url}/api/v1/jobs/{job_id}/cancel").json()["status"] == \
        "canceled"
    assert slow.proc.wait(60) == 75
    c.workers.remove(slow)
    assert finals(c, job_id) == ["failed"] and c.store.get(job_id).status == "canceled"


def test_a_worker_with_real_tiny_models_runs_enhance_faces(cluster, tmp_path):
    """The real face pipeline in a worker process (tiny conformance models, loaded once at the
    worker's start), submitted and streamed through an API node that has no models."""
    from conftest import shared_path
    from tiny_models import write_tiny_manifest

    c, _ = cluster
    photo = (shared_path("testdata", "photos") / "03.jpg").read_bytes()
    manifest = write_tiny_manifest(tmp_path)
    for w in c.workers:  # only the model worker may take this job
        w.kill(signal.SIGTERM)
    c.workers.clear()
    c.env.update(RESTORA_MODELS=str(manifest), RESTORA_DEVICE="cpu", RESTORA_THREADS="2",
                 RESTORA_PRELOAD="true")
    try:
        worker = c.start_worker("model-worker")
    finally:
        for k in ("RESTORA_MODELS", "RESTORA_DEVICE", "RESTORA_THREADS"):
            c.env.pop(k, None)
        c.env["RESTORA_PRELOAD"] = "false"
    a = c.apis[0]

    def only_the_model_worker_advertises() -> bool:
        with c.store.engine.connect() as conn:
            rows = conn.execute(select(worker_models.c.worker_id).where(
                worker_models.c.seen_at >= time.time() - 3.0)).all()
        return [r[0].split(":")[1] for r in rows] == [str(worker.proc.pid)]

    wait_for(only_the_model_worker_advertises, timeout=60)
    # a detector no worker has: refused by the API node (which has no models itself), no job
    r = httpx.post(a.url + "/api/v1/tools/enhance-faces", timeout=30,
                   files={"file": ("03.jpg", photo, "image/jpeg")},
                   data={"settings": json.dumps({"model": "gfpgan",
                                                 "detector": "retinaface-resnet50"})})
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "model_not_installed", r.text
    assert "no worker has model 'retinaface-resnet50'" in r.text
    r = httpx.post(a.url + "/api/v1/tools/enhance-faces", timeout=30,
                   files={"file": ("03.jpg", photo, "image/jpeg")},
                   data={"settings": json.dumps({"model": "gfpgan", "seed": 1})})
    assert r.status_code == 202, r.text
    job_id = r.json()["jobId"]
    frames = stream(c.apis[-1], job_id, last_id=0)
    assert frames[-1][1] == "complete", frames[-1]
    record = c.store.get(job_id)
    assert record.status == "succeeded" and record.result["facesDetected"] >= 1
    assert record.worker_id.split(":")[1] == str(worker.proc.pid)
    out = httpx.get(a.url + record.result["downloadUrl"], timeout=30)
    assert out.status_code == 200 and out.content[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = httpx.get(worker.url + "/metrics").text
    assert "restora_model_load_seconds_count" in metrics


def test_an_api_node_frees_a_clients_bytes_when_remote_workers_finish_its_jobs(cluster):
    """A job's input counts against its client's byte budget on the API node that took it
    until the job ends; here every job ends on a worker process, so that node must learn of
    it from the store: a client that uploads one photo after another, each done before the
    next, is never refused however many it sends."""
    c, _ = cluster
    size = len(png_bytes(48, 40, 0))
    api = c.start_api(RESTORA_MAX_CLIENT_BYTES=str(3 * size + 4000))  # room for 2 jobs at once
    try:
        for i in range(6):
            job_id = submit(api, seed=500 + i)
            wait_for(lambda: c.store.get(job_id).status == "succeeded", timeout=60)
    finally:
        api.kill(signal.SIGTERM)
        c.apis.remove(api)
