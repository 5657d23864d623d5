"""The HTTP connection protocol ``restora serve`` runs: uvicorn's h11 protocol plus a header
deadline, so a client that opens connections and sends its request line and headers byte by
byte (slowloris) cannot hold them open.

uvicorn times out idle keep-alive connections only after a response, and any byte received
resets that timer; nothing bounds the time to receive one request's headers. Here every wait for
a request (a new connection, or the next request on a kept-alive one) has a fixed deadline
(``header_timeout_s``) that incoming bytes do not extend. Slow *bodies* are bounded by
:class:`restora.service.middleware.BodyLimitMiddleware`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-header deadline (class attribute, see
    :func:`protocol_class`)."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s,
                                                     self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        handle = getattr(self, "_header_deadline", None)
        if handle is not None:
            handle.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        # Still waiting for (the rest of) a request line and headers: give up on the client.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_deadline()  # the headers are in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)


def protocol_class(header_timeout_s: float) -> type[HeaderDeadlineH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with this header deadline."""
    return type("RestoraH11Protocol", (HeaderDeadlineH11Protocol,),
                {"header_timeout_s": float(header_timeout_s)})


def uvicorn_config(app: Any, settings: Any, **kwargs: Any) -> Any:
    """The uvicorn configuration ``restora serve`` (and the tests' real servers) use."""
    import uvicorn

    kwargs.setdefault("timeout_graceful_shutdown", 5)
    return uvicorn.Config(app, host=settings.host, port=settings.port,
                          http=protocol_class(settings.header_timeout_s),
                          timeout_keep_alive=min(5, settings.header_timeout_s), **kwargs)
