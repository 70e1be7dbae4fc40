"""Where KB vectors live: one small interface, two Qdrant implementations.

* :class:`EdgeVectorStore` (default): the Qdrant engine in-process through ``qdrant-edge-py``,
  one shard directory per collection under ``settings.qdrant_path``. qdrant-client's local mode
  was measured at 2.5 queries/s on 200k vectors (DESIGN.md), which is why it is not used.
* :class:`ServerVectorStore`: a Qdrant server or cluster by URL through ``qdrant-client``.

Each snapshot gets its own collection (``vaner_kb_<id>``), so building a new snapshot never
touches the data that ``latest`` points at. Payload: cui, name, preferred, categories, tuis,
source, sab, code (the matched atom's source vocabulary and its own id); ``categories`` carries a
keyword index so the category filter runs inside the search.
"""

from __future__ import annotations

import logging
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaner.errors import FailedPrecondition, NotFound, Unavailable
from vaner.permissions import make_private_dir

log = logging.getLogger(__name__)

DEFAULT_HNSW_EF = 128
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
# int8 scalar quantisation, kept in RAM: the HNSW build and the search traverse the quantised
# copy and rescore with the originals. Measured on 100k x 256-d clustered vectors on 2 cores:
# index build 52 s -> 21 s at the same filtered recall@10; it is what lets the open KB (1.09M
# terms) finish inside the ingest budget (BENCHMARKS.md "The open KB").
SCALAR_QUANTILE = 0.99
# The search walks the int8 copy for 2x the asked-for candidates and rescores them with the
# original vectors: on the open KB this raised recall@10 against a full scan from 0.75 to 0.80
# (bench/kb_search_snapshot.py; filtered single queries 676 -> 654 q/s, within run-to-run noise).
RESCORE_OVERSAMPLING = 2.0


@dataclass(frozen=True)
class StoredHit:
    id: int
    score: float
    payload: dict


def collection_name(snapshot_id: str) -> str:
    return "vaner_kb_" + snapshot_id.replace("-", "_")


