"""Document-level consistency of predicted mentions: abbreviations and repeated names.

Why: the model reads one sentence at a time, but a document names the same thing many times. The
error analysis of the multi-type candidates (BENCHMARKS.md, ``bench/tagger_missed_mentions.py``)
found the misses that separate models gathered in exactly two patterns:

- **abbreviations**: "adenomatous polyposis coli (APC)" is tagged as a disease, but a later bare
  "APC" (also a gene symbol) is missed in about half the sentences;
- **repeats**: "pileated woodpecker" is found in some sentences of a LINNAEUS article and missed in
  others (57 misses of one name on one test set).

Both are what document-level tools do after tagging: scispaCy's and PubTator's abbreviation
resolution (Schwartz & Hearst 2003) and label consistency over a document. The rules run per
category, only ADD spans (a mention the model found is never removed) and never overlap a span
of the same category; the extractor's overlap policy then settles types as before.

Word level, model-agnostic: the same function serves ``vaner extract`` / the Extract RPC
(:mod:`tagger.extract`) and the benchmark that measures it (``bench/doc_consistency.py``) on
saved predictions.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from vaner.errors import InvalidArgument

CHOICES = ("both", "abbreviations", "repeats", "none")

_MAX_SHORT_WORDS = 2     # "APC", "SCA 1"; longer parentheticals are not abbreviations
_MAX_SHORT_CHARS = 10


@dataclass(frozen=True)
class Consistency:
    """Which rules run, and how sure the model must be before a name spreads.

    ``min_score``: a name (or a long form's short form) spreads only from a mention scored at least
    this (the model's own false positives, e.g. a gene symbol tagged as a disease once, or the
    other types a multi-type model gives a long form, tend to score lower);
    ``repeat_min_share``: ... and only when the model tagged at least this share of the name's
    occurrences in the document. The defaults are what the seven dev sets chose for v2 (a grid of
    0/0.5/0.8/0.9 x 0/0.3/0.5, best macro F1 in 10-sentence windows; BENCHMARKS.md "Document-level
    consistency"): spreading every name cost up to 0.5 F1 on a set, these settings nothing.
    """

    abbreviations: bool = True
    repeats: bool = True
    min_score: float = 0.5
    repeat_min_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_score", "repeat_min_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"consistency {name} must be in [0, 1], got {value}")

    @classmethod
    def named(cls, choice: str) -> Consistency:
        """The rule set a user names on the command line: both, abbreviations, repeats or none."""
        if choice not in CHOICES:
            raise InvalidArgument(f"unknown consistency {choice!r}; expected one of {', '.join(CHOICES)}")
        return cls(abbreviations=choice in ("both", "abbreviations"), repeats=choice in ("both", "repeats"))

    @property
    def enabled(self) -> bool:
        return self.abbreviations or self.repeats


NO_CONSISTENCY = Consistency(abbreviations=False, repeats=False)


@dataclass(frozen=True)
class WordSpan:
    """A predicted mention: words [start, end) of sentence ``sentence`` of one document."""

    sentence: int
    start: int
    end: int
    category: str
    score: float = 1.0


@dataclass(frozen=True)
class Abbreviation:
    """A "long form (SF)" definition found in a document: where each part sits."""

    sentence: int
    long_start: int
    long_end: int        # exclusive; the word before "("
    short: tuple[str, ...]


def _is_short_form(words: Sequence[str]) -> bool:
    text = " ".join(words)
    return (0 < len(words) <= _MAX_SHORT_WORDS and 2 <= len(text) <= _MAX_SHORT_CHARS
            and text[0].isalnum() and any(c.isalpha() for c in text))


def best_long_form(short: str, words: Sequence[str]) -> int | None:
    """Schwartz & Hearst's algorithm on words: the index of the first word of the shortest tail of
    ``words`` whose characters contain the short form's letters and digits in order, the short
    form's first character starting a word. None when there is no such tail."""
    text = " ".join(words)
    starts = []
    pos = 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    s, i = len(short) - 1, len(text) - 1
    while s >= 0:
        c = short[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        while i >= 0 and (text[i].lower() != c or (s == 0 and i > 0 and text[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    return max(bisect.bisect_right(starts, i + 1) - 1, 0)


def find_abbreviations(sentences: Sequence[Sequence[str]]) -> list[Abbreviation]:
    """Every "long form ( SF )" of the document's sentences (words as tokenised)."""
    found = []
    for si, words in enumerate(sentences):
        for i, w in enumerate(words):
            if w != "(" or i == 0:
                continue
            try:
                close = words.index(")", i + 1, i + 2 + _MAX_SHORT_WORDS)
            except ValueError:
                continue
            short = tuple(words[i + 1: close])
            if not _is_short_form(short):
                continue
            n = len("".join(short))
            window = max(0, i - min(n + 5, 2 * n))
            k = best_long_form("".join(short), words[window:i])
            if k is None:
                continue
            start = window + k
            if i - start < 1 or (i - start == 1 and words[start] == "".join(short)):
                continue
            found.append(Abbreviation(si, start, i, short))
    return found


class _Occurrences:
    """Where each phrase occurs in one document. Why an index: a long full-text document has
    thousands of tagged names, and scanning every word for each of them would make one Extract call
    quadratic in its length; positions are looked up by first word, and each phrase once."""

    def __init__(self, sentences: Sequence[Sequence[str]]):
        self.sentences = sentences
        self.by_first: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for si, words in enumerate(sentences):
            for j, w in enumerate(words):
                self.by_first[w].append((si, j))
        self._cache: dict[tuple[str, ...], list[tuple[int, int, int]]] = {}

    def __call__(self, phrase: tuple[str, ...]) -> list[tuple[int, int, int]]:
        found = self._cache.get(phrase)
        if found is None:
            n = len(phrase)
            found = [(si, j, j + n) for si, j in self.by_first.get(phrase[0], ())
                     if tuple(self.sentences[si][j: j + n]) == phrase]
            self._cache[phrase] = found
        return found


def _free(taken: dict[tuple[str, int], list[tuple[int, int]]], category: str, si: int, a: int, b: int) -> bool:
    return all(b <= s or e <= a for s, e in taken[(category, si)])


def make_consistent(sentences: Sequence[Sequence[str]], spans: Sequence[WordSpan],
                    rules: Consistency = Consistency()) -> list[WordSpan]:
    """``spans`` (same order; some scores raised) plus the mentions the rules add.

    - ``abbreviations``: where a long form is tagged (a span of category C scored >= ``min_score``
      ends at the word before "(" and starts inside the long form), every occurrence of its short
      form is tagged C.
    - ``repeats``: a word sequence tagged C somewhere is tagged C at its other occurrences, where
      at least one of its letters is upper-case or it is longer than three characters (so that
      "of" or "a" never spread), subject to ``rules.min_score`` and ``rules.repeat_min_share``.
    An added span takes the score of the mention it copies, and a span the model found already
    at such an occurrence is raised to that score (it then wins overlaps with other types as
    surely as the mention it agrees with).
    """
    out = list(spans)
    if not rules.enabled or not spans:
        return out
    taken: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for s in spans:
        taken[(s.category, s.sentence)].append((s.start, s.end))

    at = {(s.category, s.sentence, s.start, s.end): i for i, s in enumerate(out)}

    def add(si: int, a: int, b: int, category: str, score: float) -> None:
        same = at.get((category, si, a, b))
        if same is not None:  # found already: as sure as the mention it agrees with (overlaps between types)
            if out[same].score < score:
                out[same] = dataclasses.replace(out[same], score=score)
        elif _free(taken, category, si, a, b):
            taken[(category, si)].append((a, b))
            at[(category, si, a, b)] = len(out)
            out.append(WordSpan(si, a, b, category, score))

    occurrences = _Occurrences(sentences)
    sources: dict[tuple[tuple[str, ...], str], float] = {}
    if rules.abbreviations:
        ends = {(s.sentence, s.end, s.category): s for s in spans}
        categories = {s.category for s in spans}
        for ab in find_abbreviations(sentences):
            for category in categories:
                hit = ends.get((ab.sentence, ab.long_end, category))
                if hit is not None and hit.start >= ab.long_start and hit.score >= rules.min_score:
                    key = (ab.short, category)
                    sources[key] = max(sources.get(key, 0.0), hit.score)
    if rules.repeats:
        tagged: dict[tuple[tuple[str, ...], str], list[float]] = defaultdict(list)
        for s in spans:
            phrase = tuple(sentences[s.sentence][s.start: s.end])
            text = " ".join(phrase)
            if (len(text) > 3 or any(c.isupper() for c in text)) and s.score >= rules.min_score:
                tagged[(phrase, s.category)].append(s.score)
        for (phrase, category), scores in tagged.items():
            if rules.repeat_min_share > 0:
                share = len(scores) / max(len(occurrences(phrase)), 1)
                if share < rules.repeat_min_share:
                    continue
            key = (phrase, category)
            sources[key] = max(sources.get(key, 0.0), max(scores))
    # longest phrases first: a name must not be blocked by a shorter name inside it
    for (phrase, category), score in sorted(sources.items(), key=lambda kv: -len(kv[0][0])):
        for si, a, b in occurrences(phrase):
            add(si, a, b, category, score)
    return out


__all__ = ["Abbreviation", "CHOICES", "Consistency", "NO_CONSISTENCY", "WordSpan", "best_long_form", "find_abbreviations",
           "make_consistent"]
