"""The one mapping between :class:`vaner.progress.ProgressEvent` and ``vaner.v1.Progress``.

Servicers stream core progress out with :func:`progress_to_proto`; clients and service-to-service
callers read it back with :func:`progress_from_proto`. The wire has no nulls, so an unknown total
travels as 0 and an unknown ETA as -1.
"""

from __future__ import annotations

from vaner.progress import ProgressEvent
from vaner.v1 import common_pb2


def progress_to_proto(ev: ProgressEvent) -> common_pb2.Progress:
    return common_pb2.Progress(stage=ev.stage, done=int(ev.done), total=int(ev.total or 0), rate=float(ev.rate),
                               eta_seconds=-1.0 if ev.eta_seconds is None else float(ev.eta_seconds),
                               message=ev.message)


def progress_from_proto(p: common_pb2.Progress) -> ProgressEvent:
    return ProgressEvent(p.stage, p.done, p.total or None, p.rate, None if p.eta_seconds < 0 else p.eta_seconds,
                         p.message)