class VectorStore(ABC):
    """The few operations a KB snapshot needs; ids are ints assigned by the ingest."""

    kind: str = ""

    @abstractmethod
    def create(self, collection: str, dimension: int) -> None: ...

    @abstractmethod
    def upsert(self, collection: str, ids: list[int], vectors: np.ndarray, payloads: list[dict]) -> None: ...

    @abstractmethod
    def finish(self, collection: str) -> None:
        """Build the index and make the data durable; called once before a snapshot completes."""

    @abstractmethod
    def search(self, collection: str, vectors: np.ndarray, k: int, categories: list[str] | None = None,
               exact: bool = False) -> list[list[StoredHit]]: ...

    @abstractmethod
    def retrieve(self, collection: str, ids: list[int], with_vectors: bool = False
                 ) -> list[tuple[int, dict, np.ndarray | None]]: ...

    @abstractmethod
    def count(self, collection: str) -> int: ...

    @abstractmethod
    def exists(self, collection: str) -> bool: ...

    @abstractmethod
    def drop(self, collection: str) -> None: ...

    @abstractmethod
    def health(self) -> dict[str, str]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class EdgeVectorStore(VectorStore):
    """qdrant-edge shards on local disk; shards open lazily and stay open for fast queries."""

    kind = "edge"

    def __init__(self, root: Path, hnsw_ef: int = DEFAULT_HNSW_EF):
        import qdrant_edge

        self.q = qdrant_edge
        self.root = Path(root)
        self.hnsw_ef = hnsw_ef
        self._shards: dict[str, object] = {}
        self._request_parts: dict[tuple, tuple] = {}
        self._lock = threading.RLock()

    def _dir(self, collection: str) -> Path:
        return self.root / collection

    def _shard(self, collection: str):  # noqa: ANN202 - qdrant_edge.EdgeShard
        with self._lock:
            shard = self._shards.get(collection)
            if shard is None:
                path = self._dir(collection)
                if not path.is_dir():
                    raise NotFound(f"vector collection {collection} does not exist under {self.root}")
                try:
                    shard = self.q.EdgeShard.load(str(path))
                except Exception as exc:
                    if "WouldBlock" in str(exc):  # qdrant-edge locks a shard's WAL for one process
                        raise FailedPrecondition(
                            f"vector collection {path} is already open elsewhere (another process, or another store "
                            "in this one): the embedded store serves one at a time; stop the other one, or run a "
                            "Qdrant server and set VANER_QDRANT_URL so that several can share it") from None
                    raise FailedPrecondition(f"cannot open vector collection {path}: {exc}") from None
                self._shards[collection] = shard
            return shard

    def create(self, collection: str, dimension: int) -> None:
        q = self.q
        path = self._dir(collection)
        with self._lock:
            if path.exists():
                self.drop(collection)
            make_private_dir(self.root)
            cfg = q.EdgeConfig(
                vectors=q.EdgeVectorParams(size=int(dimension), distance=q.Distance.Cosine),
                hnsw_config=q.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                              full_scan_threshold=10000),
                quantization_config=q.ScalarQuantizationConfig(type=q.ScalarType.Int8, quantile=SCALAR_QUANTILE,
                                                               always_ram=True),
            )
            shard = q.EdgeShard.create(str(path), cfg)
            shard.update(q.UpdateOperation.create_field_index("categories", q.PayloadSchemaType.Keyword))
            self._shards[collection] = shard

    def upsert(self, collection: str, ids: list[int], vectors: np.ndarray, payloads: list[dict]) -> None:
        q = self.q
        rows = np.asarray(vectors, dtype=np.float32).tolist()
        points = [q.Point(int(i), v, p) for i, v, p in zip(ids, rows, payloads, strict=True)]
        self._shard(collection).update(q.UpdateOperation.upsert_points(points))

    def finish(self, collection: str) -> None:
        shard = self._shard(collection)
        shard.optimize()
        shard.flush()

    def _filter(self, categories: list[str] | None):  # noqa: ANN202
        if not categories:
            return None
        q = self.q
        return q.Filter(must=[q.FieldCondition(key="categories", match=q.MatchAny(any=list(categories)))])

    def search(self, collection: str, vectors: np.ndarray, k: int, categories: list[str] | None = None,
               exact: bool = False) -> list[list[StoredHit]]:
        q = self.q
        shard = self._shard(collection)
        key = (int(k), tuple(categories or ()), exact, self.hnsw_ef)  # hnsw_ef may be changed on a live store
        cached = self._request_parts.get(key)
        if cached is None:  # filter and params are immutable: build once, not per query
            rescore = q.QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING)
            cached = (self._filter(categories),
                      q.SearchParams(hnsw_ef=max(self.hnsw_ef, k), exact=exact, quantization=rescore))
            self._request_parts[key] = cached
        flt, params = cached
        reqs = [q.QueryRequest(limit=int(k), query=q.Query.Nearest(v), with_payload=True, filter=flt,
                               params=params)
                for v in np.asarray(vectors, dtype=np.float32).tolist()]
        if len(reqs) == 1:
            results = [shard.query(reqs[0])]
        else:
            results = shard.query_batch(q.QueryBatchRequest(reqs))
        return [[StoredHit(int(p.id), float(p.score), p.payload or {}) for p in r] for r in results]

    def retrieve(self, collection: str, ids: list[int], with_vectors: bool = False
                 ) -> list[tuple[int, dict, np.ndarray | None]]:
        recs = self._shard(collection).retrieve([int(i) for i in ids], True, bool(with_vectors))
        out = []
        for r in recs:
            vec = np.asarray(r.vector, dtype=np.float32) if with_vectors and r.vector is not None else None
            out.append((int(r.id), dict(r.payload or {}), vec))
        return out

    def count(self, collection: str) -> int:
        return int(self._shard(collection).count(self.q.CountRequest(exact=True)))

    def exists(self, collection: str) -> bool:
        return self._dir(collection).is_dir()

    def drop(self, collection: str) -> None:
        with self._lock:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._dir(collection), ignore_errors=True)

    def health(self) -> dict[str, str]:
        return {"vector_store": "qdrant-edge", "path": str(self.root)}

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()


