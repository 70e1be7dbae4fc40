"""Relevant-entity retrieval for DBR (paper section 3.4, step 3).

Query phrases are encoded with the *snapshot's* encoder (a KB built with SapBERT must be queried
with SapBERT, or cosine scores are meaningless) and searched top-k in the snapshot's vectors.
Training corpora repeat phrases a lot (``patients``, ``breast cancer``), so phrases are
de-duplicated on a normalised key before encoding, and results are memoised per retriever:
a corpus-wide DBR build encodes each distinct phrase once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from vaner.cancel import StopCheck, check_stop
from vaner.categories import Category
from vaner.errors import InvalidArgument
from vaner.progress import ProgressCallback, ProgressTracker

_WS = re.compile(r"\s+")


class KnowledgeBaseLike(Protocol):
    """The part of ``kb_ingest.kb.KnowledgeBase`` that retrieval needs (fakes in tests match it)."""

    def get_snapshot(self, ref: str = "latest") -> Any: ...

    def search(self, texts: list[str] | None = None, *, vectors: Any = None, snapshot: str = "latest",
               categories: Sequence[Category] | None = None, k: int = 10) -> list[list[Any]]: ...

    def encoder_for(self, snapshot: str = "latest") -> Any: ...

    def sample_random(self, n: int, *, snapshot: str = "latest", categories: Sequence[Category] | None = None,
                      seed: int = 0) -> list[Any]: ...


def normalise_phrase(text: str) -> str:
    """Cache key of a query: case and spacing do not change what an entity encoder returns enough
    to matter, and folding them removes most repeats."""
    return _WS.sub(" ", text).strip().lower()


def dedupe_hits(hits: Iterable[Any], k: int | None = None) -> list[Any]:
    """One hit per (cui, name), best score first; ties broken by cui then name (stable results)."""
    best: dict[tuple[str, str], Any] = {}
    for h in hits:
        key = (h.cui, h.name.lower())
        if key not in best or h.score > best[key].score:
            best[key] = h
    out = sorted(best.values(), key=lambda h: (-h.score, h.cui, h.name))
    return out[:k] if k is not None else out


class Retriever:
    """Batched top-k retrieval of KB entities for query phrases against ONE resolved snapshot.

    The snapshot reference is resolved once at construction, so a build that runs while a new
    snapshot is published keeps querying the one it started with.
    """

    def __init__(self, kb: KnowledgeBaseLike, snapshot: str = "latest", k: int = 5, batch_size: int = 256,
                 encode_batch_size: int = 128):
        if k < 1:
            raise InvalidArgument(f"top-k must be >= 1, got {k}")
        if batch_size < 1:
            raise InvalidArgument("batch_size must be >= 1")
        self.kb = kb
        self.snapshot_info = kb.get_snapshot(snapshot or "latest")
        self.snapshot_id: str = str(self.snapshot_info.id)
        self.k = k
        self.batch_size = batch_size
        self.encode_batch_size = encode_batch_size
        self._encoder: Any = None
        self._cache: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
        self.stats: dict[str, float] = {"queries": 0, "unique_encoded": 0, "cache_hits": 0, "encode_seconds": 0.0,
                                        "search_seconds": 0.0}

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = self.kb.encoder_for(self.snapshot_id)
        return self._encoder

    def retrieve(self, phrases: Sequence[str], categories: Sequence[Category] | None = None,
                 progress: ProgressCallback | None = None, should_stop: StopCheck | None = None) -> list[list[Any]]:
        """Per phrase, its top-k hits (de-duplicated), in input order; ``[]`` for an empty phrase.
        ``should_stop`` is asked before each batch (vaner/cancel.py)."""
        cats = tuple(sorted(c.value for c in categories)) if categories else ()
        keys = [normalise_phrase(p) for p in phrases]
        self.stats["queries"] += len(keys)
        missing: list[str] = []
        seen: set[str] = set()
        for key in keys:
            if key and (key, cats) not in self._cache and key not in seen:
                seen.add(key)
                missing.append(key)
        self.stats["cache_hits"] += len(keys) - len(missing)
        # similar lengths in one batch waste less padding in the encoder (results are memoised by
        # key, so the order does not change any output)
        missing.sort(key=len)
        tracker = ProgressTracker("retrieve", total=len(missing), callback=progress)
        cat_list = [Category(c) for c in cats] or None
        for start in range(0, len(missing), self.batch_size):
            check_stop(should_stop, "retrieve")
            batch = missing[start:start + self.batch_size]
            t0 = time.perf_counter()
            vectors = self.encoder.encode(batch, batch_size=self.encode_batch_size)
            t1 = time.perf_counter()
            results = self.kb.search(vectors=vectors, snapshot=self.snapshot_id, categories=cat_list, k=self.k)
            self.stats["encode_seconds"] += t1 - t0
            self.stats["search_seconds"] += time.perf_counter() - t1
            if len(results) != len(batch):
                raise RuntimeError(f"KB search returned {len(results)} result lists for {len(batch)} queries")
            for key, hits in zip(batch, results, strict=True):
                self._cache[(key, cats)] = dedupe_hits(hits, self.k)
            self.stats["unique_encoded"] += len(batch)
            tracker.advance(len(batch))
        if missing:
            tracker.finish(f"{len(missing)} phrases")
        return [list(self._cache.get((key, cats), [])) if key else [] for key in keys]


def retrieve_phrases(kb: KnowledgeBaseLike, phrases: Sequence[str], *, snapshot: str = "latest", k: int = 5,
                     categories: Sequence[Category] | None = None,
                     progress: Callable[..., None] | None = None) -> list[list[Any]]:
    """One-shot convenience wrapper (the Retrieve RPC and ad-hoc scripts)."""
    if not phrases:
        return []
    return Retriever(kb, snapshot, k).retrieve(phrases, categories, progress)
