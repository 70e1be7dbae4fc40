"""DBR assembly: counts and tags, determinism for a seed, random mode counts, and the cache."""

from __future__ import annotations

import json
import random

import pytest

from retrieval.dbr import DbrBuilder, DbrParams, assemble, dbr_stats, entity_words, list_sets
from tests.test_dbr_fakes import FakeKB, write_data_dir
from vaner.categories import Category
from vaner.corpus import load_dataset, tags_to_spans
from vaner.errors import InvalidArgument, NotFound
from vaner.settings import Settings


@pytest.fixture()
def env(tmp_path):
    data = write_data_dir(tmp_path / "data")
    settings = Settings(home=tmp_path / "home").ensure()
    return settings, data


def test_assemble_tags_and_caps():
    pos = [f"disease {i}" for i in range(20)]
    neg = [f"chem{i}" for i in range(9)]
    s = assemble(Category.DISEASE, pos, neg, random.Random(1))
    assert s.dataset is None and s.category is Category.DISEASE
    spans = s.spans()
    assert len(spans) == 10  # at most 10 positives, each B I
    for a, b in spans:
        assert s.tags[a] == "B" and all(t == "I" for t in s.tags[a + 1:b])
    negatives = [w for w, t in zip(s.words, s.tags, strict=True) if w.startswith("chem")]
    assert len(negatives) == 5 and all(t == "O" for w, t in zip(s.words, s.tags, strict=True) if w.startswith("chem"))
    assert assemble(Category.GENE, [], [], random.Random(0)) is None


def test_entity_words_split_like_the_corpora():
    assert entity_words("IL-2 receptor (alpha)") == ["IL", "-", "2", "receptor", "(", "alpha", ")"]


def test_build_counts_tags_and_provenance(env):
    settings, data = env
    kb = FakeKB()
    s = DbrBuilder(settings, kb).build(["ncbi", "s800"], DbrParams(seed=3), data_dir=data)
    sents = s.load()
    assert s.sentences == len(sents) > 0
    for sent in sents:
        assert sent.dataset is None
        n_pos = len(sent.spans())
        assert 1 <= n_pos <= 10 or all(t == "O" for t in sent.tags)
    m = json.loads((s.path / "manifest.json").read_text())
    assert m["snapshot"] == "snap-1" and m["datasets"] == ["ncbi", "s800"]
    assert m["params"]["max_positive"] == 10 and m["params"]["max_negative"] == 5
    assert {"created_at", "code_version", "miner_version", "counts", "data_fingerprints"} <= set(m)
    assert m["counts"]["positives"] <= 10 * m["counts"]["sentences"]
    assert m["counts"]["negatives"] <= 5 * m["counts"]["sentences"]
    # the all-stopword ncbi sentence yields no query phrase, so no DBR sentence
    assert m["counts"]["skipped_no_entities"] >= 1


def test_negatives_are_other_categories_only(env):
    settings, data = env
    kb = FakeKB()
    names = {n: set(c) for _, n, c in kb.entries}
    for sent in DbrBuilder(settings, kb).build(["ncbi"], DbrParams(), data_dir=data).load():
        text = " ".join(sent.words)
        for name, cats in names.items():
            toks = entity_words(name)
            for i in range(len(sent.words) - len(toks) + 1):
                if list(sent.words[i:i + len(toks)]) == toks and sent.tags[i] == "B" and len(toks) > 1:
                    assert Category.DISEASE in cats, text


def test_deterministic_for_a_seed_and_varies_with_seed(env, tmp_path):
    settings, data = env
    a = DbrBuilder(settings, FakeKB()).build(["ncbi", "s800"], DbrParams(seed=7), data_dir=data)
    other = Settings(home=tmp_path / "home2").ensure()
    b = DbrBuilder(other, FakeKB()).build(["ncbi", "s800"], DbrParams(seed=7), data_dir=data)
    assert a.id == b.id
    assert (a.path / "sentences.jsonl").read_bytes() == (b.path / "sentences.jsonl").read_bytes()
    c = DbrBuilder(settings, FakeKB()).build(["ncbi", "s800"], DbrParams(seed=8), data_dir=data)
    assert c.id != a.id
    assert (c.path / "sentences.jsonl").read_bytes() != (a.path / "sentences.jsonl").read_bytes()


def test_cache_reused_until_the_key_changes(env):
    settings, data = env
    kb = FakeKB()
    builder = DbrBuilder(settings, kb)
    first = builder.build(["ncbi"], DbrParams(), data_dir=data)
    calls = kb.search_calls
    again = builder.build(["ncbi"], DbrParams(), data_dir=data)
    assert again.cached and again.id == first.id and kb.search_calls == calls
    # new snapshot -> new key -> rebuilt
    kb2 = FakeKB(snapshot_id="snap-2")
    rebuilt = DbrBuilder(settings, kb2).build(["ncbi"], DbrParams(), data_dir=data)
    assert rebuilt.id != first.id and not rebuilt.cached and rebuilt.snapshot == "snap-2"
    # changed training data -> new key
    (data / "ncbi" / "train.tsv").write_text((data / "ncbi" / "train.tsv").read_text() + "\nnew\tO\n")
    assert DbrBuilder(settings, kb).build(["ncbi"], DbrParams(), data_dir=data).id != first.id
    assert len(list_sets(settings)) == 3
    assert not list(settings.dbr_dir.glob(".*tmp*"))


