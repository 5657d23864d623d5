"""Settings of the HTTP service (``RESTORA_*`` environment variables, overridable by CLI flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from restora.config import Settings


def _split(value: object) -> object:
    """Accept ``a,b,c`` in the environment as well as a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ServiceSettings(Settings):
    """Core settings plus what only ``restora serve`` needs."""

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                description="Accepted API keys (comma-separated); empty = no auth.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the job store; default SQLite under home.")
    max_upload_bytes: int = Field(default=60_000_000, ge=1,
                                  description="Largest request body; larger gives 413.")
    max_client_bytes: int = Field(
        default=200_000_000, ge=1, description="Per client (API key or IP): bytes of request "
        "bodies being received plus inputs of its unfinished jobs; more gives 429.")
    header_timeout_s: float = Field(default=10.0, gt=0,
                                    description="Time to send the request line and headers.")
    body_timeout_s: float = Field(default=30.0, gt=0,
                                  description="Longest pause between two pieces of a body.")
    public_url: str | None = Field(
        default=None, description="Base URL for absolute links (CodeFormer image_url); default "
        "the request's own base URL.")
    decode_in_subprocess: bool = Field(
        default=True, description="Decode inputs in a killable child process so cancel and "
        "timeout stop a decode at once.")
    archive_max_jobs: int = Field(
        default=100, ge=1, description="Most jobs one archive.zip may bundle; more gives 400 "
        "invalid_parameter with `limit` (the web page then asks for several zips).")
    queue_depth: int = Field(default=32, ge=1,
                             description="Jobs waiting (not running); more gives 429.")
    workers: int | None = Field(default=None, ge=1,
                                description="Jobs run at once; default 1 (one per device).")
    job_timeout_s: float = Field(default=900.0, gt=0,
                                 description="Limit per job, counted from the start of execution.")
    result_ttl_s: float = Field(default=86_400.0, gt=0,
                                description="How long finished jobs and their files are kept.")
    cleanup_interval_s: float = Field(default=300.0, gt=0)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    sse_heartbeat_s: float = Field(default=15.0, gt=0,
                                   description="Seconds between SSE comment heartbeats.")
    preload: bool = Field(default=True,
                          description="Load the installed face models at startup (in background).")
    sync_timeout_s: float = Field(default=600.0, gt=0,
                                  description="How long synchronous routes (/api/process) wait.")
    # server-side URL fetch (imageUrl)
    fetch_max_bytes: int = Field(default=50_000_000, ge=1)
    fetch_timeout_s: float = Field(default=30.0, gt=0, description="Total time per fetch.")
    fetch_max_redirects: int = Field(default=3, ge=0)
    allow_loopback_fetch: bool = Field(
        default=False, description="Let imageUrl point at 127.0.0.0/8 or ::1 (tests only).")
    # webhooks
    webhook_secret: str | None = Field(
        default=None, description="Standard Webhooks secret (whsec_...); generated if unset.")
    allow_loopback_webhooks: bool = Field(
        default=False, description="Allow http:// webhooks to loopback hosts (tests only).")
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_backoff_s: float = Field(default=2.0, gt=0, description="First retry delay; doubles.")
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # scale-out (docs/deployment.md): set both to run API nodes and `restora worker` nodes
    queue_url: str | None = Field(
        default=None, description="redis:// URL of the task engine (Dramatiq); set = distributed.")
    queue_name: str = Field(default="restora", min_length=1, max_length=100,
                            description="Dramatiq queue the workers consume (e.g. 'gpu').")
    storage_dir: Path | None = Field(
        default=None, description="Result storage folder (a shared mount with several nodes).")
    lease_s: float = Field(default=10.0, gt=0,
                           description="A running job's lease; its worker renews it every third.")
    queue_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Silence after which Dramatiq requeues a worker's jobs.")
    max_attempts: int = Field(default=3, ge=1,
                              description="Runs of one job (after worker deaths) before failing.")
    reaper_interval_s: float = Field(default=2.0, gt=0,
                                     description="How often nodes look for overdue jobs.")
    advert_interval_s: float = Field(
        default=10.0, gt=0, description="How often a worker re-advertises its installed models "
        "(an API node ignores adverts older than three intervals).")
    hang_grace_s: float = Field(
        default=30.0, gt=0, description="A worker whose stopped job keeps running this long "
        "after timeout/cancel exits so its supervisor restarts it.")
    log_format: str = Field(default="text", pattern="^(text|json)$",
                            description="text, or json (one object per line, with jobId).")

    _split_lists = field_validator("api_keys", "cors_origins", mode="before")(_split)

    @property
    def service_dir(self) -> Path:
        return self.home / "service"

    @property
    def jobs_dir(self) -> Path:
        return self.storage_dir or self.service_dir / "jobs"

    @property
    def distributed(self) -> bool:
        return bool(self.queue_url)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.service_dir / 'jobs.db'}"

    @property
    def effective_workers(self) -> int:
        return self.workers or 1
