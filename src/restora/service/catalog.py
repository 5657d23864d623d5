"""Which models the cluster's workers have, so an API node refuses a job no worker can run.

An API node of a cluster loads no models, so it cannot look at its own disk to answer "is this
model installed?". Each worker instead *advertises* the models installed on its own disk into
the ``worker_models`` table (migration 0003) when it starts and then every
``advert_interval_s``; an API node's preflight reads the union of the adverts that are still
fresh. The answer is the same 503 ``model_not_installed`` a single-process server gives, at
submission instead of a failed job later.

Two cases keep the check from refusing work a worker could do: with no fresh advert at all (the
workers are restarting) nothing is refused and the job queues; a worker started without a
model runtime (custom tools) advertises ``None``, meaning it does not say, and then nothing is
refused either.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, Text, delete, insert, select, update

from restora.errors import ModelNotInstalled, UnknownModel
from restora.models.registry import ModelSpec, Registry
from restora.service.store import JobStore

catalog_metadata = MetaData()

worker_models = Table(
    "worker_models", catalog_metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("models", Text),  # JSON list of {id, task, arch}; NULL = the worker does not say
    Column("seen_at", Float, nullable=False, index=True),
)

#: adverts older than this many intervals are ignored (the worker died or hangs)
STALE_AFTER_INTERVALS = 3
#: rows of workers gone for this long are deleted by the next advert of any worker
FORGET_AFTER_S = 86_400.0


def installed_models(runtime: Any) -> list[dict[str, str]] | None:
    """What a worker with this runtime can run: every installed registry entry."""
    if runtime is None:
        return None
    registry: Registry = runtime.registry
    return [{"id": s.id, "task": s.task, "arch": s.arch}
            for s in registry.all() if registry.is_installed(s)]


def advertise(store: JobStore, worker_id: str, models: list[dict[str, str]] | None,
              now: float | None = None) -> None:
    now = time.time() if now is None else now
    text = None if models is None else json.dumps(models, separators=(",", ":"))
    with store.engine.begin() as conn:
        done = conn.execute(update(worker_models).where(worker_models.c.worker_id == worker_id)
                            .values(models=text, seen_at=now)).rowcount
        if not done:
            conn.execute(insert(worker_models).values(worker_id=worker_id, models=text,
                                                      seen_at=now))
        conn.execute(delete(worker_models).where(worker_models.c.seen_at < now - FORGET_AFTER_S))


def withdraw(store: JobStore, worker_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(worker_models).where(worker_models.c.worker_id == worker_id))


@dataclass(frozen=True)
class AdvertisedModel:
    """A model a worker has that this node's registry does not know (a worker-only manifest)."""

    id: str
    task: str
    arch: str


class AdvertisedRegistry:
    """The part of :class:`~restora.models.registry.Registry` a preflight reads, where
    *installed* means "some live worker has it". Lookups and messages use this node's registry."""

    def __init__(self, registry: Registry, entries: list[dict[str, str]]) -> None:
        self._registry = registry
        self._entries = {e["id"]: AdvertisedModel(e["id"], e["task"], e["arch"])
                         for e in entries}

    def get(self, model_id: str) -> ModelSpec | AdvertisedModel:
        if model_id in self._entries:
            try:
                return self._registry.get(model_id)
            except UnknownModel:
                return self._entries[model_id]
        return self._registry.get(model_id)

    def default(self, task: str, arch: str | None = None) -> ModelSpec:
        return self._registry.default(task, arch)

    def is_installed(self, spec: ModelSpec | AdvertisedModel) -> bool:
        return spec.id in self._entries

    def installed(self, task: str, arch: str | None = None) -> list[AdvertisedModel]:
        return [e for e in self._entries.values()
                if e.task == task and (arch is None or e.arch == arch)]

    # the same choice rule as a local registry, over what the workers have
    pick = Registry.pick

    def not_installed(self, spec: ModelSpec) -> ModelNotInstalled:
        home = self._registry.not_installed(spec)
        how = f": run `{home.details['command']}` on a worker" if home.details.get("command") \
            else f" ({home.message})"
        return ModelNotInstalled(
            f"no worker has model '{spec.id}' installed{how} (workers read the shared models "
            "folder, see docs/deployment.md)", **home.details)


class WorkerModels:
    """What a preflight sees on an API node: ``registry`` and ``not_installed`` like a Runtime."""

    def __init__(self, registry: AdvertisedRegistry) -> None:
        self.registry = registry
        self.not_installed = registry.not_installed


class ClusterCatalog:
    """Reads the fresh adverts (cached for ``cache_s``) for an API node's preflight."""

    def __init__(self, store: JobStore, registry: Registry, advert_interval_s: float,
                 cache_s: float = 1.0) -> None:
        self.store = store
        self.registry = registry
        self.max_age_s = advert_interval_s * STALE_AFTER_INTERVALS
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, WorkerModels | None] | None = None

    def current(self) -> WorkerModels | None:
        """The models of the live workers, or None when nothing may be refused (no fresh
        advert, or a live worker that does not say what it has)."""
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self.cache_s:
                return self._cached[1]
        view = self._read()
        with self._lock:
            self._cached = (now, view)
        return view

    def _read(self) -> WorkerModels | None:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(worker_models.c.models).where(
                worker_models.c.seen_at >= time.time() - self.max_age_s)).all()
        if not rows or any(r[0] is None for r in rows):
            return None
        merged: dict[str, dict[str, str]] = {}
        for (text,) in rows:
            for entry in json.loads(text):
                merged.setdefault(entry["id"], entry)
        return WorkerModels(AdvertisedRegistry(self.registry, list(merged.values())))
