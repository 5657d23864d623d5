"""Signed webhooks (Standard Webhooks), delivered once per final job status with retries.

The delivery is an *outbox* row written by the store in the same transaction as the job's final
state (unique per job and final status), whichever node or worker finishes the job, so a crash
can neither lose the announcement nor make it twice. Senders run on the API nodes; each attempt
is claimed with a compare-and-set (``JobStore.claim_delivery``), so with several nodes exactly
one sends it, and failures are retried with exponential backoff. Attempts go through
:mod:`restora.service.fetch`: HTTPS to public addresses only, no redirects.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from standardwebhooks.webhooks import Webhook

from restora.errors import InvalidParameter, RestoraError
from restora.service.fetch import BlockedURL, check_url, post_json
from restora.service.settings import ServiceSettings
from restora.service.store import JobRecord, JobStore

log = logging.getLogger("restora.service.webhooks")

#: builds the JSON ``data`` of a webhook for a finished job (per API style)
PayloadFn = Callable[[JobRecord], dict[str, Any]]


def load_secret(settings: ServiceSettings) -> str:
    """The configured secret, else one generated once and kept (0600) under the service dir."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path: Path = settings.service_dir / "webhook_secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


def validate_webhook_url(url: str, settings: ServiceSettings, *, field: str = "webhook") -> str:
    """Reject a webhook URL up front (400 naming ``field``) unless it is HTTPS to a public host.

    With ``allow_loopback_webhooks`` a plain-HTTP URL to a loopback host is accepted (tests).
    """
    allow = settings.allow_loopback_webhooks
    try:  # check_url parses the URL: a malformed one is a BlockedURL too
        target = check_url(url, allow_loopback=allow,
                           schemes=("https", "http") if allow else ("https",))
    except BlockedURL as exc:
        raise InvalidParameter(field, f"{field}: {exc.message}") from None
    if target.scheme == "http" and not target.address.is_loopback:
        raise InvalidParameter(field, f"{field}: webhooks must use https.")
    return url


def outbox_builder(payloads: dict[str, PayloadFn], bare: tuple[str, ...] = ("tengrai",)
                   ) -> Callable[[JobRecord], tuple[str, str] | None]:
    """The store's outbox hook: (url, JSON body) of a finished job's webhook, if it has one."""

    def build(record: JobRecord) -> tuple[str, str] | None:
        if not record.webhook_url or not record.is_final:
            return None
        make = payloads.get(record.api)
        data = make(record) if make else {"id": record.id, "status": record.status}
        # Tengrai: "the server will POST the final artwork result": the body is the artwork
        # itself (type and time travel only in the signed headers). Others get an envelope.
        body = data if record.api in bare else {
            "type": f"job.{record.status}", "timestamp": _iso_now(), "data": data}
        return record.webhook_url, json.dumps(body, separators=(",", ":"))

    return build


class WebhookDispatcher:
    """Background sender: one thread, pending deliveries ordered by their next attempt.

    ``poll_s`` bounds how long a delivery written by another process (a worker) waits; in one
    process the store wakes the sender at once."""

    def __init__(self, settings: ServiceSettings, store: JobStore,
                 payloads: dict[str, PayloadFn], bare: tuple[str, ...] = ("tengrai",), *,
                 poll_s: float = 60.0, sender_id: str | None = None) -> None:
        self.settings = settings
        self.bare = bare
        self.store = store
        self.payloads = payloads
        self.webhook = Webhook(load_secret(settings))
        self.poll_s = poll_s
        self.sender_id = sender_id or f"sender-{uuid.uuid4().hex[:12]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store.outbox = outbox_builder(payloads, bare)
        store.on_outbox.append(self._wake.set)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="restora-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def sign(self, msg_id: str, timestamp: datetime, payload: str) -> dict[str, str]:
        return {"webhook-id": msg_id,
                "webhook-timestamp": str(int(timestamp.timestamp())),
                "webhook-signature": self.webhook.sign(msg_id, timestamp, payload)}

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            next_due = now + self.poll_s
            try:
                for d in self.store.pending_deliveries():
                    if self._stop.is_set():
                        return
                    if d.next_attempt_at > now:
                        next_due = min(next_due, d.next_attempt_at)
                        continue
                    claim_s = self.settings.webhook_timeout_s + 30.0
                    if self.store.claim_delivery(d.id, self.sender_id, claim_s):
                        self._attempt(d.id, d.url, d.payload, d.attempts)
                    next_due = min(next_due, time.time())
            except Exception:
                log.exception("webhook loop error")
            self._wake.wait(max(0.05, min(next_due - time.time(), self.poll_s)))
            self._wake.clear()

    def _attempt(self, delivery_id: str, url: str, payload: str, attempts: int) -> None:
        ts = datetime.now(timezone.utc)
        headers = self.sign(delivery_id, ts, payload)
        allow = self.settings.allow_loopback_webhooks
        error: str | None = None
        try:
            status = post_json(url, payload.encode(), headers,
                               timeout_s=self.settings.webhook_timeout_s, allow_loopback=allow,
                               schemes=("https", "http") if allow else ("https",))
            ok = 200 <= status < 300
            if not ok:
                error = f"HTTP {status}"
        except RestoraError as exc:
            ok, error = False, exc.message
        attempts += 1
        if ok:
            self.store.update_delivery(delivery_id, state="delivered", attempts=attempts,
                                       next_attempt_at=time.time())
            return
        give_up = attempts >= self.settings.webhook_max_attempts
        delay = self.settings.webhook_backoff_s * (2 ** (attempts - 1))
        self.store.update_delivery(delivery_id, state="failed" if give_up else "pending",
                                   attempts=attempts, next_attempt_at=time.time() + delay,
                                   last_error=error)
        log.warning("webhook %s attempt %d failed: %s", delivery_id, attempts, error)


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
