"""Both vector stores behind one interface: qdrant-edge (embedded default) and the qdrant-client
implementation used for a Qdrant server, exercised here through qdrant-client's in-memory mode
(same client API as a server)."""

from __future__ import annotations

import numpy as np
import pytest

from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import hash_encoder
from kb_ingest.vector_store import EdgeVectorStore, ServerVectorStore, collection_name
from vaner.errors import FailedPrecondition, NotFound, Unavailable
from vaner.settings import Settings


def _stores(tmp_path):
    from qdrant_client import QdrantClient

    return [EdgeVectorStore(tmp_path / "qdrant"), ServerVectorStore(client=QdrantClient(location=":memory:"))]


def test_store_contract(tmp_path):
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((50, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    payloads = [{"cui": f"C{i:07d}", "name": f"t{i}", "categories": ["Disease"] if i % 2 else ["Gene", "Chemical"],
                 "tuis": [], "source": "x"} for i in range(50)]
    for store in _stores(tmp_path):
        coll = collection_name("kb-test-1")
        store.create(coll, 8)
        store.upsert(coll, list(range(50)), vecs, payloads)
        store.finish(coll)
        assert store.exists(coll) and store.count(coll) == 50
        hits = store.search(coll, vecs[:3], k=5)
        assert [h[0].id for h in hits] == [0, 1, 2] and hits[0][0].score == pytest.approx(1.0, abs=1e-5)
        genes = store.search(coll, vecs[1:2], k=5, categories=["Gene"])[0]
        assert len(genes) == 5 and all("Gene" in h.payload["categories"] for h in genes)
        recs = store.retrieve(coll, [3, 4, 999], with_vectors=True)
        assert [r[0] for r in recs] == [3, 4] and np.allclose(recs[0][2], vecs[3], atol=1e-5)
        store.drop(coll)
        assert not store.exists(coll)
        store.close()


def test_edge_missing_collection(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        EdgeVectorStore(tmp_path).count("vaner_kb_nope")


def test_edge_collection_open_elsewhere_says_so_and_frees_on_close(tmp_path):
    first = EdgeVectorStore(tmp_path)
    first.create("c", 4)
    first.upsert("c", [0, 1], np.eye(2, 4, dtype=np.float32), [{"n": "a"}, {"n": "b"}])
    second = EdgeVectorStore(tmp_path)
    with pytest.raises(FailedPrecondition, match="already open elsewhere.*VANER_QDRANT_URL"):
        second.count("c")
    first.close()
    assert second.count("c") == 2


def test_kb_on_server_store_in_memory(tmp_path):
    from pathlib import Path

    from qdrant_client import QdrantClient

    enc = hash_encoder()
    kb = KnowledgeBase(Settings(home=tmp_path), store=ServerVectorStore(client=QdrantClient(location=":memory:")),
                       encoder_loader=lambda name: enc)
    kb.ingest_umls(Path(__file__).parent / "fixtures" / "umls" / "MRCONSO.RRF")
    assert kb.search(["BRCA1 gene"], k=1)[0][0].cui == "C0376571"


def test_unreachable_server_is_one_line_unavailable():
    store = ServerVectorStore("http://127.0.0.1:1")
    with pytest.raises(Unavailable, match=r"cannot reach Qdrant at http://127.0.0.1:1") as err:
        store.health()
    assert "\n" not in err.value.message
