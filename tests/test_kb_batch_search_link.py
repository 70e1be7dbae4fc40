"""Batch search from the CLI and linking with real ids, on a small release in the open KB's shape
(SAB/CODE per atom) encoded by a tiny model2vec folder (the static-encoder code path, in a second)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from kb_ingest.cli import main
from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import SMALL_RELEASE, tiny_static_encoder_dir, write_small_release
from retrieval.linking import link_spans
from vaner.categories import Category
from vaner.settings import Settings


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture()
def small_kb(vaner_home, tmp_path, capsys):
    mrconso = write_small_release(tmp_path / "release", gz=True)
    encoder = tiny_static_encoder_dir(tmp_path / "tiny-m2v")
    rc, out, err = run(capsys, "umls", str(mrconso), "--encoder", str(encoder), "--json", "-q")
    assert rc == 0, err
    return json.loads(out), encoder


def test_search_input_file_keeps_order_and_blank_lines(small_kb, tmp_path, capsys):
    queries = tmp_path / "queries.txt"
    queries.write_text("heart attack\n\n  \naspirin\r\nBRCA1\n", encoding="utf-8")
    rc, out, err = run(capsys, "search", "--input", str(queries), "-k", "2", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert [len(r) for r in res] == [2, 0, 0, 2, 2]  # one hit list per line, blank lines -> []
    assert res[0][0]["name"] == "heart attack" and res[3][0]["name"] == "aspirin" and res[4][0]["name"] == "BRCA1"
    assert res[4][0]["sab"] == "HGNC" and res[4][0]["code"] == "HGNC:1100"
    single = json.loads(run(capsys, "search", "aspirin", "-k", "2", "--json")[1])
    assert single == res[3]  # the same query alone gives the same hits
    per = json.loads(run(capsys, "search", "--input", str(queries), "-k", "3", "--per-concept", "--json")[1])
    assert all(len({h["cui"] for h in r}) == len(r) for r in per) and per[1] == []


def test_search_stdin_text_output_and_errors(small_kb, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("tylenol\n\nE. coli\n"))
    rc, out, _ = run(capsys, "search", "--input", "-", "-k", "1")
    assert rc == 0
    assert out.splitlines()[0] == "# 1: tylenol" and "no match" in out and "# 3: E. coli" in out
    assert "DRUGBANK:DB00316" in out or "DB00316" in out

    rc, out, err = run(capsys, "search", "--input", str(tmp_path / "queries.txt"), "--snapshot", "kb-nope")
    assert rc != 0 and out == "" and err.startswith("error:") and "no such file" in err
    (tmp_path / "q.txt").write_text("\n\n")
    rc, out, err = run(capsys, "search", "--input", str(tmp_path / "q.txt"), "--snapshot", "kb-nope", "--json")
    assert rc != 0 and out == "" and "snapshot 'kb-nope' not found" in err and len(err.splitlines()) == 1
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    rc, _, err = run(capsys, "search", "--input", str(tmp_path / "bad.txt"))
    assert rc != 0 and "bad.txt:2: not valid UTF-8" in err
    rc, _, err = run(capsys, "search", "x", "--input", str(tmp_path / "q.txt"))
    assert rc != 0 and "not both" in err


def test_linking_returns_only_ids_of_the_snapshot_one_per_concept(small_kb, vaner_home):
    info, _ = small_kb
    kb = KnowledgeBase(Settings(home=vaner_home))
    stored = {(p["cui"], p["sab"], p["code"], p["preferred"]) for _, p in kb.iter_points(info["snapshot"])}
    assert ("C0376571", "HGNC", "HGNC:1100", "BRCA1") in stored
    spans = ["heart attack", "BRCA1 gene", "acetaminophen", "E. coli", "breast cancer", "unknown xyz"]
    cats = [Category.DISEASE, Category.GENE, Category.CHEMICAL, Category.SPECIES, Category.GENE, None]
    out = link_spans(kb, spans, k=3, categories=cats)
    assert len(out) == len(spans)
    by_cui = {c: cat for c, cat, _ in SMALL_RELEASE}
    gene_tuis = {"T028"}
    for hits, cat in zip(out, cats, strict=True):
        assert hits and len({h.cui for h in hits}) == len(hits)  # one hit per concept
        for h in hits:
            assert (h.cui, h.sab, h.code, h.preferred) in stored  # a real id of this snapshot, nothing made up
            if cat is not None:
                assert cat in h.categories
            if cat is Category.GENE:
                assert by_cui[h.cui] in gene_tuis  # 'breast cancer' as a Gene span links to BRCA1, not the disease
    assert out[1][0].cui == "C0376571" and out[1][0].code == "HGNC:1100"
    assert out[4][0].cui == "C0376571"
    assert out[0][0].to_json()["code"] in ("DOID:5844", "MONDO:0005068")
    kb.close()
