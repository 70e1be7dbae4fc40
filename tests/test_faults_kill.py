"""kill -9 faults on real service processes: the KB during an ingest, the tagger during a
retrain, the retrieval service while the tagger serves. After a restart nothing committed is lost,
``latest`` (snapshot and model) is intact, and Extract works wherever it does not need the dead
service."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from clients import KnowledgeBaseClient, RetrievalClient, TaggerClient
from clients.base import RetryPolicy
from clients.types import Progress
from services.testing import REPO, ServiceProcess, free_port, make_tiny_model, register_model, slice_conll
from vaner import errors as E

FIXTURE = Path(__file__).parent / "fixtures" / "umls"
SHARED_NCBI = Path(os.environ.get("VANER_DATA_DIR", REPO.parent / "shared" / "data" / "bioner")) / "ncbi"
START = 300  # seconds a process may take to come up on a busy 2-core machine


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_backbone):
    """One state home with a complete snapshot (ingested over gRPC) and a registered model."""
    root = tmp_path_factory.mktemp("faults")
    home = root / "home"
    model = register_model(home, make_tiny_model(tiny_backbone, root / "m1"))
    big = root / "big"
    from kb_ingest.testing import synth_umls

    synth_umls(big, 60_000, seed=1)
    rrf = root / "rrf"
    shutil.copytree(FIXTURE, rrf)
    kb = ServiceProcess("kb", home, log_dir=root, env={"VANER_INGEST_ALLOWED_ROOTS": str(root)}).start(timeout=START)
    with KnowledgeBaseClient(kb.address) as client:
        snap = client.ingest(mrconso=str(rrf / "MRCONSO.RRF"))
    yield {"root": root, "home": home, "model": model, "snap": snap, "kb": kb, "big": big,
           "backbone": tiny_backbone}
    kb.stop()


def test_kill_kb_during_ingest(world):
    kb: ServiceProcess = world["kb"]
    with KnowledgeBaseClient(kb.address, retry=RetryPolicy(max_attempts=1)) as client:
        events = client.ingest_events(mrconso=str(world["big"] / "MRCONSO.RRF"))
        first = next(events)
        assert isinstance(first, Progress)
        kb.kill9()
        with pytest.raises(E.VanerError):
            list(events)
    kb.start(timeout=START)  # same port, same state
    with KnowledgeBaseClient(kb.address) as client:
        latest = client.get_snapshot("latest")
        assert latest.id == world["snap"].id and latest.status == "complete"
        assert latest.concepts == world["snap"].concepts
        assert client.search(["aspirin"], k=1, timeout=600)[0][0].cui == "C0004057"  # loads the encoder
        listed = {s.id: s for s in client.list_snapshots()}
        assert [s.id for s in listed.values() if s.latest] == [world["snap"].id]
        assert all(s.status != "complete" for sid, s in listed.items() if sid != world["snap"].id)


def test_kill_tagger_during_retrain(world):
    if not (SHARED_NCBI / "train.tsv").exists():
        pytest.skip(f"shared NCBI data not found at {SHARED_NCBI}")
    data = world["root"] / "data"
    for split, n in (("train", 40), ("dev", 10), ("test", 10)):
        slice_conll(SHARED_NCBI / f"{split}.tsv", data / "ncbi" / f"{split}.tsv", n)
    env = {"VANER_TAGGER_KB_ADDRESS": world["kb"].address}
    tagger = ServiceProcess("tagger", world["home"], env=env, log_dir=world["root"]).start(timeout=START)
    overrides = {"data_dir": str(data), "train_overrides": {
        "model": {"backbone": str(world["backbone"])}, "epochs": 1, "steps_per_epoch": 100000, "batch_size": 2,
        "dev_max_sentences": 5, "checkpoint_every": 100000, "device": "cpu"}}
    try:
        with TaggerClient(tagger.address) as client:
            before = {m.id for m in _models(world["home"])}
            events = client.retrain_events(world["snap"].id, ["ncbi"], "none", config_json=json.dumps(overrides))
            for ev in events:  # wait until training itself runs
                if isinstance(ev, Progress) and ev.stage not in ("retrain",):
                    break
            tagger.kill9()
            with pytest.raises(E.VanerError):
                list(events)
        tagger.start(timeout=START)
        with TaggerClient(tagger.address) as client:
            assert client.model_info().id == world["model"].id
            assert {m.id for m in _models(world["home"])} == before  # nothing half-registered
            assert _latest(world["home"]) == world["model"].id
            assert client.extract(["BRCA1 mutations cause breast cancer."])[0].model_version == world["model"].id
            # the retrain lock died with the process: a new retrain is accepted (then abandoned)
            again = client.retrain_events(world["snap"].id, ["ncbi"], "none", config_json=json.dumps(overrides))
            assert isinstance(next(again), Progress)
            again.close()
    finally:
        tagger.stop(timeout=10)


def test_kill_retrieval_while_tagger_serves(world):
    retrieval = ServiceProcess("retrieval", world["home"], env={"VANER_RETRIEVAL_KB_ADDRESS": world["kb"].address},
                               log_dir=world["root"]).start(timeout=START)
    env = {"VANER_TAGGER_RETRIEVAL_ADDRESS": retrieval.address, "VANER_TAGGER_KB_ADDRESS": world["kb"].address}
    tagger = ServiceProcess("tagger", world["home"], port=free_port(), env=env, log_dir=world["root"])
    tagger.start(timeout=START)
    try:
        with TaggerClient(tagger.address) as tg, RetrievalClient(retrieval.address,
                                                                 retry=RetryPolicy(max_attempts=2)) as rt:
            assert rt.health().ok
            retrieval.kill9()
            for _ in range(5):  # Extract does not need retrieval
                assert tg.extract(["Aspirin reduces fever."])[0].model_version == world["model"].id
            with pytest.raises(E.Unavailable):
                rt.health(timeout=5)
            # a retrain that needs DBR fails clearly, naming the dead service, and serving goes on
            with pytest.raises(E.VanerError, match="retrieval"):
                list(tg.retrain_events(world["snap"].id, ["ncbi"], "retrieved", timeout=120))
            assert tg.model_info().id == world["model"].id
            retrieval.start(timeout=START)
            # the long-lived client's channel is in gRPC reconnect backoff after the failures above;
            # it must recover by itself within a bounded time (no new client)
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert rt.health(timeout=5).ok
                    break
                except E.Unavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert tg.extract(["Aspirin reduces fever."])[0].entities is not None
    finally:
        tagger.stop(timeout=10)
        retrieval.stop(timeout=10)


def _models(home: Path):
    from tagger.registry import ModelRegistry
    from vaner.settings import Settings

    return ModelRegistry(Settings(home=home), bundled_default=None).list()


def _latest(home: Path) -> str:
    from tagger.registry import ModelRegistry
    from vaner.settings import Settings

    return ModelRegistry(Settings(home=home), bundled_default=None).resolve("latest").id
