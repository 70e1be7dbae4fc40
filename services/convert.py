"""Proto conversions more than one servicer needs (each servicer keeps the ones only it uses)."""

from __future__ import annotations

from typing import Any

from vaner.categories import Category
from vaner.v1 import common_pb2


def hit_to_proto(hit: Any) -> common_pb2.ConceptMatch:
    """A KB concept hit (``kb_ingest.kb.ConceptHit``, or a remote stand-in whose categories may be
    plain names and which may lack the source-vocabulary fields) as a ``ConceptMatch``."""
    return common_pb2.ConceptMatch(cui=str(hit.cui), name=str(hit.name),
                                   categories=[Category.parse(c).to_proto() for c in hit.categories],
                                   score=float(hit.score), tuis=[str(t) for t in (hit.tuis or ())],
                                   source=str(hit.source or ""), preferred=str(getattr(hit, "preferred", "") or ""),
                                   sab=str(getattr(hit, "sab", "") or ""), code=str(getattr(hit, "code", "") or ""))


def category_filter(numbers: Any) -> list[Category] | None:
    """A repeated Category field as a search filter: UNSPECIFIED entries are ignored, none = all."""
    cats = [Category.from_proto(n) for n in numbers if n != common_pb2.CATEGORY_UNSPECIFIED]
    return cats or None
