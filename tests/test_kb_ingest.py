"""The ingest pipeline and the KnowledgeBase facade on the embedded stores (SQLite + qdrant-edge),
with a hash encoder: these tests are about snapshots, filters, search and failure handling, not
about embeddings (tests/test_kb_encoder.py and test_kb_cli.py use the real MiniLM)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kb_ingest import ingest as ingest_mod
from kb_ingest.kb import KnowledgeBase, hit_sort_key
from kb_ingest.testing import hash_encoder, mrconso_row, write_mrfiles, write_rrf
from vaner.categories import Category
from vaner.errors import AlreadyRunning, FailedPrecondition, InvalidArgument, NotFound
from vaner.settings import Settings

FIX = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent
ENC = hash_encoder()


def make_kb(home: Path, enc=ENC) -> KnowledgeBase:
    encoders = {enc.name: enc, None: enc}
    return KnowledgeBase(Settings(home=home), encoder_loader=lambda name: encoders.get(name) or _unknown(name))


def _unknown(name):
    raise NotFound(f"unknown encoder {name!r}")


@pytest.fixture()
def kb(vaner_home):
    k = make_kb(vaner_home)
    yield k
    k.close()


def test_ingest_fixture_counts_payload_and_snapshot(kb):
    info = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    assert info.status == "complete" and info.latest and info.kind == "umls"
    assert info.umls_release == "2099AA" and info.encoder == ENC.name and info.dimension == ENC.dimension
    assert info.concepts == 7 and info.terms == 13
    assert info.skipped == {"language": 2, "suppressed": 2, "duplicate_string": 2,
                            "other_semantic_type": 1, "no_semantic_type": 1}
    assert [Path(s["path"]).name for s in info.sources] == ["MRCONSO.RRF", "MRSTY.RRF"]
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in info.sources)
    assert info.filters["languages"] == ["ENG"] and info.filters["keep_suppressed"] is False
    hit = kb.search(["Insulin"], k=1)[0][0]
    assert (hit.cui, hit.name, hit.categories, hit.tuis) == ("C0021641", "Insulin",
                                                            (Category.CHEMICAL, Category.GENE),
                                                            ("T116", "T121", "T125"))
    assert hit.source == "umls:2099AA" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert info.to_json()["snapshot"] == info.id


def test_search_contract(kb):
    kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    assert kb.search([]) == []
    res = kb.search(["neoplasm", "", "   "], k=3)
    assert len(res) == 3 and res[1] == [] and res[2] == []
    assert res[0][0].name == "neoplasm" and res[0][0].preferred == "neoplasm"
    assert res[0] == sorted(res[0], key=hit_sort_key)
    only = kb.search(["Insulin"], categories=[Category.DISEASE], k=20)[0]
    assert only and all(Category.DISEASE in h.categories for h in only)
    species = kb.search(["mouse"], categories=[Category.SPECIES, Category.GENE], k=20)[0]
    assert {h.cui for h in species} == {"C0025914", "C0086418", "C0021641", "C0376571"}
    vec = ENC.encode(["BRCA1"])
    assert kb.search(vectors=vec, k=1)[0][0].name == "BRCA1"
    with pytest.raises(InvalidArgument, match="384|32-d"):  # the caller's vector, not the system's state
        kb.search(vectors=np.ones((1, 5), dtype=np.float32))
    bad = np.vstack([vec, np.full_like(vec, np.nan)])
    with pytest.raises(InvalidArgument, match=r"vectors\[1\] holds NaN"):
        kb.search(vectors=bad)
    assert kb.search(vectors=np.zeros_like(vec)) == [[]]  # a zero vector points nowhere: no hits
    by_concept = kb.search(["Diabetes Mellitus"], k=3, one_per_concept=True)[0]
    assert [h.cui for h in by_concept][:1] == ["C0011849"] and len({h.cui for h in by_concept}) == 3
    with pytest.raises(InvalidArgument):
        kb.search(["x"], k=0)
    with pytest.raises(InvalidArgument):
        kb.search(["x"], vectors=vec)
    with pytest.raises(FailedPrecondition, match="built with encoder"):
        kb.search(["x"], encoder="all-MiniLM-L6-v2")


def test_ties_are_broken_by_cui_then_name(vaner_home, tmp_path):
    meta = tmp_path / "META"
    meta.mkdir()
    write_rrf(meta / "MRCONSO.RRF", [mrconso_row("C0000003", "same", n=1), mrconso_row("C0000001", "same", n=2),
                                     mrconso_row("C0000002", "Same", n=3)])
    write_rrf(meta / "MRSTY.RRF", [[f"C000000{i}", "T047", "B", "D", f"AT{i}", ""] for i in (1, 2, 3)])
    kb = make_kb(vaner_home)
    kb.ingest_umls(meta / "MRCONSO.RRF")
    assert [h.cui for h in kb.search(["same"], k=3)[0]] == ["C0000001", "C0000002", "C0000003"]


def test_filters_reach_the_snapshot(kb):
    info = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF", languages=("ENG", "FRE"), exclude_sabs=("HGNC",),
                          keep_suppressed=True)
    assert info.filters["languages"] == ["ENG", "FRE"] and info.filters["exclude_sabs"] == ["HGNC"]
    names = {h.name for h in kb.sample_random(100)}
    assert "Diabète sucré" in names and "Cancer" in names and "BRCA1" not in names


def test_snapshots_latest_drop_and_encoder_record(kb, tmp_path):
    a = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    b = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF", include_sabs=("NCBI",))
    listed = kb.snapshots()
    assert [s.id for s in listed] == [a.id, b.id]
    assert [s.latest for s in listed] == [False, True]
    assert kb.get_snapshot().id == b.id and kb.get_snapshot(a.id).id == a.id
    assert {h.cui for h in kb.search(["Aspirin"], snapshot=a.id, k=20)[0]} > {"C0004057"}
    assert {h.cui for h in kb.search(["Aspirin"], k=20)[0]} == {"C0025914", "C0086418"}
    kb.drop(b.id)
    assert kb.get_snapshot().id == a.id  # the previous complete snapshot takes over
    kb.drop("latest")
    with pytest.raises(NotFound, match="no complete KB snapshot"):
        kb.get_snapshot()
    with pytest.raises(NotFound):
        kb.search(["x"])
    with pytest.raises(NotFound, match="not found"):
        kb.drop("kb-nope")


def test_sample_random_is_deterministic(kb):
    kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    a = kb.sample_random(5, seed=3)
    assert a == kb.sample_random(5, seed=3) and len(a) == 5 and len({(h.cui, h.name) for h in a}) == 5
    assert a != kb.sample_random(5, seed=4)
    genes = kb.sample_random(10, categories=[Category.GENE], seed=1)
    assert {h.cui for h in genes} == {"C0021641", "C0376571"} and len(genes) == 4
    assert kb.sample_random(0) == []


def test_failed_ingest_keeps_latest_and_its_data(kb, monkeypatch):
    good = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    before = kb.search(["Aspirin"], k=3)
    calls = {"n": 0}
    real_flush = ingest_mod.BatchWriter.flush

    def failing_flush(self):
        calls["n"] += 1
        real_flush(self)
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(ingest_mod.BatchWriter, "flush", failing_flush)
    with pytest.raises(RuntimeError, match="injected"):
        kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    monkeypatch.undo()
    snaps = kb.snapshots()
    assert [s.status for s in snaps] == ["complete", "failed"] and "injected" in snaps[1].error
    assert not kb.store.exists(snaps[1].collection)  # the failed snapshot's vectors are gone
    assert kb.get_snapshot().id == good.id and kb.search(["Aspirin"], k=3) == before
    again = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    assert again.latest and again.terms == good.terms


def test_bad_input_fails_cleanly(kb, tmp_path):
    kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    with pytest.raises(InvalidArgument, match=r"3 of 24 lines are malformed"):
        kb.ingest_umls(FIX / "umls_dirty" / "MRCONSO.RRF")
    with pytest.raises(InvalidArgument, match=r"MRCONSO.RRF:4: field count"):
        kb.ingest_umls(FIX / "umls_dirty" / "MRCONSO.RRF", strict=True)
    with pytest.raises(NotFound, match="no such file"):
        kb.ingest_umls(tmp_path / "MRCONSO.RRF")
    with pytest.raises(InvalidArgument, match="is a directory"):
        kb.ingest_umls(tmp_path)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(FIX / "umls" / "MRCONSO.RRF", lonely / "MRCONSO.RRF")
    with pytest.raises(NotFound, match="MRSTY.RRF: no such file.*--mrsty"):
        kb.ingest_umls(lonely / "MRCONSO.RRF")
    with pytest.raises(NotFound, match="unknown encoder"):
        kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF", encoder="nope")
    assert kb.get_snapshot().status == "complete"


def test_mrfiles_catches_truncated_copy(kb, tmp_path):
    meta = tmp_path / "META"
    shutil.copytree(FIX / "umls", meta)
    lines = (meta / "MRCONSO.RRF").read_text().splitlines(keepends=True)
    (meta / "MRCONSO.RRF").write_text("".join(lines[:15]))
    with pytest.raises(InvalidArgument, match="bytes but MRFILES.RRF expects .* truncated"):
        kb.ingest_umls(meta / "MRCONSO.RRF")
    # same size, fewer lines (e.g. a line lost and padding added): the row count catches it
    (meta / "MRCONSO.RRF").write_text("".join(lines[:15]) + "x" * 2000)
    with pytest.raises(InvalidArgument, match="read 16 lines but MRFILES.RRF expects 21"):
        kb.ingest_umls(meta / "MRCONSO.RRF", strict=False)
    (meta / "MRCONSO.RRF").write_text("".join(lines[:15]))
    write_mrfiles(meta)  # a consistent (smaller) release is fine
    assert kb.ingest_umls(meta / "MRCONSO.RRF").status == "complete"


def test_second_ingest_while_one_runs_is_refused(kb):
    with kb._ingest_lock(), pytest.raises(AlreadyRunning, match="a KB ingest is already running"):
        kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")


def test_dataset_snapshot_extends_latest(kb, tmp_path):
    base = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    conll = tmp_path / "ncbi" / "train.tsv"
    conll.parent.mkdir()
    conll.write_text("Familial\tB-Disease\nbreast\tI-Disease\ncancer\tI-Disease\nis\tO\nrare\tO\n\n"
                     "familial\tB-Disease\nbreast\tI-Disease\ncancer\tI-Disease\n.\tO\n\n"
                     "Diabetes\tB-Disease\nmellitus\tI-Disease\n\n")
    info = kb.ingest_dataset([conll], Category.DISEASE)
    assert info.kind == "dataset" and info.latest and info.filters["base_snapshot"] == base.id
    assert info.terms == base.terms + 2 and info.concepts == base.concepts + 2
    assert info.skipped["duplicate_string"] >= 1
    hit = kb.search(["Familial breast cancer"], k=1)[0][0]
    assert hit.cui.startswith("DS:") and hit.source == "dataset:ncbi/train.tsv"
    assert hit.categories == (Category.DISEASE,)
    assert kb.search(["Insulin"], k=1)[0][0].cui == "C0021641"  # UMLS part carried over
    alone = kb.ingest_dataset([conll], Category.DISEASE, base=None)
    assert alone.terms == 2
    with pytest.raises(InvalidArgument, match="bad.tsv:1"):
        bad = tmp_path / "bad.tsv"
        bad.write_text("word\tX-Disease\n")
        kb.ingest_dataset([bad], Category.DISEASE)


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kb_ingest import ingest
    from kb_ingest.kb import KnowledgeBase
    from kb_ingest.testing import hash_encoder
    from vaner.settings import Settings
    enc = hash_encoder()
    slow = enc.encode
    def encode(texts, batch_size=256):
        print("BATCH", flush=True)
        time.sleep(0.2)
        return slow(texts)
    enc.encode = encode
    ingest.ENCODE_BATCH = 50
    import kb_ingest.kb as kbm
    kbm.BatchWriter.__init__.__defaults__ = (0, 50, None, None)
    kb = KnowledgeBase(Settings(home=Path(sys.argv[1])), encoder_loader=lambda name: enc)
    kb.ingest_umls(Path(sys.argv[2]))
""")


