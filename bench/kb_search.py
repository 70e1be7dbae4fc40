"""Benchmark: KB search at scale on the embedded store (qdrant-edge), single and batched, with
recall@10 against exact search (issue 2 targets: >= 1,000 queries/s, recall >= 0.95).

Encoding a million strings with MiniLM on 2 CPU cores takes hours, so this inserts synthetic
384-d unit vectors instead: a mixture of Gaussian clusters of ~50 points (real sentence
embeddings of KB terms are clustered: synonyms and variants of one concept sit together, nearest
neighbours at cosine ~0.85; uniformly random 384-d vectors, where every point is about equally
far from every other, are the unrealistic worst case for any ANN index; ``--uniform`` runs it).
Queries are fresh draws from the same mixture, not stored points.
Ground truth is an exact numpy dot product over all vectors. Prints one JSON object.

    nice -n 10 .venv/bin/python bench/kb_search.py --n 1000000 --queries 2000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb_ingest.vector_store import EdgeVectorStore  # noqa: E402


def mixture(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float) -> np.ndarray:
    idx = rng.integers(0, len(centers), n)
    v = centers[idx] + noise * rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cluster-size", type=int, default=50, help="points per cluster on average")
    ap.add_argument("--noise", type=float, default=0.02, help="per-dimension std of the within-cluster noise")
    ap.add_argument("--ef", type=int, default=128)
    ap.add_argument("--uniform", action="store_true")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    root = Path(args.dir or tempfile.mkdtemp(prefix="vaner-kb-search-"))
    store = EdgeVectorStore(root, hnsw_ef=args.ef)
    coll = "vaner_kb_bench"
    if args.uniform:
        centers = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        noise = 0.0
    else:
        args.clusters = max(1, args.n // args.cluster_size)
        centers = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        noise = args.noise
    t0 = time.perf_counter()
    c0 = time.process_time()
    store.create(coll, args.dim)
    data = np.empty((args.n, args.dim), dtype=np.float32)
    step = 10000
    payload = {"cui": "C0000000", "name": "x", "preferred": "x", "categories": ["Disease"], "tuis": ["T047"],
               "source": "bench"}
    for s in range(0, args.n, step):
        e = min(s + step, args.n)
        v = (centers[s:e] / np.linalg.norm(centers[s:e], axis=1, keepdims=True) if args.uniform
             else mixture(rng, centers, e - s, noise))
        data[s:e] = v
        store.upsert(coll, list(range(s, e)), v, [payload] * (e - s))
    t_upsert = time.perf_counter() - t0
    c_upsert = time.process_time() - c0
    t1 = time.perf_counter()
    c1 = time.process_time()
    store.finish(coll)
    t_index = time.perf_counter() - t1
    c_index = time.process_time() - c1
    queries = (rng.standard_normal((args.queries, args.dim), dtype=np.float32) if args.uniform
               else mixture(rng, centers, args.queries, noise))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # exact top-k
    truth = []
    for s in range(0, len(queries), 256):
        sims = queries[s:s + 256] @ data.T
        top = np.argpartition(-sims, args.k, axis=1)[:, :args.k]
        truth.extend(set(row.tolist()) for row in top)
    # warm-up, then single queries
    store.search(coll, queries[:10], args.k)
    t2 = time.perf_counter()
    c2 = time.process_time()
    single = [store.search(coll, queries[i:i + 1], args.k)[0] for i in range(len(queries))]
    t_single = time.perf_counter() - t2
    c_single = time.process_time() - c2
    t3 = time.perf_counter()
    c3 = time.process_time()
    batched: list = []
    for s in range(0, len(queries), args.batch):
        batched.extend(store.search(coll, queries[s:s + args.batch], args.k))
    t_batch = time.perf_counter() - t3
    c_batch = time.process_time() - c3
    t4 = time.perf_counter()
    filtered = [store.search(coll, queries[i:i + 1], args.k, categories=["Disease"])[0] for i in range(200)]
    t_filter = time.perf_counter() - t4

    def recall(results: list) -> float:
        return float(np.mean([len({h.id for h in r} & t) / args.k for r, t in zip(results, truth, strict=True)]))

    out = {
        "n": args.n, "dim": args.dim, "data": "uniform random" if args.uniform else
        f"mixture of {args.clusters} clusters, noise std {noise}/dim", "k": args.k, "hnsw_ef": args.ef,
        "upsert_s": round(t_upsert, 1), "upserts_per_s": round(args.n / t_upsert),
        "upsert_cpu_s": round(c_upsert, 1), "index_build_s": round(t_index, 1), "index_build_cpu_s": round(c_index, 1),
        "single_qps": round(len(queries) / t_single, 1), "batched_qps": round(len(queries) / t_batch, 1),
        "single_cpu_ms_per_q": round(1000 * c_single / len(queries), 3),
        "batched_cpu_ms_per_q": round(1000 * c_batch / len(queries), 3),
        "batch_size": args.batch, "filtered_single_qps": round(len(filtered) / t_filter, 1),
        "recall_at_10_single": round(recall(single), 4), "recall_at_10_batched": round(recall(batched), 4),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "disk_MB": round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6, 1),
    }
    print(json.dumps(out))
    store.drop(coll)


if __name__ == "__main__":
    main()
