"""Stage bookkeeping for pipelines: timings, progress callbacks and cancellation checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import contextmanager

from restora.errors import Cancelled

ProgressFn = Callable[[str, float], None]
#: receives each estimate of the job's duration (a dict, see :meth:`Stages.estimate`)
EstimateFn = Callable[[dict[str, Any]], None]


def estimate_text(est: dict[str, Any]) -> str:
    """One line for an estimate: 'this will take about 7 min (380 upscale tiles, 4 face(s))'."""
    secs = float(est["seconds"])
    when = f"{secs / 60:.0f} min" if secs >= 90 else f"{secs:.0f} s"
    work = est.get("work", {})
    parts = []
    if work.get("upscaleTiles"):
        parts.append(f"{work['upscaleTiles']} upscale tiles")
    if work.get("inpaintRegions"):
        parts.append(f"{work['inpaintRegions']} damaged region(s) to fill")
    if work.get("faces"):
        parts.append(f"{work['faces']} face(s)")
    return f"this will take about {when}" + (f" ({', '.join(parts)})" if parts else "")


class Stages:
    """Times named stages, reports overall progress at their boundaries, honours ``cancel``.

    ``weights`` gives each stage's share of the 0-100 progress scale (in order of execution);
    a stage that does not run is simply skipped over.
    """

    def __init__(self, weights: dict[str, float], progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None, *,
                 on_estimate: EstimateFn | None = None, long_s: float = 60.0) -> None:
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
        self.on_estimate = on_estimate
        self.long_s = long_s
        self._t0 = time.perf_counter()
        #: the first estimate (what the caller was told up front) and the latest one
        self.first_estimate: dict[str, Any] | None = None
        self.last_estimate: dict[str, Any] | None = None

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
    def stage(self, name: str, *, report: bool = True) -> Iterator[None]:
        """Time ``name`` (times add up when a stage is entered again); ``report=False`` keeps
        the progress bar where it is (work of a later stage done early, e.g. timing tiles).
        Cancellation is checked on entry and again on leaving: a stage whose work has no check
        of its own (one network forward) still ends the job when asked to during it."""
        self.check()
        if report:
            self.report(name, 0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        self.check()
        if report:
            self.report(name, 1.0)

    def estimate(self, remaining_s: float, work: dict[str, int], basis: str, *,
                 force: bool = False) -> dict[str, Any]:
        """Announce how long the job will take: ``remaining_s`` more seconds of ``work``
        (units left per kind, e.g. ``{"upscaleTiles": 380, "faces": 3}``); ``basis`` says
        where the per-unit costs come from (``measured`` or ``nominal``).

        The dict passed to ``on_estimate`` (and kept in ``first_estimate`` / ``last_estimate``):
        ``seconds`` (whole job, from its start), ``remainingSeconds``, ``long`` (``seconds`` at
        least ``long_s``), ``work`` and ``basis``. After the first, an estimate is only passed
        on when it moved by 10 % or more, became long, or ``force`` is set.
        """
        elapsed = time.perf_counter() - self._t0
        remaining = max(0.0, float(remaining_s))
        total = elapsed + remaining
        info = {"seconds": round(total, 1), "remainingSeconds": round(remaining, 1),
                "long": total >= self.long_s, "work": dict(work), "basis": basis}
        last = self.last_estimate
        changed = (last is None or force or info["long"] != last["long"]
                   or abs(total - last["seconds"]) >= 0.1 * max(last["seconds"], 1.0))
        if changed:
            self.last_estimate = info
            if self.first_estimate is None:
                self.first_estimate = info
            if self.on_estimate is not None:
                self.on_estimate(dict(info))
        return info

    def done(self) -> None:
        if self.progress is not None:
            self.progress("done", 100.0)
