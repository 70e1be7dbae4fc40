"""Sentence splitting and word tokenisation with character offsets into the ORIGINAL text.

Why a rule-based splitter: the model is trained on sentences tokenised like the shared
BioNER corpora (MTL-Bioinformatics style), where every punctuation character is its own token
(``non - Hodgkins``, ``0 . 01``, ``BRCA1 - associated``, ``E . coli``). Matching that at inference
matters more than linguistic finesse, and a regex keeps offsets exact for any unicode input:
we never normalise or rewrite the text, we only record ``[start, end)`` slices of it, so
``text[tok.start:tok.end] == tok.text`` by construction.

Sentences only bound the context the model sees; a missed split costs little (long sentences are
windowed by the model), a wrong split inside "E. coli" or "et al." can cut an entity, so the
splitter is conservative.

Splitting a document of millions of characters takes seconds, all before the first model batch,
so the splitter takes the caller's ``should_stop`` (vaner/cancel.py) and looks at it every
:data:`CHECK_EVERY_CHARS` characters: a cancelled or past-deadline call stops there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vaner.cancel import StopCheck, check_stop

# A word is a run of letters/digits (any script, with their combining accents); every other
# non-space character stands alone. ``_`` is punctuation in the training data, hence ``[^\W_]``.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_TOKEN_RE = re.compile(rf"(?:[^\W_][{_MARKS}]*)+|[^\s]", re.UNICODE)

# Candidate sentence ends: terminal punctuation (optionally closed by quotes/brackets), then
# whitespace. Decimals ("0.5") and dotted names ("U.S.A") have no whitespace after the dot.
# A match starts only where a run of terminal punctuation starts: the same matches (one that fails
# from a run's start fails from inside it too), but a run of n dots costs O(n), not O(n^2).
_BOUNDARY_RE = re.compile(r"(?<![.!?])[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_PARAGRAPH_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")

# Lower-cased words that end with a non-final period in biomedical prose.
# Units that often END a sentence ("for 30 min. Cells were ...") are deliberately not listed.
ABBREVIATIONS = frozenset("""
e.g i.e al fig figs eq eqs ref refs vs v cf approx ca resp no nos vol pp dr mr mrs ms prof
st sp spp var subsp ssp cv sect tab suppl incl inc ltd corp jr univ dept
""".split())

# Characters split (or tokenised) between two looks at ``should_stop``: a few tens of milliseconds
# at the measured 1-2 s per million characters, and too rare to cost anything.
CHECK_EVERY_CHARS = 50_000
_WHAT = "sentence splitting"


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class TextSentence:
    start: int
    end: int
    tokens: tuple[Token, ...]

    @property
    def words(self) -> list[str]:
        return [t.text for t in self.tokens]


def tokenize(text: str, start: int = 0, end: int | None = None, should_stop: StopCheck | None = None) -> list[Token]:
    """Tokens of ``text[start:end]`` with offsets into ``text`` itself; a span longer than
    :data:`CHECK_EVERY_CHARS` looks at ``should_stop`` as it goes (one huge run-on sentence)."""
    end = len(text) if end is None else end
    if should_stop is None or end - start <= CHECK_EVERY_CHARS:
        return [Token(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text, start, end)]
    out = []
    next_check = start + CHECK_EVERY_CHARS
    for m in _TOKEN_RE.finditer(text, start, end):
        if m.start() >= next_check:
            check_stop(should_stop, _WHAT)
            next_check = m.start() + CHECK_EVERY_CHARS
        out.append(Token(m.group(), m.start(), m.end()))
    return out


def _word_before(text: str, pos: int) -> str:
    """The dotted word that ends at ``pos`` (exclusive), e.g. 'e.g' for '... e.g.' ."""
    i = pos
    while i > 0 and not text[i - 1].isspace() and text[i - 1] not in "([{\"'":
        i -= 1
    return text[i:pos]


def _is_boundary(text: str, match: re.Match) -> bool:
    punct = match.group()
    after = match.end()
    nxt = after
    while nxt < len(text) and text[nxt].isspace():
        nxt += 1
    if nxt >= len(text):
        return False  # end of text: the final sentence closes anyway
    following = text[nxt]
    if not (following.isupper() or following.isdigit() or following in "([\"'\u201c\u2018"):
        return False  # "e.g. the", "et al. showed", "vs. placebo" in running lower-case text
    if punct.startswith(".") and punct.rstrip("\"'\u201d\u2019)]") == ".":
        word = _word_before(text, match.start())
        bare = word.rstrip(".").lower()
        if bare in ABBREVIATIONS:
            return False
        if len(word) == 1 and word.isalpha() and word.isupper():
            return False  # an initial: "E. coli", "S. aureus", "J. Smith"
        if "." in word and all(len(part) <= 2 for part in word.split(".") if part):
            return False  # "U.S.", "i.e."-like dotted abbreviations
    return True


def split_sentences(text: str, should_stop: StopCheck | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` sentence spans covering the non-blank parts of ``text``.

    Boundaries: blank lines (paragraphs, title/abstract) and terminal punctuation followed by
    whitespace and an upper-case letter, digit, bracket or quote, unless the period belongs to an
    abbreviation (e.g., i.e., et al., Fig., vs.) or an initial (E. coli).
    """
    check_stop(should_stop, _WHAT)
    cuts: list[int] = []
    for m in _PARAGRAPH_RE.finditer(text):
        cuts.append(m.start())
    next_check = CHECK_EVERY_CHARS
    for m in _BOUNDARY_RE.finditer(text):
        if should_stop is not None and m.end() >= next_check:
            check_stop(should_stop, _WHAT)
            next_check = m.end() + CHECK_EVERY_CHARS
        if _is_boundary(text, m):
            cuts.append(m.end())
    cuts = sorted(set(cuts)) + [len(text)]
    spans: list[tuple[int, int]] = []
    begin = 0
    for cut in cuts:
        s, e = begin, cut
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        begin = max(begin, cut)
    return spans


def sentences(text: str, start: int = 0, end: int | None = None,
              should_stop: StopCheck | None = None) -> list[TextSentence]:
    """Split and tokenise ``text[start:end]`` (a passage) with offsets into ``text``; sentences
    without any token are dropped. ``should_stop`` is looked at every :data:`CHECK_EVERY_CHARS`
    characters (:class:`~vaner.errors.Cancelled` once it says so)."""
    end = len(text) if end is None else end
    region = text[start:end]
    out = []
    next_check = CHECK_EVERY_CHARS
    for s, e in split_sentences(region, should_stop):
        if should_stop is not None and e >= next_check:
            check_stop(should_stop, _WHAT)
            next_check = e + CHECK_EVERY_CHARS
        toks = tokenize(text, start + s, start + e, should_stop)
        if toks:
            out.append(TextSentence(start + s, start + e, tuple(toks)))
    return out
