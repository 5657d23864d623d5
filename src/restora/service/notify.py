"""Job event fan-out to SSE streams: in-process, or across nodes through Redis pub/sub.

The job store stays the source of truth (every event has a sequence number there); a
notification only wakes the streams of that job, which then read the events they have not sent
from the store. So a lost or duplicated notification cannot reorder or drop frames, and there is
no per-client polling loop: a stream waits on its wake-up, and when a node's Redis subscription
is (re)established every local stream is woken once to catch up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Protocol

from restora.service.store import JobEvent

log = logging.getLogger("restora.service.notify")

CHANNEL = "restora:job-events"


class Subscription:
    """One stream's wake-up: ``wait(timeout)`` returns True when its job has news."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # loop closed: the stream is gone
            pass

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._event.clear()
        return True


class Notifier(Protocol):
    def publish(self, event: JobEvent) -> None: ...

    def subscribe(self, job_id: str) -> Subscription: ...

    def unsubscribe(self, job_id: str, sub: Subscription) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LocalNotifier:
    """Single process (embedded mode): the store's event hook wakes local streams directly."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()

    def publish(self, event: JobEvent) -> None:
        self._wake(event.job_id)

    def _wake(self, job_id: str | None) -> None:
        with self._lock:
            subs = (list(self._subs.get(job_id, ())) if job_id is not None
                    else [s for group in self._subs.values() for s in group])
        for sub in subs:
            sub.wake()

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def unsubscribe(self, job_id: str, sub: Subscription) -> None:
        with self._lock:
            group = self._subs.get(job_id)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._subs[job_id]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def subscribers(self) -> int:
        with self._lock:
            return sum(len(g) for g in self._subs.values())


class RedisNotifier(LocalNotifier):
    """Several nodes: events are published on one Redis channel; each node runs one listener
    thread that wakes its own streams. Workers only publish."""

    def __init__(self, url: str, *, listen: bool = True) -> None:
        super().__init__()
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                           health_check_interval=10)
        self._listen = listen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, event: JobEvent) -> None:
        try:
            self._redis.publish(CHANNEL, json.dumps({"jobId": event.job_id, "seq": event.seq}))
        except Exception as exc:  # the store has the event; streams catch up on resubscribe
            log.warning("could not publish event %s of job %s: %s", event.seq, event.job_id, exc)
        self._wake(event.job_id)  # local streams need not wait for the round trip

    def ping(self) -> None:
        self._redis.ping()

    def start(self) -> None:
        if self._listen:
            self._thread = threading.Thread(target=self._run, name="restora-notify",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(CHANNEL)
                while not self._stop.is_set():
                    msg: Any = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self._wake(None)  # (re)connected: anything may have been missed
                    elif msg["type"] == "message":
                        try:
                            self._wake(json.loads(msg["data"])["jobId"])
                        except (ValueError, KeyError, TypeError):
                            continue
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("Redis subscription lost (%s); reconnecting", exc)
                    time.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass
