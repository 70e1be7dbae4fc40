"""Sentence splitting and tokenisation: offsets into the original text, biomedical abbreviations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagger import text as text_mod
from tagger.text import CHECK_EVERY_CHARS, sentences, split_sentences, tokenize
from vaner.errors import Cancelled


def _split(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_tokenisation_matches_training_data_style():
    # Shared corpora split every punctuation character: "non - Hodgkins", "0 . 01", "BRCA1 - associated".
    words = [t.text for t in tokenize("BRCA1-associated non-Hodgkin's p<0.01 (n=5); IL-2/IL-4 Na_2 +/-")]
    assert words == ["BRCA1", "-", "associated", "non", "-", "Hodgkin", "'", "s", "p", "<", "0", ".", "01",
                     "(", "n", "=", "5", ")", ";", "IL", "-", "2", "/", "IL", "-", "4", "Na", "_", "2", "+", "/", "-"]


def test_unicode_words_keep_accents_and_greek():
    text = "TNF-α and naïve e\u0301tudes in Zürich"
    toks = tokenize(text)
    assert [t.text for t in toks] == ["TNF", "-", "α", "and", "naïve", "e\u0301tudes", "in", "Zürich"]
    assert all(text[t.start:t.end] == t.text for t in toks)


def test_biomedical_abbreviations_do_not_split():
    text = ("Growth of E. coli and S. aureus was reduced (Fig. 2B), e.g. by 0.5 mM drug vs. placebo. "
            "Smith et al. reported i.e. similar data. The U.S. FDA agreed! Was it 3.5 mg? Yes.")
    assert _split(text) == [
        "Growth of E. coli and S. aureus was reduced (Fig. 2B), e.g. by 0.5 mM drug vs. placebo.",
        "Smith et al. reported i.e. similar data.",
        "The U.S. FDA agreed!",
        "Was it 3.5 mg?",
        "Yes.",
    ]


def test_sentence_boundaries_before_digits_and_brackets_and_paragraphs():
    text = "It failed. 25 patients died. (This was expected.)\n\nTitle without period\nNext line."
    assert _split(text) == ["It failed.", "25 patients died.", "(This was expected.)",
                            "Title without period\nNext line."]


def test_blank_and_whitespace_only_text():
    assert split_sentences("") == [] and sentences("  \n\t ") == []
    assert [s.words for s in sentences("\u3000 word \u2003")] == [["word"]]


def test_sentences_of_a_region_use_document_offsets():
    text = "Title here abc. Then body text. More."
    region = sentences(text, 16, len(text))
    assert [text[s.start:s.end] for s in region] == ["Then body text.", "More."]
    assert region[0].tokens[0].start == 16


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_offsets_always_slice_the_original_text(text):
    for sent in sentences(text):
        assert 0 <= sent.start < sent.end <= len(text)
        assert text[sent.start:sent.end].strip() == text[sent.start:sent.end]
        prev_end = sent.start
        for tok in sent.tokens:
            assert text[tok.start:tok.end] == tok.text
            assert tok.text and not any(c.isspace() for c in tok.text)
            assert sent.start <= tok.start and tok.end <= sent.end and tok.start >= prev_end
            prev_end = tok.end
    # every non-space character is covered by exactly one token
    covered = sum(len(t.text) for s in sentences(text) for t in s.tokens)
    assert covered == sum(1 for c in text if not c.isspace())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["E. coli", "e.g.", "Fig. 3", "0.5", "et al.", "IL-2", "α-syn", "vs.", "cancer",
                                 "The", "We", "(n=3)", ".", "!", "\n", "\n\n", " ", "ü"]), max_size=40))
def test_sentences_never_overlap(parts):
    text = " ".join(parts)
    spans = split_sentences(text)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


@pytest.mark.parametrize("name", ["ncbi", "bc2gm", "s800"])
def test_tokeniser_reproduces_the_training_tokenisation(data_dir, name):
    """Re-tokenising a test sentence joined by spaces gives back its words (MTL-style corpora)."""
    from vaner.corpus import load_dataset

    sents = load_dataset(name, "test", data_dir)[:500]
    same = sum([t.text for t in tokenize(" ".join(s.words))] == list(s.words) for s in sents)
    assert same == len(sents)


class StopAfter:
    """A should_stop that says stop on its ``n``-th look and counts its looks."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


SENTENCE = "Aspirin reduced COX-2 expression in rats. "


def test_cancelled_call_stops_splitting_a_large_document_early(monkeypatch):
    text = SENTENCE * (2_000_000 // len(SENTENCE))  # 2 million characters, ~48k sentences
    tokenised = []

    def counting_tokenize(*args, **kwargs):
        tokenised.append(args[1:3])
        return tokenize(*args, **kwargs)

    monkeypatch.setattr(text_mod, "tokenize", counting_tokenize)
    stop = StopAfter(3)
    with pytest.raises(Cancelled):
        sentences(text, should_stop=stop)
    assert stop.calls == 3
    # stopped after about three check intervals, far from the document's end
    assert len(tokenised) < 3 * CHECK_EVERY_CHARS // len(SENTENCE) + 10 < len(text) // len(SENTENCE) // 10


def test_cancelled_call_stops_in_one_huge_run_on_sentence():
    text = "aspirin " * 250_000  # no sentence boundary at all: one 2-million-character sentence
    stop = StopAfter(3)
    with pytest.raises(Cancelled):
        sentences(text, should_stop=stop)
    assert stop.calls == 3
    with pytest.raises(Cancelled):  # already cancelled before splitting starts
        split_sentences(text, should_stop=lambda: True)


def test_a_call_that_is_not_cancelled_splits_as_without_a_token():
    text = SENTENCE * 5000 + "aspirin " * 20_000
    never = StopAfter(10**9)
    assert sentences(text, should_stop=never) == sentences(text)
    assert never.calls > 2  # it was looked at along the way


@pytest.mark.timeout(60)
def test_runs_of_punctuation_split_in_linear_time():
    # the boundary pattern used to retry from every dot of a run: 20k dots took 14 s, 1M hours
    dots, rest = "." * 1_000_000, "Next sentence. " + "!?" * 100_000 + "x"  # "!" is no sentence start
    assert _split(f"{dots} {rest}") == [dots, rest]
