"""Server-Sent Events for job progress, replayable from the job store.

Each stored event has a global sequence number that becomes the SSE ``id:``, so a client that
reconnects with ``Last-Event-ID`` receives exactly the frames it missed. The stream ends after
the final ``complete`` / ``failed`` frame; connecting after the job ended replays up to it.
Events are read from the store (not an in-memory bus), so this works unchanged when workers run
in other processes; a :mod:`~restora.service.notify` notifier says when to read.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

from restora.service.notify import Notifier
from restora.service.store import JobEvent, JobStore
from restora.service.views import progress_view

FINAL_KINDS = ("complete", "failed")


def _frame(seq: int, kind: str, data: dict) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def format_event(ev: JobEvent) -> str:
    """One stored event as SSE text. Progress frames carry the human ``stage`` and an integer
    ``percent`` (machine id in ``step``). A final event is sent twice: first as
    ``event: progress`` with ``phase: complete`` / ``failed`` (as the SnapOtter document shows
    the final result), then as ``event: complete`` / ``failed`` (same id, same data)."""
    data = progress_view(ev.data)
    if ev.kind in FINAL_KINDS:
        return _frame(ev.seq, "progress", data) + _frame(ev.seq, ev.kind, data)
    return _frame(ev.seq, ev.kind, data)


#: the largest sequence number the store can compare with (a signed 64-bit SQL integer)
MAX_EVENT_ID = 2**63 - 1


def parse_last_event_id(value: str | None) -> int:
    """The client's ``Last-Event-ID``: garbage is 0 (replay all), and an id past what the
    store can hold is clamped (the database would refuse it in the query)."""
    try:
        return min(max(0, int(str(value).strip())), MAX_EVENT_ID) if value is not None else 0
    except ValueError:
        return 0


async def job_events(store: JobStore, job_id: str, *, last_event_id: int, heartbeat_s: float,
                     is_disconnected: Callable[[], object], notifier: Notifier | None = None,
                     ) -> AsyncIterator[str]:
    """Yield SSE text: replay after ``last_event_id``, then live frames and heartbeats.

    The stream subscribes before it replays, so nothing published in between is missed; after
    that it reads the store only when ``notifier`` wakes it (an event of this job, or a
    reconnected subscription), never on a timer. Without a notifier (a store used on its own)
    it re-reads every heartbeat.
    """
    yield "retry: 1000\n\n"
    sub = notifier.subscribe(job_id) if notifier is not None else None
    try:
        last = last_event_id
        last_sent = time.monotonic()
        check = True  # read the store: first the replay, then after each wake-up
        while True:
            if check:
                events = await run_in_threadpool(store.events_after, job_id, last)
                for ev in events:
                    last = ev.seq
                    yield format_event(ev)
                    last_sent = time.monotonic()
                    if ev.kind in FINAL_KINDS:
                        return
                if not events:
                    record = await run_in_threadpool(store.get, job_id)
                    if record is None:
                        return  # expired and removed while we waited
                    if record.is_final:
                        # The client already saw everything up to (or past) the end: give it
                        # the final frame again so a late or repeated connection always learns
                        # the outcome.
                        replay = await run_in_threadpool(store.events_after, job_id, 0)
                        finals = [e for e in replay if e.kind in FINAL_KINDS]
                        if finals:
                            yield format_event(finals[-1])
                        return
            if await is_disconnected():  # type: ignore[misc]
                return
            wait_s = max(0.05, heartbeat_s - (time.monotonic() - last_sent))
            if sub is not None:
                check = await sub.wait(min(wait_s, 1.0))
            else:
                await asyncio.sleep(min(wait_s, 1.0))
                check = time.monotonic() - last_sent >= heartbeat_s
            if time.monotonic() - last_sent >= heartbeat_s:
                yield f": heartbeat {int(time.time())}\n\n"
                last_sent = time.monotonic()
    finally:
        if sub is not None and notifier is not None:
            notifier.unsubscribe(job_id, sub)
