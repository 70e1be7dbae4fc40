"""Domain errors, and the one table between them and gRPC status codes.

Every error a user can cause derives from :class:`VanerError`, which carries the gRPC status code
name it maps to; the CLI prints ``message`` on one line and exits non-zero, the one gRPC
interceptor (services/interceptors.py) turns it into a status, and clients turn a status back into
the same class with :func:`error_for_status`. Core code therefore never imports grpc.
"""

from __future__ import annotations


class VanerError(Exception):
    """Base class: ``code`` is a ``grpc.StatusCode`` name, ``exit_code`` the CLI exit status."""

    code: str = "INTERNAL"
    exit_code: int = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(VanerError):
    """Bad input: a malformed file line, an unknown type, an empty text..."""

    code = "INVALID_ARGUMENT"
    exit_code = 2


class NotFound(VanerError):
    """A file, snapshot, model version or dataset that does not exist."""

    code = "NOT_FOUND"
    exit_code = 3


class FailedPrecondition(VanerError):
    """The system is not in a state where the operation may run (e.g. encoder mismatch)."""

    code = "FAILED_PRECONDITION"
    exit_code = 4


class AlreadyRunning(VanerError):
    """A second ingest/retrain while one holds the lock."""

    code = "ABORTED"
    exit_code = 5


class Unavailable(VanerError):
    """A dependency (Qdrant, PostgreSQL, another vaner service) cannot be reached."""

    code = "UNAVAILABLE"
    exit_code = 6


class ResourceExhausted(VanerError):
    """Input over a configured size limit."""

    code = "RESOURCE_EXHAUSTED"
    exit_code = 2


class Unauthenticated(VanerError):
    code = "UNAUTHENTICATED"
    exit_code = 7


class PermissionDenied(VanerError):
    """The caller may not do this here, e.g. ingest a server path outside ``ingest.allowed_roots``."""

    code = "PERMISSION_DENIED"
    exit_code = 8


class Cancelled(VanerError):
    """The caller went away or its deadline passed, so long work stopped part-way."""

    code = "CANCELLED"
    exit_code = 130


class DeadlineExceeded(VanerError):
    """The caller's deadline passed before the work finished."""

    code = "DEADLINE_EXCEEDED"
    exit_code = 6


class ServiceError(VanerError):
    """A status from another service with no closer domain error (INTERNAL, UNIMPLEMENTED...);
    ``code`` is set to that status's name."""


# Status code name -> the domain error a remote service raised; the reverse of each class's ``code``.
_BY_STATUS: dict[str, type[VanerError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, AlreadyRunning, Unavailable,
                              ResourceExhausted, Unauthenticated, PermissionDenied, Cancelled, DeadlineExceeded)}


def error_for_status(code: str, message: str) -> VanerError:
    """The domain error for a gRPC status code name, so a remote failure reads like a local one
    (same class, same CLI exit code); an unmapped status becomes :class:`ServiceError`."""
    klass = _BY_STATUS.get(code)
    if klass is not None:
        return klass(message)
    err = ServiceError(message)
    err.code = code
    return err
