"""Tagger servicer and core in-process (real grpc server on an ephemeral loopback port, fake model
back end so each test takes milliseconds)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import grpc
import pytest

from clients import TaggerClient
from clients.types import Progress, RetrainResult
from services.config import ServeConfig
from services.server import start_service
from services.tagger_servicer import TaggerServicer, retrain_request_from_proto
from services.testing import DocumentBackend, register_model
from tagger.formats import Entity
from tagger.serving import Limits, MicroBatcher, TaggerCore
from tests.test_dbr_fakes import FakeKB
from vaner import errors as E
from vaner.progress import ProgressEvent
from vaner.settings import Settings
from vaner.v1 import common_pb2, tagger_pb2, tagger_pb2_grpc

PROCESSED: list[tuple[str, str]] = []  # (model artifact name, document id)


def fake_backend(path, device, batch_size, delay=lambda: 0.0):
    return DocumentBackend(fake_extract(path, delay))


def fake_extract(path, delay=lambda: 0.0):
    name = Path(path).name

    def run(documents, categories):
        if delay():
            time.sleep(delay())
        out = []
        for doc in documents:
            PROCESSED.append((name, doc.id))
            word = doc.text.split()[0]
            start = doc.text.index(word)
            entity = Entity(start, start + len(word), word, categories[0].value, 0.9)
            out.append(dataclasses.replace(doc, entities=(entity,)))
        return out

    return run


def fake_artifact(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "tagger_config.json").write_text(json.dumps({"model": {}}))
    return d


@pytest.fixture()
def stack(tmp_path):
    home = tmp_path / "home"
    rec1 = register_model(home, fake_artifact(tmp_path, "a1"), metrics={"dev": {"f1": 50}})
    rec2 = register_model(home, fake_artifact(tmp_path, "a2"), promote=False)
    state = {"delay": 0.0, "retrain": None}
    core = TaggerCore(Settings(home=home), batch_size=8,
                      limits=Limits(max_documents=16, max_text_chars=1000, max_call_words=100),
                      backend_factory=lambda p, d, b: fake_backend(p, d, b, lambda: state["delay"]),
                      retrain_fn=lambda request, progress: state["retrain"](request, progress))
    cfg = ServeConfig.from_dict({"server": {"max_receive_message_bytes": 64 * 1024}}, env={})

    def build(server, config):
        core.start()
        tagger_pb2_grpc.add_TaggerServicer_to_server(TaggerServicer(core, kb=FakeKB), server)
        return [core.close]

    running = start_service("tagger", cfg, port=0, builders={"tagger": build})
    client = TaggerClient(f"127.0.0.1:{running.port}", timeout=10)
    yield {"core": core, "client": client, "rec1": rec1, "rec2": rec2, "state": state, "running": running,
           "home": home}
    client.close()
    running.stop(1)


def test_extract_batch_and_version(stack):
    docs = stack["client"].extract(["BRCA1 mutations", ("d2", "  aspirin works")], categories=["gene"])
    assert [d.id for d in docs] == ["0", "d2"]
    e = docs[1].entities[0]
    assert (e.start, e.end, e.text, e.type) == (2, 9, "aspirin", "Gene")
    assert docs[0].model_version == stack["rec1"].id


def test_extract_stream_in_order(stack):
    out = list(stack["client"].extract_stream((f"word{i} tail" for i in range(20)), categories=["Species"]))
    assert [d.id for d in out] == [str(i) for i in range(20)]
    assert all(d.entities[0].type == "Species" for d in out)


@pytest.mark.parametrize("request_, code", [
    (tagger_pb2.ExtractRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(id="a", text="  ")]), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="a\x00b")]), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x")] * 17), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x" * 1001)]), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x" * 70_000)]), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="w " * 60)] * 2), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x")],
                               options=tagger_pb2.ExtractOptions(categories=[9])), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x")],
                               options=tagger_pb2.ExtractOptions(categories=[0])), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x")],
                               options=tagger_pb2.ExtractOptions(link=True, link_k=51)), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x")],
                               options=tagger_pb2.ExtractOptions(link_k=-1)), grpc.StatusCode.INVALID_ARGUMENT),
    (tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="x")],
                               options=tagger_pb2.ExtractOptions(link=True, kb_snapshot="kb-nope")),
     grpc.StatusCode.NOT_FOUND),
])
def test_bad_extract_requests(stack, request_, code):
    stub = tagger_pb2_grpc.TaggerStub(stack["client"].channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Extract(request_, timeout=5)
    assert info.value.code() == code


def test_extract_links_spans_to_concepts_of_their_category(stack):
    client = stack["client"]
    docs = client.extract(["BRCA1 mutations", "aspirin works", "human cells"], categories=["Gene"], link=True,
                          link_k=2)
    assert [len(d.entities[0].concepts) for d in docs] == [2, 2, 2]
    assert all("Gene" in c.categories for d in docs for c in d.entities[0].concepts)
    assert docs[0].entities[0].concepts[0].cui == "C6"  # BRCA1
    assert all(len({c.cui for c in d.entities[0].concepts}) == 2 for d in docs)  # one hit per concept
    assert client.extract(["BRCA1 mutations"], categories=["Gene"])[0].entities[0].concepts == ()
    chem = client.extract(["aspirin works"], categories=["Chemical"], link=True)[0].entities[0].concepts
    assert chem[0].cui == "C9" and 1 < len(chem) <= 5  # link_k 0: the default 5 (at most)
    streamed = list(client.extract_stream(["BRCA1 x", "APC y"], categories=["Gene"], link=True, link_k=1))
    assert [d.entities[0].concepts[0].cui for d in streamed] == ["C6", "C7"]
    with pytest.raises(E.NotFound, match="kb-nope"):
        client.extract(["BRCA1"], link=True, kb_snapshot="kb-nope")
    with pytest.raises(E.InvalidArgument, match="link_k"):
        list(client.extract_stream(["BRCA1"], link=True, link_k=99))


def test_linking_without_a_knowledge_base_is_a_failed_precondition():
    request = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="BRCA1")],
                                        options=tagger_pb2.ExtractOptions(link=True))
    with pytest.raises(E.FailedPrecondition, match="not configured"):
        TaggerServicer(core=None).Extract(request, None)  # refused before any model work


def test_linking_stops_between_batches_once_the_call_ended():
    from retrieval.linking import snapshot_linker

    kb, asked = FakeKB(), []
    link = snapshot_linker(kb, 2, should_stop=lambda: asked.append(1) or True)
    with pytest.raises(E.Cancelled):
        link(["BRCA1", "aspirin"], ["Gene", "Chemical"])
    assert asked and kb.search_calls == 0


def test_bad_stream_messages(stack):
    stub = tagger_pb2_grpc.TaggerStub(stack["client"].channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ExtractStream(iter([tagger_pb2.ExtractStreamRequest()]), timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = tagger_pb2.ExtractStreamRequest(document=tagger_pb2.Document(text="a b"),
                                            options=tagger_pb2.ExtractOptions(categories=[common_pb2.GENE]))
    second = tagger_pb2.ExtractStreamRequest(document=tagger_pb2.Document(text="c d"),
                                             options=tagger_pb2.ExtractOptions(categories=[common_pb2.DISEASE]))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ExtractStream(iter([first, second]), timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message" in info.value.details()


def test_client_raises_domain_errors(stack):
    with pytest.raises(E.NotFound, match="unknown model version"):
        stack["client"].load_model("m-nope")
    with pytest.raises(E.NotFound):
        stack["client"].load_model("../../etc")
    with pytest.raises(E.NotFound):  # an artifact directory is not a version a caller may load
        stack["client"].load_model(str(stack["home"] / "models" / stack["rec2"].id))
    with pytest.raises(E.InvalidArgument):
        stack["client"].extract([""])
    with pytest.raises(E.InvalidArgument, match="unknown entity type"):
        stack["client"].extract(["x"], categories=["Protein"])
    with pytest.raises(E.ResourceExhausted, match=r"120 words; the limit is 100 per call \(tagger.max_call_words\)"):
        stack["client"].extract(["w " * 120])


def test_model_info_load_model_and_health(stack):
    c = stack["client"]
    info = c.model_info()
    assert info.id == stack["rec1"].id and info.latest and info.metrics == {"dev": {"f1": 50}}
    loaded = c.load_model(stack["rec2"].id)
    assert loaded.id == stack["rec2"].id and not loaded.latest
    assert c.extract(["abc"])[0].model_version == stack["rec2"].id
    assert c.load_model("latest").id == stack["rec1"].id
    h = c.health()
    assert h.ok and h.service == "tagger" and h.details["model"] == stack["rec1"].id
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    hs = health_pb2_grpc.HealthStub(c.channel)
    assert hs.Check(health_pb2.HealthCheckRequest(service="vaner.v1.Tagger"), timeout=5).status == 1


def test_hot_swap_under_concurrent_load_loses_nothing(stack):
    """In-flight requests finish on the model they started on; none fails during the switch."""
    stack["state"]["delay"] = 0.01
    c, ids = stack["client"], [stack["rec1"].id, stack["rec2"].id]
    by_artifact = {Path(r.artifact_path).name: r.id for r in (stack["rec1"], stack["rec2"])}
    PROCESSED.clear()
    errors, results = [], []
    stop = threading.Event()

    def worker(w):
        i = 0
        while not stop.is_set():
            try:
                doc_id = f"w{w}-{i}"
                results.append((doc_id, c.extract([(doc_id, "alpha beta")])[0].model_version))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for k in range(6):
        target = ids[(k + 1) % 2]
        c.load_model(target)
        seen = len(results)
        end = time.monotonic() + 60  # let some requests run on each model (bounded, for busy CI)
        while time.monotonic() < end and not any(v == target for _, v in results[seen:]):
            time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) >= 6
    served_by = {doc: by_artifact[name] for name, doc in PROCESSED}
    assert all(served_by[doc] == version for doc, version in results)
    assert {v for _, v in results} == set(ids)


def test_retrain_streams_progress_then_loads_promoted(stack, tmp_path):
    home = stack["home"]

    from retrieval.gate import GateSample, decide, emit_report

    sample = GateSample(0, 300, {}, {"ncbi": ["ncbi:dev:0", "ncbi:dev:5"], "bc2gm": ["bc2gm:dev:1"]})
    report = decide({"ncbi": 80.0, "bc2gm": 70.0}, {"ncbi": 81.5, "bc2gm": 69.75}, sample, 0.5, "m0", ["x.tsv"],
                    "/runs/r/gate_sample.json")

    def retrain(request, progress):
        assert request.kb_snapshot == "s-1" and request.datasets == ("ncbi",) and request.from_scratch
        assert request.train_overrides == {"epochs": 1} and request.command == "Tagger.Retrain"
        for i in range(3):
            progress(ProgressEvent("train", i, 3, 1.0, 2.0, f"step {i}"))
        emit_report(report, progress)
        rec = register_model(home, fake_artifact(tmp_path, "a3"), promote=True)
        return type("Outcome", (), {"model": rec, "promoted": True, "reason": report.reason, "gate": report})()

    stack["state"]["retrain"] = retrain
    events = list(stack["client"].retrain_events("s-1", ["ncbi"], config_json='{"epochs": 1}', from_scratch=True))
    assert [e.message for e in events if isinstance(e, Progress)][:3] == ["step 0", "step 1", "step 2"]
    # the same gate table as the CLI: as progress lines, and structured on the final event
    assert [e.message for e in events if isinstance(e, Progress) and e.stage == "gate"] == report.lines()
    done = events[-1]
    assert isinstance(done, RetrainResult) and done.promoted
    assert done.gate == report.to_dict() and done.reason == report.reason
    assert stack["client"].model_info().id == done.model.id
    assert stack["client"].extract(["x y"])[0].model_version == done.model.id


def test_retrain_refuses_a_second_and_reports_failures(stack):
    gate = threading.Event()

    def slow(request, progress):
        progress(ProgressEvent("train", 0, None, 0.0, None, "started"))
        gate.wait(10)
        raise E.FailedPrecondition("no KB snapshot")

    stack["state"]["retrain"] = slow
    c = stack["client"]
    first = c.retrain_events()
    assert next(first).message == "started"
    with pytest.raises(E.AlreadyRunning):
        list(c.retrain_events())
    gate.set()
    with pytest.raises(E.FailedPrecondition, match="no KB snapshot"):
        list(first)
    with pytest.raises(E.InvalidArgument):
        list(c.retrain_events(dbr_mode="weird"))
    with pytest.raises(E.InvalidArgument, match="config_json"):
        list(c.retrain_events(config_json="[1]"))
    # unknown training settings: INVALID_ARGUMENT before the retrain starts (no DBR, no training)
    stack["state"]["retrain"] = lambda request, progress: pytest.fail("the retrain started")
    for bad in ('{"nosuch": 1}', '{"train_overrides": {"model": {"lora_rank": 4}}}', '{"dbr_params": {"k": 1}}'):
        with pytest.raises(E.InvalidArgument, match="unknown"):
            list(c.retrain_events(config_json=bad))
    assert c.extract(["still serving"])[0].entities  # serving was never interrupted


def test_micro_batcher_coalesces_and_propagates_errors():
    calls = []

    def run(units):
        calls.append(len(units))
        time.sleep(0.02)
        if "boom" in units:
            raise E.InvalidArgument("boom")
        return [u.upper() for u in units]

    b = MicroBatcher(run, max_units=64, max_wait_ms=20)
    futs = [b.submit([f"u{i}"]) for i in range(20)]
    assert [f.result(5) for f in futs] == [[f"U{i}"] for i in range(20)]
    assert len(calls) < 20  # coalesced
    bad = b.submit(["boom"])
    with pytest.raises(E.InvalidArgument):
        bad.result(5)
    # a failing unit fails only its own request, not the others coalesced with it
    mixed = [b.submit(["boom" if i == 3 else f"m{i}"]) for i in range(8)]
    for i, f in enumerate(mixed):
        if i == 3:
            with pytest.raises(E.InvalidArgument):
                f.result(5)
        else:
            assert f.result(5) == [f"M{i}"]
    b.close()
    with pytest.raises(E.Unavailable):
        b.submit(["y"])


def test_retrain_request_from_proto():
    with pytest.raises(E.InvalidArgument):
        retrain_request_from_proto(tagger_pb2.RetrainRequest(promote_margin=-1))
    with pytest.raises(E.InvalidArgument, match="train_overrides"):
        retrain_request_from_proto(tagger_pb2.RetrainRequest(config_json='{"train_overrides": 3}'))
    req = retrain_request_from_proto(tagger_pb2.RetrainRequest(
        config_json='{"seed": 3, "epochs": 1, "train_overrides": {"lr": 0.1}}'))
    assert req.seed == 3 and req.train_overrides == {"lr": 0.1, "epochs": 1}
    assert req.datasets is None and not req.from_scratch  # the current model's datasets, warm start


def test_reflection_lists_the_services(stack):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    names = set(ProtoReflectionDescriptorDatabase(stack["client"].channel).get_services())
    assert {"vaner.v1.Tagger", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_graceful_stop_finishes_in_flight_calls(stack):
    """stop(grace) reports NOT_SERVING, refuses new calls, and lets a slow in-flight call finish."""
    stack["state"]["delay"] = 1.0
    client, result = stack["client"], {}
    t = threading.Thread(target=lambda: result.update(out=client.extract(["slow call"])))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    stack["running"].stop(grace=10)
    assert time.monotonic() - t0 >= 0.5  # it waited for the call
    t.join(15)
    assert result["out"][0].entities


def test_gate_report_survives_the_wire():
    from clients.types import gate_from_proto
    from retrieval.gate import GateSample, decide, ungated
    from services.tagger_servicer import gate_to_proto

    sample = GateSample(4, None, {}, {"s800": ["s800:dev:3"]})
    for report in (decide({"s800": 70.0}, {"s800": 60.0}, sample, 0.5, "m1"), ungated("no current model", 0.5)):
        assert gate_from_proto(gate_to_proto(report.to_dict())) == report.to_dict()
