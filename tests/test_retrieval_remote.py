"""Client helpers: BuildDbrSamples over a real local port, and LoadModel on a stand-in tagger."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from retrieval.dbr import DbrParams
from retrieval.remote import build_dbr_remote, notify_tagger, remote_dbr_source, tagger_notifier
from services.retrieval_servicer import RetrievalServicer
from tests.test_dbr_fakes import FakeKB, write_data_dir
from vaner.errors import NotFound, Unavailable
from vaner.settings import Settings
from vaner.v1 import common_pb2, retrieval_pb2_grpc, tagger_pb2_grpc


@pytest.fixture()
def server():
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = srv.add_insecure_port("127.0.0.1:0")
    yield srv, f"127.0.0.1:{port}"
    srv.stop(0)


def test_build_dbr_remote_returns_the_shared_set(server, tmp_path):
    srv, address = server
    settings = Settings(home=tmp_path / "home").ensure()
    data = write_data_dir(tmp_path / "data")
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(RetrievalServicer(settings, FakeKB()), srv)
    srv.start()
    seen = []
    s = build_dbr_remote(address, settings, ["ncbi"], DbrParams(seed=5), "latest", str(data), seen.append)
    assert s.sentences > 0 and s.snapshot == "snap-1" and s.load()
    assert seen and seen[0].stage
    source = remote_dbr_source(address, settings)
    assert source(["ncbi"], DbrParams(seed=5), "latest", str(data), None).id == s.id


def test_notify_tagger_and_errors(server, monkeypatch):
    srv, address = server
    loaded = []

    class Tagger(tagger_pb2_grpc.TaggerServicer):
        def LoadModel(self, request, context):  # noqa: N802
            if request.version == "missing":
                context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
            loaded.append(request.version)
            return common_pb2.ModelVersion(id=request.version, latest=True)

    tagger_pb2_grpc.add_TaggerServicer_to_server(Tagger(), srv)
    srv.start()
    assert notify_tagger(address, "m7") == "m7" and loaded == ["m7"]
    with pytest.raises(NotFound) as err:
        notify_tagger(address, "missing")
    assert "no such model" in err.value.message
    with pytest.raises(Unavailable):
        notify_tagger("127.0.0.1:1", "m7", timeout=2)
    monkeypatch.delenv("VANER_TAGGER_ADDRESS", raising=False)
    assert tagger_notifier(None) is None
    monkeypatch.setenv("VANER_TAGGER_ADDRESS", address)
    tagger_notifier(None)("m8")
    assert loaded[-1] == "m8"
