"""Query-phrase mining for DBR (paper section 3.4, step 2).

The paper ran AutoPhrase, which needs a Java/C++ build and a KB of "quality" seed phrases; neither
suits an offline, wheels-only install. We keep AutoPhrase's two core signals and add the boundary
rules a noun-phrase chunker would give, with no POS model (no spaCy model is available offline):

1. **Chunking by boundaries.** A sentence is cut at stopwords, verbs/adverbs that are common in
   abstracts, and clause punctuation. What is left are maximal runs of content words, which in
   biomedical abstracts are overwhelmingly noun phrases. Hyphens, slashes and balanced short
   parentheses stay inside a chunk because mentions such as ``adenomatous polyposis coli ( APC )``
   or ``IL - 2`` contain them.
2. **Phrase quality from corpus statistics.** Sub-n-grams of a chunk become query phrases when
   they are frequent (``min_count``) and cohesive: the weakest binary split has positive pointwise
   mutual information (AutoPhrase's "concordance"). This recovers ``breast cancer`` out of
   ``familial breast cancer patients``.
3. **Informative unigrams.** Single content words are kept unless they are very common in the
   corpus (document-frequency cap), because many mentions are one word (``BRCA1``, ``human``).

The miner is fitted on training sentences only (never test), is deterministic, and needs one pass
over the corpus (a few seconds for all seven shared training sets).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vaner.errors import InvalidArgument

MINER_VERSION = "qpm-1"
"""Bumped whenever mining output changes, so cached DBR sets keyed on it are rebuilt."""

_STOPWORDS = frozenset("""
a about above after again against all almost also although always among an and another any are
as at be because been before being below between both but by can could did do does doing done
due during each either else enough especially etc even ever every for from further had has have
having he her here hers herself him himself his how however i if in into is it its itself just
least less many may me might more most much must my neither no nor not of off often on once one
only or other others otherwise our ours out over own per perhaps rather same several shall she
should since so some such than that the their theirs them themselves then there thereby therefore
these they this those though through thus to too under until up upon us very via was we were what
whatever when where whereas whether which while who whom whose why will with within without would
yet you your
""".split())

# Verbs, adverbs and generic nouns of abstracts that end or start noun phrases but are never
# entities themselves; they act as chunk boundaries like stopwords do.
_BOUNDARY_WORDS = frozenset("""
show shows showed shown suggest suggests suggested indicate indicates indicated reveal reveals
revealed demonstrate demonstrates demonstrated report reports reported found find finds observed
observe observes identified identify identifies described describe describes associated
compared increased decreased reduced induced caused causes cause using used use uses based
including include includes included present presents presented performed determined obtained
investigated examined studied analyzed analysed evaluated detected measured isolated involved
known called termed considered required resulting results result led leads lead well further
significantly respectively previously recently particularly approximately highly strongly
mainly partially completely directly frequently relatively commonly characterized characterised
characterize affected affecting affects carrying carry carries encoding encodes encoded containing
contain contains exhibit exhibited exhibits has had shows leading suggesting indicating
causing mediated mediates regulated regulates regulate expressed express expresses compared
treated treat treatment received receiving developed develop develops occurred occur occurs
appears appear appeared seems seem seemed remains remain remained suffering diagnosed
""".split())

_CLAUSE_PUNCT = frozenset({",", ".", ";", ":", "!", "?", "\"", "''", "``", "[", "]", "{", "}", "=", "<", ">"})
_JOINERS = frozenset({"-", "/", "+", "'", "(", ")", "&", "_", "."})
_ALNUM = re.compile(r"[A-Za-z0-9]")
_NUMERIC = re.compile(r"^[\d.,:%/+\-]+$")


_ABBREV = re.compile(r"^[A-Z][a-z]?$")


def _is_abbrev_dot(words: Sequence[str], i: int) -> bool:
    """``S . aureus``: a genus initial, a full stop and a lower-case epithet form one name."""
    return (words[i] == "." and 0 < i < len(words) - 1 and bool(_ABBREV.match(words[i - 1]))
            and words[i + 1][:1].islower())


def _is_content(word: str) -> bool:
    """Could start or end an entity mention: has a letter or digit, is not a stopword or number."""
    if not _ALNUM.search(word) or _NUMERIC.match(word):
        return False
    low = word.lower()
    return low not in _STOPWORDS and low not in _BOUNDARY_WORDS


@dataclass(frozen=True)
class MinerConfig:
    max_len: int = field(default=6, metadata={"help": "longest query phrase, in words"})
    min_count: int = field(default=2, metadata={"help": "corpus frequency for a multi-word phrase"})
    min_pmi: float = field(default=0.0, metadata={"help": "min PMI of the weakest split (cohesion)"})
    max_df: float = field(default=0.02, metadata={"help": "unigrams in more sentences than this share are dropped"})
    max_phrases: int = field(default=32, metadata={"help": "cap on query phrases per sentence"})

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise InvalidArgument("max_len must be >= 1")
        if self.min_count < 1:
            raise InvalidArgument("min_count must be >= 1")
        if not 0.0 < self.max_df <= 1.0:
            raise InvalidArgument("max_df must be in (0, 1]")
        if self.max_phrases < 1:
            raise InvalidArgument("max_phrases must be >= 1")


@dataclass(frozen=True)
class MinedPhrase:
    start: int
    end: int  # exclusive word index
    text: str
    score: float  # higher first; chunks > cohesive n-grams > unigrams, then by quality


def chunks(words: Sequence[str], max_paren: int = 4) -> list[tuple[int, int]]:
    """Maximal runs of non-boundary tokens, trimmed so that both ends are content words.

    A parenthesis group stays inside a run when it is short and closed (an abbreviation or
    a strain name); otherwise the brackets are boundaries.
    """
    n = len(words)
    breaks = [False] * n
    for i, w in enumerate(words):
        low = w.lower()
        if _is_abbrev_dot(words, i):
            continue
        if w in _CLAUSE_PUNCT or low in _STOPWORDS or low in _BOUNDARY_WORDS:
            breaks[i] = True
        elif not _ALNUM.search(w) and w not in _JOINERS:
            breaks[i] = True
    # parentheses: keep a balanced "( x .. )" of at most max_paren words, else cut at both
    i = 0
    while i < n:
        if words[i] == "(":
            j = i + 1
            while j < n and j - i <= max_paren + 1 and words[j] not in ("(", ")"):
                j += 1
            if j < n and words[j] == ")" and j - i <= max_paren + 1 and not any(breaks[i + 1:j]):
                i = j + 1
                continue
            breaks[i] = True
        elif words[i] == ")":
            breaks[i] = True
        i += 1
    out: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if breaks[i]:
            i += 1
            continue
        j = i
        while j < n and not breaks[j]:
            j += 1
        s, e = i, j
        while s < e and not _is_content(words[s]):
            s += 1
        while e > s and not _is_content(words[e - 1]):
            e -= 1
        # a trailing "( APC )" is fine even though ")" is not content
        if e < j and words[e] == "(":
            k = e
            while k < j and words[k] != ")":
                k += 1
            if k < j:
                e = k + 1
        if e > s:
            out.append((s, e))
        i = j
    return out


class PhraseMiner:
    """Fit on a corpus of tokenised sentences, then mine query phrases sentence by sentence."""

    def __init__(self, config: MinerConfig | None = None):
        self.config = config or MinerConfig()
        self._ngrams: Counter[str] = Counter()
        self._unigrams: Counter[str] = Counter()
        self._df: Counter[str] = Counter()
        self._n_sentences = 0
        self._n_tokens = 0

    @property
    def fitted(self) -> bool:
        return self._n_sentences > 0

    def fit(self, sentences: Iterable[Sequence[str]]) -> PhraseMiner:
        """Count unigrams and the n-grams that can be phrases (inside chunks, content at both ends)."""
        max_len = self.config.max_len
        for words in sentences:
            low = [w.lower() for w in words]
            self._n_sentences += 1
            self._n_tokens += len(low)
            self._unigrams.update(low)
            self._df.update(set(low))
            for s, e in chunks(words):
                for i in range(s, e):
                    if not _is_content(words[i]):
                        continue
                    for j in range(i + 2, min(e, i + max_len) + 1):
                        if _is_content(words[j - 1]):
                            self._ngrams[" ".join(low[i:j])] += 1
        return self

    def cohesion(self, low_words: Sequence[str]) -> float:
        """Min PMI over binary splits; ``-inf`` when unseen. Unigram parts use corpus counts."""
        n = len(low_words)
        key = " ".join(low_words)
        c = self._ngrams.get(key, 0) if n > 1 else self._unigrams.get(key, 0)
        if c == 0:
            return -math.inf
        total = max(self._n_tokens, 1)
        best = math.inf
        for k in range(1, n):
            left = self._count(low_words[:k])
            right = self._count(low_words[k:])
            if left == 0 or right == 0:
                continue
            pmi = math.log(c * total / (left * right))
            best = min(best, pmi)
        return best if best != math.inf else 0.0

    def _count(self, low_words: Sequence[str]) -> int:
        if len(low_words) == 1:
            return self._unigrams.get(low_words[0], 0)
        # parts that are not themselves candidates (e.g. "( apc" ) count as their own frequency
        return self._ngrams.get(" ".join(low_words), 0) or self._unigrams.get(low_words[0], 0)

    def mine(self, words: Sequence[str]) -> list[MinedPhrase]:
        """Query phrases of one sentence, best first, at most ``max_phrases``, unique by text."""
        cfg = self.config
        low = [w.lower() for w in words]
        cands: dict[tuple[int, int], float] = {}
        max_df = max(cfg.max_df * self._n_sentences, 10.0)  # tiny corpora: no df filter
        for s, e in chunks(words):
            if e - s <= cfg.max_len:
                cands[(s, e)] = 3.0 + 0.01 * (e - s)
            # the chunk minus leading modifiers / trailing generic nouns ("brown trout population")
            for k in range(s + 1, e - 1):
                if _is_content(words[k - 1]) and k - s <= cfg.max_len and (s, k) not in cands:
                    cands[(s, k)] = 1.5 + 0.01 * (k - s)
                if _is_content(words[k]) and e - k <= cfg.max_len and (k, e) not in cands:
                    cands[(k, e)] = 1.5 + 0.01 * (e - k)
            for i in range(s, e):
                if not _is_content(words[i]):
                    continue
                # unigram: an informative content word
                shaped = words[i] != low[i] and any(ch.isupper() for ch in words[i][1:]) \
                    or any(ch.isdigit() for ch in words[i])
                if (i, i + 1) not in cands and len(words[i]) > 1 and (shaped or not self.fitted
                                                or self._df.get(low[i], 0) <= max_df):
                    idf = math.log((self._n_sentences + 1) / (self._df.get(low[i], 0) + 1))
                    cands[(i, i + 1)] = 1.0 + min(idf, 20.0) / 40.0
                if not self.fitted:
                    continue
                for j in range(i + 2, min(e, i + cfg.max_len) + 1):
                    if (i, j) in cands or not _is_content(words[j - 1]):
                        continue
                    seg = low[i:j]
                    if self._ngrams.get(" ".join(seg), 0) < cfg.min_count:
                        continue
                    coh = self.cohesion(seg)
                    if coh > cfg.min_pmi:
                        cands[(i, j)] = 2.0 + min(coh, 20.0) / 40.0
        ranked = sorted(cands.items(), key=lambda kv: (-kv[1], kv[0]))
        out: list[MinedPhrase] = []
        seen: set[str] = set()
        for (s, e), score in ranked:
            text = " ".join(words[s:e])
            key = text.lower()
            if key in seen:
                continue
            seen.add(key)
            out.append(MinedPhrase(s, e, text, round(score, 6)))
            if len(out) >= cfg.max_phrases:
                break
        return out

    def mine_many(self, sentences: Iterable[Sequence[str]]) -> list[list[MinedPhrase]]:
        return [self.mine(words) for words in sentences]

    def stats(self) -> dict[str, int]:
        return {"sentences": self._n_sentences, "tokens": self._n_tokens,
                "candidate_ngrams": len(self._ngrams), "vocabulary": len(self._unigrams)}


def fit_miner(sentences: Iterable[Sequence[str]], config: MinerConfig | None = None) -> PhraseMiner:
    return PhraseMiner(config).fit(sentences)
