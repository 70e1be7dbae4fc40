"""The KB servicer: in-process with a fake context (every RPC and its validation), then once
over a real port with the project's error-mapping interceptor (status codes from domain errors)."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
import pytest

from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import hash_encoder
from services.kb_servicer import KnowledgeBaseServicer
from services.server_files import AllowedRoots
from vaner.categories import Category
from vaner.errors import Cancelled, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from vaner.settings import Settings
from vaner.v1 import common_pb2, kb_pb2, kb_pb2_grpc

FIX = Path(__file__).parent / "fixtures"
ENC = hash_encoder()


class FakeContext:
    def __init__(self, active: bool = True):
        self.active = active

    def is_active(self) -> bool:
        return self.active


@pytest.fixture()
def servicer(tmp_path):
    kb = KnowledgeBase(Settings(home=tmp_path / "home"), encoder_loader=lambda name: ENC)
    yield KnowledgeBaseServicer(kb, allowed_roots=AllowedRoots([FIX]), max_search_queries=50)
    kb.close()


def umls_request(**kw) -> kb_pb2.IngestRequest:
    return kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(mrconso_path=str(FIX / "umls" / "MRCONSO.RRF"), **kw))


def test_ingest_streams_progress_then_snapshot(servicer):
    events = list(servicer.Ingest(umls_request(), FakeContext()))
    assert events[-1].HasField("done") and all(e.HasField("progress") for e in events[:-1])
    stages = {e.progress.stage for e in events[:-1]}
    assert {"MRSTY.RRF", "MRCONSO.RRF"} <= stages
    snap = events[-1].done
    assert snap.status == common_pb2.COMPLETE and snap.latest and snap.terms == 13 and snap.concepts == 7
    assert snap.skipped["suppressed"] == 2 and len(snap.sources[0].sha256) == 64
    assert snap.umls_release == "2099AA" and snap.encoder == ENC.name


def test_list_get_search_health(servicer):
    list(servicer.Ingest(umls_request(), FakeContext()))
    snaps = servicer.ListSnapshots(kb_pb2.ListSnapshotsRequest(), FakeContext()).snapshots
    assert len(snaps) == 1 and snaps[0].latest
    assert servicer.GetSnapshot(kb_pb2.GetSnapshotRequest(id=""), FakeContext()).id == snaps[0].id
    resp = servicer.Search(kb_pb2.SearchRequest(texts=["Aspirin", "BRCA1"], k=2), FakeContext())
    assert [r.hits[0].cui for r in resp.results] == ["C0004057", "C0376571"]
    assert list(resp.results[0].hits[0].categories) == [Category.CHEMICAL.to_proto()]
    vec = ENC.encode(["Insulin"])[0].tolist()
    resp = servicer.Search(kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=vec)], k=1,
                                                categories=[common_pb2.GENE]), FakeContext())
    assert resp.results[0].hits[0].cui == "C0021641"
    health = servicer.Health(kb_pb2.HealthRequest(), FakeContext())
    assert health.ok and health.service == "kb" and health.details["latest_snapshot"] == snaps[0].id


def test_validation_raises_domain_errors(servicer):
    with pytest.raises(InvalidArgument, match="set umls or dataset"):
        list(servicer.Ingest(kb_pb2.IngestRequest(), FakeContext()))
    with pytest.raises(InvalidArgument, match="mrconso_path is empty"):
        list(servicer.Ingest(kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource()), FakeContext()))
    with pytest.raises(InvalidArgument, match="category is required"):
        list(servicer.Ingest(kb_pb2.IngestRequest(dataset=kb_pb2.DatasetSource(paths=["x"])), FakeContext()))
    with pytest.raises(NotFound, match="no such file"):  # inside the roots, a missing file may say so
        list(servicer.Ingest(kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(mrconso_path=str(FIX / "no.RRF"))),
                             FakeContext()))
    with pytest.raises(PermissionDenied, match="outside the server's ingest.allowed_roots"):
        list(servicer.Ingest(kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(mrconso_path="/no/MRCONSO.RRF")),
                             FakeContext()))
    with pytest.raises(NotFound):
        servicer.GetSnapshot(kb_pb2.GetSnapshotRequest(id="latest"), FakeContext())
    list(servicer.Ingest(umls_request(), FakeContext()))
    with pytest.raises(InvalidArgument, match="not both"):
        servicer.Search(kb_pb2.SearchRequest(texts=["a"], vectors=[kb_pb2.Vector(values=[1.0])]), FakeContext())
    with pytest.raises(InvalidArgument, match="32-d"):
        servicer.Search(kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=[1.0, 2.0])]), FakeContext())
    with pytest.raises(InvalidArgument, match="at least one text or vector"):
        servicer.Search(kb_pb2.SearchRequest(), FakeContext())
    nan = [0.1] * 31 + [float("nan")]
    with pytest.raises(InvalidArgument, match=r"vectors\[1\] holds NaN or infinite"):
        servicer.Search(kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=[0.1] * 32), kb_pb2.Vector(values=nan)]),
                        FakeContext())
    with pytest.raises(InvalidArgument, match="NaN or infinite"):
        servicer.Search(kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=[float("inf")] + [0.0] * 31)]),
                        FakeContext())
    with pytest.raises(ResourceExhausted, match="51 texts in one call; the limit is 50"):
        servicer.Search(kb_pb2.SearchRequest(texts=["aspirin"] * 51), FakeContext())


def test_cancelled_client_fails_the_ingest_cleanly(servicer):
    list(servicer.Ingest(umls_request(), FakeContext()))
    with pytest.raises(Cancelled, match="cancelled"):
        list(servicer.Ingest(umls_request(), FakeContext(active=False)))
    kb = servicer.kb
    assert [s.status for s in kb.snapshots()] == ["complete", "failed"]
    assert kb.get_snapshot().status == "complete"
    with pytest.raises(Cancelled, match="search cancelled"):  # a search stops before its next batch too
        servicer.Search(kb_pb2.SearchRequest(texts=["aspirin"]), FakeContext(active=False))


def test_real_port_with_interceptor(servicer):
    from services.interceptors import ErrorMappingInterceptor

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[ErrorMappingInterceptor()])
    kb_pb2_grpc.add_KnowledgeBaseServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = kb_pb2_grpc.KnowledgeBaseStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.GetSnapshot(kb_pb2.GetSnapshotRequest(id="latest"), timeout=30)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            events = list(stub.Ingest(umls_request(), timeout=60))
            assert events[-1].done.status == common_pb2.COMPLETE
            resp = stub.Search(kb_pb2.SearchRequest(texts=["Homo sapiens"], k=1), timeout=30)
            assert resp.results[0].hits[0].cui == "C0086418"
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Ingest(kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(mrconso_path="/nope/MRCONSO.RRF")),
                                 timeout=30))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "allowed_roots" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                stub.Search(kb_pb2.SearchRequest(vectors=[kb_pb2.Vector(values=[1.0])]), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert stub.Health(kb_pb2.HealthRequest(), timeout=30).ok
    finally:
        server.stop(None)


def test_search_returns_each_concept_once_unless_terms_are_asked_for(servicer):
    list(servicer.Ingest(umls_request(), FakeContext()))
    by_concept = servicer.Search(kb_pb2.SearchRequest(texts=["Insulin"], k=7), FakeContext()).results[0].hits
    cuis = [h.cui for h in by_concept]
    assert len(cuis) == 7 and len(set(cuis)) == 7  # all seven concepts, no concept twice
    assert by_concept[0].cui == "C0021641" and by_concept[0].name == "Insulin"  # its best term
    assert [h.score for h in by_concept] == sorted((h.score for h in by_concept), reverse=True)
    by_term = servicer.Search(kb_pb2.SearchRequest(texts=["Insulin"], k=7, per_term=True), FakeContext()).results[0]
    term_cuis = [h.cui for h in by_term.hits]
    assert len(term_cuis) == 7 and len(set(term_cuis)) < 7  # terms: synonyms of one concept repeat it
    assert term_cuis[:2] == ["C0021641", "C0021641"]
