"""Progress with rate and ETA for long work (ingest, DBR, training, evaluation).

Core code reports through a :class:`ProgressTracker` and a plain callback, so the same events feed
the CLI's bars (:class:`ProgressBars`) and a server-streamed ``Progress`` message in gRPC.
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
    """Counts work, and emits at most one event per ``min_interval`` seconds (plus the last).

    ``done`` is work finished before this tracker started (a resumed run): it counts towards the
    total but not towards the rate, or a resumed run would report thousands of steps a second.
    """

    def __init__(self, stage: str, total: int | None = None, callback: ProgressCallback | None = None,
                 min_interval: float = 0.5, done: int = 0):
        self.stage = stage
        self.total = total
        self.callback = callback
        self.min_interval = min_interval
        self.done = done
        self._resumed_from = done
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
        rate = (self.done - self._resumed_from) / elapsed
        eta = None
        if self.total and rate > 0:
            eta = max(self.total - self.done, 0) / rate
        return ProgressEvent(self.stage, self.done, self.total, rate, eta, message)

    def finish(self, message: str = "") -> ProgressEvent:
        ev = self.event(message)
        if self.callback:
            self.callback(ev)
        return ev


def format_seconds(seconds: float | None) -> str:
    """``h:mm:ss`` (``-:--:--`` when unknown), as bars and log lines show elapsed time and ETA."""
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def describe(ev: ProgressEvent, unit: str = "it") -> str:
    """One plain line for an event: ``encode: 1,200/5,000 row (24%), 310.2 row/s, ETA 0:00:12 - message``."""
    count = f"{ev.done:,}/{ev.total:,}" if ev.total is not None else f"{ev.done:,}"
    pct = f" ({100 * ev.done / ev.total:.0f}%)" if ev.total else ""
    eta = f", ETA {format_seconds(ev.eta_seconds)}" if ev.total is not None else ""
    return f"{ev.stage}: {count} {unit}{pct}, {ev.rate:,.1f} {unit}/s{eta}" + (f" - {ev.message}" if ev.message else "")


class ProgressBars:
    """The CLI renderer: one bar per stage on stderr with count, rate, elapsed time and ETA.

    On a terminal the bars are live (rich); elsewhere (a log file, CI) each stage prints a plain
    :func:`describe` line when it starts, at most every ``interval`` seconds, and at :meth:`close`,
    so a long job's log still says how far it got. Silent when ``enabled`` is False. stdout is never
    touched, so ``--json`` output stays the only thing there.
    """

    def __init__(self, enabled: bool = True, unit: str = "it", interval: float = 30.0):
        self.enabled = enabled
        self.unit = unit
        self.interval = interval
        self._bars = None  # rich.progress.Progress on a terminal, started by the first event
        self._terminal: bool | None = None
        self._tasks: dict[str, int] = {}
        self._last: dict[str, ProgressEvent] = {}
        self._printed: dict[str, tuple[float, ProgressEvent]] = {}  # stage -> (when, what) it last printed

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, ev: ProgressEvent) -> None:
        if not self.enabled:
            return
        if self._terminal is None:
            self._terminal = sys.stderr.isatty()
            if self._terminal:
                self._bars = _rich_bars(self.unit)
                self._bars.start()
        self._last[ev.stage] = ev
        if self._bars is not None:
            fields = {"rate": f"{ev.rate:,.1f} {self.unit}/s", "eta": format_seconds(ev.eta_seconds),
                      "message": ev.message}
            if ev.stage not in self._tasks:
                self._tasks[ev.stage] = self._bars.add_task(ev.stage, total=ev.total, **fields)
            self._bars.update(self._tasks[ev.stage], completed=ev.done, total=ev.total, **fields)
            return
        now = time.monotonic()
        if ev.stage not in self._printed or now - self._printed[ev.stage][0] >= self.interval:
            self._print(ev, now)

    def _print(self, ev: ProgressEvent, now: float) -> None:
        self._printed[ev.stage] = (now, ev)
        print(describe(ev, self.unit), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        for stage, ev in self._last.items():  # plain lines: each stage's last state, unless already out
            if not self._terminal and self._printed.get(stage, (0.0, None))[1] is not ev:
                self._print(ev, time.monotonic())
        self._tasks.clear()
        self._last.clear()
        self._printed.clear()
        self._terminal = None


def _rich_bars(unit: str):  # noqa: ANN202 - rich.progress.Progress (rich is imported only when a bar shows)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    def text(fmt: str, style: str = "none") -> TextColumn:  # our strings are not rich markup
        return TextColumn(fmt, style=style, markup=False)

    return Progress(text("{task.description}", "bold"), BarColumn(), MofNCompleteColumn(), text(unit),
                    text("{task.fields[rate]}"), TimeElapsedColumn(), text("ETA {task.fields[eta]}", "cyan"),
                    text("{task.fields[message]}"), console=Console(file=sys.stderr), redirect_stdout=False)
