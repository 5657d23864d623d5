"""CLI: ``restora worker`` runs jobs for a cluster of API nodes (docs/deployment.md)."""

from __future__ import annotations

from typing import Optional

import typer


def worker(
    threads: int = typer.Option(1, "--threads", min=1,
                                help="Jobs run at once in this process (1 per GPU)."),
    queue: Optional[str] = typer.Option(None, "--queue",
                                        help="Queue to consume (default RESTORA_QUEUE_NAME)."),
    health_port: Optional[int] = typer.Option(
        None, "--health-port", min=0, max=65535,
        help="Serve /healthz, /readyz and /metrics on this port."),
) -> None:
    """Run jobs from the queue (needs RESTORA_DATABASE_URL and RESTORA_QUEUE_URL)."""
    from restora.cli.serve import service_settings
    from restora.service.worker import run_worker

    settings = service_settings({"queue_name": ("--queue", queue)})
    run_worker(settings, threads=threads, health_port=health_port)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("worker")(worker)
