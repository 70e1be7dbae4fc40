"""The one thread-to-iterator bridge used by the streaming RPCs."""

from __future__ import annotations

import threading

import pytest

from vaner.errors import NotFound
from vaner.streams import ThreadStream


def test_yields_in_order_then_result():
    stream = ThreadStream(lambda emit: [emit(i) for i in range(5)] and "done", name="t")
    assert list(stream) == [0, 1, 2, 3, 4] and stream.result == "done"


def test_error_is_raised_in_the_iterating_thread_after_the_events():
    def work(emit):
        emit("started")
        raise NotFound("no such snapshot")

    stream = ThreadStream(work, name="t")
    seen = []
    with pytest.raises(NotFound, match="no such snapshot"):
        for ev in stream:
            seen.append((ev, threading.current_thread() is threading.main_thread()))
    assert seen == [("started", True)]
    with pytest.raises(RuntimeError):
        _ = ThreadStream(lambda emit: 1, name="t").result  # not consumed yet


def test_slow_reader_drops_events_but_never_the_end():
    gate = threading.Event()

    def work(emit):
        for i in range(100):
            emit(i)
        gate.set()
        return "ok"

    stream = ThreadStream(work, name="t", max_pending=3)
    assert gate.wait(5)  # the job finished although nobody read: it was never blocked
    assert list(stream) == [0, 1, 2] and stream.result == "ok"