class ServerVectorStore(VectorStore):
    """A Qdrant server or cluster; every transport failure becomes :class:`Unavailable` naming the URL."""

    kind = "server"

    def __init__(self, url: str | None = None, api_key: str | None = None, client: object | None = None,
                 hnsw_ef: int = DEFAULT_HNSW_EF):
        from qdrant_client import QdrantClient, models

        self.models = models
        self.url = url or ":memory:"
        self.hnsw_ef = hnsw_ef
        self.client = client if client is not None else QdrantClient(url=url, api_key=api_key, timeout=30,
                                                                               check_compatibility=False)

    def _call(self, what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            name = type(exc).__name__
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else name
            if "Not found" in text or "doesn't exist" in text or "not found" in text:
                raise NotFound(f"Qdrant at {self.url}: {what}: {text}") from None
            raise Unavailable(f"cannot reach Qdrant at {self.url} ({what}): {text}") from None

    def create(self, collection: str, dimension: int) -> None:
        m = self.models
        if self._call("check collection", self.client.collection_exists, collection):
            self._call("drop collection", self.client.delete_collection, collection)
        self._call("create collection", self.client.create_collection, collection,
                   vectors_config=m.VectorParams(size=int(dimension), distance=m.Distance.COSINE),
                   hnsw_config=m.HnswConfigDiff(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT))
        self._call("create index", self.client.create_payload_index, collection, "categories",
                   m.PayloadSchemaType.KEYWORD)

    def upsert(self, collection: str, ids: list[int], vectors: np.ndarray, payloads: list[dict]) -> None:
        batch = self.models.Batch(ids=[int(i) for i in ids],
                                  vectors=np.asarray(vectors, dtype=np.float32).tolist(), payloads=payloads)
        self._call("upsert", self.client.upsert, collection, batch, wait=True)

    def finish(self, collection: str) -> None:
        pass  # the server indexes in the background; search is correct meanwhile

    def search(self, collection: str, vectors: np.ndarray, k: int, categories: list[str] | None = None,
               exact: bool = False) -> list[list[StoredHit]]:
        m = self.models
        flt = None
        if categories:
            flt = m.Filter(must=[m.FieldCondition(key="categories", match=m.MatchAny(any=list(categories)))])
        params = m.SearchParams(hnsw_ef=max(self.hnsw_ef, k), exact=exact)
        reqs = [m.QueryRequest(query=v, limit=int(k), filter=flt, with_payload=True, params=params)
                for v in np.asarray(vectors, dtype=np.float32).tolist()]
        responses = self._call("search", self.client.query_batch_points, collection, reqs)
        return [[StoredHit(int(p.id), float(p.score), dict(p.payload or {})) for p in r.points]
                for r in responses]

    def retrieve(self, collection: str, ids: list[int], with_vectors: bool = False
                 ) -> list[tuple[int, dict, np.ndarray | None]]:
        recs = self._call("retrieve", self.client.retrieve, collection, [int(i) for i in ids],
                          with_payload=True, with_vectors=bool(with_vectors))
        return [(int(r.id), dict(r.payload or {}),
                 np.asarray(r.vector, dtype=np.float32) if with_vectors and r.vector is not None else None)
                for r in recs]

    def count(self, collection: str) -> int:
        return int(self._call("count", self.client.count, collection, exact=True).count)

    def exists(self, collection: str) -> bool:
        return bool(self._call("check collection", self.client.collection_exists, collection))

    def drop(self, collection: str) -> None:
        if self.exists(collection):
            self._call("drop collection", self.client.delete_collection, collection)

    def health(self) -> dict[str, str]:
        self._call("list collections", self.client.get_collections)
        return {"vector_store": "qdrant-server", "url": self.url}

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close:
            close()


def open_store(settings) -> VectorStore:  # noqa: ANN001 - vaner.settings.Settings
    """The store the settings ask for: a server when ``qdrant_url`` is set, else embedded."""
    if settings.qdrant_url:
        return ServerVectorStore(settings.qdrant_url, settings.qdrant_api_key)
    return EdgeVectorStore(settings.qdrant_path)
