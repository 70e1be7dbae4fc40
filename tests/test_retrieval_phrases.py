"""Phrase miner: boundaries, quality n-grams, determinism, and coverage on a real training set."""

from __future__ import annotations

import pytest

from retrieval.phrases import MinerConfig, PhraseMiner, chunks
from vaner.errors import InvalidArgument


def _w(text: str) -> list[str]:
    return text.split()


def test_chunks_cut_at_stopwords_and_keep_short_parentheses():
    words = _w("The adenomatous polyposis coli ( APC ) tumour - suppressor protein controls the Wnt pathway .")
    spans = [" ".join(words[s:e]) for s, e in chunks(words)]
    assert "adenomatous polyposis coli ( APC ) tumour - suppressor protein controls" in spans
    assert "Wnt pathway" in spans
    assert all(not s.lower().startswith("the ") for s in spans)


def test_genus_abbreviation_is_one_phrase():
    words = _w("Growth of S . aureus in human serum .")
    miner = PhraseMiner().fit([words])
    texts = {p.text for p in miner.mine(words)}
    assert "S . aureus" in texts
    assert "human" in texts


def test_cohesive_subphrase_is_mined_from_a_longer_chunk():
    corpus = [_w("familial breast cancer patients were enrolled ."), _w("breast cancer risk rises ."),
              _w("breast cancer is common ."), _w("the breast is dense ."), _w("cancer kills .")]
    miner = PhraseMiner().fit(corpus)
    texts = [p.text for p in miner.mine(corpus[0])]
    assert "breast cancer" in texts
    assert "familial breast cancer patients" in texts  # the whole chunk comes first
    assert texts[0] == "familial breast cancer patients"


def test_no_stopword_or_punctuation_only_phrases_and_cap():
    words = _w("the of , and . ( ) 12 % in")
    assert PhraseMiner().fit([words]).mine(words) == []
    long = [f"w{i}" for i in range(100)]
    assert len(PhraseMiner(MinerConfig(max_phrases=7)).fit([long]).mine(long)) == 7


def test_mining_is_deterministic_and_unique():
    words = _w("Mutations in BRCA1 cause familial breast cancer and ovarian cancer in BRCA1 carriers .")
    m = PhraseMiner().fit([words] * 3)
    a, b = m.mine(words), m.mine(words)
    assert a == b
    assert len({p.text.lower() for p in a}) == len(a)
    for p in a:
        assert " ".join(words[p.start:p.end]) == p.text


def test_config_validation():
    with pytest.raises(InvalidArgument):
        MinerConfig(max_len=0)
    with pytest.raises(InvalidArgument):
        MinerConfig(max_df=0)


def test_coverage_on_ncbi_train_is_high(data_dir):
    """Guards against a regression of the miner on real data (measured: ~82% exact, ~96% head)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from dbr_phrase_coverage import coverage

    from vaner.corpus import load_dataset

    train = load_dataset("ncbi", "train", data_dir)
    miner = PhraseMiner().fit(s.words for s in train)
    row = coverage(train[:2000], miner)
    assert row["exact"] > 0.7
    assert row["head"] > 0.9
