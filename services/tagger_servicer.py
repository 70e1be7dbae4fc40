"""Tagger gRPC servicer: validate, convert proto <-> domain, call :class:`tagger.serving.TaggerCore`,
convert back. The domain types are the CLI's own: :class:`tagger.formats.Document` in and out,
:class:`tagger.registry.ModelRecord`, :class:`retrieval.retrain.RetrainRequest`.

Nothing here decides anything about models or batching (the core does) and nothing here sets a
status code (the error interceptor does, from the domain errors raised below).

``ExtractOptions.link`` links after tagging, with the CLI's own pieces: a
:func:`retrieval.linking.snapshot_linker` over the knowledge base the server wires in (the snapshot
is resolved before any model work, so a missing one fails fast) applied by
:func:`tagger.formats.link_documents`; its searches stop between batches once the call has ended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import fields

import grpc

from retrieval.linking import snapshot_linker
from retrieval.retrain import RetrainRequest
from retrieval.retrieve import KnowledgeBaseLike
from services.calls import call_ended
from services.convert import hit_to_proto
from tagger.formats import Document, LinkFn, link_documents
from tagger.registry import ModelRecord
from tagger.serving import RetrainEvent, TaggerCore
from vaner import __version__
from vaner.categories import Category
from vaner.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, VanerError
from vaner.progress_proto import progress_to_proto
from vaner.v1 import common_pb2, kb_pb2, tagger_pb2, tagger_pb2_grpc

DEFAULT_LINK_K = 5  # ExtractOptions.link_k 0
MAX_LINK_K = 50  # concepts per span; wider lists are a search (KnowledgeBase.Search), not a link


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


def documents_from_proto(docs) -> list[Document]:  # noqa: ANN001
    return [Document(id=d.id or str(i), text=d.text) for i, d in enumerate(docs)]


def document_to_proto(doc: Document) -> tagger_pb2.DocumentEntities:
    spans = [common_pb2.Span(start=e.start, end=e.end, text=e.text, category=Category.parse(e.type).to_proto(),
                             score=e.score, concepts=[hit_to_proto(c) for c in e.concepts])
             for e in doc.entities]
    return tagger_pb2.DocumentEntities(id=doc.id, entities=spans)


def model_to_proto(record: ModelRecord) -> common_pb2.ModelVersion:
    return common_pb2.ModelVersion(
        id=record.id, latest=record.latest, backbone=record.backbone, datasets=list(record.datasets),
        kb_snapshot=record.kb_snapshot or "", instruction_template=json.dumps(record.template, sort_keys=True),
        metrics_json=json.dumps(record.metrics, sort_keys=True, default=str),
        hyperparameters_json=json.dumps(record.hyperparameters, sort_keys=True, default=str),
        command=record.command, created_at=record.created_at.isoformat(), artifact_path=str(record.artifact_path))


def retrain_request_from_proto(request: tagger_pb2.RetrainRequest) -> RetrainRequest:
    """``config_json`` keys that are RetrainRequest fields (``data_dir``, ``seed``, ``dbr_params``,
    ``train_overrides``...) set them; any other key is a training override. proto3 has no
    presence, so empty fields and a 0 margin mean the Retrainer's defaults."""
    overrides = {}
    if request.config_json:
        try:
            overrides = json.loads(request.config_json)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"config_json is not JSON: {exc.msg}") from exc
        if not isinstance(overrides, dict):
            raise InvalidArgument("config_json must be a JSON object")
    known = {f.name for f in fields(RetrainRequest)}
    kwargs = {"command": "Tagger.Retrain", **{k: v for k, v in overrides.items() if k in known}}
    if not isinstance(kwargs.get("train_overrides", {}), dict):
        raise InvalidArgument("config_json: train_overrides must be a JSON object")
    kwargs["train_overrides"] = {**kwargs.get("train_overrides", {}),
                                 **{k: v for k, v in overrides.items() if k not in known}}
    kwargs.update(kb_snapshot=request.kb_snapshot or "latest", dbr_mode=request.dbr_mode or "retrieved")
    if request.datasets:
        kwargs["datasets"] = tuple(request.datasets)
    if request.promote_margin:
        kwargs["promote_margin"] = request.promote_margin
    if request.from_scratch:
        kwargs["from_scratch"] = True
    return RetrainRequest(**kwargs)


def gate_to_proto(gate: dict) -> tagger_pb2.GateReport:
    """The gate table (``GateReport.to_dict()`` of retrieval/gate.py) on the wire."""
    macro, sample = gate.get("macro") or {}, gate.get("sample") or {}
    rows = [tagger_pb2.GateRow(dataset=r["dataset"], old_f1=r["old"], new_f1=r["new"], delta=r["delta"],
                               verdict=r["verdict"], sentences=r["sentences"]) for r in gate.get("datasets", [])]
    out = tagger_pb2.GateReport(
        promote=gate["promote"], reason=gate["reason"], margin=gate["margin"], current=gate.get("current") or "",
        datasets=rows, sample_seed=sample.get("seed") or 0, sample_per_dataset=sample.get("per_dataset") or 0,
        sample_ids_sha256=sample.get("ids_sha256") or "", sample_ids_file=sample.get("ids_file") or "",
        not_evaluated=list(gate.get("not_evaluated", [])))
    if macro.get("old") is not None:
        out.old_macro = macro["old"]
    if macro.get("new") is not None:
        out.new_macro = macro["new"]
    return out


