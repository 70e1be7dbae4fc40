"""The knowledge base facade: the one core object the CLI, the gRPC servicer and retrieval use.

It knows nothing of argparse or gRPC. It owns the snapshot store (SQL), the vector store
(Qdrant edge or server) and the encoder cache, and it is safe to share between the threads of a
gRPC server: lazy initialisation is locked, searches run concurrently, and ingests are serialised
by a file lock in ``$VANER_HOME/locks`` (so a CLI ingest and a service ingest on the same machine
cannot interleave; a second one gets :class:`AlreadyRunning`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb_ingest.categories import CategoryMap, default_map
from kb_ingest.encoder import Encoder, load_encoder, resolve_encoder_name
from kb_ingest.encoder_backends import read_manifest
from kb_ingest.encoder_registry import EncoderRegistry
from kb_ingest.filters import UmlsFilters, normalise
from kb_ingest.ingest import (
    BatchWriter,
    IngestCounts,
    TuiIndex,
    categorise,
    check_expected_rows,
    columns_of,
    dataset_cui,
    iter_mrconso_concepts,
    sha256_of,
)
from kb_ingest.rrf import (
    BadLineReport,
    RrfReader,
    check_file,
    detect_release,
    find_beside,
    is_gzip,
    read_mrfiles,
    rrf_name,
)
from kb_ingest.snapshots import SnapshotInfo, SnapshotStore, new_snapshot_id, now_iso
from kb_ingest.vector_store import VectorStore, collection_name, open_store
from vaner.cancel import StopCheck, check_stop
from vaner.categories import Category
from vaner.corpus import read_conll
from vaner.errors import FailedPrecondition, InvalidArgument, NotFound, VanerError
from vaner.locks import exclusive_lock
from vaner.progress import ProgressCallback, ProgressTracker
from vaner.settings import Settings

log = logging.getLogger(__name__)

MAX_K = 1000
LATEST_TTL_S = 2.0  # how long another process's new `latest` may stay unseen by a running server
SCORE_DECIMALS = 6
SEARCH_BATCH = 256  # queries encoded and searched per round; cancellation is checked between rounds
CONCEPT_OVERSAMPLE = 4  # terms fetched per wanted concept when hits are merged by concept


@dataclass(frozen=True)
class ConceptHit:
    """One search result. ``name`` is the matched term; ``preferred`` the concept's preferred name;
    ``sab``/``code`` the source vocabulary and its own id for the matched term (``DOID``,
    ``DOID:1612``), empty for dataset strings and snapshots ingested before they were stored."""

    cui: str
    name: str
    categories: tuple[Category, ...]
    tuis: tuple[str, ...]
    source: str
    score: float
    preferred: str = ""
    sab: str = ""
    code: str = ""

    def to_json(self) -> dict:
        return {"cui": self.cui, "name": self.name, "preferred": self.preferred,
                "categories": [c.value for c in self.categories], "tuis": list(self.tuis),
                "source": self.source, "sab": self.sab, "code": self.code,
                "score": round(self.score, SCORE_DECIMALS)}


def hit_sort_key(hit: ConceptHit) -> tuple:
    """Documented tie-break: score (descending, rounded to 6 decimals), then CUI, then name."""
    return (-round(hit.score, SCORE_DECIMALS), hit.cui, hit.name)


def best_per_concept(hits: list[ConceptHit], k: int) -> list[ConceptHit]:
    """The best-scoring term of each concept, at most ``k``, in :func:`hit_sort_key` order: a
    concept with many synonyms would otherwise fill the whole top-k with itself."""
    seen: set[str] = set()
    out: list[ConceptHit] = []
    for hit in sorted(hits, key=hit_sort_key):
        if hit.cui not in seen:
            seen.add(hit.cui)
            out.append(hit)
            if len(out) == k:
                break
    return out


def umls_inputs(mrconso: Path, mrsty: Path | None = None) -> tuple[Path, Path, Path]:
    """Every file a UMLS ingest of ``mrconso`` reads: MRCONSO.RRF, MRSTY.RRF (beside it unless
    given) and MRFILES.RRF (beside it, optional), each plain or ``.gz``. One list, so a caller that
    must vet paths (the KB service's allowed roots) vets exactly what will be opened."""
    mrconso = Path(mrconso)
    beside = mrconso.parent
    sty = Path(mrsty) if mrsty else (find_beside(mrconso, "MRSTY.RRF") or beside / "MRSTY.RRF")
    return mrconso, sty, find_beside(mrconso, "MRFILES.RRF") or beside / "MRFILES.RRF"


def _hit_from_payload(payload: dict, score: float) -> ConceptHit:
    cats = []
    for c in payload.get("categories", []):
        with contextlib.suppress(InvalidArgument):
            cats.append(Category.parse(c))
    return ConceptHit(cui=str(payload.get("cui", "")), name=str(payload.get("name", "")),
                      categories=tuple(cats), tuis=tuple(payload.get("tuis", [])),
                      source=str(payload.get("source", "")), score=float(score),
                      preferred=str(payload.get("preferred", "")), sab=str(payload.get("sab", "")),
                      code=str(payload.get("code", "")))


class KnowledgeBase:
    def __init__(self, settings: Settings, *, store: VectorStore | None = None,
                 encoder_loader: Callable[[str | None], Encoder] | None = None,
                 category_map: CategoryMap | None = None):
        self.settings = settings
        self._store = store
        self._snapshots: SnapshotStore | None = None
        self._load_encoder = encoder_loader or (lambda name, **opts: load_encoder(name, home=settings.home, **opts))
        self._encoder_registry: EncoderRegistry | None = None
        self._cmap = category_map
        self._lock = threading.RLock()
        self._info_cache: dict[str, SnapshotInfo] = {}
        self._latest: tuple[float, str | None] = (0.0, None)

    # ---- lazily opened parts (opening PostgreSQL or Qdrant should not happen at import) ----
    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                self.settings.ensure_home()
                self._store = open_store(self.settings)
            return self._store

    @property
    def db(self) -> SnapshotStore:
        with self._lock:
            if self._snapshots is None:
                self.settings.ensure_home()
                self._snapshots = SnapshotStore(self.settings.sql_url)
            return self._snapshots

    @property
    def encoders(self) -> EncoderRegistry:
        """SQL records of the encoders snapshots were built with (provenance; kb_encoders)."""
        with self._lock:
            if self._encoder_registry is None:
                self.settings.ensure_home()
                self._encoder_registry = EncoderRegistry(self.settings.sql_url)
            return self._encoder_registry

    def load_encoder(self, name: str | None, *, max_seq_length: int | None = None,
                     batch_size: int | None = None) -> Encoder:
        """The encoder for a name, with the user's options; an injected loader (tests) gets the name only."""
        enc = self._load_encoder(name) if max_seq_length is None else \
            self._load_encoder(name, max_seq_length=max_seq_length)
        return enc.with_batch_size(batch_size)

    def _record_encoder(self, enc: Encoder) -> dict:
        """What the snapshot stores about its encoder (filters["encoder"]); the encoder's own row
        goes to kb_encoders the first time a snapshot uses it."""
        record = enc.record()
        with contextlib.suppress(VanerError):  # provenance is an addition: a read-only DB must not stop an ingest
            self.encoders.record(record, provenance=read_manifest(Path(enc.location)) if enc.location else {},
                                 created_at=now_iso())
        return {k: v for k, v in record.items() if k != "location"}

    @property
    def category_map(self) -> CategoryMap:
        if self._cmap is None:
            self._cmap = default_map()
        return self._cmap

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # ---- snapshots ----
    def snapshots(self) -> list[SnapshotInfo]:
        return self.db.list()

    def get_snapshot(self, ref: str = "latest") -> SnapshotInfo:
        return self.db.get(ref or "latest")

    def _resolve(self, ref: str) -> SnapshotInfo:
        """Snapshot for a search: complete ones are immutable, so their records are cached and
        only the ``latest`` pointer is re-read (at most every LATEST_TTL_S seconds)."""
        ref = (ref or "latest").strip()
        if ref == "latest":
            ts, sid = self._latest
            if sid is None or time.monotonic() - ts > LATEST_TTL_S:
                sid = self.db.latest_id()
                if sid is None:
                    raise NotFound("no complete KB snapshot yet; run `kb-ingest umls PATH/MRCONSO.RRF` first")
                self._latest = (time.monotonic(), sid)
            ref = sid
        info = self._info_cache.get(ref)
        if info is None:
            info = self.db.get(ref)
            if info.status != "complete":
                raise FailedPrecondition(f"snapshot {info.id} is {info.status}, not complete; it cannot be searched")
            self._info_cache[ref] = info
        return info

    def _invalidate(self) -> None:
        self._latest = (0.0, None)
        self._info_cache.clear()

    def drop(self, ref: str) -> None:
        """Delete a snapshot's row and vectors; if it was latest, the previous complete one takes over."""
        info = self.get_snapshot(ref)
        building = info.status == "building"  # only a dead ingest's leftovers may go, never a live one's
        guard = self._ingest_lock(what=f"drop {info.id}") if building else contextlib.nullcontext()
        with guard:
            self.store.drop(info.collection or collection_name(info.id))
            self.db.delete(info.id)
        self._invalidate()

    # ---- search ----
    def encoder_for(self, snapshot: str = "latest") -> Encoder:
        """The snapshot's encoder with the options it was ingested with (e.g. max sequence length)."""
        info = self._resolve(snapshot)
        options = (info.filters.get("encoder") or {}).get("options") or {}
        return self.load_encoder(info.encoder, max_seq_length=options.get("max_seq_length"))

    def search(self, texts: list[str] | None = None, *, vectors: np.ndarray | None = None,
               snapshot: str = "latest", categories: list[Category] | None = None, k: int = 10,
               encoder: str | None = None, one_per_concept: bool = False,
               should_stop: StopCheck | None = None) -> list[list[ConceptHit]]:
        """Top-k terms per query, best first (ties: see :func:`hit_sort_key`); with
        ``one_per_concept``, the best term of each of the top-k concepts instead.

        ``encoder``, when given, must be the snapshot's: vectors from another model would be
        compared in a different space and give confident nonsense, so it is an error instead.
        Queries run in rounds of ``SEARCH_BATCH``; ``should_stop`` is asked before each round.
        """
        if texts is not None and vectors is not None:
            raise InvalidArgument("search: give texts or vectors, not both")
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidArgument(f"search: k must be between 1 and {MAX_K}, got {k!r}")
        if texts is None and vectors is None:
            raise InvalidArgument("search: give texts or vectors")
        n = len(texts) if texts is not None else len(vectors)  # type: ignore[arg-type]
        if n == 0:
            return []
        info = self._resolve(snapshot)
        if encoder:
            wanted = resolve_encoder_name(encoder, self.settings.home)[0]
            if wanted != info.encoder:
                raise FailedPrecondition(f"snapshot {info.id} was built with encoder {info.encoder!r}; "
                                         f"searching it with {wanted!r} would compare different vector spaces")
        cats = [Category.parse(c).value for c in categories] if categories else None
        results: list[list[ConceptHit]] = [[] for _ in range(n)]
        arr: np.ndarray | None = None
        if texts is not None:
            keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        else:
            wide = self._query_vectors(vectors, info).astype(np.float64)  # float64: no overflow in the norm
            norms = np.linalg.norm(wide, axis=1)
            keep = [i for i in range(n) if norms[i] > 0]  # a zero vector points nowhere: no hits
            arr = (wide / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
        fetch = min(k * CONCEPT_OVERSAMPLE, MAX_K * CONCEPT_OVERSAMPLE) if one_per_concept else k
        collection = info.collection or collection_name(info.id)
        for start in range(0, len(keep), SEARCH_BATCH):
            check_stop(should_stop, "search")
            rows = keep[start:start + SEARCH_BATCH]
            if arr is None:
                vecs = self.encoder_for(info.id).encode([texts[i] for i in rows])  # type: ignore[index]
            else:
                vecs = arr[rows]
            stored = self.store.search(collection, vecs, fetch, cats)
            for i, found in zip(rows, stored, strict=True):
                hits = [_hit_from_payload(h.payload, h.score) for h in found]
                results[i] = best_per_concept(hits, k) if one_per_concept else sorted(hits, key=hit_sort_key)
        return results

    @staticmethod
    def _query_vectors(vectors: np.ndarray, info: SnapshotInfo) -> np.ndarray:
        """Query vectors as a float32 matrix of the snapshot's dimension, all values finite; a bad
        vector is the caller's mistake (INVALID_ARGUMENT) and is named by its position."""
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except ValueError:
            raise InvalidArgument(f"search: vectors must all have {info.dimension} values "
                                  f"(snapshot {info.id}, encoder {info.encoder!r})") from None
        if arr.ndim != 2 or arr.shape[1] != info.dimension:
            raise InvalidArgument(f"search: snapshot {info.id} holds {info.dimension}-d vectors from "
                                  f"{info.encoder!r}; got shape {tuple(arr.shape)}")
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise InvalidArgument(f"search: vectors[{int(bad[0])}] holds NaN or infinite values "
                                  f"({len(bad)} such vector(s))")
        return arr

    def sample_random(self, n: int, *, snapshot: str = "latest", categories: list[Category] | None = None,
                      seed: int = 0) -> list[ConceptHit]:
        """Uniformly random terms (the paper's 'random DBR' ablation); the same seed and snapshot
        give the same list. Score is 0.0."""
        if n < 0:
            raise InvalidArgument(f"sample_random: n must be >= 0, got {n}")
        info = self._resolve(snapshot)
        if n == 0 or info.terms == 0:
            return []
        wanted = {Category.parse(c) for c in categories} if categories else None
        rng = np.random.default_rng(seed)
        order = rng.permutation(info.terms)
        out: list[ConceptHit] = []
        step = max(4 * n, 256)
        coll = info.collection or collection_name(info.id)
        for start in range(0, len(order), step):
            ids = order[start:start + step].tolist()
            by_id = {i: p for i, p, _ in self.store.retrieve(coll, ids)}
            for i in ids:
                p = by_id.get(i)
                if p is None:
                    continue
                hit = _hit_from_payload(p, 0.0)
                if wanted is None or wanted.intersection(hit.categories):
                    out.append(hit)
                    if len(out) == n:
                        return out
        return out

    # ---- ingest ----
    def _ingest_lock(self, wait: bool = False, what: str = "ingest") -> contextlib.AbstractContextManager:
        """One ingest at a time per state directory, CLI and service alike."""
        return exclusive_lock(self.settings, "kb-ingest", label="KB ingest", doing=what, wait=wait)

    def _cleanup_stale(self) -> None:
        """Under the ingest lock no other ingest runs, so a 'building' row is a dead one (killed
        process, power cut): mark it failed and free its vectors so reruns start clean."""
        for info in self.db.building():
            log.warning("snapshot %s was left building by a process that died; marking it failed", info.id)
            with contextlib.suppress(VanerError):
                self.store.drop(info.collection or collection_name(info.id))
            self.db.update(info.id, status="failed", error="interrupted: the ingest process stopped",
                           finished_at=now_iso())

    @contextlib.contextmanager
    def _building(self, info: SnapshotInfo) -> Iterator[SnapshotInfo]:
        """Create the snapshot row and collection; on any failure mark it failed and drop its data."""
        self.db.create(info)
        try:
            yield info
        except BaseException as exc:
            message = exc.message if isinstance(exc, VanerError) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                self.store.drop(info.collection)
            with contextlib.suppress(Exception):
                self.db.update(info.id, status="failed", error=message[:2000], finished_at=now_iso())
            raise
        finally:
            self._invalidate()

    def ingest_umls(self, mrconso: Path, *, mrsty: Path | None = None, languages=("ENG",), include_sabs=(),
                    exclude_sabs=(), keep_suppressed=False, encoder: str | None = None, strict=False,
                    progress: ProgressCallback | None = None, should_stop: StopCheck | None = None,
                    max_seq_length: int | None = None, encode_batch_size: int | None = None) -> SnapshotInfo:
        """Build a snapshot from a UMLS release: MRCONSO.RRF or MRCONSO.RRF.gz, with MRSTY/MRFILES
        beside it in either form. ``should_stop`` is asked between encode batches and stages, and a
        stop fails the snapshot cleanly (``latest`` untouched)."""
        filters = UmlsFilters(tuple(languages or ("ENG",)), tuple(include_sabs or ()), tuple(exclude_sabs or ()),
                              keep_suppressed)
        mrconso = check_file(Path(mrconso), "MRCONSO.RRF")
        given_mrsty = mrsty
        _, mrsty, mrfiles_path = umls_inputs(mrconso, mrsty)
        if given_mrsty is None and not mrsty.exists():
            raise NotFound(f"{mrsty}: no such file, nor MRSTY.RRF.gz (semantic types are needed to categorise "
                           "concepts; pass --mrsty PATH)")
        mrsty = check_file(mrsty, "MRSTY.RRF")
        mrfiles = read_mrfiles(mrfiles_path) if mrfiles_path.is_file() else None
        for path in (mrconso, mrsty):  # a truncated copy fails now, not after hours of encoding
            expected = mrfiles.get(rrf_name(path)) if mrfiles else None
            # MRFILES gives uncompressed sizes: a .gz is checked by its row count and gzip's own CRC instead
            if expected is not None and expected.bytes and not is_gzip(path) and path.stat().st_size < expected.bytes:
                raise InvalidArgument(f"{path}: {path.stat().st_size} bytes but MRFILES.RRF expects {expected.bytes}; "
                                      "the file looks truncated (interrupted download or unzip?)")
        conso_cols = columns_of(mrfiles, "MRCONSO.RRF")
        sty_cols = columns_of(mrfiles, "MRSTY.RRF")
        store = self.store
        store.health()  # an unreachable Qdrant fails before minutes of work, not after
        enc = self.load_encoder(encoder, max_seq_length=max_seq_length, batch_size=encode_batch_size)
        release = detect_release(mrconso)
        with self._ingest_lock():
            self._cleanup_stale()
            sid = new_snapshot_id()
            info = SnapshotInfo(id=sid, status="building", latest=False, kind="umls", umls_release=release,
                                encoder=enc.name, dimension=enc.dimension, concepts=0, terms=0,
                                filters={**filters.to_dict(), "semantic_types": self.category_map.source,
                                         "encoder": self._record_encoder(enc)},
                                created_at=now_iso(), collection=collection_name(sid))
            with self._building(info):
                t_start = time.perf_counter()
                store.create(info.collection, enc.dimension)
                sty_report = BadLineReport(strict=strict)
                counts = IngestCounts()
                sty_hash, conso_hash = hashlib.sha256(), hashlib.sha256()
                sty_expected = mrfiles["MRSTY.RRF"].rows if mrfiles and "MRSTY.RRF" in mrfiles else None
                tui_index, sty_lines = TuiIndex.from_mrsty(mrsty, sty_report, sty_cols, progress, sty_expected,
                                                           hasher=sty_hash)
                check_expected_rows(mrsty, sty_lines, sty_expected)
                sty_report.check(sty_lines, mrsty)
                check_stop(should_stop, "ingest")
                report = BadLineReport(strict=strict)
                conso_expected = mrfiles["MRCONSO.RRF"].rows if mrfiles and "MRCONSO.RRF" in mrfiles else None
                reader = RrfReader(mrconso, conso_cols, report, required=("CUI", "STR"), hasher=conso_hash)
                rows_tracker = ProgressTracker("MRCONSO.RRF", conso_expected, progress)
                terms_tracker = ProgressTracker("encode", None, progress)
                writer = BatchWriter(enc.encode, lambda ids, v, p: store.upsert(info.collection, ids, v, p),
                                     tracker=terms_tracker, should_stop=should_stop)
                source = f"umls:{release}" if release else "umls"
                for concept in categorise(iter_mrconso_concepts(reader, filters, counts, rows_tracker),
                                          tui_index, self.category_map, counts):
                    counts.concepts += 1
                    writer.add_concept(concept, source)
                writer.flush()
                check_stop(should_stop, "ingest")
                rows_tracker.finish()
                terms_tracker.finish()
                check_expected_rows(mrconso, reader.lines, conso_expected)
                report.check(reader.lines, mrconso)
                for rep in (sty_report, report):
                    for reason, c in rep.counts.items():
                        counts.skip(f"malformed_{reason}", c)
                ProgressTracker("index", None, progress).finish("building the HNSW index")
                store.finish(info.collection)
                sources = [
                    {"path": str(mrconso.resolve()), "sha256": conso_hash.hexdigest(), "bytes": mrconso.stat().st_size},
                    {"path": str(mrsty.resolve()), "sha256": sty_hash.hexdigest(), "bytes": mrsty.stat().st_size},
                ]
                wall = time.perf_counter() - t_start
                timing = {"wall_seconds": round(wall, 3), "encode_seconds": round(writer.encode_seconds, 3),
                          "upsert_seconds": round(writer.upsert_seconds, 3), "rows": reader.lines,
                          "mrsty_rows": sty_lines,
                          "malformed_examples": [str(b) for b in sty_report.examples + report.examples]}
                self.db.complete(sid, concepts=counts.concepts, terms=writer.written, skipped=counts.skipped,
                                 sources=sources, filters={**info.filters, "stats": timing})
        return self.get_snapshot(sid)

    def ingest_dataset(self, paths: list[Path], category: Category, *, encoder: str | None = None,
                       progress: ProgressCallback | None = None, base: str | None = "latest",
                       should_stop: StopCheck | None = None) -> SnapshotInfo:
        """Add the entity strings of CoNLL files (the paper's KB also holds the training splits'
        entities). The new snapshot starts as a copy of ``base`` (default: latest, when one exists
        and uses the same encoder; ``None`` for a dataset-only snapshot), so retrieval keeps UMLS."""
        category = Category.parse(category)
        if not paths:
            raise InvalidArgument("dataset: give at least one CoNLL file")
        files = [check_file(Path(p), "CoNLL training file") for p in paths]
        base_info: SnapshotInfo | None = None
        if base:
            try:
                base_info = self._resolve(base)
            except NotFound:
                if base != "latest":
                    raise
        if encoder is None and base_info is not None:
            encoder = base_info.encoder
        same = base_info is not None and encoder == base_info.encoder
        base_opts = ((base_info.filters.get("encoder") or {}).get("options") or {}) if same else {}  # type: ignore[union-attr]
        enc = self.load_encoder(encoder, max_seq_length=base_opts.get("max_seq_length"))
        if base_info is not None and base_info.encoder != enc.name:
            if base != "latest":
                raise FailedPrecondition(f"base snapshot {base_info.id} uses encoder {base_info.encoder!r}, "
                                         f"not {enc.name!r}")
            log.warning("latest snapshot uses encoder %s, not %s: the new snapshot holds only the dataset",
                        base_info.encoder, enc.name)
            base_info = None
        entities: dict[str, tuple[str, str]] = {}  # normalised -> (text, source)
        duplicates = 0
        for f in files:
            source = f"dataset:{f.parent.name}/{f.name}" if f.parent.name else f"dataset:{f.name}"
            for sent in read_conll(f, category):
                for s, e in sent.spans():
                    text = " ".join(sent.words[s:e])
                    key = normalise(text)
                    if not key:
                        continue
                    if key in entities:
                        duplicates += 1
                    else:
                        entities[key] = (text, source)
        store = self.store
        store.health()
        with self._ingest_lock():
            self._cleanup_stale()
            sid = new_snapshot_id()
            info = SnapshotInfo(id=sid, status="building", latest=False, kind="dataset", umls_release=(
                base_info.umls_release if base_info else ""), encoder=enc.name, dimension=enc.dimension,
                concepts=0, terms=0, filters={"category": category.value, "encoder": self._record_encoder(enc),
                                              "base_snapshot": base_info.id if base_info else None},
                created_at=now_iso(), collection=collection_name(sid))
            with self._building(info):
                store.create(info.collection, enc.dimension)
                next_id = 0
                concepts = 0
                skipped: dict[str, int] = {}
                if base_info is not None:
                    next_id, concepts = self._copy_points(base_info, info.collection, progress, should_stop)
                    skipped.update(base_info.skipped)
                tracker = ProgressTracker("encode", len(entities), progress)
                writer = BatchWriter(enc.encode, lambda ids, v, p: store.upsert(info.collection, ids, v, p),
                                     first_id=next_id, tracker=tracker, should_stop=should_stop)
                for text, source in entities.values():
                    writer.add(text, {"cui": dataset_cui(text, category), "name": text, "preferred": text,
                                      "categories": [category.value], "tuis": [], "source": source})
                writer.flush()
                check_stop(should_stop, "ingest")
                tracker.finish()
                store.finish(info.collection)
                skipped["duplicate_string"] = skipped.get("duplicate_string", 0) + duplicates
                sources = [{"path": str(f.resolve()), "sha256": sha256_of(f), "bytes": f.stat().st_size} for f in files]
                if base_info is not None:
                    sources = base_info.sources + sources
                self.db.complete(sid, concepts=concepts + len(entities), terms=writer.next_id, skipped=skipped,
                                 sources=sources)
        return self.get_snapshot(sid)

    def _copy_points(self, base: SnapshotInfo, collection: str, progress: ProgressCallback | None,
                     should_stop: StopCheck | None = None) -> tuple[int, int]:
        """Copy a complete snapshot's points (vectors included, no re-encoding) into a new collection."""
        src = base.collection or collection_name(base.id)
        total = base.terms
        tracker = ProgressTracker("copy base", total, progress)
        step = 2048
        for start in range(0, total, step):
            check_stop(should_stop, "ingest")
            recs = self.store.retrieve(src, list(range(start, min(start + step, total))), with_vectors=True)
            if recs:
                self.store.upsert(collection, [r[0] for r in recs], np.stack([r[2] for r in recs]),
                                  [r[1] for r in recs])
            tracker.advance(len(recs))
        tracker.finish()
        return total, base.concepts

    def iter_points(self, snapshot: str = "latest", step: int = 2048) -> Iterator[tuple[int, dict]]:
        """Every stored term of a complete snapshot as (id, payload), in id order (ids are dense)."""
        info = self._resolve(snapshot)
        coll = info.collection or collection_name(info.id)
        for start in range(0, info.terms, step):
            for pid, payload, _ in sorted(self.store.retrieve(coll, list(range(start, min(start + step, info.terms)))),
                                          key=lambda r: r[0]):
                yield pid, payload

    def reencode(self, snapshot: str, encoder: str, *, progress: ProgressCallback | None = None,
                 note: dict | None = None) -> SnapshotInfo:
        """A new snapshot with the same terms and payloads as ``snapshot``, encoded by ``encoder``
        (after ``kb-ingest align``, or to move a KB to a faster encoder without its RRF files).
        It becomes latest; ``note`` is recorded in its filters (e.g. the alignment run)."""
        base = self._resolve(snapshot)
        enc = self.load_encoder(encoder)
        store = self.store
        store.health()
        with self._ingest_lock():
            self._cleanup_stale()
            sid = new_snapshot_id()
            filters = {k: v for k, v in base.filters.items() if k not in ("stats", "encoder")}
            info = SnapshotInfo(id=sid, status="building", latest=False, kind=base.kind, umls_release=base.umls_release,
                                encoder=enc.name, dimension=enc.dimension, concepts=0, terms=0,
                                filters={**filters, "encoder": self._record_encoder(enc), "reencoded_from": base.id,
                                         **({"alignment": note} if note else {})},
                                created_at=now_iso(), collection=collection_name(sid))
            with self._building(info):
                t0 = time.perf_counter()
                store.create(info.collection, enc.dimension)
                tracker = ProgressTracker("encode", base.terms, progress)
                writer = BatchWriter(enc.encode, lambda ids, v, p: store.upsert(info.collection, ids, v, p),
                                     tracker=tracker)
                for _, payload in self.iter_points(base.id):
                    writer.add(str(payload.get("name", "")), payload)
                writer.flush()
                tracker.finish()
                if writer.written != base.terms:
                    raise FailedPrecondition(f"snapshot {base.id} lists {base.terms} terms but {writer.written} "
                                             "were read back from its vectors")
                store.finish(info.collection)
                stats = {"wall_seconds": round(time.perf_counter() - t0, 3),
                         "encode_seconds": round(writer.encode_seconds, 3),
                         "upsert_seconds": round(writer.upsert_seconds, 3)}
                self.db.complete(sid, concepts=base.concepts, terms=writer.written, skipped=base.skipped,
                                 sources=base.sources, filters={**info.filters, "stats": stats})
        return self.get_snapshot(sid)

    def align(self, snapshot: str = "latest", *, base: str | None = None, config: object | None = None,
              progress: ProgressCallback | None = None, reencode: bool = True) -> tuple[object, SnapshotInfo | None]:
        """Train an encoder on the snapshot's synonym sets (kb_ingest/align.py), record it, and
        re-encode the snapshot with it into a new latest snapshot. Returns (AlignResult, snapshot)."""
        from kb_ingest.align import AlignConfig, align_encoder, synonym_sets
        from kb_ingest.encoder import encoders_root

        info = self._resolve(snapshot)
        enc = self.load_encoder(base or info.encoder)
        sets = synonym_sets(p for _, p in self.iter_points(info.id))
        name = self.encoders.next_name(enc.name)
        while (encoders_root(self.settings.home) / name).exists():  # a folder whose SQL row was lost
            stem, n = name.rsplit("-", 1)
            name = f"{stem}-{int(n) + 1}"
        result = align_encoder(enc, sets, name, home=self.settings.home, cfg=config or AlignConfig(),
                               snapshot_id=info.id, progress=progress)
        aligned = self.load_encoder(name)
        self._record_encoder(aligned)
        if not reencode:
            return result, None
        note = {"encoder": name, "base_encoder": enc.name, "steps": result.steps,
                "seconds": round(result.seconds, 1), "margin_before": result.before["margin"],
                "margin_after": result.after["margin"]}
        return result, self.reencode(info.id, name, progress=progress, note=note)

    def health(self) -> dict[str, str]:
        details = dict(self.store.health())
        try:
            latest = self.db.latest_id()
            details["latest_snapshot"] = latest or ""
            details["sql"] = "ok"
        except VanerError as exc:
            details["sql"] = exc.message
            raise
        return details

