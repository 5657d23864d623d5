"""Structured logs: every record carries the job id of the job being run in that thread.

``RESTORA_LOG_FORMAT=json`` prints one JSON object per line (``ts``, ``level``, ``logger``,
``msg``, ``jobId``, ``node``), what log shippers expect from containers; ``text`` (default)
prints the job id after the level.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

#: the job the current thread works on ("" when none)
log_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("restora_job_id", default="")


class JobIdFilter(logging.Filter):
    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.jobId = log_job_id.get()
        record.node = self.node
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage(),
                "jobId": getattr(record, "jobId", "") or None,
                "node": getattr(record, "node", "") or None}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, separators=(",", ":"))


def configure(fmt: str = "text", *, node: str = "", level: int = logging.INFO) -> None:
    """Install one stderr handler on the ``restora`` logger (idempotent). ``json`` also sends
    what other libraries log through it, so that every line is one JSON object: uvicorn's
    loggers (its startup lines and access log; ``restora serve`` then leaves their handlers
    unset, see :func:`uvicorn_log_config`) and the root logger at WARNING (NNCF, Dramatiq,
    httpx)."""
    _install(logging.getLogger("restora"), _handler(fmt, node), level)
    if fmt == "json":
        _install(logging.getLogger("uvicorn"), _handler(fmt, node), None)
        _install(logging.getLogger(), _handler(fmt, node), logging.WARNING)


def uvicorn_log_config(fmt: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``fmt``: its own (coloured text) for ``text``; for ``json``
    none, so its records reach the handler :func:`configure` put on the ``uvicorn`` logger."""
    if fmt != "json":
        from uvicorn.config import LOGGING_CONFIG

        return LOGGING_CONFIG
    return None


def _handler(fmt: str, node: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler._restora = True  # type: ignore[attr-defined]
    handler.addFilter(JobIdFilter(node))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        f = logging.Formatter("%(asctime)s %(levelname)s [%(jobId)s] %(name)s: %(message)s")
        f.converter = time.gmtime
        handler.setFormatter(f)
    return handler


def _install(logger: logging.Logger, handler: logging.Handler, level: int | None) -> None:
    for h in list(logger.handlers):
        if getattr(h, "_restora", False):
            logger.removeHandler(h)
    logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level)
    if logger.parent is not None:  # the root logger has none
        logger.propagate = False
