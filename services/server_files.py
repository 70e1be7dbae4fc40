"""Server files that clients name: only under configured roots, and never quoted back.

Ingest takes paths on the server's disk (a UMLS release is gigabytes; it is not sent over the
wire). Without limits that lets every client read any file the service can (``/etc/passwd``,
other tenants' data) and learn which files exist from the status code. So the KB service accepts
a path only when, with symlinks and ``..`` resolved, it lies under one of ``ingest.allowed_roots``
(none by default: every path is refused), refuses all others with one message that does not
depend on whether the file exists, and hands the core the resolved path it checked. Messages about
files inside the roots keep file, line and reason but lose quoted values, which are file content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from vaner.errors import InvalidArgument, PermissionDenied

# a quoted value as !r writes it; the look-arounds spare apostrophes inside words ("snapshot's")
# and the format a message expects ("expected 'token<TAB>tag', got '...'"), which is not content
_QUOTED = re.compile(r"""(?<!expected )(?:(?<!\w)'(?:[^'\\\n]|\\.)*'(?!\w)|(?<!\w)"(?:[^"\\\n]|\\.)*"(?!\w))""")
REDACTED = "'<content withheld>'"


class AllowedRoots:
    """The directories client-named server paths must lie under (resolved once, at start-up)."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = tuple(Path(r).expanduser().resolve() for r in roots)

    def check(self, raw: str, field: str) -> Path:
        """The resolved path, if ``raw`` names something under a root; else PERMISSION_DENIED.

        The message names only what the client sent and the rule, so a refused path reveals
        nothing about the file (not whether it exists, not its type, not its content).
        """
        if not self.roots:
            raise PermissionDenied(f"{field}: this server reads no client-named files "
                                   "(ingest.allowed_roots is empty); ask its operator to configure it")
        if "\x00" in raw:
            raise InvalidArgument(f"{field}: a path cannot contain NUL")
        path = Path(raw)
        if not path.is_absolute():
            raise InvalidArgument(f"{field}: {raw} is not an absolute path")
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop, a component that is not a directory
            resolved = None
        if resolved is None or not any(resolved.is_relative_to(root) for root in self.roots):
            raise PermissionDenied(f"{field}: {raw} is outside the server's ingest.allowed_roots")
        return resolved


def redact_content(message: str) -> str:
    """``message`` without the quoted values core errors put in (``got 'root:x:0:0:...'``)."""
    return _QUOTED.sub(REDACTED, message)
