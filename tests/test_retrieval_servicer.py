"""Retrieval servicer in-process (direct calls) and over a real local port (streaming + errors)."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from services.retrieval_servicer import RetrievalServicer
from tests.test_dbr_fakes import FakeKB, write_data_dir
from vaner.categories import Category
from vaner.errors import InvalidArgument, NotFound, ResourceExhausted
from vaner.settings import Settings
from vaner.v1 import kb_pb2, retrieval_pb2, retrieval_pb2_grpc


class Ctx:
    def is_active(self):
        return True


@pytest.fixture()
def servicer(tmp_path):
    data = write_data_dir(tmp_path / "data")
    return RetrievalServicer(Settings(home=tmp_path / "home").ensure(), FakeKB(), default_data_dir=str(data))


def test_mine_phrases(servicer):
    req = retrieval_pb2.MinePhrasesRequest(sentences=[
        retrieval_pb2.TokenizedSentence(tokens="Mutations in BRCA1 cause breast cancer .".split()),
        retrieval_pb2.TokenizedSentence(tokens=[])])
    res = servicer.MinePhrases(req, Ctx())
    assert len(res.results) == 2
    assert "BRCA1" in res.results[0].phrases and "breast cancer" in res.results[0].phrases
    assert list(res.results[1].phrases) == []


def test_retrieve(servicer):
    req = retrieval_pb2.RetrieveRequest(phrases=["aspirin", "human"], k=2,
                                        categories=[Category.CHEMICAL.to_proto()])
    res = servicer.Retrieve(req, Ctx())
    assert len(res.results) == 2
    assert res.results[0].hits[0].cui == "C9"
    assert all(Category.CHEMICAL.to_proto() in h.categories for r in res.results for h in r.hits)
    assert len(servicer.Retrieve(retrieval_pb2.RetrieveRequest(), Ctx()).results) == 0
    with pytest.raises(InvalidArgument):
        servicer.Retrieve(retrieval_pb2.RetrieveRequest(phrases=["x"], k=1000), Ctx())
    with pytest.raises(NotFound):
        servicer.Retrieve(retrieval_pb2.RetrieveRequest(phrases=["x"], snapshot="nope"), Ctx())
    with pytest.raises(ResourceExhausted):
        servicer.Retrieve(retrieval_pb2.RetrieveRequest(phrases=["x"] * 20_001), Ctx())


def test_build_dbr_streams_progress_then_done(servicer):
    events = list(servicer.BuildDbrSamples(
        retrieval_pb2.BuildDbrRequest(datasets=["ncbi", "s800"], seed=1), Ctx()))
    assert events[-1].HasField("done")
    assert all(e.HasField("progress") for e in events[:-1]) and len(events) > 1
    done = events[-1].done
    assert done.sentences > 0 and done.snapshot == "snap-1" and done.id.startswith("retrieved-")
    with pytest.raises(InvalidArgument):
        list(servicer.BuildDbrSamples(retrieval_pb2.BuildDbrRequest(), Ctx()))
    with pytest.raises(NotFound):
        list(servicer.BuildDbrSamples(retrieval_pb2.BuildDbrRequest(datasets=["nosuch"]), Ctx()))


def test_health(servicer, tmp_path):
    res = servicer.Health(kb_pb2.HealthRequest(), Ctx())
    assert res.ok and res.service == "retrieval" and res.details["kb_snapshot"] == "snap-1"

    class Broken(FakeKB):
        def get_snapshot(self, ref="latest"):
            raise NotFound("no KB snapshot yet")

    bad = RetrievalServicer(Settings(home=tmp_path / "h2"), Broken()).Health(kb_pb2.HealthRequest(), Ctx())
    assert not bad.ok and "no KB snapshot" in bad.details["kb"]


def test_over_a_real_port_with_the_interceptor(servicer):
    interceptors = pytest.importorskip("services.interceptors")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptors.ErrorMappingInterceptor()])
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = retrieval_pb2_grpc.RetrievalStub(ch)
            events = list(stub.BuildDbrSamples(retrieval_pb2.BuildDbrRequest(datasets=["ncbi"], seed=2)))
            assert events[-1].done.sentences > 0
            with pytest.raises(grpc.RpcError) as err:
                list(stub.BuildDbrSamples(retrieval_pb2.BuildDbrRequest(datasets=["nosuch"])))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as err:
                stub.Retrieve(retrieval_pb2.RetrieveRequest(phrases=["x"], k=-1))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0)
