"""Scale-out benchmark: jobs/minute with 1, 2 and 4 worker processes against one API node and
one store, and submit latency p50/p99 under 200 concurrent clients.

    PYTHONPATH=src python benchmarks/scale.py [--jobs 24] [--job-s 0.5] [--clients 200]

It starts its own PostgreSQL and Redis on 127.0.0.1 (tests/service/real_servers.py) and the
nodes as separate processes (tests/service/run_node.py). Each job is a real face-recovery job
(decode, enhancer, encode, preview, store, events, webhook-free) whose enhancer is the
posterizing stand-in doing ``--job-s`` seconds of banded work, so the numbers measure the
orchestration (queue, claims, leases, store, SSE fan-out) around a fixed amount of work, not a
network. On a machine with fewer cores than workers, jobs/minute stops scaling at the core count.
The killable decode child (``RESTORA_DECODE_IN_SUBPROCESS``) is off unless
``--decode-in-subprocess``: at this job size its per-job process start would be what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "service"))
sys.path.insert(0, str(REPO / "tests"))

from real_servers import free_port, postgres_server, redis_server  # noqa: E402
from service_helpers import png_bytes  # noqa: E402

from restora.service.store import JobStore  # noqa: E402


def start(role: str, env: dict, step_s: float, logdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/service/run_node.py"), role,
                             str(port), str(step_s)], env=env, stdout=subprocess.DEVNULL,
                            stderr=(logdir / f"{role}-{port}.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{role} exited; see {logdir}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{role} did not start")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


async def submit_many(api: str, n: int, concurrency: int) -> list[float]:
    """Submit ``n`` jobs with ``concurrency`` clients in flight; latencies in seconds."""
    data = png_bytes(64, 48, 1)
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=api, timeout=120, limits=limits) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/api/v1/tools/face-recovery", data={"seed": str(i)},
                                      files={"image": ("a.png", data, "image/png")})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 202:
                    raise SystemExit(f"submit failed: {r.status_code} {r.text[:200]}")
        await asyncio.gather(*(one(i) for i in range(n)))
    return latencies


def wait_all_final(store: JobStore, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.count("queued") == 0 and store.count("processing") == 0:
            return
        time.sleep(0.05)
    raise SystemExit("jobs did not finish in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=24)
    ap.add_argument("--job-s", type=float, default=0.5, help="work per job (seconds)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--decode-in-subprocess", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="restora-scale-"))
    with postgres_server() as pg, redis_server() as redis_url:
        db = pg.create_db()
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests/service'}",
               "RESTORA_HOME": str(tmp / "home"), "RESTORA_STORAGE_DIR": str(tmp / "storage"),
               "RESTORA_DATABASE_URL": db, "RESTORA_QUEUE_URL": redis_url,
               "RESTORA_QUEUE_DEPTH": "100000", "RESTORA_PRELOAD": "false",
               "RESTORA_DECODE_IN_SUBPROCESS": str(args.decode_in_subprocess).lower(),
               "RESTORA_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
        step = args.job_s / 20
        store = JobStore(db)
        api_proc, api = start("api", env, step, tmp)
        rows: list[tuple[str, str]] = []
        try:
            for n in [int(x) for x in args.workers.split(",")]:
                workers = [start("worker", env, step, tmp)[0] for _ in range(n)]
                try:
                    t0 = time.perf_counter()
                    asyncio.run(submit_many(api, args.jobs, 16))
                    wait_all_final(store, 600)
                    elapsed = time.perf_counter() - t0
                finally:
                    stop(workers)
                rows.append((f"jobs/minute, {n} worker process(es)",
                             f"{args.jobs / elapsed * 60:8.1f}  ({args.jobs} jobs in "
                             f"{elapsed:.1f} s, ideal {60 / args.job_s * n:.0f})"))
            # submit latency: no workers, so it measures accept + store + enqueue only
            lat = sorted(asyncio.run(submit_many(api, args.clients, args.clients)))
            p50 = statistics.median(lat)
            p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
            rows.append((f"submit latency p50, {args.clients} concurrent clients",
                         f"{p50 * 1000:8.1f} ms"))
            rows.append((f"submit latency p99, {args.clients} concurrent clients",
                         f"{p99 * 1000:8.1f} ms"))
        finally:
            stop([api_proc])
            store.close()
    width = max(len(k) for k, _ in rows)
    print(f"\n{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"(cpu cores: {os.cpu_count()}, job work {args.job_s} s, logs in {tmp})")


if __name__ == "__main__":
    main()
