"""A bounded load test on a real tagger process (the full 32 x 200 run is bench/services_load.py):
concurrent unary and streaming clients, zero errors, every answer for the right document."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from clients import TaggerClient
from services.testing import ServiceProcess, make_tiny_model, register_model

SENTENCES = ["Germline mutations in BRCA1 cause familial breast cancer.",
             "Aspirin reduced the risk of colorectal adenoma.",
             "Escherichia coli strains carrying stx2 caused haemolytic uraemic syndrome."]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("load")
    register_model(root / "home", make_tiny_model(tiny_backbone, root / "m"))
    with ServiceProcess("tagger", root / "home", env={"VANER_SERVER_MAX_WORKERS": "16"}).start(timeout=300) as sp:
        yield sp


def test_concurrent_extract_no_errors(tagger):
    clients, calls = 8, 25
    latencies, errors = [], []
    lock = threading.Lock()

    def worker(w):
        with TaggerClient(tagger.address, timeout=120) as c:
            for i in range(calls):
                doc_id = f"{w}-{i}"
                text = SENTENCES[(w + i) % len(SENTENCES)]
                t = time.perf_counter()
                try:
                    out = c.extract([(doc_id, text)])
                    assert out[0].id == doc_id
                    assert all(text[e.start:e.end] == e.text for e in out[0].entities)
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors.append(repr(exc))
                with lock:
                    latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    assert errors == []
    assert len(latencies) == clients * calls
    print(f"\n{clients}x{calls} calls: {clients * calls / wall:.0f} calls/s, "
          f"p50 {statistics.median(latencies) * 1e3:.1f} ms")


def test_concurrent_streams_no_errors(tagger):
    errors = []

    def worker(w):
        try:
            with TaggerClient(tagger.address, timeout=120) as c:
                docs = [(f"{w}-{i}", SENTENCES[i % 3]) for i in range(20)]
                out = list(c.extract_stream(docs))
                assert [d.id for d in out] == [d for d, _ in docs]
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
