"""DBR against the real KnowledgeBase (embedded Qdrant + SQLite) with a hashing encoder: checks the
contract between retrieval/ and kb_ingest/ (search by vectors, category payloads, sample_random)."""

from __future__ import annotations

import pytest

from retrieval.dbr import DbrBuilder, DbrParams
from retrieval.linking import link_spans
from tests.test_dbr_fakes import write_data_dir
from vaner.categories import Category
from vaner.settings import Settings

kb_testing = pytest.importorskip("kb_ingest.testing")


@pytest.fixture()
def real_kb(tmp_path):
    from kb_ingest.kb import KnowledgeBase

    enc = kb_testing.hash_encoder()
    data = write_data_dir(tmp_path / "data")
    settings = Settings(home=tmp_path / "home").ensure()
    kb = KnowledgeBase(settings, encoder_loader=lambda name: enc)
    kb.ingest_dataset([data / "ncbi" / "train.tsv"], Category.DISEASE)
    snap = kb.ingest_dataset([data / "s800" / "train.tsv"], Category.SPECIES)
    yield settings, kb, data, snap
    kb.close()


def test_build_retrieved_and_random_on_the_real_kb(real_kb):
    settings, kb, data, snap = real_kb
    builder = DbrBuilder(settings, kb)
    s = builder.build(["ncbi", "s800"], DbrParams(seed=1), data_dir=data)
    assert s.snapshot == snap.id and s.sentences > 0
    sents = s.load()
    assert any("B" in x.tags for x in sents)
    for x in sents:
        assert x.dataset is None and len(x.spans()) <= 10
    r = builder.build(["ncbi", "s800"], DbrParams(mode="random", seed=1), data_dir=data)
    assert r.sentences > 0 and r.manifest["counts_from"] == s.id


def test_link_spans_on_the_real_kb(real_kb):
    _, kb, _, _ = real_kb
    out = link_spans(kb, ["breast cancer", "aureus"], k=3, categories=[Category.DISEASE, Category.SPECIES])
    assert out[0] and out[0][0].name == "breast cancer" and Category.DISEASE in out[0][0].categories
    assert all(Category.SPECIES in h.categories for h in out[1])
