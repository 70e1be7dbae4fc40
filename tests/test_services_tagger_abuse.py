"""A real tagger process (tiny random LLaMA, one torch thread, loopback port) under the abuse of
issue 12: a huge in-limit document with a short deadline must not hold up small calls nor keep
computing once its caller has gone, abandoned calls must stop costing CPU, and a tagger serving
``latest`` must follow the registry on its own.

Figures are printed (``pytest -s``) before they are asserted, so a run against older code shows
the "before" numbers too. CPU time is read from /proc/<pid>/stat (utime + stime of the server)."""

from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from clients import TaggerClient
from services.testing import ServiceProcess, make_tiny_model, register_model
from vaner.v1 import tagger_pb2, tagger_pb2_grpc

SMALL = "Aspirin reduced the risk of colorectal adenoma in BRCA1 carriers."
# Short sentences: the most model windows per character (4 per sentence, one per entity type), so
# the document is heavy (minutes of work for the tiny model) while planning it stays quick.
HUGE = "BRCA1 causes cancer. " * 15_000  # 315,000 characters, 45,000 words: inside every limit
MEDIUM = "Cisplatin caused renal failure. " * 1_000


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_over(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def extract(stub, text: str, timeout: float) -> tuple[grpc.StatusCode, float]:
    t0 = time.monotonic()
    try:
        stub.Extract(tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(id="d", text=text)]), timeout=timeout)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    return code, time.monotonic() - t0


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("abuse")
    register_model(root / "home", make_tiny_model(tiny_backbone, root / "m1"))
    env = {"VANER_TAGGER_RECONCILE_SECONDS": "0.5", "VANER_SERVER_HEALTH_CHECK_SECONDS": "2"}
    with ServiceProcess("tagger", root / "home", env=env).start(timeout=120) as sp:
        sp.root = root
        yield sp


def test_huge_document_with_short_deadline_blocks_nobody_and_stops(tagger):
    channel = grpc.insecure_channel(tagger.address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = tagger_pb2_grpc.TaggerStub(channel)
    assert extract(stub, SMALL, 60)[0] == grpc.StatusCode.OK  # warm
    huge: dict = {}
    caller = threading.Thread(target=lambda: huge.update(zip(("code", "s"), extract(stub, HUGE, 6.0), strict=True)))
    caller.start()
    time.sleep(2.5)  # the huge call is planned and computing
    behind_code, behind_s = extract(stub, SMALL, 30)
    caller.join(30)
    after_code, after_s = extract(stub, SMALL, 30)
    time.sleep(1.0)  # one pass to notice, then idle
    cpu = cpu_over(tagger.proc.pid, 3.0)
    channel.close()
    print(f"\nsmall Extract behind a huge one: {behind_s:.2f} s ({behind_code.name}); huge call: {huge}; "
          f"small Extract after the huge call's deadline: {after_s:.2f} s ({after_code.name}); "
          f"server CPU in the 3 s after: {cpu:.2f} s")
    assert huge["code"] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert behind_code == grpc.StatusCode.OK and behind_s < 5.0
    assert after_code == grpc.StatusCode.OK and after_s < 5.0
    assert cpu < 0.45, "the abandoned document is still being computed"


def test_abandoned_calls_stop_consuming_cpu(tagger):
    channel = grpc.insecure_channel(tagger.address)
    stub = tagger_pb2_grpc.TaggerStub(channel)
    req = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(id="m", text=MEDIUM)])
    calls = [stub.Extract.future(req, timeout=120) for _ in range(16)]
    time.sleep(2.0)
    busy = cpu_over(tagger.proc.pid, 1.0)  # while they are being computed
    for call in calls:
        call.cancel()
    channel.close()  # the clients have gone
    time.sleep(1.0)
    idle = cpu_over(tagger.proc.pid, 3.0)
    print(f"\nserver CPU with 16 calls in flight: {busy:.2f} s per s; after their clients left: {idle / 3:.3f} s per s")
    assert busy > 0.1, "the calls were not computing: the measurement shows nothing"
    assert idle / 3 < 0.15
    with TaggerClient(tagger.address, timeout=30) as client:
        assert client.extract([SMALL])[0].id == "0"


def test_tagger_follows_a_new_latest_on_its_own(tagger, tiny_backbone):
    with TaggerClient(tagger.address, timeout=30) as client:
        before = client.model_info().id
        new = register_model(tagger.home, make_tiny_model(tiny_backbone, tagger.root / "m2", seed=1))
        t0 = time.monotonic()
        while client.model_info().id != new.id:
            assert time.monotonic() - t0 < 15, "the tagger did not pick up the new latest"
            time.sleep(0.1)
        print(f"\nswitched from {before} to the new latest {new.id} in {time.monotonic() - t0:.2f} s")
        assert client.extract([SMALL])[0].model_version == new.id
        assert client.health().details["follows_latest"] == "true"
