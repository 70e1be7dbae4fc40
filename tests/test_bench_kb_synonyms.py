"""bench/kb_synonyms.py on a small synthetic release (never the open KB in tests): the split
holds names out of the ingest, each encoder and its aligned version are scored, JSON + PNG written."""

from __future__ import annotations

import gzip
import json
import shutil

from kb_ingest.filters import normalise
from kb_ingest.testing import synth_umls, tiny_static_encoder_dir
from tests.bench_modules import load_bench


def test_synonym_benchmark_on_a_synthetic_gz_release(tmp_path):
    bench = load_bench("kb_synonyms")
    synth_umls(tmp_path / "meta", 4000, seed=5)
    for name in ("MRCONSO.RRF", "MRSTY.RRF"):
        with (tmp_path / "meta" / name).open("rb") as fi, gzip.open(tmp_path / "meta" / (name + ".gz"), "wb") as fo:
            shutil.copyfileobj(fi, fo)
        (tmp_path / "meta" / name).unlink()
    (tmp_path / "meta" / "MRFILES.RRF").unlink()
    enc = tiny_static_encoder_dir(tmp_path / "m2v")
    out = tmp_path / "res" / "syn.json"
    report = bench.main([str(tmp_path / "meta" / "MRCONSO.RRF.gz"), "--encoders", str(enc), "--holdout", "25",
                         "--max-terms", "800", "--align", "--align-steps", "15", "--align-batch", "8",
                         "--work", str(tmp_path / "work"), "--out", str(out), "--no-command"])
    assert json.loads(out.read_text()) == report and out.with_suffix(".png").stat().st_size > 1000
    split = report["split"]
    assert split["held_out"] == 25 and 800 <= split["slice_terms"] < 800 + 20 and split["eligible_concepts"] >= 25
    plain, aligned = report["results"]
    assert not plain["aligned"] and aligned["aligned"] and aligned["base"] == plain["encoder"]
    assert plain["terms"] == aligned["terms"] == split["slice_terms"] - 25  # held-out names were not ingested
    for r in (plain, aligned):
        assert 0 <= r["acc@1"] <= r["recall@10"] <= 1 and r["queries"] == 25
    assert plain["encode_terms_per_s"] > 0 and aligned["margin_after"] > aligned["margin_before"]
    # the held-out names really are absent from the ingested copy
    held = bench.choose_split  # same seed, same split
    copy = (tmp_path / "work" / "release" / "MRCONSO.RRF").read_text().splitlines()
    stored = {(line.split("|")[0], normalise(line.split("|")[14])) for line in copy}
    mrconso = tmp_path / "meta" / "MRCONSO.RRF.gz"
    s = held(mrconso, tmp_path / "meta" / "MRSTY.RRF.gz", None, holdout=25, max_terms=800, seed=0)
    assert all((h.cui, normalise(h.name)) not in stored for h in s.held_out)
    assert all(any(c == h.cui for c, _ in stored) for h in s.held_out)  # its other names are there
