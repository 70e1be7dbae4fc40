"""End to end on real processes and real loopback ports: ``vaner serve all`` brings up the three
services; over gRPC only, ingest a small RRF fixture, build DBR, retrain a tiny model, Extract.

Kept small: a 40-sentence slice of NCBI, the tiny random LLaMA, two optimizer steps. It proves the
wiring, not model quality.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients import KnowledgeBaseClient, RetrievalClient, TaggerClient
from clients.types import Progress
from services.testing import REPO, make_tiny_model, register_model, slice_conll, wait_serving

FIXTURE = Path(__file__).parent / "fixtures" / "umls"
SHARED_NCBI = Path(os.environ.get("VANER_DATA_DIR", REPO.parent / "shared" / "data" / "bioner")) / "ncbi"


def _consecutive_free_ports(n: int = 3) -> int:
    for base in range(31000 + os.getpid() % 2000 * 10, 60000, 17):
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_backbone):
    if not (SHARED_NCBI / "train.tsv").exists():
        pytest.skip(f"shared NCBI data not found at {SHARED_NCBI} (set VANER_DATA_DIR)")
    root = tmp_path_factory.mktemp("e2e")
    home, data = root / "home", root / "data"
    for split, n in (("train", 40), ("dev", 10), ("test", 10)):
        slice_conll(SHARED_NCBI / f"{split}.tsv", data / "ncbi" / f"{split}.tsv", n)
    rrf = root / "rrf"
    shutil.copytree(FIXTURE, rrf)
    first = register_model(home, make_tiny_model(tiny_backbone, root / "first"))
    base = _consecutive_free_ports()
    env = {**os.environ, "VANER_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "VANER_SERVER_LOG_FORMAT": "json", "VANER_SERVER_GRACE_SECONDS": "5",
           "VANER_SERVER_DRAIN_SECONDS": "0.5", "VANER_INGEST_ALLOWED_ROOTS": str(root)}
    env.pop("VANER_CONFIG", None)
    log = open(root / "stack.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "vaner.cli", "serve", "all", "--port", str(base)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    addresses = {s: f"127.0.0.1:{base + i}" for i, s in enumerate(("kb", "retrieval", "tagger"))}
    try:
        for address in addresses.values():
            wait_serving(address, 120, proc=proc)
    except Exception:
        proc.kill()
        raise RuntimeError((root / "stack.log").read_text(errors="replace")[-5000:]) from None
    yield {"addresses": addresses, "home": home, "data": data, "rrf": rrf, "first": first, "backbone": tiny_backbone,
           "proc": proc, "log": root / "stack.log"}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_stack_end_to_end(stack):
    a = stack["addresses"]
    with KnowledgeBaseClient(a["kb"]) as kb, RetrievalClient(a["retrieval"]) as rt, TaggerClient(a["tagger"]) as tg:
        assert {kb.health().service, rt.health().service, tg.health().service} == {"kb", "retrieval", "tagger"}
        # 1. ingest the RRF fixture over gRPC
        progress: list[Progress] = []
        snap = kb.ingest(mrconso=str(stack["rrf"] / "MRCONSO.RRF"), on_progress=progress.append)
        assert snap.status == "complete" and snap.latest and snap.concepts > 0
        assert kb.get_snapshot("latest").id == snap.id
        hits = kb.search(["aspirin"], k=3)
        assert hits[0] and hits[0][0].cui == "C0004057"
        # 2. build DBR from that snapshot
        dbr = rt.build_dbr(["ncbi"], snapshot=snap.id, data_dir=str(stack["data"]))
        assert dbr.snapshot == snap.id and dbr.sentences > 0
        # 3. retrain a tiny model through the tagger (which switches to it when promoted)
        overrides = {"data_dir": str(stack["data"]),
                     "train_overrides": {"model": {"backbone": str(stack["backbone"])}, "epochs": 1,
                                         "steps_per_epoch": 2, "batch_size": 4, "dev_max_sentences": 5,
                                         "checkpoint_every": 1000, "device": "cpu"}}
        events = []
        result = tg.retrain(snap.id, ["ncbi"], "retrieved", config_json=json.dumps(overrides),
                            on_progress=events.append)
        assert events and result.model.kb_snapshot == snap.id
        assert result.promoted and result.model.id != stack["first"].id
        # a warm start from the serving model, gated against it on the same ncbi dev sentences
        assert result.model.hyperparameters["warm_start"] == stack["first"].id
        assert [r["dataset"] for r in result.gate["datasets"]] == ["ncbi"] and result.gate["promote"]
        assert result.gate == result.model.metrics["gate"] and "gate" in {e.stage for e in events}
        assert tg.model_info().id == result.model.id
        # 4. extract from a client with the new model
        text = "Germline mutations in BRCA1 cause familial breast cancer."
        docs = tg.extract([("d1", text)])
        assert docs[0].model_version == result.model.id
        assert all(text[e.start:e.end] == e.text for e in docs[0].entities)
        streamed = list(tg.extract_stream([text, "Aspirin reduces fever."]))
        assert [d.id for d in streamed] == ["0", "1"]


def _child_pid(log: Path, child: str) -> int:
    pids = [json.loads(line)["pid"] for line in log.read_text(errors="replace").splitlines()
            if line.startswith("{") and '"child_started"' in line and f'"child": "{child}"' in line]
    return pids[-1]


def test_supervisor_restarts_a_killed_child(stack):
    """kill -9 the tagger under ``serve all``: the supervisor brings it back on the same port,
    serving the latest model, while the other services never stop."""
    a = stack["addresses"]
    with TaggerClient(a["tagger"]) as tg:
        before = tg.model_info().id
    os.kill(_child_pid(stack["log"], "tagger"), signal.SIGKILL)
    with KnowledgeBaseClient(a["kb"]) as kb:
        assert kb.health().ok
    time.sleep(1.0)
    wait_serving(a["tagger"], 300, proc=stack["proc"])
    with TaggerClient(a["tagger"]) as tg:
        assert tg.model_info().id == before
        assert tg.extract(["Aspirin reduces fever."])[0].model_version == before
    assert '"event": "child_exited"' in stack["log"].read_text(errors="replace")


def test_serve_all_shuts_down_gracefully(stack):
    """SIGTERM to the supervisor stops all three children (they drain, then exit 0)."""
    proc = stack["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    time.sleep(0.2)
    text = stack["log"].read_text(errors="replace")
    assert text.count('"event": "stopped"') == 3, text[-3000:]
