"""Entity linking for ``--link``: top-k KB concepts per extracted span.

Users ask for concept ids far more than for bare spans (USERS.md #3). A link is a concept, not a
string: each result carries the CUI, the concept's preferred name, the matched term, and the source
vocabulary (SAB) and that source's own id (CODE, e.g. ``DOID:1612``, ``HGNC:1100``) as the
snapshot stored them, and a concept appears once per span (its best-scoring name) however many of
its synonyms matched. Linking reuses the DBR retrieval path, so spans are encoded with the
snapshot's own encoder. Spans are grouped by their category filter and de-duplicated before
encoding, because a document batch repeats mentions (``BRCA1`` ten times) and a filter per
category lets the vector store do the filtering (a Gene span links only to Gene concepts).
``vaner extract --link`` and the Tagger service's ``Extract`` with ``link`` both link through
:func:`snapshot_linker`, so they return the same concepts for the same spans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kb_ingest.kb import CONCEPT_OVERSAMPLE, MAX_K, best_per_concept
from retrieval.retrieve import KnowledgeBaseLike, Retriever
from vaner.cancel import StopCheck
from vaner.categories import Category
from vaner.errors import FailedPrecondition, InvalidArgument, NotFound

CategoryFilter = Category | Sequence[Category] | None


def _as_tuple(value: CategoryFilter) -> tuple[Category, ...]:
    if value is None:
        return ()
    if isinstance(value, (Category, str)):
        return (Category.parse(value),)
    return tuple(sorted({Category.parse(v) for v in value}, key=lambda c: c.value))


def link_spans(kb: KnowledgeBaseLike, texts: list[str], k: int = 5, snapshot: str = "latest",
               categories: Sequence[CategoryFilter] | None = None, *, shared_categories: CategoryFilter = None,
               retriever: Retriever | None = None, should_stop: StopCheck | None = None) -> list[list[Any]]:
    """Top-k concepts per span text (one hit per CUI), in input order.

    ``categories`` gives one filter PER SPAN (a category, a list of them, or None), typically each
    span's predicted category so a Gene span links to Gene concepts; ``shared_categories`` applies
    one filter to all spans. An empty span list returns ``[]``; a span with no match gets ``[]``.
    ``should_stop`` is asked before each batch of searches (a server's caller may have gone).
    """
    if not texts:
        return []
    if k < 1:
        raise InvalidArgument(f"link k must be >= 1, got {k}")
    if categories is not None:
        if len(categories) != len(texts):
            raise InvalidArgument(f"{len(categories)} category filters for {len(texts)} spans")
        per_span = [_as_tuple(c) for c in categories]
    else:
        per_span = [_as_tuple(shared_categories)] * len(texts)
    r = retriever or Retriever(kb, snapshot, k=min(MAX_K, k * CONCEPT_OVERSAMPLE))
    out: list[list[Any]] = [[] for _ in texts]
    groups: dict[tuple[Category, ...], list[int]] = {}
    for i, cats in enumerate(per_span):
        groups.setdefault(cats, []).append(i)
    for cats, idxs in groups.items():
        hits = r.retrieve([texts[i] for i in idxs], list(cats) or None, should_stop=should_stop)
        for i, h in zip(idxs, hits, strict=True):
            out[i] = best_per_concept(h, k)
    return out


def snapshot_linker(kb: KnowledgeBaseLike, k: int = 5, snapshot: str = "latest", *,
                    should_stop: StopCheck | None = None) -> Callable[[list[str], list[Category]], list[list[Any]]]:
    """A ``tagger.formats.LinkFn`` (what ``vaner extract --link`` and the Tagger service's Extract
    use): each span linked to concepts of its own predicted category, on one snapshot resolved now,
    so a missing KB fails before any model work and every document of a run (or a stream) links
    against the same snapshot."""
    if k < 1:
        raise InvalidArgument(f"link k must be >= 1, got {k}")
    try:
        snap_id = str(getattr(kb.get_snapshot(snapshot), "id", snapshot))
    except (NotFound, FailedPrecondition) as exc:
        raise type(exc)(f"cannot link against KB snapshot {snapshot!r}: {exc.message}") from exc

    def link(mentions: list[str], categories: list[Category]) -> list[list[Any]]:
        return link_spans(kb, mentions, k=k, snapshot=snap_id, categories=categories, should_stop=should_stop)

    return link
