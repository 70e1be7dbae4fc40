"""What a servicer tells a core object about its call, without handing it gRPC.

Core loops take a ``should_stop`` callable (vaner/cancel.py) and look at it between batches;
this builds one from a call's context: true once the client has cancelled or gone away, the
deadline has passed, or the server has cancelled the call at the end of its shutdown grace.
"""

from __future__ import annotations

from typing import Any

from vaner.cancel import StopCheck


def deadline_passed(context: Any) -> bool:
    """True once the call behind ``context`` has a deadline and it has passed."""
    time_remaining = getattr(context, "time_remaining", None)
    remaining = time_remaining() if time_remaining is not None else None
    return remaining is not None and remaining <= 0


def call_ended(context: Any) -> StopCheck | None:
    """A ``should_stop`` for the call behind ``context`` (``None`` without one: in-process use)."""
    if context is None:
        return None
    is_active = getattr(context, "is_active", None)

    def ended() -> bool:
        if is_active is not None and not is_active():
            return True
        return deadline_passed(context)

    return ended
