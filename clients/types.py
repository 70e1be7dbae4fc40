"""Plain result types of the clients: callers never handle protos, and these convert to JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Progress events are the core type itself, so CLI bars and remote streams share one shape.
from vaner.progress import ProgressEvent as Progress  # noqa: F401 - re-exported
from vaner.v1 import common_pb2

_CATEGORY_NAMES = {common_pb2.DISEASE: "Disease", common_pb2.CHEMICAL: "Chemical", common_pb2.GENE: "Gene",
                   common_pb2.SPECIES: "Species"}


def category_name(number: int) -> str:
    return _CATEGORY_NAMES.get(number, "Unspecified")


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"raw": text}


@dataclass(frozen=True)
class Concept:
    """A KB concept hit: ``name`` the matched term, ``preferred`` the concept's preferred name,
    ``sab``/``code`` the source vocabulary and its own id (``HGNC``, ``HGNC:1100``)."""

    cui: str
    name: str
    score: float
    categories: tuple[str, ...] = ()
    tuis: tuple[str, ...] = ()
    source: str = ""
    preferred: str = ""
    sab: str = ""
    code: str = ""

    @classmethod
    def from_proto(cls, m: common_pb2.ConceptMatch) -> Concept:
        return cls(cui=m.cui, name=m.name, score=m.score, categories=tuple(category_name(c) for c in m.categories),
                   tuis=tuple(m.tuis), source=m.source, preferred=m.preferred, sab=m.sab, code=m.code)

    def to_json(self) -> dict:
        """The shape ``kb_ingest.kb.ConceptHit.to_json`` gives, so ``vaner extract --link`` prints a
        concept the same way whether it linked in-process or through the Tagger service."""
        return {"cui": self.cui, "name": self.name, "preferred": self.preferred, "categories": list(self.categories),
                "tuis": list(self.tuis), "source": self.source, "sab": self.sab, "code": self.code,
                "score": round(self.score, 6)}


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    text: str
    type: str
    score: float
    concepts: tuple[Concept, ...] = ()

    @classmethod
    def from_proto(cls, s: common_pb2.Span) -> Entity:
        return cls(start=s.start, end=s.end, text=s.text, type=category_name(s.category), score=s.score,
                   concepts=tuple(Concept.from_proto(c) for c in s.concepts))

    def to_json(self) -> dict:
        d = {"start": self.start, "end": self.end, "text": self.text, "type": self.type, "score": round(self.score, 6)}
        if self.concepts:
            d["concepts"] = [c.to_json() for c in self.concepts]
        return d


@dataclass(frozen=True)
class DocumentEntities:
    id: str
    entities: tuple[Entity, ...]
    model_version: str = ""

    @classmethod
    def from_proto(cls, d: Any, model_version: str = "") -> DocumentEntities:
        return cls(id=d.id, entities=tuple(Entity.from_proto(s) for s in d.entities), model_version=model_version)

    def to_json(self) -> dict:
        return {"id": self.id, "entities": [e.to_json() for e in self.entities]}


@dataclass(frozen=True)
class ModelVersion:
    id: str
    latest: bool
    backbone: str
    datasets: tuple[str, ...] = ()
    kb_snapshot: str = ""
    metrics: dict = field(default_factory=dict, hash=False)
    hyperparameters: dict = field(default_factory=dict, hash=False)
    instruction_template: dict = field(default_factory=dict, hash=False)
    command: str = ""
    created_at: str = ""
    artifact_path: str = ""

    @classmethod
    def from_proto(cls, m: common_pb2.ModelVersion) -> ModelVersion:
        return cls(id=m.id, latest=m.latest, backbone=m.backbone, datasets=tuple(m.datasets), kb_snapshot=m.kb_snapshot,
                   metrics=_loads(m.metrics_json), hyperparameters=_loads(m.hyperparameters_json),
                   instruction_template=_loads(m.instruction_template), command=m.command, created_at=m.created_at,
                   artifact_path=m.artifact_path)


@dataclass(frozen=True)
class Snapshot:
    id: str
    status: str
    latest: bool
    kind: str = ""
    encoder: str = ""
    dimension: int = 0
    concepts: int = 0
    terms: int = 0
    skipped: dict = field(default_factory=dict, hash=False)
    umls_release: str = ""
    created_at: str = ""
    error: str = ""
    filters: dict = field(default_factory=dict, hash=False)
    sources: tuple[dict, ...] = ()

    @classmethod
    def from_proto(cls, s: common_pb2.Snapshot) -> Snapshot:
        return cls(id=s.id, status=common_pb2.SnapshotStatus.Name(s.status).lower(), latest=s.latest, kind=s.kind,
                   encoder=s.encoder, dimension=s.dimension, concepts=s.concepts, terms=s.terms,
                   skipped=dict(s.skipped), umls_release=s.umls_release, created_at=s.created_at, error=s.error,
                   filters=_loads(s.filters_json),
                   sources=tuple({"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for f in s.sources))


@dataclass(frozen=True)
class DbrSet:
    id: str
    path: str
    sentences: int
    snapshot: str
    params: dict = field(default_factory=dict, hash=False)

    @classmethod
    def from_proto(cls, d: Any) -> DbrSet:
        return cls(id=d.id, path=d.path, sentences=d.sentences, snapshot=d.snapshot, params=_loads(d.params_json))


@dataclass(frozen=True)
class RetrainResult:
    model: ModelVersion
    promoted: bool
    reason: str = ""
    gate: dict = field(default_factory=dict, hash=False)  # the shape of `vaner retrain --json`'s "gate"


def gate_from_proto(g: Any) -> dict:
    """A ``GateReport`` as the dict ``vaner retrain --json`` prints under "gate"."""
    old = g.old_macro if g.HasField("old_macro") else None
    new = g.new_macro if g.HasField("new_macro") else None
    return {"promote": g.promote, "reason": g.reason, "margin": g.margin, "current": g.current or None,
            "macro": {"old": old, "new": new, "delta": None if old is None or new is None else round(new - old, 4)},
            "datasets": [{"dataset": r.dataset, "old": r.old_f1, "new": r.new_f1, "delta": r.delta,
                          "verdict": r.verdict, "sentences": r.sentences} for r in g.datasets],
            "sample": {"seed": g.sample_seed, "per_dataset": g.sample_per_dataset or None,
                       "sentences": sum(r.sentences for r in g.datasets), "ids_sha256": g.sample_ids_sha256,
                       "ids_file": g.sample_ids_file},
            "not_evaluated": list(g.not_evaluated)}


@dataclass(frozen=True)
class Health:
    ok: bool
    service: str
    version: str
    details: dict = field(default_factory=dict, hash=False)

    @classmethod
    def from_proto(cls, h: Any) -> Health:
        return cls(ok=h.ok, service=h.service, version=h.version, details=dict(h.details))
