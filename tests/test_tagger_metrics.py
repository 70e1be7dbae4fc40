"""Hand-counted conlleval-style entity metrics, and evaluate() on scripted and tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from tagger.evaluate import evaluate
from tagger.metrics import entity_prf
from vaner.categories import Category
from vaner.corpus import Sentence
from vaner.errors import InvalidArgument


def test_exact_match_only():
    gold = [["B", "I", "O", "B"], ["O", "B", "I", "I"]]
    pred = [["B", "I", "O", "O"], ["O", "B", "I", "O"]]
    # gold spans: (0,2),(3,4) | (1,4); pred: (0,2) | (1,3) -> tp 1, fp 1, fn 2
    m = entity_prf(gold, pred)
    assert (m["tp"], m["fp"], m["fn"], m["support"]) == (1, 1, 2, 3)
    assert m["precision"] == pytest.approx(50.0)
    assert m["recall"] == pytest.approx(100 / 3, abs=1e-3)
    assert m["f1"] == pytest.approx(40.0, abs=1e-3)


def test_i_after_o_opens_an_entity_like_conlleval():
    gold = [["O", "B", "I", "O"]]
    pred = [["O", "I", "I", "O"]]  # conlleval reads I-X after O as the start of an entity: exact match
    assert entity_prf(gold, pred)["f1"] == pytest.approx(100.0)
    pred2 = [["O", "B", "B", "O"]]  # two one-word entities: both wrong
    m = entity_prf(gold, pred2)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 2, 1) and m["f1"] == 0.0


def test_adjacent_entities_and_entity_at_sentence_end():
    gold = [["B", "B", "I"], ["I"]]
    pred = [["B", "B", "I"], ["B"]]
    m = entity_prf(gold, pred)
    assert (m["tp"], m["fp"], m["fn"]) == (3, 0, 0) and m["f1"] == pytest.approx(100.0)


def test_no_entities_anywhere_is_zero_not_a_crash():
    m = entity_prf([["O", "O"]], [["O", "O"]])
    assert (m["precision"], m["recall"], m["f1"], m["support"]) == (0.0, 0.0, 0.0, 0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        entity_prf([["O"]], [])
    with pytest.raises(ValueError):
        entity_prf([["O", "O"]], [["O"]])


class _Scripted:
    """predict_tags returning gold for even sentences and all-O for odd ones."""

    def __init__(self, sents):
        self.gold = {s.words: s.tags for s in sents}
        self.calls = []

    def predict_tags(self, queries, batch_size=32):
        self.calls.append([q.dataset for q in queries])
        out = []
        for q in queries:
            tags = list(self.gold[tuple(q.words)])
            out.append(tags if int(q.words[0][1:]) % 2 == 0 else ["O"] * len(tags))
        return out


def test_evaluate_counts_progress_and_per_dataset_breakdown():
    sents = [Sentence((f"w{i}", "x", "y"), ("B", "I", "O"), Category.DISEASE, "ncbi" if i < 4 else None)
             for i in range(6)]
    events = []
    res = evaluate(_Scripted(sents), sents, batch_size=2, progress=events.append, chunk=4)
    assert (res["tp"], res["fn"], res["fp"], res["support"]) == (3, 3, 0, 6)
    assert res["precision"] == pytest.approx(100.0) and res["recall"] == pytest.approx(50.0)
    assert res["sentences"] == 6 and res["words"] == 18
    assert set(res["by_dataset"]) == {"ncbi", "<Disease>"}
    assert res["by_dataset"]["ncbi"]["tp"] == 2
    assert events[-1].done == 6 and events[-1].total == 6
    with pytest.raises(InvalidArgument):
        evaluate(_Scripted([]), [])


def test_evaluate_on_tiny_model_runs(tiny_backbone):
    from tagger.config import TaggerConfig
    from tagger.model import VanerTagger

    tagger = VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=0)
    sents = [Sentence(("Breast", "cancer", "risk"), ("B", "I", "O"), Category.DISEASE, "ncbi"),
             Sentence(("BRCA1",), ("B",), Category.GENE, None)]
    res = evaluate(tagger, sents)
    assert 0 <= res["f1"] <= 100 and res["support"] == 2 and np.isfinite(res["seconds"])
