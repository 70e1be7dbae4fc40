"""The KB service under abuse, on a real loopback port with the real interceptors: server paths
only under ``ingest.allowed_roots`` (refusals reveal nothing about the file), no file content in
errors, health that follows the database, reflection v1, a private state directory."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import hash_encoder
from services.config import ServeConfig
from services.server import REFLECTION_V1, add_kb, start_service
from services.server_files import AllowedRoots, redact_content
from vaner.errors import InvalidArgument, PermissionDenied
from vaner.v1 import common_pb2, kb_pb2, kb_pb2_grpc

FIX = Path(__file__).parent / "fixtures"
ENC = hash_encoder()
SECRET = "root:x:0:0:secret-first-line"


def kb_builders() -> dict:
    return {"kb": lambda server, cfg: add_kb(server, cfg, kb=KnowledgeBase(cfg.settings(), encoder_loader=lambda n: ENC))}


def config(tmp_path: Path, **sections) -> ServeConfig:
    return ServeConfig.from_dict({"home": str(tmp_path / "home"), **sections}, env={})


@pytest.fixture()
def world(tmp_path):
    """An allowed root with a UMLS copy and a CoNLL file, and a secret file beside it (outside)."""
    allowed = tmp_path / "allowed"
    (allowed / "umls").mkdir(parents=True)
    for name in ("MRCONSO.RRF", "MRSTY.RRF"):
        (allowed / "umls" / name).write_bytes((FIX / "umls" / name).read_bytes())
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    (allowed / "bad.tsv").write_text(f"{SECRET}\n")  # inside the roots, but not CoNLL: the error must not echo it
    (allowed / "link.tsv").symlink_to(secret)
    return {"allowed": allowed, "secret": secret}


@pytest.fixture()
def kb_stub(tmp_path, world):
    cfg = config(tmp_path, ingest={"allowed_roots": [str(world["allowed"])]},
                 server={"health_check_seconds": 0.2})
    running = start_service("kb", cfg, port=0, builders=kb_builders())
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield kb_pb2_grpc.KnowledgeBaseStub(channel), running
    channel.close()
    running.stop(None)


def ingest_error(stub, request) -> grpc.RpcError:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Ingest(request, timeout=10))
    return err.value


def dataset(*paths: str) -> kb_pb2.IngestRequest:
    return kb_pb2.IngestRequest(dataset=kb_pb2.DatasetSource(paths=list(paths), category=common_pb2.DISEASE))


# ---- the path rule, unit by unit ---------------------------------------------------------------
def test_allowed_roots_resolve_links_and_dots_before_checking(world):
    roots = AllowedRoots([world["allowed"]])
    inside = world["allowed"] / "umls" / "MRCONSO.RRF"
    assert roots.check(str(inside), "f") == inside.resolve()
    for outside in (str(world["secret"]), f"{world['allowed']}/../secret.txt", str(world["allowed"] / "link.tsv"),
                    "/etc/passwd"):
        with pytest.raises(PermissionDenied, match="outside the server's ingest.allowed_roots"):
            roots.check(outside, "f")
    with pytest.raises(InvalidArgument, match="not an absolute path"):
        roots.check("secret.txt", "f")
    with pytest.raises(PermissionDenied, match="allowed_roots is empty"):
        AllowedRoots(()).check(str(inside), "f")


def test_refusal_is_the_same_for_existing_and_missing_files(world):
    roots = AllowedRoots([world["allowed"]])
    messages = []
    for path in (world["secret"], world["secret"].with_name("missing.txt")):
        with pytest.raises(PermissionDenied) as err:
            roots.check(str(path), "f")
        messages.append(err.value.message.replace(path.name, "NAME"))
    assert messages[0] == messages[1]


def test_redaction_keeps_location_and_drops_quoted_content():
    msg = f"/data/a.tsv:1: expected 'token<TAB>tag', got {SECRET!r}"
    assert redact_content(msg) == "/data/a.tsv:1: expected 'token<TAB>tag', got '<content withheld>'"
    assert redact_content("snapshot's file is fine") == "snapshot's file is fine"


# ---- over a real port ----------------------------------------------------------------------------
def test_ingest_outside_the_roots_is_refused_without_content(kb_stub, world):
    stub, _ = kb_stub
    refused = {}
    for label, path in (("passwd", "/etc/passwd"), ("secret", str(world["secret"])),
                        ("missing", str(world["secret"].with_name("missing.txt"))),
                        ("link", str(world["allowed"] / "link.tsv")),
                        ("dots", f"{world['allowed']}/../secret.txt")):
        err = ingest_error(stub, dataset(path))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (label, err.details())
        assert "root:" not in err.details() and "secret-first-line" not in err.details()
        refused[label] = err.details().replace(path, "PATH")
    assert len(set(refused.values())) == 1  # existing, missing, linked: one answer
    umls = kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(mrconso_path=str(world["allowed"] / "umls" / "MRCONSO.RRF"),
                                                       mrsty_path=str(world["secret"])))
    assert ingest_error(stub, umls).code() == grpc.StatusCode.PERMISSION_DENIED
    (world["allowed"] / "umls" / "MRFILES.RRF").symlink_to(world["secret"])  # read beside MRCONSO.RRF
    umls = kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(mrconso_path=str(world["allowed"] / "umls" / "MRCONSO.RRF")))
    err = ingest_error(stub, umls)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "beside" in err.details()


def test_errors_about_files_inside_the_roots_do_not_quote_them(kb_stub, world):
    stub, _ = kb_stub
    err = ingest_error(stub, dataset(str(world["allowed"] / "bad.tsv")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad.tsv:1" in err.details() and "root:" not in err.details() and "<content withheld>" in err.details()
    err = ingest_error(stub, dataset(str(world["allowed"] / "nope.tsv")))
    assert err.code() == grpc.StatusCode.NOT_FOUND  # inside the roots, a missing file may say so
    events = list(stub.Ingest(kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(
        mrconso_path=str(world["allowed"] / "umls" / "MRCONSO.RRF"))), timeout=60))
    assert events[-1].done.status == common_pb2.COMPLETE


def test_search_validation_over_the_wire(kb_stub, world):
    stub, _ = kb_stub
    list(stub.Ingest(kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(
        mrconso_path=str(world["allowed"] / "umls" / "MRCONSO.RRF"))), timeout=60))
    cases = {
        "empty": kb_pb2.SearchRequest(),
        "nan": kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=[float("nan")] * ENC.dimension)]),
        "dimension": kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=[1.0, 0.0])]),
    }
    for label, req in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, label
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(kb_pb2.SearchRequest(texts=["aspirin"] * 1025), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "kb.max_search_queries" in err.value.details()
    hits = stub.Search(kb_pb2.SearchRequest(texts=["aspirin"], k=5), timeout=10).results[0].hits
    assert len({h.cui for h in hits}) == len(hits) == 5


def test_nothing_is_readable_by_default(tmp_path, world):
    running = start_service("kb", config(tmp_path), port=0, builders=kb_builders())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            err = ingest_error(kb_pb2_grpc.KnowledgeBaseStub(channel),
                               dataset(str(world["allowed"] / "umls" / "MRCONSO.RRF")))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "allowed_roots is empty" in err.details()
    finally:
        running.stop(None)


# ---- health follows the database -----------------------------------------------------------------
def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="vaner.v1.KnowledgeBase"), timeout=5).status


def wait_status(port: int, want: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while health_status(port) != want:
        assert time.monotonic() < end, f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(want)}"
        time.sleep(0.05)


def test_health_is_not_serving_while_the_database_is_unreachable(tmp_path):
    db_dir = tmp_path / "db-volume"  # not mounted yet: SQLite cannot open a file there
    cfg = ServeConfig.from_dict({"home": str(tmp_path / "home"), "db_url": f"sqlite:///{db_dir}/vaner.db",
                                 "server": {"health_check_seconds": 0.1}}, env={})
    running = start_service("kb", cfg, port=0, builders=kb_builders())
    try:
        end = time.monotonic() + 5
        while running.monitor.status is None and time.monotonic() < end:  # the first probe has run
            time.sleep(0.02)
        assert running.monitor.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health_status(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert not kb_pb2_grpc.KnowledgeBaseStub(channel).Health(kb_pb2.HealthRequest(), timeout=5).ok
        db_dir.mkdir()
        wait_status(running.port, health_pb2.HealthCheckResponse.SERVING)
    finally:
        running.stop(None)


# ---- reflection v1 -------------------------------------------------------------------------------
def test_reflection_v1_is_served_beside_v1alpha(kb_stub):
    _, running = kb_stub
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        for service in (REFLECTION_V1, "grpc.reflection.v1alpha.ServerReflection"):
            call = channel.stream_stream(f"/{service}/ServerReflectionInfo",
                                         request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            asks = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="vaner.v1.KnowledgeBase")]
            listed, described = list(call(iter(asks), timeout=10))
            names = {s.name for s in listed.list_services_response.service}
            assert {"vaner.v1.KnowledgeBase", REFLECTION_V1, "grpc.reflection.v1alpha.ServerReflection"} <= names
            assert described.file_descriptor_response.file_descriptor_proto  # the .proto, for grpcurl describe


# ---- private state -------------------------------------------------------------------------------
def test_state_directory_and_database_are_private(kb_stub, tmp_path):
    stub, _ = kb_stub
    stub.ListSnapshots(kb_pb2.ListSnapshotsRequest(), timeout=10)  # opens the database
    home = tmp_path / "home"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "vaner.db").stat().st_mode) == 0o600


def test_a_token_file_others_can_read_is_warned_about(tmp_path, caplog):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    for mode, warned in ((0o644, True), (0o600, False)):
        os.chmod(token, mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            running = start_service("kb", config(tmp_path, security={"token_file": str(token)}), port=0,
                                    builders=kb_builders())
            running.stop(None)
        assert any("other users of this machine can read it" in r.getMessage() for r in caplog.records) == warned
