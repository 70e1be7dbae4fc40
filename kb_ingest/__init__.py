"""kb_ingest: UMLS and dataset readers, the TUI -> category table, encoders, vector stores and
versioned KB snapshots, behind one facade, :class:`kb_ingest.kb.KnowledgeBase`.

Public names are imported lazily so ``kb-ingest --help`` does not pay for torch or SQLAlchemy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "KnowledgeBase": "kb_ingest.kb", "ConceptHit": "kb_ingest.kb", "SnapshotInfo": "kb_ingest.snapshots",
    "Encoder": "kb_ingest.encoder", "load_encoder": "kb_ingest.encoder", "DEFAULT_ENCODER": "kb_ingest.encoder",
    "CategoryMap": "kb_ingest.categories", "UmlsFilters": "kb_ingest.filters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # noqa: ANN202
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kb_ingest' has no attribute {name!r}")
