"""The one bridge from a job that reports through a callback to a caller that iterates.

Streaming RPCs (Ingest, BuildDbrSamples, Retrain) must yield from the RPC thread, while the core
reports progress through a callback from deep inside one long call. :class:`ThreadStream` runs
that call in a daemon thread and hands what it emits to the iterating thread; once iteration ends
the call's return value is in ``result``, and its exception is re-raised in the iterating thread,
where the error interceptor maps it like any other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class ThreadStream(Generic[T, R]):
    """``work(emit)`` starts in its own thread at once; iterate to receive what it emits.

    With ``max_pending`` > 0, an event emitted while that many wait unread is dropped: progress is
    droppable, and a slow reader must never stall an ingest. The end marker is never dropped.
    """

    def __init__(self, work: Callable[[Callable[[T], None]], R], *, name: str, max_pending: int = 0):
        self._queue: queue.Queue = queue.Queue()
        self._max_pending = max_pending
        self._result: R | None = None
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _emit(self, item: T) -> None:
        if self._max_pending and self._queue.qsize() >= self._max_pending:
            return
        self._queue.put(item)

    def _run(self, work: Callable[[Callable[[T], None]], R]) -> None:
        try:
            self._result = work(self._emit)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the iterating thread
            self._error = exc
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                break
            yield item
        self._thread.join()
        self._done = True
        if self._error is not None:
            raise self._error

    @property
    def result(self) -> R:
        """The job's return value; only after iteration finished without an error."""
        if not self._done:
            raise RuntimeError("ThreadStream.result read before the stream was consumed")
        return self._result  # type: ignore[return-value]
