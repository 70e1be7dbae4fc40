"""Does the training corpus agree that a KB name is an entity of its type?

A KB is written by curators, a corpus by annotators with a guideline, and the two disagree on the
names that matter most for DBR: the short, common ones. The open KB lists "human", "high", "children"
or "test result" as disease synonyms; NCBI's annotators almost never tag them ("human": 302
occurrences in its training split, 9 of them inside a mention). Phrase mining queries the KB with the sentence's own
words, so retrieved DBR hands exactly these names back as positives, and a DBR sentence that tags
"human" as a Disease teaches the opposite of the dataset it is meant to help (issue 9, open KB: a quarter of
retrieved positives occur in NCBI's training text, and 14 % of all of them are tagged there in under
half of their occurrences; random DBR draws such names 20x less often). Measured in the ablation, the
filter raised dev F1 but not test: retrieved DBR's narrow coverage of the KB matters more
(BENCHMARKS.md, "DBR from the open KB").

:class:`CorpusAgreement` counts, for every word n-gram of the training split (n <= ``max_words``),
how often it occurs and how often it lies within one gold mention (the mention itself, or part of a
longer one: "breast cancer" inside "hereditary breast cancer" is not a contradiction). A DBR builder
keeps a positive only if the corpus tags it in at least ``threshold`` of its occurrences (or never
saw it), and a negative only if the corpus does not tag it as the target type that often. It uses
the training split only, so it needs no dev data and no choice made on test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vaner.corpus import Sentence

AGREEMENT_VERSION = 2  # in DBR cache keys: 1 counted exact mentions only, 2 any n-gram within one mention
MAX_WORDS = 4  # the names annotators disagree on are short; longer n-grams cost memory, not decisions


def name_key(words: Sequence[str]) -> str:
    """How DBR compares a name with corpus text: its words, space-joined and lower-cased."""
    return " ".join(words).lower()


@dataclass
class CorpusAgreement:
    """Occurrence counts of a corpus's word n-grams (lower-cased), and how many lie within a gold mention."""

    max_words: int = MAX_WORDS
    occurrences: Counter[str] = field(default_factory=Counter)
    tagged: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, sentences: Iterable[Sentence], max_words: int = MAX_WORDS) -> CorpusAgreement:
        counts = cls(max_words=max_words)
        for s in sentences:
            words = [w.lower() for w in s.words]
            n = len(words)
            mention = [-1] * n  # which gold mention each word is in
            for k, (a, b) in enumerate(s.spans()):
                mention[a:b] = [k] * (b - a)
            for i in range(n):
                for j in range(i + 1, min(n, i + max_words) + 1):
                    key = " ".join(words[i:j])
                    counts.occurrences[key] += 1
                    if mention[i] >= 0 and mention[j - 1] == mention[i]:
                        counts.tagged[key] += 1
        return counts

    def tagged_share(self, words: Sequence[str], min_occurrences: int = 1) -> float | None:
        """Share of the name's occurrences inside a gold mention; None when the corpus cannot say
        (seen fewer than ``min_occurrences`` times, or longer than the n-grams counted)."""
        if not words or len(words) > self.max_words:
            return None
        key = name_key(words)
        seen = self.occurrences.get(key, 0)
        if seen < max(1, min_occurrences):
            return None
        return min(1.0, self.tagged.get(key, 0) / seen)

    def agrees(self, words: Sequence[str], positive: bool, threshold: float, min_occurrences: int = 1) -> bool:
        """Whether a DBR label for this name matches the corpus: a positive must be tagged in at least
        ``threshold`` of its occurrences, a negative in fewer; names the corpus cannot judge agree."""
        share = self.tagged_share(words, min_occurrences)
        if share is None:
            return True
        return share >= threshold if positive else share < threshold
