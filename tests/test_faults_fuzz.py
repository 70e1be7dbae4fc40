"""Fuzzed bad input against real service processes: every malformed request gets a precise status
(INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED), the services never crash, and no response
carries a traceback or server path."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.testing import ServiceProcess, make_tiny_model, register_model
from vaner.v1 import kb_pb2, kb_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc, tagger_pb2, tagger_pb2_grpc

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
MAX_CHARS = 2000
LEAK_MARKERS = ("Traceback", 'File "', ".py\"", "/work/", "site-packages")


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("fuzz")
    home = root / "home"
    register_model(home, make_tiny_model(tiny_backbone, root / "model"))
    env = {"VANER_TAGGER_MAX_TEXT_CHARS": str(MAX_CHARS), "VANER_TAGGER_MAX_DOCUMENTS": "8",
           "VANER_SERVER_MAX_RECEIVE_MESSAGE_BYTES": str(256 * 1024)}
    procs = {s: ServiceProcess(s, home, env=env).start(wait=False) for s in ("tagger", "kb", "retrieval")}
    for p in procs.values():
        p.wait(300)
    channels = {s: grpc.insecure_channel(p.address) for s, p in procs.items()}
    yield {"procs": procs, "channels": channels}
    for c in channels.values():
        c.close()
    for p in procs.values():
        p.stop()


def status_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        fn(*args, timeout=60, **kwargs)
    except grpc.RpcError as exc:
        details = exc.details() or ""
        assert not any(m in details for m in LEAK_MARKERS), details
        return exc.code(), details
    return grpc.StatusCode.OK, ""


def tagger(services) -> tagger_pb2_grpc.TaggerStub:
    return tagger_pb2_grpc.TaggerStub(services["channels"]["tagger"])


# protobuf strings must be valid UTF-8: lone surrogates cannot even be sent
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@FUZZ
@given(texts=st.lists(text, min_size=0, max_size=10))
def test_extract_random_texts(services, texts):
    req = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(id=str(i), text=t) for i, t in enumerate(texts)])
    try:
        resp = tagger(services).Extract(req, timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), exc.details()
        bad = (not texts or len(texts) > 8 or any(not t.strip() or "\x00" in t for t in texts))
        assert bad, (texts, exc.details())
        return
    assert len(resp.documents) == len(texts)
    for t, d in zip(texts, resp.documents, strict=True):
        for s in d.entities:
            assert t[s.start:s.end] == s.text


@FUZZ
@given(n=st.integers(MAX_CHARS + 1, MAX_CHARS * 4))
def test_text_over_limit(services, n):
    req = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="a" * n)])
    assert status_of(tagger(services).Extract, req)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_over_grpc_limit(services):
    req = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="a" * 300_000)])
    assert status_of(tagger(services).Extract, req)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


@FUZZ
@given(cats=st.lists(st.integers(-5, 1000), min_size=1, max_size=4).filter(lambda c: any(x not in (1, 2, 3, 4) for x in c)))
def test_unknown_categories(services, cats):
    req = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="BRCA1 causes cancer.")],
                                    options=tagger_pb2.ExtractOptions(categories=cats))
    assert status_of(tagger(services).Extract, req)[0] == grpc.StatusCode.INVALID_ARGUMENT


@FUZZ
@given(version=text.filter(lambda v: v.strip() and v.strip() != "latest"))
def test_unknown_model_versions(services, version):
    code, _ = status_of(tagger(services).LoadModel, tagger_pb2.LoadModelRequest(version=version))
    assert code == grpc.StatusCode.NOT_FOUND


@FUZZ
@given(snapshot=text.filter(lambda v: v.strip() and v.strip() != "latest"))
def test_unknown_snapshots(services, snapshot):
    kb = kb_pb2_grpc.KnowledgeBaseStub(services["channels"]["kb"])
    assert status_of(kb.GetSnapshot, kb_pb2.GetSnapshotRequest(id=snapshot))[0] == grpc.StatusCode.NOT_FOUND
    rt = retrieval_pb2_grpc.RetrievalStub(services["channels"]["retrieval"])
    code, _ = status_of(rt.Retrieve, retrieval_pb2.RetrieveRequest(phrases=["aspirin"], snapshot=snapshot, k=3))
    assert code == grpc.StatusCode.NOT_FOUND


def _raw(channel, method):
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (what a hand-rolled or corrupt client may send)."""
    n, out = len(payload), bytearray([field << 3 | 2])
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out) + payload


@FUZZ
@given(junk=st.binary(min_size=1, max_size=40).filter(lambda b: not _utf8(b)))
def test_invalid_utf8_in_strings(services, junk):
    doc = _ld(1, b"d1") + _ld(2, junk)  # Document.id, Document.text
    code, _ = status_of(_raw(services["channels"]["tagger"], "/vaner.v1.Tagger/Extract"), _ld(1, doc))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = status_of(_raw(services["channels"]["kb"], "/vaner.v1.KnowledgeBase/GetSnapshot"), _ld(1, junk))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@FUZZ
@given(blob=st.binary(max_size=200))
def test_random_bytes_never_crash(services, blob):
    code, _ = status_of(_raw(services["channels"]["tagger"], "/vaner.v1.Tagger/Extract"), blob)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


stream_msg = st.one_of(
    st.builds(lambda t: tagger_pb2.ExtractStreamRequest(document=tagger_pb2.Document(text=t)), text),
    st.just(tagger_pb2.ExtractStreamRequest()),
    st.builds(lambda c: tagger_pb2.ExtractStreamRequest(document=tagger_pb2.Document(text="x y"),
                                                        options=tagger_pb2.ExtractOptions(categories=[c])),
              st.integers(0, 9)),
)


@FUZZ
@given(msgs=st.lists(stream_msg, max_size=6))
def test_malformed_streams(services, msgs):
    stub = tagger(services)
    try:
        out = list(stub.ExtractStream(iter(msgs), timeout=60))
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), exc.details()
        assert not any(m in (exc.details() or "") for m in LEAK_MARKERS)
        return
    assert len(out) == len(msgs)


def test_garbage_mid_stream(services):
    good = tagger_pb2.ExtractStreamRequest(document=tagger_pb2.Document(text="BRCA1 causes cancer.")).SerializeToString()
    bad = _ld(1, _ld(2, b"\xff\xfe\xfd"))
    call = services["channels"]["tagger"].stream_stream("/vaner.v1.Tagger/ExtractStream",
                                                        request_serializer=lambda b: b,
                                                        response_deserializer=tagger_pb2.ExtractStreamResponse.FromString)
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for r in call(iter([good, bad, good]), timeout=60):
            got.append(r)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(got) == 1


def test_services_survived_and_logged_no_leak_to_clients(services):
    from services.testing import wait_serving

    for p in services["procs"].values():
        assert p.proc.poll() is None, p.log()[-2000:]
        wait_serving(p.address, 30)
    assert tagger(services).Extract(tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="ok")]),
                                    timeout=60).documents
