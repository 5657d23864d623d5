"""Durable job store on SQLAlchemy Core: one code path for SQLite and PostgreSQL.

SQLite in WAL mode by default; every statement is plain Core on portable column types, so a
``postgresql://`` URL (psycopg 3) works unchanged, and the schema is created and upgraded by the
Alembic migrations in ``restora/service/migrations``. State changes are compare-and-set updates
(``WHERE status IN (...)``, and ``AND worker_id = :me`` for a worker): a late progress report, a
timeout reaper on another node, a cancel and a redelivered copy of the job can race and the first
final state wins, which is what makes "every accepted job ends exactly once" hold.

A worker *claims* a job (queued, or processing under an expired lease) by writing its worker id
and a lease deadline; it renews the lease while it runs. The final state, its SSE event and the
webhook outbox row are written in one transaction.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        and_, create_engine, delete, event, func, insert, or_, select, update)
from sqlalchemy.engine import Engine

log = logging.getLogger("restora.service.store")

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELED = (
    "queued", "processing", "succeeded", "failed", "canceled")
FINAL = (SUCCEEDED, FAILED, CANCELED)
ACTIVE = (QUEUED, PROCESSING)

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("tool", String(64), nullable=False),
    Column("api", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("params", Text, nullable=False),
    Column("options", Text, nullable=False, default="{}"),  # validated pipeline options
    Column("input_name", String(255), nullable=False, default="image"),
    Column("result", Text),
    Column("error", Text),
    Column("webhook_url", Text),
    Column("stage", String(64)),
    Column("percent", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Integer, nullable=False, default=0),
    Column("worker_id", String(128)),  # who holds the lease while processing
    Column("lease_until", Float),  # the holder renews it; past it, another worker may claim
    Column("created_at", Float, nullable=False, index=True),
    Column("started_at", Float),
    Column("finished_at", Float, index=True),
)

events = Table(
    "job_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("claimed_by", String(128)),  # the sender attempting it now (one per delivery)
    Column("claim_until", Float),
    UniqueConstraint("job_id", "status", name="uq_delivery_job_status"),
)


@dataclass
class JobRecord:
    """One row of ``jobs`` with JSON columns decoded."""

    id: str
    tool: str
    api: str
    status: str
    params: dict[str, Any]
    options: dict[str, Any]
    input_name: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    webhook_url: str | None
    stage: str | None
    percent: float
    attempts: int
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker_id: str | None = None
    lease_until: float | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


@dataclass
class JobEvent:
    seq: int
    job_id: str
    kind: str  # progress | complete | failed
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    id: str
    job_id: str
    status: str
    url: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: float


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def final_event(status: str, job_id: str, result: dict | None, error: dict | None,
                percent: float) -> tuple[str, dict[str, Any]]:
    """The SSE frame a finished job ends with (kept in the store so replay is exact)."""
    if status == SUCCEEDED:
        return "complete", {"jobId": job_id, "phase": "complete", "stage": "done",
                            "percent": 100.0, "result": result}
    err = error or {}
    return "failed", {"jobId": job_id, "phase": "failed", "percent": percent,
                      "status": status, "error": err.get("message", status),
                      "code": err.get("code", status)}


#: Called after commit with each appended event (SSE fan-out: in-process or Redis pub/sub).
EventHook = Callable[[JobEvent], None]
#: Builds the webhook (url, JSON payload) of a finished job, or None when it has no webhook.
OutboxFn = Callable[[JobRecord], "tuple[str, str] | None"]


def normalise_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` mean psycopg 3 (the driver we depend on)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


#: PostgreSQL ends a session left idle inside a transaction this long (a frozen node's locks)
IDLE_IN_TRANSACTION_S = 15.0


class JobStore:
    """Jobs, their progress events and webhook deliveries, behind one SQLAlchemy engine."""

    def __init__(self, url: str, *, migrate: bool = True,
                 idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S) -> None:
        url = normalise_url(url)
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
            if url.startswith("postgresql"):
                # a node frozen or hung inside a transaction would hold its row locks forever
                # and stall every node that touches those jobs (the reaper included): the
                # server ends such a session instead; our transactions are short DB-only work
                ms = max(1, int(idle_in_transaction_s * 1000))
                kwargs["connect_args"] = {
                    "options": f"-c idle_in_transaction_session_timeout={ms}"}
        self.url = url
        self.engine: Engine = create_engine(url, future=True, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if migrate:
            from restora.service.migrations import upgrade

            upgrade(self.engine)
        self.on_event: list[EventHook] = []
        self.outbox: OutboxFn | None = None
        self.on_outbox: list[Callable[[], None]] = []

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise if the database cannot be reached (readiness)."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # --- events (internal) ----------------------------------------------------------------------

    def _append(self, conn: Any, job_id: str, kind: str, data: dict[str, Any], now: float,
                out: list[JobEvent]) -> None:
        res = conn.execute(insert(events).values(job_id=job_id, kind=kind, data=_dumps(data),
                                                 created_at=now))
        out.append(JobEvent(seq=int(res.inserted_primary_key[0]), job_id=job_id, kind=kind,
                            data=data))

    def _publish(self, appended: list[JobEvent]) -> None:
        for ev in appended:
            for hook in self.on_event:
                try:
                    hook(ev)
                except Exception:  # a lost notification only delays a stream; never a job
                    log.exception("event hook failed")

    # --- jobs -----------------------------------------------------------------------------------

    def create(self, job_id: str, *, tool: str, api: str, params: dict[str, Any],
               options: dict[str, Any] | None = None, input_name: str = "image",
               webhook_url: str | None = None) -> JobRecord:
        now = time.time()
        appended: list[JobEvent] = []
        with self.engine.begin() as conn:
            conn.execute(insert(jobs).values(
                id=job_id, tool=tool, api=api, status=QUEUED, params=_dumps(params),
                options=_dumps(options or {}),
                input_name=input_name, webhook_url=webhook_url, percent=0.0, attempts=0,
                cancel_requested=0, created_at=now))
            self._append(conn, job_id, "progress", {"jobId": job_id, "phase": "queued",
                                                    "stage": "queued", "percent": 0.0},
                         now, appended)
        self._publish(appended)
        record = self.get(job_id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return None if row is None else _record(row)

    def unfinished(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` that exist and have not ended (queued or processing)."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(job_ids), 500):  # SQLite allows ~1000 parameters a query
                rows = conn.execute(select(jobs.c.id).where(
                    jobs.c.id.in_(job_ids[i:i + 500]), jobs.c.status.not_in(FINAL))).all()
                found.update(r[0] for r in rows)
        return found

    def list_ids(self, status: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.status == status)
                                .order_by(jobs.c.created_at)).all()
        return [r[0] for r in rows]

    def start(self, job_id: str, *, worker_id: str | None = None,
              lease_s: float | None = None) -> bool:
        """queued -> processing; False if the job was cancelled (or taken) meanwhile."""
        return self.claim(job_id, worker_id=worker_id, lease_s=lease_s, expired_ok=False) \
            is not None

    def claim(self, job_id: str, *, worker_id: str | None, lease_s: float | None,
              expired_ok: bool = True) -> JobRecord | None:
        """Take a job for ``worker_id``: queued, or (``expired_ok``) processing under a lease
        that ran out (its worker died). Compare-and-set: of two claimers one wins."""
        now = time.time()
        cond = jobs.c.status == QUEUED
        if expired_ok:
            cond = or_(cond, and_(jobs.c.status == PROCESSING, jobs.c.lease_until.is_not(None),
                                  jobs.c.lease_until < now))
        appended: list[JobEvent] = []
        with self.engine.begin() as conn:
            res = conn.execute(update(jobs).where(jobs.c.id == job_id, cond).values(
                status=PROCESSING, started_at=now, attempts=jobs.c.attempts + 1,
                stage="starting", worker_id=worker_id,
                lease_until=None if lease_s is None else now + lease_s))
            if not res.rowcount:
                return None
            self._append(conn, job_id, "progress", {"jobId": job_id, "phase": "processing",
                                                    "stage": "starting", "percent": 0.0},
                         now, appended)
        self._publish(appended)
        return self.get(job_id)

    def renew(self, job_id: str, worker_id: str, lease_s: float) -> str:
        """Extend the lease: ``ok``, ``cancel`` (a cancel was requested) or ``lost`` (the job
        is final or another worker holds it: stop working on it)."""
        with self.engine.begin() as conn:
            res = conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status == PROCESSING,
                jobs.c.worker_id == worker_id).values(lease_until=time.time() + lease_s))
            if not res.rowcount:
                return "lost"
            flag = conn.execute(select(jobs.c.cancel_requested)
                                .where(jobs.c.id == job_id)).scalar_one()
        return "cancel" if flag else "ok"

    def progress(self, job_id: str, stage: str, percent: float, *,
                 worker_id: str | None = None, estimate: dict[str, Any] | None = None) -> bool:
        """Record a progress frame, only while the job is still processing (by ``worker_id``);
        ``estimate``: the pipeline's duration estimate, added to the frame (an extension)."""
        percent = float(max(0.0, min(100.0, percent)))
        appended: list[JobEvent] = []
        cond = [jobs.c.id == job_id, jobs.c.status == PROCESSING]
        if worker_id is not None:
            cond.append(jobs.c.worker_id == worker_id)
        with self.engine.begin() as conn:
            res = conn.execute(update(jobs).where(*cond).values(stage=stage, percent=percent))
            if res.rowcount:
                data: dict[str, Any] = {"jobId": job_id, "phase": "processing",
                                        "stage": stage, "percent": round(percent, 2)}
                if estimate is not None:
                    data["estimate"] = estimate
                self._append(conn, job_id, "progress", data, time.time(), appended)
        self._publish(appended)
        return bool(appended)

    def finish(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None,
               from_statuses: Iterable[str] = ACTIVE, worker_id: str | None = None) -> bool:
        """Move an active job to a final status (first caller wins), appending its final event
        and, when it has a webhook, its outbox row, all in one transaction. With ``worker_id``
        only that worker's processing job can be finished."""
        assert status in FINAL
        now = time.time()
        appended: list[JobEvent] = []
        outboxed = False
        with self.engine.begin() as conn:
            row = conn.execute(select(jobs.c.percent).where(jobs.c.id == job_id)).first()
            if row is None:
                return False
            cond = [jobs.c.id == job_id, jobs.c.status.in_(tuple(from_statuses))]
            if worker_id is not None:
                cond.append(jobs.c.worker_id == worker_id)
            res = conn.execute(update(jobs).where(*cond)
                               .values(status=status, result=_dumps(result), error=_dumps(error),
                                       finished_at=now, lease_until=None,
                                       percent=100.0 if status == SUCCEEDED else row[0]))
            if not res.rowcount:
                return False
            kind, data = final_event(status, job_id, result, error, float(row[0]))
            self._append(conn, job_id, kind, data, now, appended)
            if self.outbox is not None:
                final = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
                hook = self.outbox(_record(final))
                if hook is not None:
                    url, payload = hook
                    conn.execute(insert(deliveries).values(
                        id=f"msg_{uuid.uuid4().hex}", job_id=job_id, status=status, url=url,
                        payload=payload, state="pending", attempts=0, next_attempt_at=now,
                        created_at=now))
                    outboxed = True
        self._publish(appended)
        if outboxed:
            for wake in self.on_outbox:
                wake()
        return True

    def request_cancel(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=1))

    def count(self, status: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs)
                                    .where(jobs.c.status == status)).scalar_one())

    def recover(self) -> tuple[list[str], list[str]]:
        """After a restart of the embedded service: fail jobs left processing, return
        (requeue_ids, failed_ids).

        A job found ``processing`` was running in a process that died; its partial output is
        untrustworthy and it may be what crashed the process, so it fails with a clear reason
        instead of being run again. Queued jobs never started and are queued again in order.
        (With distributed workers nothing is failed here: leases decide, see ``claim``.)
        """
        failed = []
        for job_id in self.list_ids(PROCESSING):
            if self.finish(job_id, FAILED, from_statuses=(PROCESSING,),
                           error={"code": "interrupted",
                                  "message": "interrupted by restart"}):
                failed.append(job_id)
        return self.list_ids(QUEUED), failed

    def overdue(self, timeout_s: float, now: float | None = None) -> list[str]:
        """Processing jobs started more than ``timeout_s`` ago (whatever their worker does)."""
        cutoff = (now or time.time()) - timeout_s
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.status == PROCESSING,
                                                        jobs.c.started_at < cutoff)).all()
        return [r[0] for r in rows]

    def orphaned(self, grace_s: float, now: float | None = None) -> list[str]:
        """Processing jobs whose lease ran out more than ``grace_s`` ago (their worker died and
        no redelivered message has claimed them yet)."""
        cutoff = (now or time.time()) - grace_s
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.status == PROCESSING,
                                                        jobs.c.lease_until.is_not(None),
                                                        jobs.c.lease_until < cutoff)).all()
        return [r[0] for r in rows]

    def expired(self, ttl_s: float, now: float | None = None) -> list[str]:
        cutoff = (now or time.time()) - ttl_s
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.status.in_(FINAL),
                                                        jobs.c.finished_at < cutoff)).all()
        return [r[0] for r in rows]

    def delete(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(events).where(events.c.job_id == job_id))
            conn.execute(delete(deliveries).where(deliveries.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))

    # --- events ---------------------------------------------------------------------------------

    def events_after(self, job_id: str, after_seq: int = 0) -> list[JobEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(events).where(events.c.job_id == job_id,
                                                     events.c.seq > after_seq)
                                .order_by(events.c.seq)).mappings().all()
        return [JobEvent(seq=r["seq"], job_id=r["job_id"], kind=r["kind"],
                         data=json.loads(r["data"])) for r in rows]

    # --- webhook deliveries (the outbox) --------------------------------------------------------

    def add_delivery(self, delivery_id: str, job_id: str, status: str, url: str,
                     payload: str) -> bool:
        """Record a delivery to make; False if this (job, final status) was already recorded."""
        from sqlalchemy.exc import IntegrityError

        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(deliveries).values(
                    id=delivery_id, job_id=job_id, status=status, url=url, payload=payload,
                    state="pending", attempts=0, next_attempt_at=now, created_at=now))
        except IntegrityError:
            return False
        return True

    def pending_deliveries(self) -> list[Delivery]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(deliveries).where(deliveries.c.state == "pending")
                                .order_by(deliveries.c.next_attempt_at)).mappings().all()
        return [_delivery(r) for r in rows]

    def claim_delivery(self, delivery_id: str, sender_id: str, claim_s: float) -> bool:
        """Take a due delivery for one attempt (compare-and-set): with several API nodes
        sending, exactly one of them attempts it; an abandoned claim expires after
        ``claim_s``."""
        now = time.time()
        with self.engine.begin() as conn:
            res = conn.execute(update(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.state == "pending",
                deliveries.c.next_attempt_at <= now,
                or_(deliveries.c.claim_until.is_(None), deliveries.c.claim_until < now),
            ).values(claimed_by=sender_id, claim_until=now + claim_s))
            return bool(res.rowcount)

    def update_delivery(self, delivery_id: str, *, state: str, attempts: int,
                        next_attempt_at: float, last_error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(
                state=state, attempts=attempts, next_attempt_at=next_attempt_at,
                last_error=last_error, claimed_by=None, claim_until=None))

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)
                               ).mappings().first()
        return None if row is None else dict(row)

    def deliveries_for(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(deliveries).where(deliveries.c.job_id == job_id)
                                ).mappings().all()
        return [dict(r) for r in rows]


def _delivery(r: Any) -> Delivery:
    return Delivery(id=r["id"], job_id=r["job_id"], status=r["status"], url=r["url"],
                    payload=r["payload"], state=r["state"], attempts=r["attempts"],
                    next_attempt_at=r["next_attempt_at"])


def _record(row: Any) -> JobRecord:
    return JobRecord(
        id=row["id"], tool=row["tool"], api=row["api"], status=row["status"],
        params=_loads(row["params"]) or {}, options=_loads(row["options"]) or {},
        input_name=row["input_name"],
        result=_loads(row["result"]), error=_loads(row["error"]), webhook_url=row["webhook_url"],
        stage=row["stage"], percent=float(row["percent"] or 0.0), attempts=int(row["attempts"]),
        cancel_requested=bool(row["cancel_requested"]), created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        worker_id=row["worker_id"], lease_until=row["lease_until"])


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets SSE readers poll while a worker writes; NORMAL sync is durable across process
    # crashes (only an OS crash can lose the last commits).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
