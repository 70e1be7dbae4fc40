"""Every branch of the status mapping and of the token check, through a real in-process server."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import pytest

from services.interceptors import ErrorMappingInterceptor, TokenAuthInterceptor, bearer_token, status_for
from vaner import errors as E

SERVICE = "test.Svc"


def _raise(exc: BaseException):
    def fn(request, context):
        raise exc
    return fn


def _stream_then_raise(exc: BaseException):
    def fn(request, context):
        yield b"first"
        raise exc
    return fn


def _abort(code: grpc.StatusCode):
    def fn(request, context):
        context.abort(code, "deliberate")
    return fn


def _strict_parse(data: bytes) -> bytes:
    if data == b"\xff\xfe":
        raise ValueError("not a message")
    return data


BEHAVIOURS = {}


def _handlers():
    def unary(request, context):
        return BEHAVIOURS["unary"](request, context)

    def unary_stream(request, context):
        yield from BEHAVIOURS["unary_stream"](request, context)

    def stream_unary(it, context):
        return BEHAVIOURS["stream_unary"](it, context)

    def stream_stream(it, context):
        yield from BEHAVIOURS["stream_stream"](it, context)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "U": grpc.unary_unary_rpc_method_handler(unary, request_deserializer=_strict_parse),
        "US": grpc.unary_stream_rpc_method_handler(unary_stream, request_deserializer=_strict_parse),
        "SU": grpc.stream_unary_rpc_method_handler(stream_unary, request_deserializer=_strict_parse),
        "SS": grpc.stream_stream_rpc_method_handler(stream_stream, request_deserializer=_strict_parse),
    })


@pytest.fixture(scope="module")
def channels():
    servers, chans = [], {}
    for name, interceptors in (("open", [ErrorMappingInterceptor()]),
                               ("auth", [TokenAuthInterceptor("s3cret"), ErrorMappingInterceptor()])):
        server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=interceptors)
        server.add_generic_rpc_handlers((_handlers(),))
        from grpc_health.v1 import health, health_pb2_grpc
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        chans[name] = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield chans
    for s in servers:
        s.stop(None)


def call(channel, kind: str, payload: bytes = b"x", metadata=()):
    if kind == "U":
        return channel.unary_unary(f"/{SERVICE}/U")(payload, timeout=5, metadata=metadata)
    if kind == "US":
        return list(channel.unary_stream(f"/{SERVICE}/US")(payload, timeout=5, metadata=metadata))
    if kind == "SU":
        return channel.stream_unary(f"/{SERVICE}/SU")(iter([payload]), timeout=5, metadata=metadata)
    return list(channel.stream_stream(f"/{SERVICE}/SS")(iter([payload]), timeout=5, metadata=metadata))


DOMAIN = [(E.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT), (E.NotFound, grpc.StatusCode.NOT_FOUND),
          (E.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION), (E.AlreadyRunning, grpc.StatusCode.ABORTED),
          (E.Unavailable, grpc.StatusCode.UNAVAILABLE), (E.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
          (E.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED), (E.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
          (E.VanerError, grpc.StatusCode.INTERNAL)]
KINDS = ["U", "US", "SU", "SS"]
KEY = {"U": "unary", "US": "unary_stream", "SU": "stream_unary", "SS": "stream_stream"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("klass", "code"), DOMAIN)
def test_domain_errors_map_to_their_code(channels, kind, klass, code):
    streaming = kind in ("US", "SS")
    BEHAVIOURS[KEY[kind]] = (_stream_then_raise if streaming else _raise)(klass("the message"))
    with pytest.raises(grpc.RpcError) as info:
        call(channels["open"], kind)
    assert info.value.code() == code
    assert info.value.details() == "the message"


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_exception_is_internal_without_leak(channels, kind, caplog):
    secret = "password=hunter2 at /srv/private/path.py"
    BEHAVIOURS[KEY[kind]] = _raise(RuntimeError(secret)) if kind in ("U", "SU") else _stream_then_raise(KeyError(secret))
    with caplog.at_level(logging.ERROR, logger="vaner.services.rpc"), pytest.raises(grpc.RpcError) as info:
        call(channels["open"], kind)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    details = info.value.details()
    assert details.startswith("internal error (ref ")
    assert "hunter2" not in details and "Traceback" not in details and "RuntimeError" not in details
    ref = details.split("ref ")[1].split(")")[0]
    records = [r for r in caplog.records if getattr(r, "ref", None) == ref]
    assert records and records[0].exc_info is not None  # the traceback stays on the server


@pytest.mark.parametrize("kind", KINDS)
def test_deliberate_abort_passes_through(channels, kind):
    BEHAVIOURS[KEY[kind]] = _abort(grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(grpc.RpcError) as info:
        call(channels["open"], kind)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "deliberate"


@pytest.mark.parametrize("kind", KINDS)
def test_undecodable_request_is_invalid_argument(channels, kind):
    BEHAVIOURS.update(unary=lambda r, c: b"ok", unary_stream=lambda r, c: iter([b"ok"]),
                      stream_unary=lambda it, c: b"".join(it), stream_stream=lambda it, c: (x for x in it))
    with pytest.raises(grpc.RpcError) as info:
        call(channels["open"], kind, payload=b"\xff\xfe")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("klass", "code"), DOMAIN[:-1] + [(E.Cancelled, grpc.StatusCode.CANCELLED),
                                                           (E.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED)])
def test_one_table_both_ways(klass, code):
    """What the interceptor sends is what a client rebuilds: the same class, hence the same exit code."""
    assert status_for(klass("m")) is code
    back = E.error_for_status(code.name, "m")
    assert type(back) is klass and back.exit_code == klass.exit_code


def test_unmapped_status_becomes_service_error():
    err = E.error_for_status("UNIMPLEMENTED", "no")
    assert isinstance(err, E.ServiceError) and err.code == "UNIMPLEMENTED" and err.message == "no"


def test_success_passes_through(channels):
    BEHAVIOURS["unary"] = lambda r, c: r + b"!"
    BEHAVIOURS["stream_stream"] = lambda it, c: (x + b"?" for x in it)
    assert call(channels["open"], "U", b"hi") == b"hi!"
    assert call(channels["open"], "SS", b"hi") == [b"hi?"]


def test_status_for_bad_code_names():
    class Odd(E.VanerError):
        code = "NOT_A_CODE"

    class Ok(E.VanerError):
        code = "OK"

    assert status_for(Odd("x")) is grpc.StatusCode.INTERNAL
    assert status_for(Ok("x")) is grpc.StatusCode.INTERNAL
    assert status_for(E.NotFound("x")) is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("metadata", "reason"), [((), "missing bearer token"),
                                                   ((("authorization", "Bearer wrong"),), "invalid bearer token"),
                                                   ((("authorization", "Basic s3cret"),), "missing bearer token")])
def test_token_required(channels, kind, metadata, reason):
    BEHAVIOURS[KEY[kind]] = (lambda r, c: iter([b"ok"])) if kind in ("US", "SS") else (lambda r, c: b"ok")
    with pytest.raises(grpc.RpcError) as info:
        call(channels["auth"], kind, metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == reason


@pytest.mark.parametrize("kind", KINDS)
def test_token_accepted_and_errors_still_mapped(channels, kind):
    md = (("authorization", "Bearer s3cret"),)
    BEHAVIOURS[KEY[kind]] = (lambda r, c: iter([b"ok"])) if kind in ("US", "SS") else (lambda r, c: b"ok")
    result = call(channels["auth"], kind, metadata=md)
    assert result in (b"ok", [b"ok"])
    BEHAVIOURS[KEY[kind]] = _raise(E.NotFound("nope")) if kind in ("U", "SU") else _stream_then_raise(E.NotFound("nope"))
    with pytest.raises(grpc.RpcError) as info:
        call(channels["auth"], kind, metadata=md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_exempt_from_token(channels):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    resp = health_pb2_grpc.HealthStub(channels["auth"]).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_unknown_method_stays_unimplemented(channels):
    with pytest.raises(grpc.RpcError) as info:
        channels["auth"].unary_unary(f"/{SERVICE}/Nope")(b"x", timeout=5, metadata=(("authorization", "Bearer s3cret"),))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_bearer_token_parsing():
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("Authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None
    with pytest.raises(ValueError):
        TokenAuthInterceptor("")


def test_work_stopped_at_the_deadline_is_deadline_exceeded():
    """A core that stops work because the deadline passed raises Cancelled (it cannot tell a
    deadline from a client that left); the caller must still read DEADLINE_EXCEEDED."""
    from services.interceptors import _fail
    from vaner.errors import Cancelled

    class Context:
        def __init__(self, remaining):
            self.remaining, self.code = remaining, None

        def time_remaining(self):
            return self.remaining

        def abort(self, code, message):
            self.code = code
            raise RuntimeError(message)

    for remaining, expected in ((0.0, grpc.StatusCode.DEADLINE_EXCEEDED), (5.0, grpc.StatusCode.CANCELLED),
                                (None, grpc.StatusCode.CANCELLED)):
        ctx = Context(remaining)
        with pytest.raises(RuntimeError):
            _fail(Cancelled("extraction cancelled"), ctx, "/vaner.v1.Tagger/Extract")
        assert ctx.code == expected
