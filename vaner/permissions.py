"""Private state on disk: the state directory 0700, the SQLite file 0600, and a warning for secrets
that other users can read.

A KB snapshot can hold licensed UMLS content and a token file is a credential, so neither should
be readable by every local account. Directories and files that already exist keep their mode (the
operator chose it); only what vaner creates is made private.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, each 0700; existing ones are left as they are.

    Every component vaner creates is private, not only the last: a state subfolder (models, locks,
    encoders) can be the first thing created, and the state dir it creates on the way must not be
    left at the umask's 0755."""
    path = Path(path)
    if path.is_dir():
        return path
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # created meanwhile by another process: its mode stands
            continue
        os.chmod(d, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask; be exact
    return path


def create_private_file(path: Path) -> bool:
    """Create an empty ``path`` with mode 0600 unless it exists; ``False`` when it could not be
    created here (missing directory, read-only disk): whoever opens it next reports why."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except FileExistsError:
        return True
    except OSError:
        return False
    os.close(fd)
    return True


def warn_if_exposed(path: str | Path, what: str) -> bool:
    """Log a warning when a secret file is readable or writable by group or others; ``True`` if so."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if mode & 0o077:
        log.warning("%s %s has mode %s: other users of this machine can read it; run chmod 600 %s",
                    what, path, oct(mode), path, extra={"event": "insecure_file_mode", "path": str(path)})
        return True
    return False
