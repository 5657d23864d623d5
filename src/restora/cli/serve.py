"""CLI: ``restora serve`` starts the HTTP service (one process, models kept warm)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from restora.service.settings import ServiceSettings


def service_settings(flags: dict[str, tuple[str, Any]]) -> ServiceSettings:
    """The service's settings with ``flags`` ({field: (option, value or None)}) over the
    ``RESTORA_*`` environment. A flag's bad value is an ``invalid_parameter`` line naming the
    option the user typed (``--port``), not the environment variable it stands for; a bad
    variable is still ``invalid_settings`` naming it (see :func:`restora.cli.main`)."""
    from pydantic import ValidationError

    from restora.errors import InvalidParameter
    from restora.service.settings import ServiceSettings

    given = {field: value for field, (_, value) in flags.items() if value is not None}
    try:
        return ServiceSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field in given:
                option, value = flags[field][0], given[field]
                shown = repr(value) if isinstance(value, str) else value
                raise InvalidParameter(field, f"{option} {shown}: {error['msg']}") from None
        raise


def serve(
    host: Optional[str] = typer.Option(None, "--host",
                                       help="Interface (default RESTORA_HOST or 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535,
                                       help="Port (default RESTORA_PORT or 8000)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="Jobs run at once (default RESTORA_WORKERS or 1)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve every tool over HTTP (SnapOtter, CodeFormer, Tengrai and Topaz-style APIs).

    Embedded by default (jobs run in this process); with RESTORA_DATABASE_URL and
    RESTORA_QUEUE_URL set this is an API node and `restora worker` processes run the jobs."""
    import uvicorn
    from uvicorn.config import LOG_LEVELS

    if log_level.lower() not in LOG_LEVELS:  # else a KeyError once the app is built
        from restora.errors import InvalidParameter

        *rest, last = LOG_LEVELS
        raise InvalidParameter("log_level", f"unknown --log-level {log_level!r}; use "
                               f"{', '.join(rest)} or {last}")

    from restora.service.app import create_app

    settings = service_settings({"host": ("--host", host), "port": ("--port", port),
                                 "workers": ("--workers", workers)})
    if not settings.host.strip():  # uvicorn would listen on every interface, said as "http://:8000"
        from restora.errors import InvalidParameter, RestoraError

        why = ("is empty: it would listen on every interface; give one (127.0.0.1 for this "
               "machine only, 0.0.0.0 for all)")
        if host is not None:
            raise InvalidParameter("host", f"--host {why}")
        raise RestoraError(f"RESTORA_HOST {why}", code="invalid_settings")
    check_listen(settings.host, settings.port, host_flag=host is not None,
                 port_flag=port is not None)
    from restora.service import logs

    logs.configure(settings.log_format, node=f"api:{settings.port}")
    app = create_app(settings)
    serving = f"serving on http://{settings.host}:{settings.port} (home {settings.home})"
    if settings.log_format == "json":
        logging.getLogger("restora.service").info(serving)
    else:
        typer.echo(f"restora: {serving}", err=True)
    from restora.service.protocol import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, settings, log_level=log_level,
                                          proxy_headers=False,
                                          log_config=logs.uvicorn_log_config(settings.log_format)))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C once it has shut down: a normal stop
        raise typer.Exit(130) from None


def check_listen(host: str, port: int, *, host_flag: bool, port_flag: bool) -> None:
    """One ``invalid_parameter`` line, before anything starts, when ``host:port`` cannot be
    listened on (a port in use, a host that does not resolve or is not this machine's): uvicorn
    printed "serving on" first, then its own error, and exited 3. The check binds as uvicorn
    does (SO_REUSEADDR), so what passes here binds there, barring a race."""
    import errno
    import socket

    from restora.errors import InvalidParameter

    host_name = "--host" if host_flag else "RESTORA_HOST" if "RESTORA_HOST" in os.environ \
        else "the default host"
    port_name = "--port" if port_flag else "RESTORA_PORT" if "RESTORA_PORT" in os.environ \
        else "the default port"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidParameter("host", f"cannot listen on {host!r} ({host_name}): "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidParameter("port", f"port {port} ({port_name}) is in use on {host}; "
                                       "stop what listens there or give another --port") from None
            raise InvalidParameter("host", f"cannot listen on {host}:{port} ({host_name}): "
                                   f"{exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("serve")(serve)
