"""gRPC face of the knowledge base: validate, convert, call :class:`kb_ingest.kb.KnowledgeBase`, convert.

Nothing here knows how ingest or search work, and nothing sets a status code: domain errors
(:class:`vaner.errors.VanerError`) propagate and ``services/interceptors.py`` maps them.
Ingest runs the core in a worker thread and streams its progress events. Search and Ingest hand
the core a ``should_stop`` (services/calls.py): when the client goes away, its deadline passes or
the server's shutdown grace ends, the work stops at the next batch (an ingest then fails cleanly:
snapshot marked failed, ``latest`` untouched). Ingest reads only server paths under
``ingest.allowed_roots`` and its errors never quote file content (services/server_files.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import numpy as np

from kb_ingest.kb import umls_inputs
from services.calls import call_ended
from services.convert import category_filter, hit_to_proto
from services.server_files import AllowedRoots, redact_content
from vaner import __version__
from vaner.categories import Category
from vaner.errors import Cancelled, InvalidArgument, PermissionDenied, ResourceExhausted, VanerError
from vaner.progress import ProgressEvent
from vaner.progress_proto import progress_to_proto
from vaner.streams import ThreadStream
from vaner.v1 import common_pb2, kb_pb2, kb_pb2_grpc

log = logging.getLogger(__name__)

_STATUS = {"building": common_pb2.BUILDING, "complete": common_pb2.COMPLETE, "failed": common_pb2.FAILED}
DEFAULT_K = 10
MAX_SEARCH_QUERIES = 1024  # default of kb.max_search_queries


def snapshot_to_proto(info) -> common_pb2.Snapshot:  # noqa: ANN001 - kb_ingest.snapshots.SnapshotInfo
    """The wire form; quoted file content in a failed snapshot's error and in malformed-line
    examples is withheld, as in a live error."""
    return common_pb2.Snapshot(
        id=info.id, status=_STATUS.get(info.status, common_pb2.SNAPSHOT_STATUS_UNSPECIFIED), latest=info.latest,
        kind=info.kind, umls_release=info.umls_release, encoder=info.encoder, dimension=info.dimension,
        concepts=info.concepts, terms=info.terms, skipped={k: int(v) for k, v in info.skipped.items()},
        sources=[common_pb2.SourceFile(path=s.get("path", ""), sha256=s.get("sha256", ""), bytes=int(s.get("bytes", 0)))
                 for s in info.sources],
        filters_json=json.dumps(_redacted_filters(info.filters), sort_keys=True), created_at=info.created_at,
        error=redact_content(info.error or ""))


def _redacted_filters(filters: dict) -> dict:
    """Ingest statistics keep examples of malformed lines; on the wire they lose quoted content."""
    stats = filters.get("stats") if isinstance(filters, dict) else None
    if not isinstance(stats, dict) or not stats.get("malformed_examples"):
        return filters
    examples = [redact_content(str(e)) for e in stats["malformed_examples"]]
    return {**filters, "stats": {**stats, "malformed_examples": examples}}


class KnowledgeBaseServicer(kb_pb2_grpc.KnowledgeBaseServicer):
    def __init__(self, kb, *, allowed_roots: AllowedRoots | None = None,  # noqa: ANN001 - KnowledgeBase or double
                 max_search_queries: int = MAX_SEARCH_QUERIES):
        self.kb = kb
        self.allowed_roots = allowed_roots or AllowedRoots(())
        self.max_search_queries = max_search_queries

    # -- Ingest --------------------------------------------------------------------------
    def _ingest_call(self, request: kb_pb2.IngestRequest):  # noqa: ANN202
        which = request.WhichOneof("source")
        encoder = request.encoder or None
        check = self.allowed_roots.check
        if which == "umls":
            u = request.umls
            if not u.mrconso_path.strip():
                raise InvalidArgument("Ingest: umls.mrconso_path is empty")
            mrconso = check(u.mrconso_path, "Ingest: umls.mrconso_path")
            mrsty = check(u.mrsty_path, "Ingest: umls.mrsty_path") if u.mrsty_path else None
            for implied in umls_inputs(mrconso, mrsty)[1:]:  # read from beside MRCONSO.RRF: vet them too
                check(str(implied), "Ingest: umls.mrconso_path (a file beside it)")
            return lambda progress, should_stop: self.kb.ingest_umls(
                mrconso, mrsty=mrsty, languages=tuple(u.languages) or ("ENG",), include_sabs=tuple(u.include_sabs),
                exclude_sabs=tuple(u.exclude_sabs), keep_suppressed=u.keep_suppressed, encoder=encoder,
                strict=request.strict, progress=progress, should_stop=should_stop)
        if which == "dataset":
            d = request.dataset
            if not d.paths:
                raise InvalidArgument("Ingest: dataset.paths is empty")
            if d.category == common_pb2.CATEGORY_UNSPECIFIED:
                raise InvalidArgument("Ingest: dataset.category is required "
                                      f"({', '.join(c.value for c in Category)})")
            category = Category.from_proto(d.category)
            paths = [check(p, f"Ingest: dataset.paths[{i}]") for i, p in enumerate(d.paths)]
            return lambda progress, should_stop: self.kb.ingest_dataset(
                paths, category, encoder=encoder, progress=progress, should_stop=should_stop)
        raise InvalidArgument("Ingest: set umls or dataset")

    def Ingest(self, request, context) -> Iterator[kb_pb2.IngestEvent]:  # noqa: ANN001, N802
        call = self._ingest_call(request)
        should_stop = call_ended(context)

        def work(emit: Callable[[ProgressEvent], None]):  # noqa: ANN202
            return call(emit, should_stop)

        # a slow client must not stall the ingest: intermediate events beyond 1000 are dropped
        stream = ThreadStream(work, name="kb-ingest", max_pending=1000)
        try:
            for ev in stream:
                yield kb_pb2.IngestEvent(progress=progress_to_proto(ev))
        except VanerError as exc:
            withheld = _withheld(exc)
            if withheld is exc:
                raise
            raise withheld from exc
        yield kb_pb2.IngestEvent(done=snapshot_to_proto(stream.result))

    # -- snapshots -----------------------------------------------------------------------
    def ListSnapshots(self, request, context) -> kb_pb2.ListSnapshotsResponse:  # noqa: ANN001, N802
        return kb_pb2.ListSnapshotsResponse(snapshots=[snapshot_to_proto(i) for i in self.kb.snapshots()])

    def GetSnapshot(self, request, context) -> common_pb2.Snapshot:  # noqa: ANN001, N802
        return snapshot_to_proto(self.kb.get_snapshot(request.id.strip() or "latest"))

    # -- search --------------------------------------------------------------------------
    def Search(self, request, context) -> kb_pb2.SearchResponse:  # noqa: ANN001, N802
        if request.texts and request.vectors:
            raise InvalidArgument("Search: give texts or vectors, not both")
        n = len(request.texts) or len(request.vectors)
        if n == 0:
            raise InvalidArgument("Search: give at least one text or vector")
        if n > self.max_search_queries:
            raise ResourceExhausted(f"Search: {n} {'texts' if request.texts else 'vectors'} in one call; "
                                    f"the limit is {self.max_search_queries} (kb.max_search_queries)")
        k = request.k or DEFAULT_K
        if k < 0:
            raise InvalidArgument(f"Search: k must be positive, got {k}")
        cats = category_filter(request.categories)
        snapshot = request.snapshot.strip() or "latest"
        options = {"snapshot": snapshot, "categories": cats, "k": k, "one_per_concept": not request.per_term,
                   "should_stop": call_ended(context)}
        if request.vectors:
            dims = {len(v.values) for v in request.vectors}
            if len(dims) != 1:
                raise InvalidArgument(f"Search: vectors have different lengths {sorted(dims)}")
            arr = np.asarray([list(v.values) for v in request.vectors], dtype=np.float32)
            results = self.kb.search(vectors=arr, **options)
        else:
            results = self.kb.search(list(request.texts), **options)
        return kb_pb2.SearchResponse(results=[kb_pb2.SearchHits(hits=[hit_to_proto(h) for h in hits])
                                              for hits in results])

    # -- health --------------------------------------------------------------------------
    def Health(self, request, context) -> kb_pb2.HealthResponse:  # noqa: ANN001, N802
        """Reports instead of failing: a health probe wants to read *which* part is down."""
        try:
            details = {k: str(v) for k, v in self.kb.health().items()}
            ok = True
        except VanerError as exc:
            details = {"error": exc.message}
            ok = False
        return kb_pb2.HealthResponse(ok=ok, service="kb", version=__version__, details=details)


def _withheld(exc: BaseException) -> BaseException:
    """An ingest error as the client may see it: quoted file content withheld (the server log
    keeps the full message). Refusals and cancellations carry no content and pass unchanged."""
    if not isinstance(exc, VanerError) or isinstance(exc, (Cancelled, PermissionDenied)):
        return exc
    safe = redact_content(exc.message)
    if safe == exc.message:
        return exc
    log.info("ingest failed: %s", exc.message, extra={"event": "ingest_failed"})
    clean = type(exc)(safe)
    clean.__cause__ = exc
    return clean
