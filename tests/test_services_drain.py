"""SIGTERM on a real KB process: health says NOT_SERVING while calls are still served, then the
server stops accepting, the in-flight Search is cancelled at the end of the grace period (its
client gets UNAVAILABLE, as grpc cancels on shutdown) and its core stops at the next batch instead
of computing to the end, and the process exits on its own in time.

The child is ``serve_one`` itself with a deliberately slow encoder (0.5 s per batch of 256
queries), so a Search is reliably in flight across the whole shutdown without a real model."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kb_ingest.kb import SEARCH_BATCH, KnowledgeBase
from kb_ingest.testing import hash_encoder
from services.server import EXIT_WAIT_S
from services.testing import ServiceProcess
from vaner.settings import Settings
from vaner.v1 import kb_pb2, kb_pb2_grpc

FIX = Path(__file__).parent / "fixtures" / "umls"
DRAIN, GRACE, ROUND_S, ROUNDS = 1.0, 1.5, 0.5, 12

CHILD = f"""
import sys, time
from kb_ingest.encoder import Encoder
from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import hash_encoder
from services.config import ServeConfig
from services.server import add_kb, serve_one

fast = hash_encoder()

class Slow:
    def encode(self, texts, **kw):
        print("encode-round", flush=True)
        time.sleep({ROUND_S})
        return fast.model.encode(texts)

enc = Encoder(fast.name, fast.dimension, Slow())
builders = {{"kb": lambda server, cfg: add_kb(server, cfg, kb=KnowledgeBase(cfg.settings(), encoder_loader=lambda n: enc))}}
raise SystemExit(serve_one("kb", ServeConfig.load(sys.argv[1]), int(sys.argv[2]), builders=builders))
"""


class SlowKb(ServiceProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", CHILD, str(self.config), str(self.port)]


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="vaner.v1.KnowledgeBase"), timeout=2).status


def test_sigterm_drains_then_cancels_and_exits_within_grace(tmp_path):
    home = tmp_path / "home"
    kb = KnowledgeBase(Settings(home=home), encoder_loader=lambda name: hash_encoder())
    kb.ingest_umls(FIX / "MRCONSO.RRF")
    kb.close()
    cfg = tmp_path / "vaner.toml"
    cfg.write_text(f"home = {json.dumps(str(home))}\n[server]\ngrace_seconds = {GRACE}\nlog_format = \"json\"\n"
                   f"[kb]\nmax_search_queries = {ROUNDS * SEARCH_BATCH}\n")
    proc = SlowKb("kb", home, config=cfg, log_dir=tmp_path, env={"VANER_SERVER_DRAIN_SECONDS": str(DRAIN)})
    proc.start(timeout=60)
    try:
        address = proc.address
        channel = grpc.insecure_channel(address)
        stub = kb_pb2_grpc.KnowledgeBaseStub(channel)
        outcome: dict = {}

        def long_search() -> None:
            try:
                stub.Search(kb_pb2.SearchRequest(texts=["aspirin"] * (ROUNDS * SEARCH_BATCH)), timeout=60)
                outcome["code"] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                outcome["code"] = exc.code()
                outcome["details"] = exc.details()

        caller = threading.Thread(target=long_search)
        caller.start()
        end = time.monotonic() + 30
        while "encode-round" not in proc.log():  # the Search is computing
            assert proc.proc.poll() is None and time.monotonic() < end, proc.log()[-3000:]
            time.sleep(0.02)
        sent = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        # during the drain window the server still answers new calls (load balancers are catching up)
        vec = [kb_pb2.Vector(values=hash_encoder().encode(["Insulin"])[0].tolist())]
        assert stub.Search(kb_pb2.SearchRequest(vectors=vec, k=1), timeout=5).results[0].hits[0].cui == "C0021641"
        proc.proc.wait(timeout=DRAIN + GRACE + EXIT_WAIT_S + 5)
        took = time.monotonic() - sent
        caller.join(10)
        channel.close()
    finally:
        proc.stop()
    log = proc.log()
    assert proc.proc.returncode == 0, log[-3000:]
    assert DRAIN <= took <= DRAIN + GRACE + ROUND_S + EXIT_WAIT_S + 1.0, took
    # grpc cancels what is left with UNAVAILABLE: right for clients, which may retry on another replica
    assert outcome == {"code": grpc.StatusCode.UNAVAILABLE, "details": "Cancelling all calls"}, (outcome, log[-3000:])
    rounds = log.count("encode-round")
    assert rounds < ROUNDS, f"the cancelled Search was computed to the end ({rounds} rounds)"
    events = [json.loads(line).get("event") for line in log.splitlines() if line.startswith("{")]
    order = [e for e in events if e in ("draining", "stopping", "stopped")]
    assert order == ["draining", "stopping", "stopped"], order
    stopped = next(json.loads(line) for line in log.splitlines() if '"event": "stopped"' in line)
    assert "abandoned" not in stopped  # the Search stopped by itself at its next batch
