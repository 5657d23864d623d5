"""Job history: who submitted each job, and the newest-first, paginated list per API key.

Ownership lives in its own table (``job_owners``, created by migration 0002) next to the store's
``jobs`` table, so the store's own rows stay as they are. The owner is a hash of the API key the
job was submitted with (``""`` when the server has no keys), never the key itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Collection

from sqlalchemy import Column, Float, MetaData, String, and_, delete, insert, or_, select
from sqlalchemy import Table

from restora.errors import InvalidParameter
from restora.service.store import (CANCELED, FAILED, PROCESSING, QUEUED, SUCCEEDED, JobRecord,
                                   JobStore, _record, jobs)

history_metadata = MetaData()

job_owners = Table(
    "job_owners", history_metadata,
    Column("job_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("created_at", Float, nullable=False, index=True),
)

#: the largest page ``GET /api/v1/jobs`` answers
MAX_PAGE = 100
#: every status a job can have (the ``status`` filter's values)
STATUSES = (QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELED)


def owner_of_key(key: str | None) -> str:
    """What is stored for a key: its SHA-256 prefix (a leaked database leaks no keys)."""
    if not key:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def record_owner(store: JobStore, job_id: str, owner: str, created_at: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(job_owners).values(job_id=job_id, owner=owner,
                                               created_at=created_at))


def owner_for(store: JobStore, job_id: str) -> str | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(job_owners.c.owner).where(job_owners.c.job_id == job_id)
                           ).first()
    return None if row is None else row[0]


def forget(store: JobStore, job_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(job_owners).where(job_owners.c.job_id == job_id))


@dataclass
class Page:
    records: list[JobRecord]
    next_cursor: str | None


def _encode_cursor(created_at: float, job_id: str) -> str:
    raw = json.dumps([created_at, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        return float(created_at), str(job_id)
    # OverflowError: an integer too large for a float; RecursionError: deep nesting
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidParameter("cursor", "cursor is not one this server gave out.") from None


def _check_filter(field: str, value: str | None, allowed: Collection[str]) -> None:
    """A filter value no job can have is a typo that would list nothing: a 400 naming the
    field and the values it takes (empty means no filter)."""
    if value and value not in allowed:
        choices = sorted(allowed)
        raise InvalidParameter(field, f"{field} must be one of {', '.join(choices)} "
                               f"(got {value!r}).", allowed=choices)


def list_jobs(store: JobStore, owner: str, *, limit: int = 20, cursor: str | None = None,
              tool: str | None = None, status: str | None = None,
              tools: Collection[str] | None = None) -> Page:
    """Jobs of ``owner``, newest first; ``cursor`` (from the previous page) continues the list.
    ``tools`` (the server's tool names) are the values ``tool`` may take; None: any.

    A keyset cursor (created_at, id) rather than an offset: jobs submitted while someone pages
    through the history neither repeat nor go missing.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidParameter("limit", f"limit must be between 1 and {MAX_PAGE}.")
    _check_filter("status", status, STATUSES)
    if tools is not None:
        _check_filter("tool", tool, tools)
    query = (select(jobs).join(job_owners, job_owners.c.job_id == jobs.c.id)
             .where(job_owners.c.owner == owner))
    if tool:
        query = query.where(jobs.c.tool == tool)
    if status:
        query = query.where(jobs.c.status == status)
    if cursor:
        created_at, job_id = _decode_cursor(cursor)
        query = query.where(or_(jobs.c.created_at < created_at,
                                and_(jobs.c.created_at == created_at, jobs.c.id < job_id)))
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    records = [_record(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = records[-1] if records else None
    return Page(records, _encode_cursor(last.created_at, last.id) if more and last else None)


def summary(record: JobRecord, snapshot: dict[str, Any]) -> dict[str, Any]:
    """One history entry: the job snapshot plus the input's name (for people) and a thumbnail."""
    body = {**snapshot, "inputName": record.input_name}
    result = record.result or {}
    body["thumbnailUrl"] = result.get("previewUrl")
    return body
