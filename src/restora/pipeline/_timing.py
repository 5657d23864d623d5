"""Stage bookkeeping for pipelines: timings, progress callbacks and cancellation checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from restora.errors import Cancelled

ProgressFn = Callable[[str, float], None]


class Stages:
    """Times named stages, reports overall progress at their boundaries, honours ``cancel``.

    ``weights`` gives each stage's share of the 0-100 progress scale (in order of execution);
    a stage that does not run is simply skipped over.
    """

    def __init__(self, weights: dict[str, float], progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> None:
        total = sum(weights.values()) or 1.0
        self._start: dict[str, float] = {}
        acc = 0.0
        for name, w in weights.items():
            self._start[name] = 100.0 * acc / total
            acc += w
        self._share = {k: 100.0 * w / total for k, w in weights.items()}
        self.progress = progress
        self.cancel = cancel
        self.timings: dict[str, float] = {}

    def check(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("The job was cancelled.")

    def report(self, stage: str, fraction: float) -> None:
        """Progress inside ``stage`` (fraction 0..1 of that stage)."""
        if self.progress is not None:
            pct = self._start.get(stage, 0.0) + self._share.get(stage, 0.0) * min(max(fraction, 0.0), 1.0)
            self.progress(stage, round(pct, 2))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.check()
        self.report(name, 0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        self.report(name, 1.0)

    def done(self) -> None:
        if self.progress is not None:
            self.progress("done", 100.0)
