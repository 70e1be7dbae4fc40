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
    # the corpus-agreement filter reaches the server, as the same set an in-process build makes
    from retrieval.dbr import DbrBuilder

    agree = DbrParams(seed=5, corpus_agreement=0.3)
    remote = build_dbr_remote(address, settings, ["ncbi"], agree, "latest", str(data))
    local = DbrBuilder(Settings(home=tmp_path / "other").ensure(), FakeKB()).build(["ncbi"], agree, data_dir=data)
    assert remote.id == local.id != s.id and remote.params["corpus_agreement"] == 0.3


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


def test_retrain_cli_reaches_a_token_secured_stack(tmp_path, monkeypatch, vaner_home, capsys):
    """``vaner retrain --retrieval-address --tagger-address --token-file``: DBR is built by a
    Retrieval service and the promoted model is announced to a Tagger service, both behind the
    bearer-token interceptor, through the same clients every other caller uses."""
    import json

    import kb_ingest.kb
    import tagger.registry
    import tagger.train
    from services.config import ServeConfig
    from services.server import start_service
    from tests.test_dbr_fakes import FakeRegistry, TrainResult
    from vaner.cli import main

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    cfg = ServeConfig.from_dict({"security": {"token_file": str(token)}}, env={})
    settings = Settings.from_env().ensure()
    data = write_data_dir(tmp_path / "data")
    loaded = []

    class Tagger(tagger_pb2_grpc.TaggerServicer):
        def LoadModel(self, request, context):  # noqa: N802
            loaded.append(request.version)
            return common_pb2.ModelVersion(id=request.version, latest=True)

    def retrieval(server, config):
        retrieval_pb2_grpc.add_RetrievalServicer_to_server(RetrievalServicer(settings, FakeKB()), server)
        return []

    def tagger_(server, config):
        tagger_pb2_grpc.add_TaggerServicer_to_server(Tagger(), server)
        return []

    r = start_service("retrieval", cfg, port=0, builders={"retrieval": retrieval})
    t = start_service("tagger", cfg, port=0, builders={"tagger": tagger_})
    kb = FakeKB()
    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", lambda s: kb)
    monkeypatch.setattr(tagger.registry, "ModelRegistry", lambda s: FakeRegistry())
    seen = {}

    def fake_train(config, *, extra_sentences=(), progress=None):
        seen["extra"] = len(extra_sentences)
        art = config.run_dir / "best"
        art.mkdir(parents=True, exist_ok=True)
        return TrainResult(art, {"f1": 80.0})

    monkeypatch.setattr(tagger.train, "train", fake_train)
    argv = ["retrain", "--datasets", "ncbi", "--data-dir", str(data), "--json",
            "--retrieval-address", f"127.0.0.1:{r.port}", "--tagger-address", f"127.0.0.1:{t.port}"]
    try:
        assert main(argv) == 7  # no token: UNAUTHENTICATED from the Retrieval service, exit code 7
        assert "retrieval service at" in capsys.readouterr().err
        assert main([*argv, "--token-file", str(token)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["promoted"] and out["notified"] == "ok" and loaded == [out["model"]] and seen["extra"] > 0
    finally:
        r.stop(0)
        t.stop(0)
