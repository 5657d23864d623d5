"""``restora worker``: a worker node. Runs jobs from the Dramatiq queue with models kept warm.

One process holds one :class:`~restora.models.runtime.Runtime` (each model loads once and stays
loaded) and ``threads`` job slots (1 per GPU is right; more only helps CPU-bound tools). It also
runs the reaper (timeouts, orphaned leases) like every API node, and serves ``/healthz``,
``/readyz`` and ``/metrics`` on ``--health-port``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from restora.service.settings import ServiceSettings

log = logging.getLogger("restora.service.worker")

#: exit status when a stopped job will not end: the supervisor restarts a clean process
EXIT_HUNG = 75


def _timed_preload(runtime: Any, metrics: Any) -> None:
    from restora.service.app import preload_models

    t0 = time.perf_counter()
    loaded = preload_models(runtime)
    if loaded:
        seconds = time.perf_counter() - t0
        for model_id in loaded:
            metrics.model_load_seconds.labels(model_id).observe(seconds / len(loaded))
        log.info("models loaded in %.2f s: %s", seconds, ", ".join(loaded))


def _health_server(port: int, host: str, ready: Any, metrics: Any) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._send(200, b'{"status":"ok","role":"worker"}', "application/json")
            elif self.path == "/readyz":
                problem = ready()
                body = (b'{"status":"ready","role":"worker"}' if problem is None else
                        ('{"status":"unavailable","role":"worker","reason":"%s"}'
                         % problem.replace('"', "'")).encode())
                self._send(200 if problem is None else 503, body, "application/json")
            elif self.path == "/metrics":
                from restora.service.metrics import CONTENT_TYPE

                self._send(200, metrics.render(), CONTENT_TYPE)
            else:
                self._send(404, b'{"status":"not found"}', "application/json")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="restora-health", daemon=True).start()
    return server


def run_worker(settings: ServiceSettings, *, threads: int = 1, tools: dict | None = None,
               runtime: Any = "from-settings", health_port: int | None = None,
               stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``). ``tools``/``runtime`` replace the defaults
    (embedding, tests)."""
    import dramatiq

    from restora.service import logs
    from restora.service.distributed import (DramatiqQueue, JobRunner, declare_actor,
                                             make_broker, new_worker_id)
    from restora.service.jobs import JobManager
    from restora.service.metrics import Metrics
    from restora.service.notify import RedisNotifier
    from restora.service.store import JobStore
    from restora.service.tools import default_tools
    from restora.service.views import webhook_payloads
    from restora.service.webhooks import outbox_builder

    if not settings.distributed or not settings.database_url:
        from restora.errors import InvalidParameter

        raise InvalidParameter("queue_url", "restora worker needs RESTORA_DATABASE_URL and "
                               "RESTORA_QUEUE_URL (see docs/deployment.md).")
    worker_id = new_worker_id()
    logs.configure(settings.log_format, node=worker_id)
    store = JobStore(settings.effective_database_url)
    store.outbox = outbox_builder(webhook_payloads(settings))
    metrics = Metrics(store)
    if runtime == "from-settings":
        from restora.models.runtime import Runtime

        runtime = Runtime(settings)
    box: dict[str, Any] = {}
    broker = make_broker(settings)
    actor = declare_actor(broker, settings, lambda job_id: box["runner"](job_id))
    queue = DramatiqQueue(settings, store, broker, actor)
    notifier = RedisNotifier(settings.queue_url or "", listen=False)
    manager = JobManager(settings, store, {**default_tools(), **(tools or {})}, runtime,
                         queue=queue, notifier=notifier, metrics=metrics, distributed=True)
    runner = JobRunner(manager, queue, worker_id)
    box["runner"] = runner
    if settings.preload and runtime is not None:
        _timed_preload(runtime, metrics)
    manager.start()
    worker = dramatiq.Worker(broker, queues={settings.queue_name}, worker_threads=threads,
                             worker_timeout=200)
    worker.queue_prefetch = threads  # a slow job must not sit on jobs another worker could run

    def ready() -> str | None:
        try:
            store.ping()
            queue.ping()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    server = _health_server(health_port, settings.host, ready, metrics) \
        if health_port is not None else None
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    from restora.service.catalog import advertise, installed_models, withdraw

    models = installed_models(runtime)
    advertise(store, worker_id, models)
    advertised = time.monotonic()
    worker.start()
    log.info("worker %s consuming '%s' with %d thread(s)", worker_id, settings.queue_name,
             threads)
    try:
        while not stop.wait(1.0):
            hung = runner.hung()
            if hung:
                log.critical("jobs %s ignore their stop for %g s; exiting so the supervisor "
                             "starts a clean worker", ", ".join(hung), settings.hang_grace_s)
                os._exit(EXIT_HUNG)
            if time.monotonic() - advertised >= settings.advert_interval_s:
                advertised = time.monotonic()
                try:  # a model pulled or deleted while the worker runs shows up here
                    advertise(store, worker_id, installed_models(runtime))
                except Exception as exc:  # the store may be briefly away; the next try repeats
                    log.warning("could not advertise models: %s", exc)
    finally:
        log.info("worker %s stopping", worker_id)
        try:
            withdraw(store, worker_id)
        except Exception as exc:
            log.warning("could not withdraw the model advert: %s", exc)
        worker.stop(timeout=int(settings.hang_grace_s * 1000))
        manager.stop()
        broker.close()
        if server is not None:
            server.shutdown()
        store.close()
