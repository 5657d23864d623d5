"""The FastAPI application: one Runtime, one job store, one worker pool per process."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from restora import __version__
from restora.service import errors
from restora.service.cors import JsonCORSMiddleware
from restora.service.jobs import JobManager, Tool
from restora.service.middleware import (ApiKeyMiddleware, BodyLimitMiddleware, ClientBytes,
                                       OptionsMiddleware)
from restora.service.queue import JobQueue
from restora.service.settings import ServiceSettings
from restora.service.store import JobStore
from restora.service.metrics import Metrics
from restora.service.notify import LocalNotifier, Notifier
from restora.service.views import webhook_payloads
from restora.service.webhooks import WebhookDispatcher

log = logging.getLogger("restora.service")

STATIC_DIR = Path(__file__).with_name("static")
#: ``create_app(runtime=...)`` default: build the Runtime from the settings at startup
RUNTIME_FROM_SETTINGS: Any = object()


def _make_runtime(settings: ServiceSettings) -> Any:
    from restora.models.runtime import Runtime

    return Runtime(settings)


def preload_models(runtime: Any) -> list[str]:
    """Load the face models jobs will use first (detector, each restorer kind, parser), so the
    first request does not pay for it; absent models are simply skipped."""
    registry = runtime.registry
    picks: dict[tuple[str, str | None], Any] = {}
    for spec in sorted(registry.all(), key=lambda s: not s.default):
        if spec.task not in ("face-detection", "face-restoration", "face-parsing"):
            continue
        key = (spec.task, spec.arch if spec.task == "face-restoration" else None)
        if key not in picks and registry.is_installed(spec):
            picks[key] = spec
    loaded = []
    for spec in picks.values():
        try:
            runtime.load(spec.id)
            loaded.append(spec.id)
        except Exception:  # a broken file must not stop the server; the job will report it
            log.exception("preloading %s failed", spec.id)
    return loaded


def create_app(settings: ServiceSettings | None = None, *, tools: dict[str, Tool] | None = None,
               runtime: Any = RUNTIME_FROM_SETTINGS, queue: JobQueue | None = None) -> FastAPI:
    """Build the app. ``tools`` overrides tools by name and ``runtime`` replaces the model
    runtime (both for embedding and tests); by default the Runtime is created at startup."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from restora.service.tools import default_tools

        distributed = settings.distributed
        rt = runtime
        if runtime is RUNTIME_FROM_SETTINGS:
            # API nodes of a cluster run no jobs: no models (they live on the workers)
            rt = None if distributed else await run_in_threadpool(_make_runtime, settings)
        settings.service_dir.mkdir(parents=True, exist_ok=True)
        store = await run_in_threadpool(JobStore, settings.effective_database_url)
        all_tools = {**default_tools(), **(tools or {})}
        metrics = Metrics(store)
        notifier: Notifier = LocalNotifier()
        job_queue = queue
        if distributed:
            from restora.service.distributed import DramatiqQueue
            from restora.service.notify import RedisNotifier

            notifier = RedisNotifier(settings.queue_url or "")
            job_queue = queue or DramatiqQueue(settings, store)
        catalog = None
        if distributed and rt is None:
            from restora.models.registry import Registry
            from restora.service.catalog import ClusterCatalog

            catalog = ClusterCatalog(store, Registry.from_settings(settings),
                                     settings.advert_interval_s)
        manager = JobManager(settings, store, all_tools, rt, queue=job_queue, notifier=notifier,
                             metrics=metrics, distributed=distributed, catalog=catalog)
        hooks = WebhookDispatcher(settings, store, webhook_payloads(settings),
                                  poll_s=1.0 if distributed else 60.0)
        manager.client_bytes = app.state.client_bytes
        app.state.client_bytes.settle = manager.settle_held
        app.state.runtime = rt
        app.state.store = store
        app.state.manager = manager
        app.state.webhooks = hooks
        app.state.metrics = metrics
        recovered = manager.start()
        hooks.start()
        if settings.preload and rt is not None:
            threading.Thread(target=preload_models, args=(rt,), name="restora-preload",
                             daemon=True).start()
        if recovered["requeued"] or recovered["failed"]:
            log.warning("recovered jobs after restart: %d re-queued, %d failed",
                        len(recovered["requeued"]), len(recovered["failed"]))
        try:
            yield
        finally:
            hooks.stop()
            manager.stop()
            store.close()

    app = FastAPI(title="Restora", version=__version__, lifespan=lifespan,
                  description="Face and photo restoration service (see docs/service.md).")
    app.state.settings = settings
    errors.install(app)

    from restora.service import (routes_codeformer, routes_history, routes_ops,
                                 routes_snapotter, routes_tengrai, routes_topaz)

    # face-recovery is registered before the generic SnapOtter tool routes
    for module in (routes_ops, routes_topaz, routes_history, routes_snapotter,
                   routes_codeformer, routes_tengrai):
        app.include_router(module.router)

    from restora.service import openapi

    openapi.install(app)

    if STATIC_DIR.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")

    # Outermost last: CORS wraps everything so even 401/413 answers carry CORS headers.
    client_bytes = ClientBytes(settings.max_client_bytes)
    app.state.client_bytes = client_bytes
    app.add_middleware(OptionsMiddleware)
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes,
                       body_timeout_s=settings.body_timeout_s, client_bytes=client_bytes)
    app.add_middleware(JsonCORSMiddleware, allow_origins=settings.cors_origins,
                       allow_methods=["*"], allow_headers=["*"],
                       expose_headers=["Retry-After", "Content-Disposition"],
                       allow_credentials=False, max_age=600)
    return app
