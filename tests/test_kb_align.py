"""``kb-ingest align``: synonym alignment on a tiny KB must move the names of one concept closer
than names of different concepts by a measured margin, be recorded (folder, manifest, kb_encoders
row) and re-encode the snapshot into a new latest that records the aligned encoder."""

from __future__ import annotations

import json

import pytest

from kb_ingest.align import AlignConfig, synonym_margin, synonym_sets
from kb_ingest.cli import main
from kb_ingest.kb import KnowledgeBase
from kb_ingest.testing import tiny_static_encoder_dir, write_small_release
from vaner.errors import FailedPrecondition, InvalidArgument
from vaner.settings import Settings

# mean cosine(synonyms) - mean cosine(non-synonyms), measured on the KB's own synonym pairs: a
# random static table starts near 0.1; 40 steps must add at least this much
MIN_MARGIN_GAIN = 0.3


@pytest.fixture()
def kb(vaner_home, tmp_path):
    k = KnowledgeBase(Settings(home=vaner_home))
    k.ingest_umls(write_small_release(tmp_path / "release"), encoder=str(tiny_static_encoder_dir(tmp_path / "m2v")))
    yield k
    k.close()


def test_static_alignment_moves_synonyms_closer_and_is_recorded(kb, vaner_home):
    base = kb.get_snapshot()
    sets = synonym_sets(p for _, p in kb.iter_points())
    assert len(sets) == 13 and sets.pairs_possible == 9 * 3 + 4 * 1  # nine 3-name concepts, four 2-name ones
    cfg = AlignConfig(max_steps=40, batch_size=8, seed=7)
    result, snap = kb.align(config=cfg)
    gain = result.after["margin"] - result.before["margin"]
    assert gain >= MIN_MARGIN_GAIN, (result.before, result.after)
    assert result.loss_last < result.loss_first / 2 and result.steps == 40
    # the new snapshot: latest, same terms, payloads kept, encoder recorded with its checksum
    assert snap.latest and snap.encoder == result.name == "m2v-aligned-1"  # stem of the base folder's name
    assert (snap.terms, snap.concepts) == (base.terms, base.concepts)
    assert snap.filters["reencoded_from"] == base.id and snap.filters["alignment"]["margin_after"] == result.after["margin"]
    rec = snap.filters["encoder"]
    assert rec["name"] == result.name and rec["backend"] == "model2vec" and len(rec["sha256"]) == 64
    assert rec["sha256"] == json.loads((result.folder / "vaner_encoder.json").read_text())["sha256"]
    row = kb.encoders.get(result.name)
    assert row.provenance["alignment"]["snapshot"] == base.id and row.provenance["base"]["name"] == base.encoder
    assert row.sha256 == rec["sha256"]
    # searching the new snapshot uses the aligned encoder: a synonym now finds its concept
    enc = kb.encoder_for(snap.id)
    assert synonym_margin(enc.encode, sets, seed=8)["margin"] > synonym_margin(
        kb.load_encoder(base.encoder).encode, sets, seed=8)["margin"] + MIN_MARGIN_GAIN / 2
    hits = kb.search(["cerebrovascular accident"], k=3)[0]
    assert hits[0].cui == "C0038454"


def test_alignment_is_seeded_and_names_new_versions(kb):
    cfg = AlignConfig(max_steps=10, batch_size=8, seed=3)
    base = kb.get_snapshot().id
    r1, _ = kb.align(base, config=cfg, reencode=False)
    r2, _ = kb.align(base, config=cfg, reencode=False)
    assert r1.name != r2.name and r2.name.endswith("-aligned-2")
    assert r1.after == r2.after and r1.loss_last == r2.loss_last  # same seed, same run


def test_align_cli_and_its_errors(kb, capsys):
    kb.close()  # the CLI opens the embedded vector store itself
    rc = main(["align", "--max-steps", "5", "--batch-size", "4", "--json", "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert res["steps"] == 5 and res["snapshot"]["encoder"] == res["encoder"]
    with pytest.raises(InvalidArgument, match="--batch-size must be >= 2"):
        AlignConfig(batch_size=1)
    rc = main(["align", "--snapshot", "kb-missing"])
    assert rc != 0 and "not found" in capsys.readouterr().err
    with pytest.raises(FailedPrecondition, match="ONNX export"):
        from kb_ingest.align import align_encoder
        from kb_ingest.encoder import Encoder

        align_encoder(Encoder("x", 2, None, backend="onnx"), synonym_sets([]), "x-aligned-1", home=".",
                      cfg=AlignConfig())
