"""Client of the Tagger service (what ``vaner extract --remote HOST:PORT`` uses)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import grpc

from clients.base import BaseClient
from clients.types import DocumentEntities, Health, ModelVersion, Progress, RetrainResult, gate_from_proto
from vaner.categories import Category
from vaner.progress_proto import progress_from_proto
from vaner.v1 import kb_pb2, tagger_pb2, tagger_pb2_grpc

DocumentLike = str | tuple[str, str] | object


def _document(i: int, doc: DocumentLike) -> tagger_pb2.Document:
    """Accept a plain string, an ``(id, text)`` pair or anything with ``id`` and ``text``."""
    if isinstance(doc, str):
        return tagger_pb2.Document(id=str(i), text=doc)
    if isinstance(doc, tuple):
        return tagger_pb2.Document(id=str(doc[0]), text=doc[1])
    return tagger_pb2.Document(id=str(getattr(doc, "id", i)), text=doc.text)  # type: ignore[attr-defined]


def _options(categories: Sequence[str | Category] | None, link: bool, link_k: int,
             kb_snapshot: str) -> tagger_pb2.ExtractOptions:
    cats = Category.parse_list(list(categories)) if categories else []
    return tagger_pb2.ExtractOptions(categories=[c.to_proto() for c in cats], link=link, link_k=link_k,
                                     kb_snapshot=kb_snapshot)


class TaggerClient(BaseClient):
    service = "tagger"

    def __init__(self, address: str, options=None, **kwargs):  # noqa: ANN001
        super().__init__(address, options, **kwargs)
        self.stub = tagger_pb2_grpc.TaggerStub(self.channel)

    def extract(self, documents: Iterable[DocumentLike], categories: Sequence[str | Category] | None = None,
                timeout: float | None = None, *, link: bool = False, link_k: int = 0,
                kb_snapshot: str = "") -> list[DocumentEntities]:
        """Entities of each document, in order; ``categories`` None means all four. With ``link``
        each entity carries its top ``link_k`` (0: 5, at most 50) KB concepts of its own category,
        from ``kb_snapshot`` (empty: latest)."""
        req = tagger_pb2.ExtractRequest(documents=[_document(i, d) for i, d in enumerate(documents)],
                                        options=_options(categories, link, link_k, kb_snapshot))
        resp = self._unary(self.stub.Extract, req, "Extract", timeout)
        return [DocumentEntities.from_proto(d, resp.model_version) for d in resp.documents]

    def extract_stream(self, documents: Iterable[DocumentLike], categories: Sequence[str | Category] | None = None,
                       timeout: float | None = None, *, link: bool = False, link_k: int = 0,
                       kb_snapshot: str = "") -> Iterator[DocumentEntities]:
        """Stream documents in, results out, one per document and in order, without holding the
        whole corpus in memory on either side. ``link``: as for :meth:`extract`, one snapshot for
        the whole stream."""
        opts = _options(categories, link, link_k, kb_snapshot)

        def requests() -> Iterator[tagger_pb2.ExtractStreamRequest]:
            for i, d in enumerate(documents):
                yield tagger_pb2.ExtractStreamRequest(document=_document(i, d), options=opts if i == 0 else None)

        try:
            for resp in self.stub.ExtractStream(requests(), timeout=self.deadline("ExtractStream", timeout),
                                                metadata=self._metadata):
                yield DocumentEntities.from_proto(resp.document, resp.model_version)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def model_info(self, timeout: float | None = None) -> ModelVersion:
        return ModelVersion.from_proto(self._unary(self.stub.ModelInfo, tagger_pb2.ModelInfoRequest(), "ModelInfo",
                                                   timeout))

    def load_model(self, version: str = "latest", timeout: float | None = None) -> ModelVersion:
        return ModelVersion.from_proto(self._unary(self.stub.LoadModel, tagger_pb2.LoadModelRequest(version=version),
                                                   "LoadModel", timeout))

    def retrain_events(self, kb_snapshot: str = "latest", datasets: Sequence[str] = (), dbr_mode: str = "retrieved",
                       promote_margin: float = 0.0, config_json: str = "", from_scratch: bool = False,
                       timeout: float | None = None) -> Iterator[Progress | RetrainResult]:
        """Progress events, then one :class:`RetrainResult` (with the gate table). Empty
        ``datasets``: the current model's; ``from_scratch``: no warm start from it."""
        req = tagger_pb2.RetrainRequest(kb_snapshot=kb_snapshot, datasets=list(datasets), dbr_mode=dbr_mode,
                                        promote_margin=promote_margin, config_json=config_json,
                                        from_scratch=from_scratch)
        for ev in self._stream(self.stub.Retrain, req, "Retrain", timeout):
            if ev.HasField("done"):
                gate = gate_from_proto(ev.gate) if ev.HasField("gate") else {}
                yield RetrainResult(ModelVersion.from_proto(ev.done), ev.promoted, ev.reason, gate)
            elif ev.HasField("progress"):
                yield progress_from_proto(ev.progress)

    def retrain(self, *args, on_progress=None, **kwargs) -> RetrainResult:  # noqa: ANN001, ANN002, ANN003
        """Run a retrain to completion; ``on_progress`` sees each :class:`Progress`."""
        return self._outcome(self.retrain_events(*args, **kwargs), RetrainResult, "Retrain", on_progress)

    def health(self, timeout: float | None = None) -> Health:
        return Health.from_proto(self._unary(self.stub.Health, kb_pb2.HealthRequest(), "Health", timeout))
