"""Prometheus metrics of one process (API node or worker), on its own registry.

Queue depth and running jobs are read from the job store at scrape time, so every node reports
the cluster's numbers; job durations, failures and model load times are this process's own.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from restora.service.store import PROCESSING, QUEUED, JobStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class _StoreCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        try:
            queued, running = self.store.count(QUEUED), self.store.count(PROCESSING)
        except Exception:  # the database is down: /readyz says so; keep /metrics answering
            return
        yield GaugeMetricFamily("restora_queue_depth", "Jobs accepted and waiting.", queued)
        yield GaugeMetricFamily("restora_jobs_running", "Jobs being processed.", running)


class Metrics:
    def __init__(self, store: JobStore | None = None) -> None:
        self.registry = CollectorRegistry()
        self.job_seconds = Histogram(
            "restora_job_seconds", "Job run time by tool and outcome.", ["tool", "outcome"],
            buckets=_BUCKETS, registry=self.registry)
        self.failures = Counter("restora_job_failures", "Failed jobs by error code.", ["code"],
                                registry=self.registry)
        self.model_load_seconds = Histogram(
            "restora_model_load_seconds", "Time to load a model into this process.", ["model"],
            buckets=_BUCKETS, registry=self.registry)
        if store is not None:
            self.registry.register(_StoreCollector(store))

    def job_done(self, tool: str, outcome: str, seconds: float, code: str | None) -> None:
        self.job_seconds.labels(tool, outcome).observe(seconds)
        if outcome != "succeeded" and code:
            self.failures.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
