"""Job lifecycle: accept, run in a worker, finish exactly once, notify, expire.

A *tool* is a plain function ``tool(ctx) -> result dict``: it reads ``ctx.input_path``, writes
files with ``ctx.write_output``, reports ``ctx.progress(stage, percent)`` and honours
``ctx.cancel``. The manager does not know what tools do, so the queue, SSE and durability
machinery is the same for every API style (and testable with any real tool).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from pydantic import BaseModel

from restora.errors import Cancelled, RestoraError
from restora.io.files import Payload, write_atomic
from restora.pipeline.options import parse
from restora.service import history
from restora.service.logs import log_job_id
from restora.service.metrics import Metrics
from restora.service.notify import LocalNotifier, Notifier
from restora.service.queue import InProcessQueue, JobQueue
from restora.service.settings import ServiceSettings
from restora.service.storage import LocalFolderStorage, ResultStorage
from restora.service.store import (CANCELED, FAILED, PROCESSING, SUCCEEDED, JobRecord,
                                   JobStore)

log = logging.getLogger("restora.service.jobs")

#: the stored input name's limit in UTF-8 bytes: every name derived from it
#: (``<stem>_enhanced.png``, ``<stem>_mask.png``, a zip's ``-2`` twin, the hidden
#: ``.<name>.<token>.tmp`` sibling) stays far within the 255 bytes file systems allow per name
NAME_MAX_BYTES = 120
#: the longest download name accepted (bytes): above anything derived from a stored input name
_DOWNLOAD_MAX_BYTES = 200
#: an extension kept through the cut of a long name (".jpeg", ".webp", ".tiff", ...)
_EXT_MAX_BYTES = 10
_PUNCT_OK = frozenset("._-")
_DOTS = re.compile(r"\.{2,}")


def _name_char_ok(ch: str) -> bool:
    """Letters, digits and combining marks of any script, and ``._-``: nothing that separates
    paths, controls the terminal, reorders text (bidi overrides) or hides (zero-width)."""
    return ch in _PUNCT_OK or unicodedata.category(ch)[0] in "LNM"


def _starts_ok(ch: str) -> bool:
    """A name starts with a letter or digit: never a dot (hidden, ``..``), a dash (an option to
    a shell tool) or a lone combining mark."""
    return unicodedata.category(ch)[0] in "LN"


def _cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding has at most ``limit`` bytes (cut
    between characters, never inside one)."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _bounded(base: str) -> str:
    """``base`` within :data:`NAME_MAX_BYTES`, the stem shortened and a short extension kept."""
    if len(base.encode("utf-8")) <= NAME_MAX_BYTES:
        return base
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8")) + 1 > _EXT_MAX_BYTES:
        stem, ext = base, ""
    tail = f".{ext}" if ext else ""
    stem = _cut_utf8(stem, NAME_MAX_BYTES - len(tail.encode("utf-8"))).rstrip("._-")
    return f"{stem}{tail}" if stem else ""


def safe_filename(name: str | None, default: str = "image") -> str:
    """A file name safe to store and echo back: the last path part of ``name`` in NFC (macOS
    browsers send NFD), each run of characters other than Unicode letters, digits, combining
    marks and ``._-`` made one ``_``, starting with a letter or digit, at most
    :data:`NAME_MAX_BYTES` bytes of UTF-8; ``default`` when nothing is left."""
    text = unicodedata.normalize("NFC", str(name or ""))
    base = text.replace("\\", "/").split("/")[-1]
    out: list[str] = []
    for ch in base:
        if _name_char_ok(ch):
            out.append(ch)
        elif not out or out[-1] != "\0":
            out.append("\0")  # one "_" per run of refused characters, as before
    # runs of dots made one: ".." never reaches a name (the download route refuses it)
    base = _DOTS.sub(".", "".join(out).replace("\0", "_"))
    stem, dot, ext = base.rpartition(".")
    if dot and not any(_starts_ok(ch) for ch in stem):
        base = f"{default}.{ext}"  # "😀.jpg": not "jpg", whose result would be "jpg_enhanced"
    start = next((i for i, ch in enumerate(base) if _starts_ok(ch)), len(base))
    base = _bounded(base[start:].rstrip("._"))
    return base or default


def is_valid_download_name(name: str) -> bool:
    """Whether ``name`` could be a file the service wrote for a job: the characters
    :func:`safe_filename` keeps, in NFC, starting with a letter or digit, no ``..``, bounded."""
    return (bool(name) and _starts_ok(name[0]) and ".." not in name
            and all(_name_char_ok(ch) for ch in name)
            and unicodedata.is_normalized("NFC", name)
            and len(name.encode("utf-8")) <= _DOWNLOAD_MAX_BYTES)


EXTRA_DIR = "extra"  # per job: extra uploads beside input/ (a name the input's own cannot take)


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(k in text for k in ("can't allocate memory", "insufficient memory",
                                   "out of memory", "failed to allocate"))


def new_job_id() -> str:
    """122 random bits from the OS: job ids double as unguessable download capabilities."""
    return str(uuid.uuid4())


@dataclass
class JobContext:
    """What a tool sees while it runs one job."""

    job: JobRecord
    options: Any  # the tool's options model, validated again from the stored job
    input_path: Path
    output_dir: Path
    settings: ServiceSettings
    runtime: Any
    cancel: threading.Event
    _report: Callable[..., None]
    _last: tuple[str, float, float] = field(default=("", -1.0, 0.0))
    #: the pipeline's latest duration estimate, sent with every progress frame after it came
    _estimate: dict[str, Any] | None = None

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def job_id(self) -> str:
        return self.job.id

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("The job was cancelled.")

    def progress(self, stage: str, percent: float) -> None:
        """Report progress; frames are thinned to stage changes, +1 % steps or 0.5 s."""
        self.check_cancel()
        last_stage, last_pct, last_t = self._last
        now = time.monotonic()
        if stage != last_stage or percent - last_pct >= 1.0 or now - last_t >= 0.5:
            self._last = (stage, percent, now)
            self._report(stage, percent, self._estimate)

    def estimate(self, info: dict[str, Any]) -> None:
        """The pipeline's estimate of the job's duration (``on_estimate``): sent at once in a
        progress frame (``estimate`` field) and with every frame after it."""
        self.check_cancel()
        self._estimate = dict(info)
        stage, percent, _ = self._last
        self._last = (stage, percent, time.monotonic())
        self._report(stage or "processing", max(percent, 0.0), self._estimate)

    def sub_progress(self, lo: float, hi: float) -> Callable[[str, float], None]:
        """A ``progress(stage, percent)`` for a sub-step that maps its 0-100 onto lo..hi."""
        def report(stage: str, percent: float) -> None:
            self.progress(stage, lo + (hi - lo) * max(0.0, min(100.0, float(percent))) / 100.0)
        return report

    def write_output(self, name: str, data: Payload) -> Path:
        """Write an output file atomically: ``data`` is its bytes or a function writing them
        into the open file (a streaming encoder: no encoded copy in memory)."""
        return write_atomic(self.output_dir / name, data)

    def download_url(self, name: str) -> str:
        """The path of output ``name``, percent-encoded (UTF-8) as one path segment."""
        return f"/api/v1/download/{self.job.id}/{quote(name, safe='')}"

    def extra_input(self, name: str) -> Path | None:
        """An extra uploaded file of this job (e.g. ``mask``), or None when none was sent."""
        path = self.input_path.parent.parent / EXTRA_DIR / name
        return path if path.is_file() else None


class NotRetryable(RestoraError):
    """Only a failed job, whose input is still stored, can be sent again."""

    code = "not_retryable"
    http_status = 409


ToolFn = Callable[[JobContext], dict[str, Any]]
PreflightFn = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Tool:
    """A named job kind running one pipeline with ``options`` (its options model, e.g.
    :class:`~restora.pipeline.options.EnhanceOptions`); ``preflight(runtime, options)`` may
    raise before the job is accepted."""

    name: str
    run: ToolFn
    options: type[BaseModel]
    preflight: PreflightFn | None = None


FinalHook = Callable[[JobRecord], None]


class JobManager:
    """Owns the store, the queue and the result storage; the routes talk only to this.

    Embedded (default): an :class:`InProcessQueue` runs jobs in this process. Distributed
    (``queue`` is the Dramatiq queue, see :mod:`restora.service.distributed`): this node only
    accepts and streams; workers claim jobs under a lease, and every node's reaper fails jobs
    that passed the time limit and resubmits jobs whose worker died.
    """

    def __init__(self, settings: ServiceSettings, store: JobStore, tools: dict[str, Tool],
                 runtime: Any, *, queue: JobQueue | None = None,
                 notifier: Notifier | None = None, storage: ResultStorage | None = None,
                 metrics: Metrics | None = None, distributed: bool = False,
                 catalog: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.tools = tools
        self.runtime = runtime
        #: an API node's view of the workers' models (:mod:`restora.service.catalog`)
        self.catalog = catalog
        self.storage: ResultStorage = storage or LocalFolderStorage(settings.jobs_dir)
        self.jobs_dir = settings.jobs_dir
        self.final_hooks: list[FinalHook] = []
        #: per-client byte budget shared with the upload middleware (set by the app); each
        #: unfinished job holds its input's size against its client until it ends
        self.client_bytes: Any = None
        self._held: dict[str, tuple[str, int]] = {}
        self._held_lock = threading.Lock()
        self.metrics = metrics or Metrics(store)
        self.notifier: Notifier = notifier or LocalNotifier()
        store.on_event.append(self.notifier.publish)
        self.distributed = distributed
        self.queue: JobQueue = queue or InProcessQueue(
            self._execute, workers=settings.effective_workers, depth=settings.queue_depth,
            timeout_s=settings.job_timeout_s, on_timeout=self._timed_out)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._resubmitted: dict[str, float] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> dict[str, list[str]]:
        """Embedded: recover jobs left by a previous process, then start workers. Both: start
        the janitor (and, distributed, the reaper)."""
        requeue: list[str] = []
        failed: list[str] = []
        self.notifier.start()
        if not self.distributed:
            requeue, failed = self.store.recover()
            for job_id in failed:
                self._notify_final(job_id)
        self.queue.start()
        for job_id in requeue:
            self.queue.submit(job_id)
        self.cleanup()
        self._spawn(self._janitor_loop, "restora-janitor")
        if self.distributed:
            self._spawn(self._reaper_loop, "restora-reaper")
        return {"requeued": requeue, "failed": failed}

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        self.notifier.stop()

    # --- accepting ------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.storage.job_dir(job_id)

    def preflight(self, tool: str, options: BaseModel) -> None:
        t = self.tools[tool]
        if t.preflight is None:
            return
        models = self.runtime
        if models is None and self.catalog is not None:
            models = self.catalog.current()
        if models is not None:
            t.preflight(models, options)

    def submit(self, tool: str, *, api: str, params: dict[str, Any],
               options: BaseModel | dict[str, Any],
               input_bytes: bytes | None, input_name: str = "image",
               webhook_url: str | None = None, owner: str = "",
               extra_inputs: dict[str, bytes] | None = None,
               client: str | None = None) -> JobRecord:
        """Check capacity and models, persist input and job (with its validated ``options``,
        an instance of the tool's options model), then queue it. ``params`` keeps what only the
        API style needs (its view of the request, finishing steps). ``owner`` (an API key hash,
        see :mod:`restora.service.history`) scopes the job history. ``extra_inputs`` are further
        uploads (e.g. a ``mask``) a tool reads with ``ctx.extra_input(name)``. ``client`` is
        charged the stored bytes until the job ends (see ``max_client_bytes``)."""
        if tool not in self.tools:
            raise RestoraError(f"tool '{tool}' is not available on this server",
                               code="unknown_tool", http_status=404)
        t = self.tools[tool]
        options = parse(t.options, options)  # the tool's own model, whatever the API built
        self.queue.ensure_capacity()
        self.preflight(tool, options)
        job_id = new_job_id()
        d = self.job_dir(job_id)
        (d / "input").mkdir(parents=True)
        (d / "output").mkdir()
        name = safe_filename(input_name)
        if input_bytes is not None:
            self.storage.save(job_id, "input", name, input_bytes)
        if extra_inputs:
            (d / EXTRA_DIR).mkdir()
            for key, data in extra_inputs.items():
                (d / EXTRA_DIR / safe_filename(key)).write_bytes(data)
        record = self.store.create(job_id, tool=tool, api=api, params=params,
                                   options=options.model_dump(mode="json"), input_name=name,
                                   webhook_url=webhook_url)
        history.record_owner(self.store, job_id, owner, record.created_at)
        size = len(input_bytes or b"") + sum(len(v) for v in (extra_inputs or {}).values())
        if client is not None and self.client_bytes is not None and size:
            # The upload was already within the budget while it streamed in; from now on the
            # stored copy counts until the job ends.
            self.client_bytes.add(client, size)
            with self._held_lock:
                self._held[job_id] = (client, size)
        self.queue.submit(job_id)
        return record

    def stored_inputs(self, record: JobRecord) -> tuple[bytes | None, dict[str, bytes]]:
        """What a failed job was sent: its input (None when the job fetches it from the
        ``imageUrl`` in its params) and its extra uploads (mask, reference photos), kept until
        retention (see :meth:`_release`), so the same request can be submitted again.

        Raises :class:`NotRetryable` (409) for a job that did not fail: a cancelled job's
        inputs are deleted at once, and a finished or running one has nothing to try again."""
        if record.status != FAILED:
            why = {CANCELED: "a cancelled job's input is deleted when it is cancelled",
                   SUCCEEDED: "its result is ready"}.get(record.status, "it has not ended yet")
            raise NotRetryable(f"Only a failed job can be tried again; this one is "
                               f"{record.status} ({why}).", jobId=record.id,
                               status=record.status)
        path = self.storage.path(record.id, "input", record.input_name)
        if path is not None:
            data: bytes | None = path.read_bytes()
        elif record.params.get("imageUrl"):
            data = None  # fetched by URL (Tengrai): the new job fetches it again, SSRF-checked
        else:
            raise NotRetryable("This job's input is no longer stored; send the file again.",
                               jobId=record.id, status=record.status)
        extra_dir = self.job_dir(record.id) / EXTRA_DIR
        extra = ({p.name: p.read_bytes() for p in sorted(extra_dir.iterdir()) if p.is_file()}
                 if extra_dir.is_dir() else {})
        return data, extra

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued or running job; finished jobs are returned unchanged. A job running
        on another machine learns it at its next lease renewal (its lease is gone)."""
        record = self.store.get(job_id)
        if record is None or record.is_final:
            return record
        self.store.request_cancel(job_id)
        self.queue.cancel(job_id)
        if self.store.finish(job_id, CANCELED,
                             error={"code": "cancelled", "message": "cancelled by the client"}):
            self._notify_final(job_id)
        record = self.store.get(job_id)
        if record is not None and record.is_final:
            # its worker may have ended it first and not yet released: the client that sees
            # it cancelled may send again at once
            self._free_bytes(job_id)
        return record

    # --- running --------------------------------------------------------------------------------

    def _execute(self, job_id: str, cancel: threading.Event) -> None:
        """Embedded worker thread: take a queued job and run it."""
        record = self.store.claim(job_id, worker_id=None, lease_s=None, expired_ok=False)
        if record is None:
            return  # cancelled (or removed) while waiting
        self.run_claimed(record, cancel)

    def run_claimed(self, record: JobRecord, cancel: threading.Event,
                    worker_id: str | None = None) -> bool:
        """Run a job this process has claimed and finish it (compare-and-set on ``worker_id``).
        Returns whether this run wrote the final state."""
        job_id = record.id
        tool = self.tools.get(record.tool)
        d = self.job_dir(job_id)
        status, result, error = FAILED, None, None
        t0 = time.monotonic()
        token = log_job_id.set(job_id)
        try:
            if tool is None:
                raise RestoraError(f"tool '{record.tool}' is not available on this server",
                                   code="unknown_tool")
            # The stored options are validated again: the row may come from another version.
            ctx = JobContext(job=record, options=parse(tool.options, record.options),
                             input_path=d / "input" / record.input_name,
                             output_dir=d / "output", settings=self.settings,
                             runtime=self.runtime, cancel=cancel,
                             _report=lambda s, p, e=None: self._report(job_id, cancel, s, p,
                                                                       worker_id, e))
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            log.info("job started (%s, attempt %d)", record.tool, record.attempts)
            result = tool.run(ctx)
            ctx.check_cancel()  # a result that arrives after cancel/timeout is discarded
            status = SUCCEEDED
        except Cancelled as exc:
            status, error = CANCELED, {"code": "cancelled", "message": exc.message}
        except RestoraError as exc:
            error = {**exc.to_dict(), "httpStatus": exc.http_status}
        except MemoryError:
            error = {"code": "out_of_memory", "message": "The job ran out of memory.",
                     "httpStatus": 503}
        except Exception as exc:  # a bug in a tool must fail the job, not the worker
            if _is_out_of_memory(exc):  # torch and OpenCV report failed allocations this way
                error = {"code": "out_of_memory", "message": "The job ran out of memory.",
                         "httpStatus": 503}
            else:
                log.exception("job failed")
                error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        try:
            won = self.store.finish(job_id, status, result=result, error=error,
                                    from_statuses=(PROCESSING,), worker_id=worker_id)
            if won:
                self.metrics.job_done(record.tool, status, time.monotonic() - t0,
                                      (error or {}).get("code"))
                log.info("job %s in %.2f s", status, time.monotonic() - t0)
                self._notify_final(job_id)
            return won
        finally:
            log_job_id.reset(token)

    def _report(self, job_id: str, cancel: threading.Event, stage: str, percent: float,
                worker_id: str | None = None, estimate: dict[str, Any] | None = None) -> None:
        if not self.store.progress(job_id, stage, percent, worker_id=worker_id,
                                   estimate=estimate):
            cancel.set()  # the job was finished elsewhere (cancel, timeout): stop working

    def _timed_out(self, job_id: str) -> None:
        limit = self.settings.job_timeout_s
        if self.store.finish(job_id, FAILED, from_statuses=(PROCESSING,),
                             error={"code": "timeout",
                                    "message": f"The job ran longer than {limit:g} s."}):
            log.warning("job %s failed: over the %g s limit", job_id, limit)
            self.metrics.failures.labels("timeout").inc()
            self._notify_final(job_id)

    def _release(self, record: JobRecord) -> None:
        """A job ended: its client's bytes are free again, and a cancelled job's inputs are
        deleted at once. A failed job's inputs stay as long as a result would (``cleanup``
        removes them after the TTL): its history entry shows the input and the user may
        send it again."""
        self._free_bytes(record.id)
        if record.status == CANCELED:
            d = self.job_dir(record.id)
            shutil.rmtree(d / "input", ignore_errors=True)
            shutil.rmtree(d / EXTRA_DIR, ignore_errors=True)

    def settle_held(self, client: str | None = None) -> int:
        """Free the bytes this process holds for jobs (of ``client``, or of every client) that
        the store says have ended, or no longer exist, though this process has not seen them
        end: a worker process or another node finished them, or this process's own worker
        has written the final state and not yet released. Called before a client would be
        refused and by the reaper. Returns the bytes freed."""
        with self._held_lock:
            ids = [j for j, (c, _) in self._held.items() if client is None or c == client]
        if not ids or self.client_bytes is None:
            return 0
        live = self.store.unfinished(ids)
        return sum(self._free_bytes(j) for j in ids if j not in live)

    def _free_bytes(self, job_id: str) -> int:
        """Release what this process holds against a client for an ended job (once)."""
        with self._held_lock:
            held = self._held.pop(job_id, None)
        if held is None or self.client_bytes is None:
            return 0
        self.client_bytes.release(*held)
        return held[1]

    def reap(self, now: float | None = None) -> None:
        """Any node, any number of times (compare-and-set makes it safe): fail jobs past the
        time limit even if their worker hangs, and resubmit jobs whose lease ran out long ago
        (their worker died and the engine's redelivery did not claim them)."""
        now = now or time.time()
        s = self.settings
        for job_id in self.store.overdue(s.job_timeout_s, now):
            self._timed_out(job_id)
        for job_id in self.store.orphaned(s.lease_s + 2 * s.queue_heartbeat_s, now):
            if now - self._resubmitted.get(job_id, 0.0) > s.queue_heartbeat_s:
                self._resubmitted[job_id] = now
                log.warning("job %s: lease expired, resubmitting", job_id)
                self.queue.submit(job_id)
        if len(self._resubmitted) > 10_000:
            self._resubmitted.clear()

    def _reaper_loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval_s):
            try:
                self.reap()
                self.settle_held()  # jobs that ended on worker processes
            except Exception:
                log.exception("reaper failed")

    def _notify_final(self, job_id: str) -> None:
        record = self.store.get(job_id)
        if record is None:
            return
        try:
            self._release(record)
        except Exception:
            log.exception("job %s: releasing its inputs failed", job_id)
        for hook in self.final_hooks:
            try:
                hook(record)
            except Exception:
                log.exception("job %s: final hook failed", job_id)

    # --- expiry ---------------------------------------------------------------------------------

    def cleanup(self, now: float | None = None) -> list[str]:
        """Delete finished jobs older than the TTL, with their files."""
        removed = self.store.expired(self.settings.result_ttl_s, now)
        for job_id in removed:
            self.delete(job_id)
        return removed

    def delete(self, job_id: str) -> None:
        """Remove a job for good: cancel it if still active, then its files and rows."""
        record = self.store.get(job_id)
        if record is not None and not record.is_final:
            self.cancel(job_id)
        self.storage.delete(job_id)
        self.store.delete(job_id)
        history.forget(self.store, job_id)

    def _janitor_loop(self) -> None:
        while not self._stop.wait(self.settings.cleanup_interval_s):
            try:
                self.cleanup()
            except Exception:
                log.exception("cleanup failed")
