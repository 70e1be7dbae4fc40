"""Tagger gRPC servicer: validate, convert proto <-> domain, call :class:`TaggerCore`, convert back.

Nothing here decides anything about models or batching (the core does) and nothing here sets a
status code (the error interceptor does, from the domain errors raised below).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout

import grpc

from services.tagger_core import DocumentResult, ModelInfo, RetrainEvent, RetrainParams, TaggerCore
from vaner import __version__
from vaner.categories import Category
from vaner.errors import DeadlineExceeded, InvalidArgument, VanerError
from vaner.progress_proto import progress_to_proto
from vaner.v1 import common_pb2, kb_pb2, tagger_pb2, tagger_pb2_grpc


def categories_from_proto(numbers) -> list[Category]:  # noqa: ANN001 - repeated enum field
    """Empty means all four; an unknown number is the caller's mistake (INVALID_ARGUMENT)."""
    cats: list[Category] = []
    for n in numbers:
        if n == common_pb2.CATEGORY_UNSPECIFIED:
            raise InvalidArgument("category CATEGORY_UNSPECIFIED is not an entity type; omit it to mean all")
        c = Category.from_proto(int(n))
        if c not in cats:
            cats.append(c)
    return cats


def documents_from_proto(docs) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(d.id or str(i), d.text) for i, d in enumerate(docs)]


def document_to_proto(doc: DocumentResult) -> tagger_pb2.DocumentEntities:
    spans = []
    for e in doc.entities:
        concepts = [common_pb2.ConceptMatch(cui=c.cui, name=c.name, score=c.score,
                                            categories=[Category.parse(x).to_proto() for x in c.categories])
                    for c in e.concepts]
        spans.append(common_pb2.Span(start=e.start, end=e.end, text=e.text, category=Category.parse(e.type).to_proto(),
                                     score=e.score, concepts=concepts))
    return tagger_pb2.DocumentEntities(id=doc.id, entities=spans)


def model_to_proto(info: ModelInfo) -> common_pb2.ModelVersion:
    return common_pb2.ModelVersion(
        id=info.id, latest=info.latest, backbone=info.backbone, datasets=list(info.datasets),
        kb_snapshot=info.kb_snapshot, instruction_template=json.dumps(info.template, sort_keys=True),
        metrics_json=json.dumps(info.metrics, sort_keys=True, default=str),
        hyperparameters_json=json.dumps(info.hyperparameters, sort_keys=True, default=str),
        command=info.command, created_at=info.created_at, artifact_path=info.artifact_path)




def _check_options(options: tagger_pb2.ExtractOptions) -> list[Category]:
    if options.link:
        raise InvalidArgument("entity linking is not offered by the Tagger service yet; "
                              "call KnowledgeBase.Search with the span texts")
    return categories_from_proto(options.categories)


def _remaining(context: grpc.ServicerContext) -> float | None:
    left = context.time_remaining()
    return None if left is None else max(left, 0.001)


class TaggerServicer(tagger_pb2_grpc.TaggerServicer):
    def __init__(self, core: TaggerCore):
        self.core = core

    def _extract(self, documents, categories, context):  # noqa: ANN001, ANN202
        try:
            return self.core.extract(documents, categories, timeout=_remaining(context))
        except FutureTimeout as exc:
            raise DeadlineExceeded("the deadline passed before the model finished") from exc

    def Extract(self, request: tagger_pb2.ExtractRequest, context) -> tagger_pb2.ExtractResponse:  # noqa: N802, ANN001
        categories = _check_options(request.options)
        results, version = self._extract(documents_from_proto(request.documents), categories, context)
        return tagger_pb2.ExtractResponse(documents=[document_to_proto(d) for d in results], model_version=version)

    def ExtractStream(self, request_iterator, context) -> Iterator[tagger_pb2.ExtractStreamResponse]:  # noqa: N802, ANN001
        categories: list[Category] | None = None
        for i, req in enumerate(request_iterator):
            if categories is None:
                categories = _check_options(req.options)
            elif req.HasField("options"):
                later = _check_options(req.options)
                if later and later != categories:
                    raise InvalidArgument(f"stream message {i}: options may only be set on the first message")
            if not req.HasField("document"):
                raise InvalidArgument(f"stream message {i} has no document")
            results, version = self._extract([(req.document.id or str(i), req.document.text)], categories, context)
            yield tagger_pb2.ExtractStreamResponse(document=document_to_proto(results[0]), model_version=version)

    def ModelInfo(self, request, context) -> common_pb2.ModelVersion:  # noqa: N802, ANN001
        return model_to_proto(self.core.model_info())

    def LoadModel(self, request: tagger_pb2.LoadModelRequest, context) -> common_pb2.ModelVersion:  # noqa: N802, ANN001
        return model_to_proto(self.core.load_model(request.version or "latest"))

    def Retrain(self, request: tagger_pb2.RetrainRequest, context) -> Iterator[tagger_pb2.RetrainEvent]:  # noqa: N802, ANN001
        overrides = {}
        if request.config_json:
            try:
                overrides = json.loads(request.config_json)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"config_json is not JSON: {exc.msg}") from exc
            if not isinstance(overrides, dict):
                raise InvalidArgument("config_json must be a JSON object")
        # proto3 doubles have no presence: 0 means "the server's default margin".
        params = RetrainParams(kb_snapshot=request.kb_snapshot or "latest", datasets=tuple(request.datasets),
                               dbr_mode=request.dbr_mode or "retrieved",
                               promote_margin=request.promote_margin or None, overrides=overrides)
        for ev in self.core.retrain(params):
            yield retrain_event_to_proto(ev)

    def Health(self, request, context) -> kb_pb2.HealthResponse:  # noqa: N802, ANN001
        details = {"ready": str(self.core.ready).lower()}
        try:
            info = self.core.model_info()
            details["model"] = info.id
        except VanerError as exc:
            details["model_error"] = exc.message
        return kb_pb2.HealthResponse(ok=self.core.ready, service="tagger", version=__version__, details=details)


def retrain_event_to_proto(ev: RetrainEvent) -> tagger_pb2.RetrainEvent:
    if ev.model is not None:
        return tagger_pb2.RetrainEvent(done=model_to_proto(ev.model), promoted=ev.promoted)
    return tagger_pb2.RetrainEvent(progress=progress_to_proto(ev.progress))
