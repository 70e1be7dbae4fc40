"""The corpus-agreement filter of DBR: KB names the training split contradicts are not taught."""

from __future__ import annotations

import json

import pytest

from retrieval.corpus_agreement import CorpusAgreement
from retrieval.dbr import DbrBuilder, DbrParams, dbr_stats, entity_words
from tests.test_dbr_fakes import KB_ENTRIES, FakeKB, write_data_dir
from vaner.categories import Category
from vaner.corpus import Sentence, load_dataset
from vaner.errors import InvalidArgument
from vaner.settings import Settings

D = Category.DISEASE


def _sent(text: str, tags: str) -> Sentence:
    return Sentence(tuple(text.split()), tuple(tags.split()), D, "ncbi")


def test_counts_occurrences_and_gold_mentions():
    table = CorpusAgreement.of([
        _sent("Human breast cancer in human cells", "O B I O O O"),
        _sent("breast cancer and high risk", "B I O O O"),
        _sent("Breast tissue", "O O"),
    ])
    assert table.tagged_share(["breast", "cancer"]) == 1.0
    assert table.tagged_share(["Breast"]) == pytest.approx(2 / 3)  # case-folded; inside a mention counts
    assert table.tagged_share(["cancer", "in"]) == 0.0  # crosses a mention's end
    assert table.tagged_share(["human"]) == 0.0
    assert table.tagged_share(["colon", "cancer"]) is None  # unseen: the corpus cannot judge
    assert table.tagged_share(["human"], min_occurrences=3) is None
    assert table.tagged_share(["a", "b", "c", "d", "e"]) is None  # longer than the n-grams counted

    assert table.agrees(["breast", "cancer"], True, 0.5)
    assert not table.agrees(["human"], True, 0.5)  # a positive the annotators never tag
    assert table.agrees(["human"], False, 0.5)
    assert not table.agrees(["breast", "cancer"], False, 0.5)  # a negative they always tag
    assert table.agrees(["colon", "cancer"], True, 0.5) and table.agrees(["colon", "cancer"], False, 0.5)


def test_out_of_range_setting_is_refused():
    with pytest.raises(InvalidArgument, match="corpus_agreement"):
        DbrParams(corpus_agreement=1.5)


@pytest.fixture()
def env(tmp_path):
    data = write_data_dir(tmp_path / "data")
    return Settings(home=tmp_path / "home").ensure(), data


def _tagged_names(dbr) -> set[str]:
    return {" ".join(s.words[a:b]).lower() for s in dbr.load() for a, b in s.spans()}


@pytest.mark.parametrize("mode", ["retrieved", "random"])
def test_a_kb_name_the_corpus_never_tags_is_not_taught_as_an_entity(env, mode):
    settings, data = env
    # "Patients" occurs in the NCBI training split, untagged; this KB calls it a disease
    kb = FakeKB([*KB_ENTRIES, ("C30", "Patients", (D,))])
    every = {"top_k": len(KB_ENTRIES) + 1, "max_positive": 10, "max_negative": 5, "mode": mode}
    builder = DbrBuilder(settings, kb)
    plain = builder.build(["ncbi"], DbrParams(**every), data_dir=data)
    assert "patients" in _tagged_names(plain)

    filtered = builder.build(["ncbi"], DbrParams(**every, corpus_agreement=0.5), data_dir=data)
    assert filtered.id != plain.id
    assert "patients" not in _tagged_names(filtered)
    assert {"breast cancer", "myotonic dystrophy"} <= _tagged_names(filtered)  # what the corpus tags stays
    dropped = filtered.manifest["counts"]["dropped_by_corpus_agreement"]
    assert dropped["positives"] >= 1

    corpora = {"ncbi": load_dataset("ncbi", "train", data)}
    assert dbr_stats(plain, corpora)["positives_contradicted"] > 0
    assert dbr_stats(filtered, corpora)["positives_contradicted"] == 0


def test_the_filter_off_keeps_the_keys_of_sets_built_before_it():
    import hashlib

    from retrieval.dbr import ASSEMBLY_VERSION, MINER_VERSION, cache_key

    params = DbrParams(seed=4)
    before = {k: v for k, v in params.to_dict().items()
              if k not in ("corpus_agreement", "max_uses")}  # the key's input before either option
    blob = json.dumps({"snapshot": "s", "datasets": ["ncbi"], "data": {"ncbi": "f"}, "params": before,
                       "miner": MINER_VERSION, "assembly": ASSEMBLY_VERSION}, sort_keys=True)
    assert cache_key("s", ["ncbi"], {"ncbi": "f"}, params) == f"retrieved-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    assert cache_key("s", ["ncbi"], {"ncbi": "f"}, DbrParams(seed=4, corpus_agreement=0.5)) != cache_key(
        "s", ["ncbi"], {"ncbi": "f"}, params)
    assert entity_words("Patients") == ["Patients"]
