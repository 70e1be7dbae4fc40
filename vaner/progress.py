"""Progress with rate and ETA for long work (ingest, DBR, training, evaluation).

Core code reports through a :class:`ProgressTracker` and a plain callback, so the same events feed
a tqdm bar in the CLI and a server-streamed ``Progress`` message in gRPC.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    done: int
    total: int | None
    rate: float
    eta_seconds: float | None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


class ProgressTracker:
    """Counts work, and emits at most one event per ``min_interval`` seconds (plus the last)."""

    def __init__(self, stage: str, total: int | None = None, callback: ProgressCallback | None = None,
                 min_interval: float = 0.5):
        self.stage = stage
        self.total = total
        self.callback = callback
        self.min_interval = min_interval
        self.done = 0
        self._start = time.monotonic()
        self._last_emit = 0.0

    def advance(self, n: int = 1, message: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.callback and (now - self._last_emit >= self.min_interval):
            self._last_emit = now
            self.callback(self.event(message))

    def event(self, message: str = "") -> ProgressEvent:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        eta = None
        if self.total and rate > 0:
            eta = max(self.total - self.done, 0) / rate
        return ProgressEvent(self.stage, self.done, self.total, rate, eta, message)

    def finish(self, message: str = "") -> ProgressEvent:
        ev = self.event(message)
        if self.callback:
            self.callback(ev)
        return ev


class TqdmProgress:
    """CLI renderer: one tqdm bar per stage on stderr; silent when ``enabled`` is False."""

    def __init__(self, enabled: bool = True, unit: str = "it"):
        self.enabled = enabled
        self.unit = unit
        self._bars: dict[str, object] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(ev.stage)
        if bar is None:
            bar = tqdm(total=ev.total, desc=ev.stage, unit=self.unit, file=sys.stderr,
                       dynamic_ncols=True, unit_scale=True)
            self._bars[ev.stage] = bar
        bar.n = ev.done  # type: ignore[attr-defined]
        if ev.total is not None:
            bar.total = ev.total  # type: ignore[attr-defined]
        if ev.message:
            bar.set_postfix_str(ev.message, refresh=False)  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()  # type: ignore[attr-defined]
        self._bars.clear()
