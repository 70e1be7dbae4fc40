"""bench/tagger_missed_mentions.py through the real model path on tiny models: what one model misses
and the other finds adds up, so the per-mention table explains the F1 gap it is quoted for."""

from __future__ import annotations

import json

from services.testing import make_tiny_model
from tests.bench_modules import load_bench
from tests.test_dbr_fakes import write_data_dir


def test_missed_mentions_add_up(tmp_path, tiny_backbone):
    bench = load_bench("tagger_missed_mentions")
    data = write_data_dir(tmp_path / "data")
    every = make_tiny_model(tiny_backbone, tmp_path / "every", tag_every_word=True)  # finds one-word mentions
    other = make_tiny_model(tiny_backbone, tmp_path / "other", seed=3)
    out = tmp_path / "missed.json"
    assert bench.main(["--dataset", "ncbi", "--split", "dev", "--data-dir", str(data), "--models",
                       f"every={every},other={other}", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    ref, cand = rep["models"]["every"], rep["models"]["other"]
    assert 0 <= ref["missed"] <= rep["gold_mentions"] and 0 <= cand["missed"] <= rep["gold_mentions"]
    only = sum(n for _, n, _ in cand["missed_where_every_finds"])
    also = sum(n for _, n, _ in cand["found_where_every_misses"])
    assert cand["missed"] == ref["missed"] + only - also  # with --top large enough to list every string
