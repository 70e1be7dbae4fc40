"""The spaCy peer must see exactly our words and gold spans, and be scored on exactly its own
predictions: words/tags -> spaCy Example -> O/B/I is lossless under conlleval reading."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("spacy")
pytest.importorskip("threadpoolctl")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from spacy_baseline import (  # noqa: E402
    BaselineConfig,
    doc_tags,
    measure_speed,
    predict_tags,
    sentence_doc,
    to_examples,
)

from vaner.categories import Category  # noqa: E402
from vaner.corpus import Sentence, tags_to_spans  # noqa: E402

CASES = [
    (("Familial", "breast", "cancer", "genes", "."), ("O", "B", "I", "O", "O")),
    (("ataxia", "-", "telangiectasia", "and", "APC"), ("B", "I", "I", "O", "B")),
    (("adjacent", "entities", "here"), ("B", "B", "I")),  # two entities back to back
    (("an", "I", "after", "O"), ("O", "I", "O", "I")),  # conlleval: each I after O opens an entity
    (("nothing", "here"), ("O", "O")),
    (("x",), ("I",)),
]


def _sentences() -> list[Sentence]:
    return [Sentence(w, t, Category.DISEASE, "ncbi") for w, t in CASES]


@pytest.fixture(scope="module")
def nlp():
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    return nlp


def test_round_trip_keeps_words_and_spans(nlp):
    for words, tags in CASES:
        doc = sentence_doc(nlp.vocab, words, tags, "Disease")
        assert [t.text for t in doc] == list(words)  # our tokenisation, not spaCy's
        assert all(t.ent_iob_ in ("B", "I", "O") for t in doc)  # outside is explicit, never missing
        assert {e.label_ for e in doc.ents} <= {"Disease"}
        back = doc_tags(doc)
        assert tags_to_spans(back) == tags_to_spans(tags)
        assert all(b == "O" or t != "O" for b, t in zip(back, tags, strict=True))


def test_examples_carry_gold_only_on_the_reference(nlp):
    examples = to_examples(nlp, _sentences(), "Disease")
    for eg, (words, tags) in zip(examples, CASES, strict=True):
        assert len(eg.predicted.ents) == 0
        assert [t.text for t in eg.predicted] == list(words)
        assert [(e.start, e.end) for e in eg.reference.ents] == tags_to_spans(tags)
        assert "-" not in eg.get_aligned_ner()  # every gold token is B/I/L/U or O: nothing missing


def test_trained_pipe_predicts_one_tag_per_word(nlp):
    from spacy.util import fix_random_seed

    fix_random_seed(0)
    sentences = _sentences()
    optimizer = nlp.initialize(lambda: to_examples(nlp, sentences, "Disease"))
    for _ in range(3):
        nlp.update(to_examples(nlp, sentences, "Disease"), sgd=optimizer)
    pred = predict_tags(nlp, sentences)
    assert [len(p) for p in pred] == [len(s.words) for s in sentences]
    assert all(set(p) <= {"O", "B", "I"} for p in pred)
    speed = measure_speed(nlp, sentences, threads=1)
    assert speed["sentences"] == len(sentences) and speed["words_per_s"] > 0


def test_config_validates_itself():
    with pytest.raises(ValueError, match="--patience"):
        BaselineConfig(patience=0)
    with pytest.raises(ValueError, match="--max-minutes"):
        BaselineConfig(max_minutes=0)


def _add_row(path: str, name: str) -> None:
    from spacy_baseline import update_report

    update_report(Path(path), lambda r: r["rows"].append({"dataset": name, "test": {"f1": 1.0}}))


def test_concurrent_runs_share_one_report(tmp_path):
    """Two processes (one per core) filling the same --out keep each other's rows."""
    import multiprocessing as mp

    out = tmp_path / "report.json"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_add_row, args=(str(out), n)) for n in ("s800", "ncbi", "bc2gm", "jnlpba")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    from spacy_baseline import load_report

    assert [r["dataset"] for r in load_report(out)["rows"]] == ["ncbi", "bc2gm", "jnlpba", "s800"]  # registry order
    assert not list(tmp_path.glob(".*.tmp"))