def link_k_from_proto(options: tagger_pb2.ExtractOptions) -> int:
    """Concepts per span; 0 means the default. Checked whether or not ``link`` is set."""
    k = options.link_k or DEFAULT_LINK_K
    if not 1 <= k <= MAX_LINK_K:
        raise InvalidArgument(f"ExtractOptions.link_k must be between 1 and {MAX_LINK_K} "
                              f"(0 means {DEFAULT_LINK_K}), got {options.link_k}")
    return k


def _remaining(context: grpc.ServicerContext) -> float | None:
    left = context.time_remaining()
    return None if left is None else max(left, 0.001)


class TaggerServicer(tagger_pb2_grpc.TaggerServicer):
    def __init__(self, core: TaggerCore, kb: Callable[[], KnowledgeBaseLike] | None = None):
        """``kb`` gives the knowledge base that ``ExtractOptions.link`` links against (called per
        linking call; the server memoises it, so a tagger that never links never opens it).
        Without one, ``link`` is FAILED_PRECONDITION."""
        self.core = core
        self.kb = kb

    def _options(self, options: tagger_pb2.ExtractOptions, context) -> tuple[list[Category], LinkFn | None]:  # noqa: ANN001
        """The categories, and the linker when ``link`` is set: everything checked and the
        snapshot resolved before any model work."""
        categories = categories_from_proto(options.categories)
        k = link_k_from_proto(options)
        if not options.link:
            return categories, None
        if self.kb is None:
            raise FailedPrecondition("entity linking is not configured in this tagger (no knowledge base); "
                                     "call KnowledgeBase.Search with the span texts")
        return categories, snapshot_linker(self.kb(), k, options.kb_snapshot or "latest",
                                           should_stop=call_ended(context))

    def _extract(self, documents, categories, link, context):  # noqa: ANN001, ANN202
        try:
            results, version = self.core.extract(documents, categories, timeout=_remaining(context),
                                                 should_stop=call_ended(context))
        except FutureTimeout as exc:
            raise DeadlineExceeded("the deadline passed before the model finished") from exc
        return (link_documents(results, link) if link is not None else results), version

    def Extract(self, request: tagger_pb2.ExtractRequest, context) -> tagger_pb2.ExtractResponse:  # noqa: N802, ANN001
        categories, link = self._options(request.options, context)
        results, version = self._extract(documents_from_proto(request.documents), categories, link, context)
        return tagger_pb2.ExtractResponse(documents=[document_to_proto(d) for d in results], model_version=version)

    def ExtractStream(self, request_iterator, context) -> Iterator[tagger_pb2.ExtractStreamResponse]:  # noqa: N802, ANN001
        """Options come from the first message (one snapshot for the whole stream); a later message
        may repeat them or leave them empty."""
        first: tagger_pb2.ExtractOptions | None = None
        for i, req in enumerate(request_iterator):
            if first is None:
                first = req.options
                categories, link = self._options(first, context)
            elif req.HasField("options") and req.options not in (first, tagger_pb2.ExtractOptions()):
                raise InvalidArgument(f"stream message {i}: options may only be set on the first message")
            if not req.HasField("document"):
                raise InvalidArgument(f"stream message {i} has no document")
            doc = Document(id=req.document.id or str(i), text=req.document.text)
            results, version = self._extract([doc], categories, link, context)
            yield tagger_pb2.ExtractStreamResponse(document=document_to_proto(results[0]), model_version=version)

    def ModelInfo(self, request, context) -> common_pb2.ModelVersion:  # noqa: N802, ANN001
        return model_to_proto(self.core.model_info())

    def LoadModel(self, request: tagger_pb2.LoadModelRequest, context) -> common_pb2.ModelVersion:  # noqa: N802, ANN001
        return model_to_proto(self.core.load_model(request.version or "latest"))

    def Retrain(self, request: tagger_pb2.RetrainRequest, context) -> Iterator[tagger_pb2.RetrainEvent]:  # noqa: N802, ANN001
        for ev in self.core.retrain(retrain_request_from_proto(request)):
            yield retrain_event_to_proto(ev)

    def Health(self, request, context) -> kb_pb2.HealthResponse:  # noqa: N802, ANN001
        details = {"ready": str(self.core.ready).lower(), "follows_latest": str(self.core.follows_latest).lower()}
        try:
            info = self.core.model_info()
            details["model"] = info.id
        except VanerError as exc:
            details["model_error"] = exc.message
        if self.core.reconcile_error:
            details["reconcile_error"] = self.core.reconcile_error
        return kb_pb2.HealthResponse(ok=self.core.ready, service="tagger", version=__version__, details=details)


def retrain_event_to_proto(ev: RetrainEvent) -> tagger_pb2.RetrainEvent:
    if ev.model is not None:
        out = tagger_pb2.RetrainEvent(done=model_to_proto(ev.model), promoted=ev.promoted, reason=ev.reason)
        if ev.gate is not None:
            out.gate.CopyFrom(gate_to_proto(ev.gate.to_dict() if hasattr(ev.gate, "to_dict") else ev.gate))
        return out
    return tagger_pb2.RetrainEvent(progress=progress_to_proto(ev.progress))
