"""Client of the KnowledgeBase service.

Besides the RPCs it offers ``get_snapshot`` and ``search`` with the signatures of
``kb_ingest.kb.KnowledgeBase``, so a retrain in another process can resolve snapshots through the
KB service instead of opening a vector store that the KB process owns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from clients.base import BaseClient
from clients.types import Concept, Health, Progress, Snapshot
from vaner.categories import Category
from vaner.progress_proto import progress_from_proto
from vaner.v1 import kb_pb2, kb_pb2_grpc


def _cats(categories: Sequence[str | Category] | None) -> list[int]:
    return [Category.parse(c).to_proto() for c in categories] if categories else []


class KnowledgeBaseClient(BaseClient):
    service = "kb"

    def __init__(self, address: str, options=None, **kwargs):  # noqa: ANN001
        super().__init__(address, options, **kwargs)
        self.stub = kb_pb2_grpc.KnowledgeBaseStub(self.channel)

    def ingest_events(self, *, mrconso: str | None = None, mrsty: str = "", languages: Sequence[str] = (),
                      include_sabs: Sequence[str] = (), exclude_sabs: Sequence[str] = (), keep_suppressed: bool = False,
                      dataset_paths: Sequence[str] = (), category: str | Category | None = None, encoder: str = "",
                      strict: bool = False, timeout: float | None = None) -> Iterator[Progress | Snapshot]:
        """Progress events, then the finished :class:`Snapshot`. Paths are on the server's disk."""
        if mrconso:
            req = kb_pb2.IngestRequest(umls=kb_pb2.UmlsSource(
                mrconso_path=mrconso, mrsty_path=mrsty, languages=list(languages), include_sabs=list(include_sabs),
                exclude_sabs=list(exclude_sabs), keep_suppressed=keep_suppressed), encoder=encoder, strict=strict)
        else:
            cat = Category.parse(category).to_proto() if category else 0
            req = kb_pb2.IngestRequest(dataset=kb_pb2.DatasetSource(paths=list(dataset_paths), category=cat),
                                       encoder=encoder, strict=strict)
        for ev in self._stream(self.stub.Ingest, req, "Ingest", timeout):
            if ev.HasField("done"):
                yield Snapshot.from_proto(ev.done)
            elif ev.HasField("progress"):
                yield progress_from_proto(ev.progress)

    def ingest(self, on_progress=None, **kwargs) -> Snapshot:  # noqa: ANN001, ANN003
        return self._outcome(self.ingest_events(**kwargs), Snapshot, "Ingest", on_progress)

    def list_snapshots(self, timeout: float | None = None) -> list[Snapshot]:
        resp = self._unary(self.stub.ListSnapshots, kb_pb2.ListSnapshotsRequest(), "ListSnapshots", timeout)
        return [Snapshot.from_proto(s) for s in resp.snapshots]

    def get_snapshot(self, ref: str = "latest", timeout: float | None = None) -> Snapshot:
        return Snapshot.from_proto(self._unary(self.stub.GetSnapshot, kb_pb2.GetSnapshotRequest(id=ref),
                                               "GetSnapshot", timeout))

    def search(self, texts: Sequence[str] | None = None, *, vectors: Sequence[Sequence[float]] | None = None,
               snapshot: str = "latest", categories: Sequence[str | Category] | None = None, k: int = 10,
               timeout: float | None = None) -> list[list[Concept]]:
        req = kb_pb2.SearchRequest(texts=list(texts or ()), snapshot=snapshot, categories=_cats(categories), k=k,
                                   vectors=[kb_pb2.Vector(values=[float(x) for x in v])
                                            for v in (vectors if vectors is not None else ())])
        resp = self._unary(self.stub.Search, req, "Search", timeout)
        return [[Concept.from_proto(h) for h in r.hits] for r in resp.results]

    def health(self, timeout: float | None = None) -> Health:
        return Health.from_proto(self._unary(self.stub.Health, kb_pb2.HealthRequest(), "Health", timeout))
