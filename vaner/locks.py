"""The one file lock, held with ``fcntl.flock``; named locks live in ``$VANER_HOME/locks/<name>.lock``.

Why flock on a file in the state directory: a CLI run and a service on the same machine (or two
containers sharing the volume) must see each other's lock, and the kernel drops a flock when its
process dies, so a killed ingest or retrain never leaves a stale lock behind. The holder writes
its pid into the file so a refused caller can say who is in the way.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from vaner.errors import AlreadyRunning
from vaner.permissions import make_private_dir
from vaner.settings import Settings


@contextmanager
def file_lock(path: Path, *, label: str = "job", doing: str = "", wait: bool = False) -> Iterator[Path]:
    """Hold ``path`` exclusively; with ``wait`` block until it is free, otherwise raise
    :class:`AlreadyRunning` naming the holder. ``label`` names the job in that message and
    ``doing`` what the refused caller wanted to do."""
    make_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            prefix = f"{doing}: " if doing else ""
            raise AlreadyRunning(f"{prefix}a {label} is already running ({holder}); wait for it to finish "
                                 f"or stop that process (lock: {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
                  .encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def exclusive_lock(settings: Settings, name: str, *, label: str | None = None, doing: str = "",
                   wait: bool = False) -> AbstractContextManager[Path]:
    """:func:`file_lock` on ``locks_dir/<name>.lock``, the state directory's named locks."""
    return file_lock(settings.locks_dir / f"{name}.lock", label=label or name, doing=doing, wait=wait)
