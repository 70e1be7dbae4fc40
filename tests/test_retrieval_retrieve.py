"""Retriever (batching, de-duplication, memoisation) and the linking helper."""

from __future__ import annotations

import pytest

from retrieval.linking import link_spans
from retrieval.retrieve import Retriever, dedupe_hits, retrieve_phrases
from tests.test_dbr_fakes import FakeKB, Hit
from vaner.categories import Category
from vaner.errors import InvalidArgument


def test_retrieve_top_k_in_order_and_memoised():
    kb = FakeKB()
    r = Retriever(kb, k=3, batch_size=2)
    res = r.retrieve(["breast cancer", "Breast  Cancer", "aspirin", "", "BRCA1"])
    assert len(res) == 5 and res[3] == []
    assert res[0][0].name == "breast cancer" and res[0] == res[1]
    assert all(len(h) <= 3 for h in res)
    assert [h.score for h in res[0]] == sorted((h.score for h in res[0]), reverse=True)
    assert r.stats["unique_encoded"] == 3  # duplicates and the empty phrase are not encoded
    calls = kb.search_calls
    r.retrieve(["aspirin"])
    assert kb.search_calls == calls


def test_category_filter_and_empty():
    kb = FakeKB()
    hits = retrieve_phrases(kb, ["cancer"], k=5, categories=[Category.SPECIES])
    assert hits[0] and all(Category.SPECIES in h.categories for h in hits[0])
    assert retrieve_phrases(kb, []) == []
    with pytest.raises(InvalidArgument):
        Retriever(kb, k=0)


def test_dedupe_is_stable():
    hits = [Hit("C2", "b", (), score=0.5), Hit("C1", "a", (), score=0.5), Hit("C1", "a", (), score=0.9)]
    assert [(h.cui, h.score) for h in dedupe_hits(hits)] == [("C1", 0.9), ("C2", 0.5)]


def test_link_spans_per_span_categories():
    kb = FakeKB()
    out = link_spans(kb, ["APC", "human", "APC"], k=2,
                     categories=[Category.GENE, Category.SPECIES, None])
    assert len(out) == 3 and all(len(h) <= 2 for h in out)
    assert all(Category.GENE in h.categories for h in out[0])
    assert out[1][0].name == "human"
    assert link_spans(kb, []) == []
    with pytest.raises(InvalidArgument):
        link_spans(kb, ["a", "b"], categories=[Category.GENE])
    shared = link_spans(kb, ["aspirin"], shared_categories=[Category.CHEMICAL])
    assert shared[0][0].cui == "C9"


def test_retrieve_stops_between_batches_when_asked():
    from vaner.errors import Cancelled

    kb = FakeKB()
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # the caller goes away after the first batch

    with pytest.raises(Cancelled, match="retrieve cancelled"):
        Retriever(kb, k=3, batch_size=1).retrieve(["cancer", "aspirin", "BRCA1"], should_stop=should_stop)
    assert kb.search_calls == 1
