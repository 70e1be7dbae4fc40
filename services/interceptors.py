"""Server interceptors: the one place where domain errors become gRPC statuses, and the bearer
token check.

Servicers and cores raise :class:`vaner.errors.VanerError` subclasses and never touch status
codes; doing the mapping here keeps every RPC consistent (KServe's habit) and guarantees that an
unexpected exception can never reach the client with its traceback or message: the client gets
INTERNAL with an opaque reference, the server log gets the traceback under the same reference.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import grpc

from services.calls import deadline_passed
from vaner.errors import InvalidArgument, VanerError

log = logging.getLogger("vaner.services.rpc")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
GENERIC_INTERNAL = "internal error"


def status_for(exc: VanerError) -> grpc.StatusCode:
    """The status a domain error asks for; an unknown code name is a bug, so it becomes INTERNAL
    rather than crashing the error path itself."""
    try:
        code = grpc.StatusCode[exc.code]
    except KeyError:
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.INTERNAL if code is grpc.StatusCode.OK else code


def _already_aborted(context: grpc.ServicerContext) -> bool:
    """``context.abort`` raises a bare Exception after recording its status: that status is
    deliberate and must pass through untouched."""
    try:
        code = context.code()
    except Exception:  # pragma: no cover - very old grpc without ServicerContext.code()
        return False
    return code is not None and code is not grpc.StatusCode.OK


def _fail(exc: BaseException, context: grpc.ServicerContext, method: str) -> None:
    """Turn ``exc`` into a status on ``context`` (always raises)."""
    if isinstance(exc, VanerError):
        code = status_for(exc)
        if code is grpc.StatusCode.CANCELLED and deadline_passed(context):
            # the core stopped the work because the deadline passed (it cannot tell that from a
            # client that left); the caller is owed DEADLINE_EXCEEDED, whichever side noticed first
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        log.info("rpc error", extra={"rpc": method, "code": code.name, "error": exc.message})
        context.abort(code, exc.message)
    if _already_aborted(context):
        raise exc
    ref = uuid.uuid4().hex[:12]
    log.error("unhandled exception in %s (ref %s)", method, ref, exc_info=exc,
              extra={"rpc": method, "code": "INTERNAL", "ref": ref})
    context.abort(grpc.StatusCode.INTERNAL, f"{GENERIC_INTERNAL} (ref {ref}); see the server log")


def _wrap_unary_response(fn: Callable, method: str) -> Callable:
    def wrapper(request_or_iterator, context):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        try:
            return fn(_check_decoded(request_or_iterator), context)
        except Exception as exc:  # noqa: BLE001 - every exception is mapped, none escapes raw
            _fail(exc, context, method)
        finally:
            log.debug("rpc done", extra={"rpc": method, "ms": round((time.perf_counter() - start) * 1e3, 3)})

    return wrapper


def _wrap_stream_response(fn: Callable, method: str) -> Callable:
    def wrapper(request_or_iterator, context) -> Iterator:  # noqa: ANN001
        start = time.perf_counter()
        try:
            yield from fn(_check_decoded(request_or_iterator), context)
        except Exception as exc:  # noqa: BLE001
            _fail(exc, context, method)
        finally:
            log.debug("rpc done", extra={"rpc": method, "ms": round((time.perf_counter() - start) * 1e3, 3)})

    return wrapper


class _Undecodable:
    """Stands in for a request that failed to parse (bad wire format, invalid UTF-8 in a string):
    grpc would answer INTERNAL for a deserializer exception; the caller's mistake deserves
    INVALID_ARGUMENT, so the failure is carried to the handler wrapper and reported there."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _lenient(deserializer: Callable | None) -> Callable | None:
    if deserializer is None:
        return None

    def parse(data: bytes):  # noqa: ANN202
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError or ValueError
            return _Undecodable(type(exc).__name__)

    return parse


def _check_decoded(request_or_iterator):  # noqa: ANN001, ANN202
    if isinstance(request_or_iterator, _Undecodable):
        raise InvalidArgument(f"request is not a valid message ({request_or_iterator.reason}); "
                              "string fields must be valid UTF-8")
    if hasattr(request_or_iterator, "__next__"):
        return _checked_stream(request_or_iterator)
    return request_or_iterator


def _checked_stream(iterator: Iterator) -> Iterator:
    for item in iterator:
        if isinstance(item, _Undecodable):
            raise InvalidArgument(f"a streamed message is not valid ({item.reason}); "
                                  "string fields must be valid UTF-8")
        yield item


def _replace_behaviour(handler: grpc.RpcMethodHandler, method: str,
                       unary: Callable[[Callable, str], Callable],
                       stream: Callable[[Callable, str], Callable],
                       lenient: bool = False) -> grpc.RpcMethodHandler:
    deser = _lenient(handler.request_deserializer) if lenient else handler.request_deserializer
    kw = {"request_deserializer": deser, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, method), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream, method), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, method), **kw)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream, method), **kw)
    return handler  # pragma: no cover - a handler with no behaviour


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Maps :class:`VanerError` to its status code and anything else to a generic INTERNAL, for
    unary and streaming handlers alike (errors raised mid-stream included)."""

    def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _replace_behaviour(handler, handler_call_details.method, _wrap_unary_response, _wrap_stream_response,
                                  lenient=True)


def _deny(code: grpc.StatusCode, message: str) -> tuple[Callable, Callable]:
    def unary(request_or_iterator, context):  # noqa: ANN001, ANN202
        context.abort(code, message)

    def stream(request_or_iterator, context) -> Iterator:  # noqa: ANN001
        context.abort(code, message)
        yield  # pragma: no cover - makes this a generator like the handler it replaces

    return unary, stream


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` (constant-time comparison).

    Standard health checks stay open so load balancers and Kubernetes gRPC probes, which cannot
    send credentials, still see readiness; they reveal nothing but SERVING/NOT_SERVING.
    """

    def __init__(self, token: str, exempt_prefixes: tuple[str, ...] = (HEALTH_PREFIX,)):
        if not token:
            raise ValueError("an empty token would let everyone in")
        self._token = token.encode()
        self._exempt = exempt_prefixes

    def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201
        method = handler_call_details.method
        if method.startswith(self._exempt):
            return continuation(handler_call_details)
        given = bearer_token(handler_call_details.invocation_metadata)
        if given is not None and hmac.compare_digest(given.encode(), self._token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        reason = "missing bearer token" if given is None else "invalid bearer token"
        log.warning("unauthenticated call", extra={"rpc": method, "reason": reason})
        unary, stream = _deny(grpc.StatusCode.UNAUTHENTICATED, reason)
        return _replace_behaviour(handler, method, lambda _fn, _m: unary, lambda _fn, _m: stream)