def test_random_mode_keeps_per_sentence_counts(env):
    settings, data = env
    builder = DbrBuilder(settings, FakeKB())
    rand = builder.build(["ncbi", "s800"], DbrParams(mode="random", seed=2), data_dir=data)
    retr = builder.build(["ncbi", "s800"], DbrParams(mode="retrieved", seed=2), data_dir=data)
    assert rand.manifest["counts_from"] == retr.id
    r_rows = [json.loads(x) for x in (retr.path / "sentences.jsonl").read_text().splitlines()]
    x_rows = [json.loads(x) for x in (rand.path / "sentences.jsonl").read_text().splitlines()]
    assert [(r["n_pos"], r["n_neg"], r["origin"]) for r in r_rows] == \
           [(r["n_pos"], r["n_neg"], r["origin"]) for r in x_rows]
    for r in x_rows:
        assert sum(t == "B" for t in r["tags"]) == r["n_pos"]


def test_bad_inputs(env):
    settings, data = env
    with pytest.raises(InvalidArgument):
        DbrParams(mode="oracle")
    with pytest.raises(InvalidArgument):
        DbrBuilder(settings, FakeKB()).build([], data_dir=data)
    with pytest.raises(NotFound):
        DbrBuilder(settings, FakeKB()).build(["nosuch"], data_dir=data)
    with pytest.raises(NotFound):
        DbrBuilder(settings, FakeKB()).build(["ncbi"], snapshot="snap-404", data_dir=data)
    with pytest.raises(NotFound):
        DbrBuilder(settings, FakeKB()).build(["bc2gm"], data_dir=data)


def test_train_dbr_uses_the_retrainer_dbr_code(env, monkeypatch):
    """``vaner train --dbr`` gets its sentences from Retrainer.dbr_set, as ``vaner retrain`` does."""
    import kb_ingest.kb
    from retrieval.cli import training_dbr
    from retrieval.retrain import Retrainer

    settings, data = env
    kb = FakeKB()
    monkeypatch.setattr(kb_ingest.kb, "KnowledgeBase", lambda s: kb)
    snap, sents = training_dbr(settings, "latest", ["ncbi"], "retrieved", 0, str(data), None)
    assert snap == "snap-1" and sents and all(s.dataset is None for s in sents)
    same = Retrainer(settings, kb=kb).dbr_set(snap, ["ncbi"], "retrieved", 0, str(data))
    assert same.load() == sents
    assert training_dbr(settings, "latest", ["ncbi"], "none", 0, str(data), None) == ("snap-1", [])


def test_rows_record_what_was_injected_and_stats_read_it(env):
    settings, data = env
    kb = FakeKB()
    cui = {name: c for c, name, _ in kb.entries}
    corpora = {n: load_dataset(n, "train", data) for n in ("ncbi", "s800")}
    for mode in ("retrieved", "random"):
        s = DbrBuilder(settings, kb).build(["ncbi", "s800"], DbrParams(mode=mode, seed=3), data_dir=data)
        rows = [json.loads(x) for x in (s.path / "sentences.jsonl").read_text().splitlines()]
        for r in rows:
            assert len(r["pos"]) == r["n_pos"] and len(r["neg"]) == r["n_neg"]
            assert all(cui[name] == c for name, c in r["pos"] + r["neg"])
            positives = [" ".join(r["words"][a:b]) for a, b in tags_to_spans(r["tags"])]
            assert sorted(positives) == sorted(" ".join(entity_words(n)) for n, _ in r["pos"])
        st = dbr_stats(s, corpora)
        assert st["sentences"] == len(rows) and st["training_sentences"] == 6
        assert st["coverage"] == round(len(rows) / 6, 4)
        n_pos, n_neg = sum(r["n_pos"] for r in rows), sum(r["n_neg"] for r in rows)
        assert st["entities_per_sentence"] == round((n_pos + n_neg) / len(rows), 3)
        assert st["positive_share"] == round(n_pos / (n_pos + n_neg), 4)
        assert st["distinct_concepts"] == len({c for r in rows for _, c in r["pos"] + r["neg"]})
        assert st["dataset_entities_per_sentence"] == round(7 / 6, 3)  # 4 ncbi + 3 s800 mentions
        assert 0 <= st["gold_mentions_injected"] <= 1 and 0 <= st["positives_that_are_gold"] <= 1
    # "breast cancer" and "ovarian cancer" are gold in ncbi sentence 1 and KB names: retrieved finds them
    retrieved = dbr_stats(DbrBuilder(settings, kb).build(["ncbi", "s800"], DbrParams(seed=3), data_dir=data),
                          corpora)
    assert retrieved["gold_mentions_injected"] > 0


def test_max_uses_spreads_the_set_over_distinct_names(env):
    """``max_uses=1``: no KB name appears in two DBR sentences; the default lets retrieval repeat them."""
    settings, data = env
    builder = DbrBuilder(settings, FakeKB())

    def uses(dbr) -> dict[str, int]:
        rows = [json.loads(x) for x in (dbr.path / "sentences.jsonl").read_text().splitlines()]
        out: dict[str, int] = {}
        for r in rows:
            for name, _cui in r["pos"] + r["neg"]:
                out[name.lower()] = out.get(name.lower(), 0) + 1
        return out

    free = builder.build(["ncbi", "s800"], DbrParams(seed=1), data_dir=data)
    once = builder.build(["ncbi", "s800"], DbrParams(seed=1, max_uses=1), data_dir=data)
    assert max(uses(free).values()) > 1  # the fake KB is small: retrieval repeats names
    assert max(uses(once).values()) == 1
    assert once.id != free.id and once.manifest["counts"]["dropped_by_max_uses"] > 0
    assert free.id == builder.build(["ncbi", "s800"], DbrParams(seed=1, max_uses=0), data_dir=data).id
    with pytest.raises(InvalidArgument, match="max_uses"):
        DbrParams(max_uses=-1)
