"""The same store code on SQLite and on a real PostgreSQL: claims, leases, compare-and-set,
the webhook outbox, migrations."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy

from store_fixtures import pg, store  # noqa: F401 - fixtures
from restora.service.migrations import current
from restora.service.store import FAILED, SUCCEEDED, JobStore


def test_one_of_many_claimers_wins(store):
    store.create("j1", tool="t", api="snapotter", params={})
    won: list[str] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        if store.claim("j1", worker_id=f"w{i}", lease_s=30) is not None:
            won.append(f"w{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    record = store.get("j1")
    assert record.worker_id == won[0] and record.attempts == 1 and record.lease_until > time.time()


def test_lease_expiry_lets_another_worker_take_over(store):
    store.create("j2", tool="t", api="snapotter", params={})
    assert store.claim("j2", worker_id="a", lease_s=0.2) is not None
    assert store.claim("j2", worker_id="b", lease_s=30) is None  # lease alive
    assert store.renew("j2", "a", 0.2) == "ok"
    time.sleep(0.4)
    taken = store.claim("j2", worker_id="b", lease_s=30)
    assert taken is not None and taken.attempts == 2
    # the first worker wakes up: it lost the job, its progress and result are refused
    assert store.renew("j2", "a", 30) == "lost"
    assert not store.progress("j2", "x", 50, worker_id="a")
    assert not store.finish("j2", SUCCEEDED, worker_id="a", from_statuses=("processing",))
    store.request_cancel("j2")
    assert store.renew("j2", "b", 30) == "cancel"
    assert store.finish("j2", FAILED, worker_id="b", from_statuses=("processing",))
    assert [e.kind for e in store.events_after("j2")][-1] == "failed"
    assert store.renew("j2", "b", 30) == "lost"


def test_outbox_row_is_written_with_the_final_state(store):
    store.outbox = lambda r: (r.webhook_url, f'{{"id":"{r.id}","status":"{r.status}"}}'
                              ) if r.webhook_url else None
    store.create("j3", tool="t", api="snapotter", params={}, webhook_url="https://h.example/x")
    store.create("j4", tool="t", api="snapotter", params={})
    assert store.finish("j3", SUCCEEDED)
    assert not store.finish("j3", FAILED)  # one final state, one delivery
    assert store.finish("j4", SUCCEEDED)
    rows = store.deliveries_for("j3")
    assert len(rows) == 1 and rows[0]["status"] == SUCCEEDED and rows[0]["state"] == "pending"
    assert store.deliveries_for("j4") == []
    # two senders: one claim wins; an expired claim can be taken again
    d = rows[0]["id"]
    assert store.claim_delivery(d, "s1", 0.2)
    assert not store.claim_delivery(d, "s2", 0.2)
    time.sleep(0.3)
    assert store.claim_delivery(d, "s2", 30)
    store.update_delivery(d, state="delivered", attempts=1, next_attempt_at=time.time())
    assert not store.claim_delivery(d, "s1", 30)


def test_overdue_and_orphaned(store):
    store.create("j5", tool="t", api="snapotter", params={})
    store.claim("j5", worker_id="w", lease_s=0.1)
    time.sleep(0.3)
    assert store.overdue(0.2) == ["j5"] and store.overdue(60) == []
    assert store.orphaned(0.1) == ["j5"] and store.orphaned(60) == []
    assert current(store.engine) == "0003"  # head: 0003 adds worker_models


def test_a_pre_migration_sqlite_database_is_adopted(tmp_path):
    """A database made by the old ``create_all`` (no options/lease columns, no Alembic
    version) keeps its jobs and gains the new columns."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE jobs (id VARCHAR(64) PRIMARY KEY, tool VARCHAR(64) NOT NULL,
          api VARCHAR(32) NOT NULL, status VARCHAR(16) NOT NULL, params TEXT NOT NULL,
          input_name VARCHAR(255) NOT NULL, result TEXT, error TEXT, webhook_url TEXT,
          stage VARCHAR(64), percent FLOAT NOT NULL, attempts INTEGER NOT NULL,
          cancel_requested INTEGER NOT NULL, created_at FLOAT NOT NULL, started_at FLOAT,
          finished_at FLOAT);
        CREATE TABLE job_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id VARCHAR(64)
          NOT NULL, kind VARCHAR(16) NOT NULL, data TEXT NOT NULL, created_at FLOAT NOT NULL);
        CREATE TABLE webhook_deliveries (id VARCHAR(64) PRIMARY KEY, job_id VARCHAR(64)
          NOT NULL, status VARCHAR(16) NOT NULL, url TEXT NOT NULL, payload TEXT NOT NULL,
          state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, next_attempt_at FLOAT NOT NULL,
          last_error TEXT, created_at FLOAT NOT NULL, CONSTRAINT uq_delivery_job_status
          UNIQUE (job_id, status));
        INSERT INTO jobs VALUES ('old', 'enhance-faces', 'snapotter', 'queued', '{}', 'a.png',
          NULL, NULL, NULL, NULL, 0, 0, 0, 1.0, NULL, NULL);
    """)
    con.close()
    s = JobStore(f"sqlite:///{path}")
    try:
        old = s.get("old")
        assert old.status == "queued" and old.options == {} and old.worker_id is None
        assert s.claim("old", worker_id="w", lease_s=5).worker_id == "w"
        assert current(s.engine) == "0003"
        assert "job_owners" in sqlalchemy.inspect(s.engine).get_table_names()
    finally:
        s.close()


def test_a_node_frozen_inside_a_transaction_does_not_stall_the_others(pg):  # noqa: F811
    """A node that stops (SIGSTOP, a hang) in the middle of a transaction holds its row locks;
    PostgreSQL ends that session after the store's idle-in-transaction limit, so another
    node's update of the same job goes through instead of waiting forever."""
    url = pg.create_db()
    frozen, other = JobStore(url, idle_in_transaction_s=1.0), JobStore(url)
    try:
        frozen.create("j1", tool="t", api="snapotter", params={})
        conn = frozen.engine.connect()
        tx = conn.begin()
        conn.execute(sqlalchemy.text("UPDATE jobs SET percent = 1 WHERE id = 'j1'"))
        # ... and the node stops here: no commit, no rollback, the row stays locked
        t0 = time.monotonic()
        with other.engine.begin() as c2:
            c2.execute(sqlalchemy.text("UPDATE jobs SET percent = 2 WHERE id = 'j1'"))
        waited = time.monotonic() - t0
        assert 0.5 < waited < 10.0, waited  # it waited for the lock, then the server freed it
        assert other.get("j1").percent == 2
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="idle-in-transaction"):
            conn.execute(sqlalchemy.text("SELECT 1"))  # the frozen session was ended
        tx.close()
        conn.close()
        assert frozen.get("j1").percent == 2  # its pool reconnects when it wakes up
    finally:
        frozen.close()
        other.close()