def test_killed_ingest_leaves_latest_intact_and_rerun_works(vaner_home, tmp_path):
    kb = make_kb(vaner_home)
    good = kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    before = kb.search(["Aspirin", "BRCA1"], k=3)
    meta = tmp_path / "META"
    meta.mkdir()
    write_rrf(meta / "MRCONSO.RRF", [mrconso_row(f"C{i:07d}", f"term number {i}", n=i) for i in range(1, 601)])
    write_rrf(meta / "MRSTY.RRF", [[f"C{i:07d}", "T047", "B", "D", f"AT{i}", ""] for i in range(1, 601)])
    script = tmp_path / "slow_ingest.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(vaner_home), str(meta / "MRCONSO.RRF")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    try:
        seen = 0
        deadline = time.monotonic() + 300  # generous: CI machines can be loaded
        while seen < 3 and time.monotonic() < deadline:  # a few batches written: mid-ingest
            line = proc.stdout.readline()
            if not line:
                break
            seen += line.startswith("BATCH")
        assert seen == 3, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    snaps = kb.snapshots()
    assert [s.status for s in snaps] == ["complete", "building"]
    assert kb.get_snapshot().id == good.id
    assert kb.search(["Aspirin", "BRCA1"], k=3) == before
    rerun = kb.ingest_umls(meta / "MRCONSO.RRF")
    assert rerun.latest and rerun.terms == 600
    statuses = {s.id: s.status for s in kb.snapshots()}
    assert statuses[snaps[1].id] == "failed" and statuses[good.id] == "complete"
    assert not kb.store.exists(snaps[1].collection)


def test_concurrent_searches_share_one_kb(kb):
    """A gRPC server calls one KnowledgeBase from many threads."""
    from concurrent.futures import ThreadPoolExecutor

    kb.ingest_umls(FIX / "umls" / "MRCONSO.RRF")
    expected = kb.search(["Aspirin", "Homo sapiens"], k=3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: kb.search(["Aspirin", "Homo sapiens"], k=3), range(40)))
    assert all(r == expected for r in results)
