"""CLI: ``restora serve`` starts the HTTP service (one process, models kept warm)."""

from __future__ import annotations

import logging
from typing import Optional

import typer


def serve(
    host: Optional[str] = typer.Option(None, "--host",
                                       help="Interface (default RESTORA_HOST or 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default RESTORA_PORT or 8000)."),
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
    from restora.service.settings import ServiceSettings

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items()
                 if v is not None}
    settings = ServiceSettings(**overrides)
    from restora.service import logs

    logs.configure(settings.log_format, node=f"api:{settings.port}")
    app = create_app(settings)
    serving = f"serving on http://{settings.host}:{settings.port} (home {settings.home})"
    if settings.log_format == "json":
        logging.getLogger("restora.service").info(serving)
    else:
        typer.echo(f"restora: {serving}", err=True)
    from restora.service.protocol import uvicorn_config

    uvicorn.Server(uvicorn_config(app, settings, log_level=log_level, proxy_headers=False,
                                  log_config=logs.uvicorn_log_config(settings.log_format))).run()


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("serve")(serve)
