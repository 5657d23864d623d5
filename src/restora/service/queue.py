"""Job queue: the interface a distributed engine can implement, and the in-process default.

The queue only moves job ids; everything a worker needs (parameters, input file, state) lives in
the job store and the results folder, so a queue backed by Redis, RabbitMQ or a database table
with workers on other machines can replace :class:`InProcessQueue` without touching the routes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Protocol

from restora.errors import RestoraError

log = logging.getLogger("restora.service.queue")

#: run(job_id, cancel_event) executes one job to a final state; it must not raise.
RunFn = Callable[[str, threading.Event], None]
#: on_timeout(job_id) is called once when a running job passes the time limit.
TimeoutFn = Callable[[str], None]


class QueueFull(RestoraError):
    """Too many jobs are waiting; the client should retry after ``retry_after`` seconds."""

    code = "queue_full"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class ServiceUnavailable(RestoraError):
    code = "unavailable"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class JobQueue(Protocol):
    """What the service needs from a queue."""

    def ensure_capacity(self) -> None:
        """Raise :class:`QueueFull` (or :class:`ServiceUnavailable`) if no job can be accepted."""

    def submit(self, job_id: str) -> None:
        """Schedule an accepted (stored, ``queued``) job."""

    def cancel(self, job_id: str) -> str:
        """Withdraw a waiting job or signal a running one: 'queued', 'running' or 'unknown'."""

    def waiting(self) -> int: ...

    def running(self) -> int: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class InProcessQueue:
    """A bounded FIFO served by ``workers`` threads, with a watchdog for job timeouts.

    Threads (not processes) because the heavy work is torch and OpenCV, which release the GIL,
    and because models must stay loaded once per process.
    """

    def __init__(self, run: RunFn, *, workers: int, depth: int, timeout_s: float,
                 on_timeout: TimeoutFn, est_job_s: float = 10.0) -> None:
        self._run = run
        self._workers = workers
        self._depth = depth
        self._timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._est_job_s = est_job_s
        self._waiting: collections.deque[str] = collections.deque()
        self._running: dict[str, tuple[threading.Event, float]] = {}
        self._lock = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # --- admission ------------------------------------------------------------------------------

    def ensure_capacity(self) -> None:
        with self._lock:
            if self._stopping:
                raise ServiceUnavailable("The service is shutting down; retry shortly.")
            if len(self._waiting) >= self._depth:
                raise QueueFull(f"The queue is full ({self._depth} jobs waiting); retry later.",
                                retry_after=self._retry_after())

    def _retry_after(self) -> int:
        # One slot frees when the first running job ends: a rough but honest estimate.
        per_slot = self._est_job_s / max(1, self._workers)
        return max(1, int(round(per_slot * max(1, len(self._waiting) - self._depth + 1))))

    def submit(self, job_id: str) -> None:
        with self._lock:
            self._waiting.append(job_id)
            self._lock.notify()

    def cancel(self, job_id: str) -> str:
        with self._lock:
            if job_id in self._waiting:
                self._waiting.remove(job_id)
                return "queued"
            if job_id in self._running:
                self._running[job_id][0].set()
                return "running"
        return "unknown"

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._worker, name=f"restora-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        w = threading.Thread(target=self._watchdog, name="restora-watchdog", daemon=True)
        w.start()
        self._threads.append(w)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs. Waiting jobs stay ``queued`` in the store and run after a restart;
        a job still running when the process exits is failed by the next start's recovery."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job_id = self._waiting.popleft()
                cancel = threading.Event()
                self._running[job_id] = (cancel, time.monotonic())
            try:
                self._run(job_id, cancel)
            except Exception:  # run() must not raise; never let one job kill the worker
                log.exception("job %s: runner raised", job_id)
            finally:
                with self._lock:
                    self._running.pop(job_id, None)

    def _watchdog(self) -> None:
        fired: set[str] = set()
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                late = [(j, ev) for j, (ev, t0) in self._running.items()
                        if now - t0 > self._timeout_s and j not in fired]
                fired &= set(self._running)
            for job_id, ev in late:
                fired.add(job_id)
                # the timeout is recorded before the job is told to stop: stopping ends it as
                # cancelled, and whichever state is written first stays
                try:
                    self._on_timeout(job_id)
                except Exception:
                    log.exception("job %s: timeout handler raised", job_id)
                finally:
                    ev.set()
            time.sleep(min(0.25, self._timeout_s / 4))
