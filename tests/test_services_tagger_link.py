"""Tagger ``Extract`` with ``link`` on real processes and real loopback ports, with real ids.

A KB service serves a small release in the open KB's shape (kb_ingest/testing.py: SAB/CODE per
atom, a tiny model2vec encoder); a tagger service reaches it at ``tagger.kb_address``, as ``serve
all`` wires it with the embedded store; its model tags every word (services/testing.py
``tag_every_word``), so spans are deterministic through the real model path. The in-process
``vaner extract --link`` runs first, in its own process: the embedded store admits one process at
a time, and the KB service opens it next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clients import TaggerClient
from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import tiny_static_encoder_dir, write_small_release
from services.config import ServeConfig
from services.server import LinkingKnowledgeBase
from services.tagger_servicer import TaggerServicer
from services.testing import REPO, ServiceProcess, make_tiny_model, register_model
from vaner import errors as E
from vaner.settings import Settings
from vaner.v1 import tagger_pb2

TEXT = "BRCA1 and TP53 in human breast cancer"
GENE_CUIS = {"C0376571", "C0079419", "C10100000001"}  # BRCA1, TP53, APC


def _env(home) -> dict[str, str]:  # noqa: ANN001
    env = {**os.environ, "VANER_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in ("VANER_CONFIG", "VANER_DB_URL", "VANER_QDRANT_URL"):
        env.pop(key, None)
    return env


def vaner_extract(home, *args: str) -> list[dict]:  # noqa: ANN001
    proc = subprocess.run([sys.executable, "-m", "vaner.cli", "extract", TEXT, "--types", "Gene", "--link",
                           "--link-k", "3", "--device", "cpu", "--no-text", *args],
                          env=_env(home), cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def linked(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("link")
    home = root / "home"
    encoder = tiny_static_encoder_dir(root / "m2v")
    kb = KnowledgeBase(Settings(home=home))
    try:
        snap = kb.ingest_umls(write_small_release(root / "release"), encoder=str(encoder))
        stored = {(p["cui"], p["sab"], p["code"]) for _, p in kb.iter_points(snap.id)}
    finally:
        kb.close()
    register_model(home, make_tiny_model(tiny_backbone, root / "model", tag_every_word=True))
    in_process = vaner_extract(home)  # before the KB service holds the store
    with ServiceProcess("kb", home, log_dir=root) as kb_service, \
            ServiceProcess("tagger", home, env={"VANER_TAGGER_KB_ADDRESS": kb_service.address},
                           log_dir=root) as tagger, TaggerClient(tagger.address, timeout=120) as client:
        yield {"home": home, "snapshot": snap.id, "stored": stored, "in_process": in_process,
               "address": tagger.address, "client": client}


def test_extract_link_returns_real_ids_of_the_span_category(linked):
    client = linked["client"]
    docs = client.extract([("d1", TEXT)], categories=["Gene"], link=True, link_k=3,
                          kb_snapshot=linked["snapshot"])
    spans = docs[0].entities
    assert [e.text for e in spans] == TEXT.split()  # every word, as a Gene span
    for e in spans:
        assert e.type == "Gene" and 1 <= len(e.concepts) <= 3
        assert len({c.cui for c in e.concepts}) == len(e.concepts)  # one hit per concept
        for c in e.concepts:
            assert (c.cui, c.sab, c.code) in linked["stored"]  # a real id of this snapshot, nothing made up
            assert "Gene" in c.categories and c.cui in GENE_CUIS and c.preferred
    brca1 = spans[0].concepts[0]
    assert (brca1.cui, brca1.sab, brca1.code, brca1.name) == ("C0376571", "HGNC", "HGNC:1100", "BRCA1")
    assert spans[2].concepts[0].code == "HGNC:11998"  # TP53

    both = client.extract([TEXT], categories=["Disease", "Gene"], link=True)  # link_k 0: up to 5, 'latest'
    for e in both[0].entities:
        assert e.concepts and all(e.type in c.categories for c in e.concepts)
        assert all((c.cui, c.sab, c.code) in linked["stored"] for c in e.concepts)

    assert all(e.concepts == () for e in client.extract([TEXT], categories=["Gene"])[0].entities)
    streamed = list(client.extract_stream([TEXT, "TP53"], categories=["Gene"], link=True, link_k=1))
    assert [d.entities[0].concepts[0].cui for d in streamed] == ["C0376571", "C0079419"]


def test_extract_link_errors(linked):
    client = linked["client"]
    for k in (-1, 51):
        with pytest.raises(E.InvalidArgument, match="link_k must be between 1 and 50"):
            client.extract([TEXT], link=True, link_k=k)
    with pytest.raises(E.NotFound, match="kb-nope"):
        client.extract([TEXT], link=True, kb_snapshot="kb-nope")
    with pytest.raises(E.NotFound, match="kb-nope"):
        list(client.extract_stream([TEXT], link=True, kb_snapshot="kb-nope"))


def test_cli_remote_link_gives_the_in_process_concepts(linked):
    remote = vaner_extract(linked["home"], "--remote", linked["address"])

    def concepts(docs: list[dict]) -> list[list[tuple]]:
        return [[(c["cui"], c["name"], c["preferred"], c["sab"], c["code"], tuple(c["categories"]),
                  round(c["score"], 4)) for c in e["concepts"]] for e in docs[0]["entities"]]

    local = linked["in_process"]
    assert [e["text"] for e in remote[0]["entities"]] == [e["text"] for e in local[0]["entities"]] == TEXT.split()
    assert concepts(remote) == concepts(local)
    assert concepts(local)[0][0][4] == "HGNC:1100"
    assert set(remote[0]["entities"][0]["concepts"][0]) == set(local[0]["entities"][0]["concepts"][0])


def test_linking_without_a_snapshot_names_it(vaner_home):
    """The tagger's own KnowledgeBase (no tagger.kb_address) on a state dir with no snapshot."""
    kb = LinkingKnowledgeBase(ServeConfig.from_dict({"home": str(vaner_home)}, env={}))
    request = tagger_pb2.ExtractRequest(documents=[tagger_pb2.Document(text="BRCA1")],
                                        options=tagger_pb2.ExtractOptions(link=True))
    try:
        with pytest.raises(E.NotFound, match="KB snapshot 'latest': no complete KB snapshot"):
            TaggerServicer(core=None, kb=kb).Extract(request, None)  # before any model work
        assert isinstance(kb(), KnowledgeBase) and kb() is kb()
    finally:
        kb.close()
