"""Document-level consistency rules: Schwartz-Hearst abbreviations and repeated names."""

import pytest

from tagger.consistency import NO_CONSISTENCY, Consistency, WordSpan, best_long_form, find_abbreviations, make_consistent
from vaner.errors import InvalidArgument

ABBREVIATIONS = Consistency.named("abbreviations")
REPEATS = Consistency(abbreviations=False, repeat_min_share=0.0)  # spread from any one mention

DOC = [
    "Germline mutations of the adenomatous polyposis coli ( APC ) gene cause polyposis .".split(),
    "The APC tumour suppressor is mutated in spinocerebellar ataxia type 1 ( SCA1 ) too .".split(),
    "Patients with SCA1 and the pileated woodpecker ( Dryocopus pileatus ) .".split(),
    "A pileated woodpecker and another pileated woodpecker of a tree .".split(),
]


def words(span: WordSpan) -> str:
    return " ".join(DOC[span.sentence][span.start: span.end])


def test_long_form_is_the_shortest_tail_holding_the_letters_in_order():
    assert best_long_form("APC", "mutations of the adenomatous polyposis coli".split()) == 3
    assert best_long_form("SCA1", "in spinocerebellar ataxia type 1".split()) == 1
    assert best_long_form("XYZ", "adenomatous polyposis coli".split()) is None


def test_abbreviations_found_only_for_short_parentheticals():
    found = find_abbreviations(DOC)
    assert [(a.sentence, a.long_start, a.long_end, a.short) for a in found] == [
        (0, 4, 7, ("APC",)), (1, 7, 11, ("SCA1",))]


def test_tagged_long_form_spreads_to_every_short_form():
    spans = [WordSpan(0, 4, 7, "disease", 0.9), WordSpan(1, 7, 11, "disease", 0.85)]
    out = make_consistent(DOC, spans, ABBREVIATIONS)
    assert out[:2] == spans
    assert sorted((words(s), s.sentence, s.score) for s in out[2:]) == [
        ("APC", 0, 0.9), ("APC", 1, 0.9), ("SCA1", 1, 0.85), ("SCA1", 2, 0.85)]
    # a long form the model is unsure of (below min_score) spreads nothing
    unsure = [WordSpan(0, 4, 7, "gene", 0.4)]
    assert make_consistent(DOC, unsure, ABBREVIATIONS) == unsure


def test_untagged_long_form_spreads_nothing():
    assert make_consistent(DOC, [WordSpan(0, 12, 13, "disease", 0.5)], ABBREVIATIONS) == [
        WordSpan(0, 12, 13, "disease", 0.5)]


def test_repeats_fill_every_occurrence_without_overlap_and_per_category():
    spans = [WordSpan(2, 5, 7, "species", 0.8), WordSpan(3, 1, 2, "species", 0.7)]
    out = make_consistent(DOC, spans, REPEATS)
    added = sorted((s.sentence, s.start, s.end, s.category) for s in out[2:])
    # the longer name goes first, so "pileated" alone never lands inside it; a span the model found
    # ("pileated" at 3:1) is kept and blocks the longer name there: the rules only add
    assert added == [(3, 5, 7, "species")]
    assert all(s.category == "species" for s in out)


def test_short_lower_case_strings_never_spread():
    doc = [["a", "of", "a"], ["of", "a"]]
    assert make_consistent(doc, [WordSpan(0, 0, 1, "gene", 0.9)], REPEATS) == [WordSpan(0, 0, 1, "gene", 0.9)]


def test_repeat_thresholds_hold_back_unsure_or_rare_names():
    spans = [WordSpan(2, 5, 7, "species", 0.8)]
    assert make_consistent(DOC, spans, Consistency(abbreviations=False, min_score=0.9, repeat_min_share=0.0)) == spans
    # tagged at 1 of 3 occurrences: a share of 0.5 keeps it from spreading, 0.3 lets it
    assert make_consistent(DOC, spans, Consistency(abbreviations=False, repeat_min_share=0.5)) == spans
    assert len(make_consistent(DOC, spans, Consistency(abbreviations=False, repeat_min_share=0.3))) == 3


def test_no_rules_and_bad_settings():
    spans = [WordSpan(2, 5, 7, "species", 0.8)]
    assert make_consistent(DOC, spans, NO_CONSISTENCY) == spans
    with pytest.raises(InvalidArgument, match="unknown consistency"):
        Consistency.named("majority")
    with pytest.raises(InvalidArgument, match="repeat_min_share"):
        Consistency(repeat_min_share=1.5)


def test_extractor_applies_the_rules_and_none_turns_them_off():
    from tagger.extract import Extractor
    from tagger.formats import Document
    from tests.test_tagger_extract import ScriptedTagger
    from vaner.categories import Category

    rules = {Category.DISEASE: {"adenomatous": ("B", 0.9), "polyposis": ("I", 0.9), "coli": ("I", 0.9)}}
    text = "Mutations of adenomatous polyposis coli (APC) are known. APC is common."
    (on,) = Extractor(ScriptedTagger(rules)).extract([Document("d", text)], [Category.DISEASE])
    assert [(e.text, e.start) for e in on.entities] == [("adenomatous polyposis coli", 13), ("APC", 41),
                                                       ("APC", 57)]
    assert on.entities[2].score == pytest.approx(on.entities[0].score)
    (off,) = Extractor(ScriptedTagger(rules), consistency=NO_CONSISTENCY).extract(
        [Document("d", text)], [Category.DISEASE])
    assert [e.text for e in off.entities] == ["adenomatous polyposis coli"]


def test_a_short_form_found_already_is_raised_to_the_long_forms_score_not_duplicated():
    spans = [WordSpan(0, 4, 7, "disease", 0.9), WordSpan(1, 1, 2, "disease", 0.3)]
    out = make_consistent(DOC, spans, ABBREVIATIONS)
    assert out[1] == WordSpan(1, 1, 2, "disease", 0.9)
    assert sum(1 for s in out if (s.sentence, s.start) == (1, 1)) == 1
