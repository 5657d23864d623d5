"""Scale-out on Dramatiq (Redis broker): API nodes enqueue job ids, worker nodes run them.

Why Dramatiq rather than Celery (docs/deployment.md): its Redis broker acknowledges a message
only after the actor returns and moves the unacknowledged messages of a worker whose heartbeat
stopped back to the queue (``queue_heartbeat_s``), which is exactly "redeliver a dead worker's
job"; Celery on Redis redelivers only after a visibility timeout that must exceed the longest
job, so a job killed after a second waits the full timeout. Dramatiq is also small (no result
backend, no beat) and lets us build the actor on an explicit broker object, no global app.

The engine only moves job ids. Exactly-once *effects* come from the job store: a worker runs a
job only after a compare-and-set claim (status queued, or processing under an expired lease)
that writes its worker id and a lease; it renews the lease every ``lease_s / 3`` and stops
(cancel event) as soon as a renewal fails, which is how a cancel or a timeout decided on another
node reaches it. A redelivered copy of a job that another live worker holds waits for that
lease instead of running it a second time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from restora.service.queue import QueueFull, ServiceUnavailable
from restora.service.settings import ServiceSettings
from restora.service.store import PROCESSING, QUEUED, JobStore

log = logging.getLogger("restora.service.distributed")

ACTOR = "restora_run_job"


def make_broker(settings: ServiceSettings) -> Any:
    """A Dramatiq Redis broker configured for fast, bounded redelivery."""
    from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
    from dramatiq.middleware import Retries, ShutdownNotifications

    assert settings.queue_url
    return RedisBroker(
        url=settings.queue_url, namespace="restora",
        # our own attempts/leases decide; the engine never retries by itself
        middleware=[Retries(max_retries=0), ShutdownNotifications()],
        heartbeat_timeout=int(settings.queue_heartbeat_s * 1000),
        # every ~20th command runs the requeue-dead-workers maintenance (cheap Lua script),
        # so a dead worker's messages return within a few seconds of the heartbeat timeout
        maintenance_chance=MAINTENANCE_SCALE // 20)


def declare_actor(broker: Any, settings: ServiceSettings,
                  fn: Callable[[str], None] | None = None) -> Any:
    """The one actor, bound to ``broker`` (API nodes only send; workers pass ``fn``)."""
    import dramatiq

    def not_here(job_id: str) -> None:  # pragma: no cover - API nodes never consume
        raise RuntimeError("API nodes do not run jobs")

    return dramatiq.Actor(fn or not_here, broker=broker, actor_name=ACTOR,
                          queue_name=settings.queue_name, priority=0,
                          options={"max_retries": 0})


class DramatiqQueue:
    """The API node's :class:`~restora.service.queue.JobQueue`: capacity from the store (so
    every node sees the same depth), submission as a Dramatiq message."""

    def __init__(self, settings: ServiceSettings, store: JobStore, broker: Any | None = None,
                 actor: Any | None = None) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker or make_broker(settings)
        self.actor = actor or declare_actor(self.broker, settings)
        self._stopping = False

    def ensure_capacity(self) -> None:
        if self._stopping:
            raise ServiceUnavailable("The service is shutting down; retry shortly.")
        depth = self.store.count(QUEUED)
        if depth >= self.settings.queue_depth:
            raise QueueFull(f"The queue is full ({depth} jobs waiting); retry later.",
                            retry_after=5)

    def submit(self, job_id: str, delay_s: float | None = None) -> None:
        self.actor.send_with_options(args=(job_id,),
                                     delay=None if delay_s is None else int(delay_s * 1000))

    def cancel(self, job_id: str) -> str:
        return "store"  # workers learn it from the store at their next lease renewal

    def waiting(self) -> int:
        return self.store.count(QUEUED)

    def running(self) -> int:
        return self.store.count(PROCESSING)

    def ping(self) -> None:
        self.broker.client.ping()

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobRunner:
    """The worker side: claim, run under a renewed lease, finish by compare-and-set."""

    def __init__(self, manager: Any, queue: DramatiqQueue, worker_id: str) -> None:
        self.manager = manager
        self.store: JobStore = manager.store
        self.settings: ServiceSettings = manager.settings
        self.queue = queue
        self.worker_id = worker_id
        self._running: dict[str, tuple[threading.Event, float]] = {}
        self._lock = threading.Lock()

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def __call__(self, job_id: str) -> None:
        """The actor body. Never raises: the message is acknowledged when this returns."""
        try:
            self._run(job_id)
        except Exception:
            log.exception("job %s: runner error", job_id)

    def _run(self, job_id: str) -> None:
        s = self.settings
        record = self.store.get(job_id)
        if record is None or record.is_final:
            return
        if record.status == PROCESSING and record.attempts >= s.max_attempts and \
                record.lease_until is not None and record.lease_until < time.time():
            # it took down max_attempts workers: do not let it take down another one
            from restora.service.store import FAILED

            if self.store.finish(job_id, FAILED, from_statuses=(PROCESSING,), error={
                    "code": "interrupted",
                    "message": f"The job's worker stopped {record.attempts} times."}):
                self.manager._notify_final(job_id)
            return
        claimed = self.store.claim(job_id, worker_id=self.worker_id, lease_s=s.lease_s)
        if claimed is None:
            now = self.store.get(job_id)
            if now is not None and now.status == PROCESSING and now.lease_until is not None:
                # Another worker holds it (this is a redelivered copy): come back when its
                # lease would have run out, in case that worker dies too.
                wait = max(1.0, now.lease_until - time.time() + 1.0)
                self.queue.submit(job_id, delay_s=wait)
            return
        cancel = threading.Event()
        with self._lock:
            self._running[job_id] = (cancel, 0.0)
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, cancel, stop_beat),
                                name=f"restora-lease-{job_id[:8]}", daemon=True)
        beat.start()
        try:
            self.manager.run_claimed(claimed, cancel, worker_id=self.worker_id)
        finally:
            stop_beat.set()
            beat.join(5)
            with self._lock:
                self._running.pop(job_id, None)

    def _heartbeat(self, job_id: str, cancel: threading.Event, stop: threading.Event) -> None:
        s = self.settings
        interval = max(0.2, s.lease_s / 3)
        while not stop.wait(interval):
            try:
                state = self.store.renew(job_id, self.worker_id, s.lease_s)
            except Exception as exc:  # database hiccup: keep working, the lease has slack
                log.warning("job %s: lease renewal failed: %s", job_id, exc)
                continue
            if state != "ok" and not cancel.is_set():
                log.info("job %s: %s, stopping it", job_id,
                         "cancel requested" if state == "cancel" else "finished elsewhere")
                cancel.set()
                with self._lock:
                    if job_id in self._running:
                        self._running[job_id] = (cancel, time.monotonic())

    def hung(self) -> list[str]:
        """Jobs told to stop more than ``hang_grace_s`` ago that still run."""
        now = time.monotonic()
        with self._lock:
            return [j for j, (ev, since) in self._running.items()
                    if ev.is_set() and since and now - since > self.settings.hang_grace_s]
