"""bench/kb_search_snapshot.py's two recall measures: the strict one by point id and ann-benchmarks'
by distance, which must not count a tie with the exact k-th neighbour as a miss."""

from __future__ import annotations

import numpy as np

from kb_ingest.vector_store import EdgeVectorStore, StoredHit
from tests.bench_modules import load_bench


def hits(*pairs):
    return [StoredHit(i, s, {}) for i, s in pairs]


def test_a_tie_at_the_kth_distance_is_a_miss_by_id_and_a_hit_by_distance():
    bench = load_bench("kb_search_snapshot")
    exact = [hits((1, 0.9), (2, 0.8))]
    tied = [hits((1, 0.9), (7, 0.8))]  # another point at exactly the k-th distance
    assert bench.recall_by_id(tied, exact) == 0.5
    assert bench.recall_by_distance(tied, exact) == 1.0
    worse = [hits((1, 0.9), (8, 0.5))]  # a real miss stays a miss
    assert bench.recall_by_id(worse, exact) == bench.recall_by_distance(worse, exact) == 0.5


def test_changing_hnsw_ef_on_a_live_store_takes_effect(tmp_path):
    store = EdgeVectorStore(tmp_path / "q", hnsw_ef=16)
    store.create("c", 4)
    rng = np.random.default_rng(0)
    store.upsert("c", list(range(50)), rng.normal(size=(50, 4)), [{"categories": ["Gene"]} for _ in range(50)])
    store.finish("c")
    store.search("c", rng.normal(size=(1, 4)), 5, ["Gene"])
    store.hnsw_ef = 64
    store.search("c", rng.normal(size=(1, 4)), 5, ["Gene"])
    assert {key[-1] for key in store._request_parts} == {16, 64}  # one cached request per ef, not a stale one
    store.close()
