"""gRPC face of the knowledge base: validate, convert, call :class:`kb_ingest.kb.KnowledgeBase`, convert.

Nothing here knows how ingest or search work, and nothing sets a status code: domain errors
(:class:`vaner.errors.VanerError`) propagate and ``services/interceptors.py`` maps them.
Ingest runs the core in a worker thread and streams its progress events; if the client goes
away, the next progress event raises :class:`vaner.errors.Cancelled` inside the ingest, which then
fails cleanly (snapshot marked failed, ``latest`` untouched).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from services.convert import category_filter, hit_to_proto
from vaner import __version__
from vaner.categories import Category
from vaner.errors import Cancelled, InvalidArgument, VanerError
from vaner.progress import ProgressEvent
from vaner.progress_proto import progress_to_proto
from vaner.streams import ThreadStream
from vaner.v1 import common_pb2, kb_pb2, kb_pb2_grpc

_STATUS = {"building": common_pb2.BUILDING, "complete": common_pb2.COMPLETE, "failed": common_pb2.FAILED}
DEFAULT_K = 10


def snapshot_to_proto(info) -> common_pb2.Snapshot:  # noqa: ANN001 - kb_ingest.snapshots.SnapshotInfo
    return common_pb2.Snapshot(
        id=info.id, status=_STATUS.get(info.status, common_pb2.SNAPSHOT_STATUS_UNSPECIFIED), latest=info.latest,
        kind=info.kind, umls_release=info.umls_release, encoder=info.encoder, dimension=info.dimension,
        concepts=info.concepts, terms=info.terms, skipped={k: int(v) for k, v in info.skipped.items()},
        sources=[common_pb2.SourceFile(path=s.get("path", ""), sha256=s.get("sha256", ""), bytes=int(s.get("bytes", 0)))
                 for s in info.sources],
        filters_json=json.dumps(info.filters, sort_keys=True), created_at=info.created_at, error=info.error)


class KnowledgeBaseServicer(kb_pb2_grpc.KnowledgeBaseServicer):
    def __init__(self, kb):  # noqa: ANN001 - kb_ingest.kb.KnowledgeBase (or a test double)
        self.kb = kb

    # -- Ingest --------------------------------------------------------------------------
    def _ingest_call(self, request: kb_pb2.IngestRequest):  # noqa: ANN202
        which = request.WhichOneof("source")
        encoder = request.encoder or None
        if which == "umls":
            u = request.umls
            if not u.mrconso_path.strip():
                raise InvalidArgument("Ingest: umls.mrconso_path is empty")
            return lambda progress: self.kb.ingest_umls(
                Path(u.mrconso_path), mrsty=Path(u.mrsty_path) if u.mrsty_path else None,
                languages=tuple(u.languages) or ("ENG",), include_sabs=tuple(u.include_sabs),
                exclude_sabs=tuple(u.exclude_sabs), keep_suppressed=u.keep_suppressed, encoder=encoder,
                strict=request.strict, progress=progress)
        if which == "dataset":
            d = request.dataset
            if not d.paths:
                raise InvalidArgument("Ingest: dataset.paths is empty")
            if d.category == common_pb2.CATEGORY_UNSPECIFIED:
                raise InvalidArgument("Ingest: dataset.category is required "
                                      f"({', '.join(c.value for c in Category)})")
            category = Category.from_proto(d.category)
            return lambda progress: self.kb.ingest_dataset([Path(p) for p in d.paths], category, encoder=encoder,
                                                           progress=progress)
        raise InvalidArgument("Ingest: set umls or dataset")

    def Ingest(self, request, context) -> Iterator[kb_pb2.IngestEvent]:  # noqa: ANN001, N802
        call = self._ingest_call(request)

        def work(emit: Callable[[ProgressEvent], None]):  # noqa: ANN202
            def progress(ev: ProgressEvent) -> None:
                if context is not None and hasattr(context, "is_active") and not context.is_active():
                    raise Cancelled("ingest cancelled: the client went away")
                emit(ev)

            return call(progress)

        # a slow client must not stall the ingest: intermediate events beyond 1000 are dropped
        stream = ThreadStream(work, name="kb-ingest", max_pending=1000)
        for ev in stream:
            yield kb_pb2.IngestEvent(progress=progress_to_proto(ev))
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
        k = request.k or DEFAULT_K
        if k < 0:
            raise InvalidArgument(f"Search: k must be positive, got {k}")
        cats = category_filter(request.categories)
        snapshot = request.snapshot.strip() or "latest"
        if request.vectors:
            dims = {len(v.values) for v in request.vectors}
            if len(dims) != 1:
                raise InvalidArgument(f"Search: vectors have different lengths {sorted(dims)}")
            arr = np.asarray([list(v.values) for v in request.vectors], dtype=np.float32)
            results = self.kb.search(vectors=arr, snapshot=snapshot, categories=cats, k=k)
        else:
            results = self.kb.search(list(request.texts), snapshot=snapshot, categories=cats, k=k)
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
