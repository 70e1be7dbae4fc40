"""Cooperative cancellation for long core work (search, ingest, retrieval).

Core objects know nothing of gRPC, so a servicer hands them a plain ``should_stop`` callable
(true once the caller has gone or its deadline has passed) and they look at it between batches.
Python threads cannot be killed; checking between batches is what lets a server drop abandoned
work within one batch instead of computing it to the end.
"""

from __future__ import annotations

from collections.abc import Callable

from vaner.errors import Cancelled

StopCheck = Callable[[], bool]


def check_stop(should_stop: StopCheck | None, what: str) -> None:
    """Raise :class:`Cancelled` when ``should_stop`` says so; ``None`` never stops."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled: the caller went away or its deadline passed")
