"""Extractor: decoding, offsets, overlap policy, empty input, linking, thread safety and hot swap.

A fake tagger with scripted probabilities tests the decoding exactly; the tiny random LLaMA tests
the real path end to end (its predictions are noise, but offsets and invariants must hold)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagger.config import TaggerConfig
from tagger.extract import Extractor, resolve_overlaps
from tagger.formats import Document, Entity, Passage, assemble
from tagger.model import VanerTagger
from vaner.categories import Category
from vaner.errors import Cancelled, InvalidArgument


class ScriptedTagger:
    """predict_proba from a rule: {category: {word: (tag, prob)}}; everything else O with 0.9."""

    def __init__(self, rules: dict):
        self.rules = rules
        self.queries = []

    def predict_proba(self, queries, batch_size=32):
        self.queries.extend(queries)
        out = []
        for q in queries:
            p = np.zeros((len(q.words), 3), dtype=np.float32)
            for i, w in enumerate(q.words):
                tag, prob = self.rules.get(q.category, {}).get(w, ("O", 0.9))
                k = "OBI".index(tag)
                p[i, :] = (1 - prob) / 2
                p[i, k] = prob
            out.append(p)
        return out


@pytest.fixture(scope="module")
def tiny_tagger(tiny_backbone):
    return VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=0)


def test_decoding_offsets_scores_and_conlleval_semantics():
    rules = {Category.DISEASE: {"breast": ("B", 0.8), "cancer": ("I", 0.6), "colitis": ("I", 0.7)}}
    ex = Extractor(ScriptedTagger(rules), decoding="argmax")
    text = "Risk of breast  cancer and colitis."
    (doc,) = ex.extract([Document("d", text)], [Category.DISEASE])
    assert [(e.start, e.end, e.text, e.type) for e in doc.entities] == [
        (8, 22, "breast  cancer", "Disease"), (27, 34, "colitis", "Disease")]  # I after O opens an entity
    assert doc.entities[0].score == pytest.approx(0.7)  # mean of 0.8 and 0.6
    assert doc.entities[1].score == pytest.approx(0.7)


def test_viterbi_decoding_never_lets_i_start_an_entity():
    # "cancer" is I with 0.4, O with 0.35: argmax reads "of cancer" as O I (an entity opened by I);
    # the constrained decoder must pick O or B for it (never an entity that an I opens)
    rules = {Category.DISEASE: {"cancer": ("I", 0.4)}}
    text = "Risk of cancer today."
    (doc,) = Extractor(ScriptedTagger(rules)).extract([Document("d", text)], [Category.DISEASE])
    assert all(e.text != "cancer" or e.score < 0.4 for e in doc.entities)
    (am,) = Extractor(ScriptedTagger(rules), decoding="argmax").extract([Document("d", text)], [Category.DISEASE])
    assert [e.text for e in am.entities] == ["cancer"]


def test_overlap_policy_best_keeps_higher_score_and_all_keeps_everything():
    rules = {Category.GENE: {"BRCA1": ("B", 0.95)},
             Category.DISEASE: {"BRCA1": ("B", 0.6), "deficiency": ("I", 0.6)}}
    text = "BRCA1 deficiency is rare."
    best = Extractor(ScriptedTagger(rules)).extract([Document("d", text)])[0]
    assert [(e.text, e.type) for e in best.entities] == [("BRCA1", "Gene")]
    every = Extractor(ScriptedTagger(rules), overlap="all").extract([Document("d", text)])[0]
    assert [(e.text, e.type) for e in every.entities] == [("BRCA1", "Gene"), ("BRCA1 deficiency", "Disease")]


def test_resolve_overlaps_tie_breaks_are_stable():
    a = Entity(0, 5, "x", "Gene", 0.5)
    b = Entity(0, 9, "y", "Disease", 0.5)
    c = Entity(3, 9, "z", "Chemical", 0.5)
    d = Entity(10, 12, "w", "Species", 0.1)
    assert resolve_overlaps([a, c, b, d]) == [b, d]  # equal scores: the longer span wins
    assert resolve_overlaps([Entity(0, 3, "x", "Gene", 0.5), Entity(0, 3, "x", "Disease", 0.5)]) == \
        [Entity(0, 3, "x", "Disease", 0.5)]  # then category order (Disease first)
    assert resolve_overlaps([a, b], "all") == [a, b]
    with pytest.raises(InvalidArgument, match="overlap policy"):
        resolve_overlaps([], "first")


def test_passages_are_split_separately_and_dataset_instruction_passes_through():
    tagger = ScriptedTagger({})
    doc = assemble("p", [Passage(0, "A title without period", "title"), Passage(23, "Body one. Body two.", "abstract")])
    Extractor(tagger).extract([doc], ["Disease"], dataset="ncbi")
    assert [list(q.words) for q in tagger.queries] == [["A", "title", "without", "period"], ["Body", "one", "."],
                                                       ["Body", "two", "."]]
    assert {q.dataset for q in tagger.queries} == {"ncbi"}
    Extractor(tagger).extract([doc], ["Gene"])
    assert tagger.queries[-1].dataset is None  # unseen text: dataset-free instruction


def test_empty_documents_are_skipped_but_keep_their_place():
    tagger = ScriptedTagger({Category.GENE: {"p53": ("B", 0.9)}})
    ex = Extractor(tagger)
    out = ex.extract([Document("a", ""), Document("b", "p53 binds."), Document("c", " \n\t ")], ["Gene"])
    assert [d.id for d in out] == ["a", "b", "c"]
    assert [len(d.entities) for d in out] == [0, 1, 0]
    assert ex.last_stats.empty_documents == 2 and ex.last_stats.queries == 1
    assert ex.extract([], None) == []


def test_plan_stops_splitting_a_huge_document_once_the_call_is_cancelled():
    calls = []

    def should_stop() -> bool:  # the caller goes away once the document's splitting has begun
        calls.append(1)
        return len(calls) > 2

    huge = Document("big", "Aspirin reduced COX-2 expression in rats. " * 50_000)
    with pytest.raises(Cancelled):
        Extractor(ScriptedTagger({})).plan([huge], ["Chemical"], should_stop=should_stop)
    assert len(calls) == 3  # the look between documents and the first inside splitting passed; the next stopped it


def test_assemble_stops_decoding_a_huge_document_once_the_call_is_cancelled():
    ex = Extractor(ScriptedTagger({}))
    plan = ex.plan([Document("big", "Aspirin helped. " * 2_500)], ["Chemical"])
    probs = [np.tile([1.0, 0.0, 0.0], (len(q.words), 1)) for q in plan.queries]
    assert len(plan.queries) > 2_000
    assert len(ex.assemble(plan, probs, should_stop=lambda: False)) == 1
    looks = []
    with pytest.raises(Cancelled):
        ex.assemble(plan, probs, should_stop=lambda: looks.append(1) or True)
    assert looks == [1]  # stopped at the first look, after 1,000 queries


def test_unknown_type_and_bad_settings_are_invalid_argument():
    ex = Extractor(ScriptedTagger({}))
    with pytest.raises(InvalidArgument, match="unknown entity type 'Protein'"):
        ex.extract([Document("d", "x")], ["Protein"])
    with pytest.raises(InvalidArgument):
        Extractor(ScriptedTagger({}), overlap="merge")
    with pytest.raises(InvalidArgument):
        Extractor(ScriptedTagger({}), batch_size=0)


def test_link_hook_fills_concepts_with_each_span_category():
    seen = {}

    def link(mentions, categories):
        seen["args"] = (mentions, categories)
        return [[{"cui": f"C{i}", "name": m}] for i, m in enumerate(mentions)]

    rules = {Category.GENE: {"TP53": ("B", 0.9)}, Category.DISEASE: {"glioma": ("B", 0.9)}}
    (doc,) = Extractor(ScriptedTagger(rules), link=link).extract([Document("d", "TP53 in glioma.")])
    assert seen["args"] == (["TP53", "glioma"], [Category.GENE, Category.DISEASE])
    assert [e.concepts for e in doc.entities] == [({"cui": "C0", "name": "TP53"},), ({"cui": "C1", "name": "glioma"},)]
    assert doc.to_json()["entities"][0]["concepts"] == [{"cui": "C0", "name": "TP53"}]


def test_tiny_model_end_to_end_and_concurrent_calls_agree(tiny_tagger):
    docs = [Document(f"d{i}", f"Patient {i} had BRCA1-associated breast cancer (E. coli sepsis). Aspirin helped.")
            for i in range(6)]
    ex = Extractor(tiny_tagger, batch_size=4, overlap="all")
    ref = ex.extract(docs)
    assert any(d.entities for d in ref)
    for d in ref:
        for e in d.entities:
            assert d.text[e.start:e.end] == e.text and 0.0 <= e.score <= 1.0
            assert e.type in {c.value for c in Category}
    results = [None] * 4

    def run(k):
        results[k] = ex.extract(docs)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert [[(e.start, e.end, e.type) for e in d.entities] for d in r] == \
               [[(e.start, e.end, e.type) for e in d.entities] for d in ref]
    best = Extractor(tiny_tagger).extract(docs)
    for d in best:
        ents = sorted(d.entities, key=lambda e: e.start)
        assert all(a.end <= b.start for a, b in zip(ents, ents[1:], strict=False))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=120))
def test_entity_text_always_equals_document_slice(tiny_tagger, text):
    (doc,) = Extractor(tiny_tagger, overlap="all").extract([Document("h", text)], ["Disease", "Gene"])
    assert doc.text == text
    for e in doc.entities:
        assert text[e.start:e.end] == e.text and e.start < e.end


@pytest.mark.integration
def test_real_backbone_extraction_keeps_offsets():
    """The packaged SmolLM2 backbone (2 layers kept for speed) through the whole extraction path."""
    from tagger.backbone import resolve_backbone
    from vaner.errors import NotFound

    try:
        resolve_backbone("smollm2-135m")
    except NotFound as exc:
        pytest.skip(str(exc))
    tagger = VanerTagger.create(TaggerConfig(num_layers=2), device="cpu", seed=0)
    text = "Hereditary breast cancer in BRCA1-mutation carriers (n = 12) treated with tamoxifen. E. coli grew."
    (doc,) = Extractor(tagger, overlap="all").extract([Document("r", text)])
    for e in doc.entities:
        assert text[e.start:e.end] == e.text


def test_long_document_offsets_and_conll_stay_exact():
    from tagger.formats import to_conll

    rules = {Category.DISEASE: {"glioma": ("B", 0.9)}, Category.GENE: {"IDH1": ("B", 0.8), "R132H": ("I", 0.8)}}
    text = " ".join(f"Case {i}: IDH1 R132H glioma (Fig. {i}) in E. coli-free mice, e.g. ß-cells." for i in range(400))
    ex = Extractor(ScriptedTagger(rules), chunk_queries=100)
    (doc,) = ex.extract([Document("long", text)])
    assert ex.last_stats.sentences == 400
    assert len(doc.entities) == 800
    assert all(text[e.start:e.end] == e.text for e in doc.entities)
    assert {e.text for e in doc.entities} == {"IDH1 R132H", "glioma"}
    conll = to_conll([doc])
    assert conll.count("IDH1\tB-Gene\nR132H\tI-Gene\nglioma\tB-Disease") == 400


def test_merging_lora_keeps_predictions(tiny_backbone):
    from tagger.extract import merge_for_inference
    from tagger.model import WordQuery

    tagger = VanerTagger.create(TaggerConfig(backbone=str(tiny_backbone)), device="cpu", seed=1)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter matter before comparing
        for name, p in tagger.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    queries = [WordQuery(["Breast", "cancer", "in", "BRCA1", "carriers"], Category.DISEASE),
               WordQuery(["Aspirin"], Category.CHEMICAL, "bc5cdr-chem")]
    before = tagger.predict_proba(queries)
    merged = merge_for_inference(tagger)
    assert not hasattr(merged.backbone, "merge_and_unload")
    after = merged.predict_proba(queries)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
