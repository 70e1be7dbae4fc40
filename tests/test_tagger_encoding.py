"""The per-word token cache of ``InputEncoder`` is a bounded LRU: a service fed endless new words
keeps at most ``word_cache_size`` of them, repeated words stay hits, over-long words are not kept."""

from __future__ import annotations

import copy

from tagger.encoding import MAX_CACHED_WORD_CHARS, WORD_CACHE_SIZE, InputEncoder
from tagger.instructions import InstructionTemplate
from vaner.categories import Category


class CountingTokenizer:
    """One id per character; counts how often words (not prompts) were tokenised."""

    unk_token_id = 0

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        if not add_special_tokens:
            self.calls += 1
        return {"input_ids": [ord(c) for c in text]}


def encoder(size: int) -> tuple[InputEncoder, CountingTokenizer]:
    tok = CountingTokenizer()
    enc = InputEncoder(tok, InstructionTemplate.named("compact"), max_length=512, word_cache_size=size)
    tok.calls = 0  # the fallback's tokenisation at construction
    return enc, tok


def test_default_bound_is_documented_size():
    enc, _ = encoder(WORD_CACHE_SIZE)
    assert enc.word_cache_size == WORD_CACHE_SIZE == 100_000


def test_cache_is_bounded_and_drops_least_recently_used():
    enc, tok = encoder(3)
    for w in ("a", "b", "c"):
        assert enc.word_ids(w) == [ord(" "), ord(w)]
    assert tok.calls == 3
    enc.word_ids("a")  # a hit: now the most recently used
    assert tok.calls == 3
    for i in range(1000):  # a stream of new words
        enc.word_ids(f"w{i}")
        assert len(enc._word_cache) <= 3
    assert list(enc._word_cache) == ["w997", "w998", "w999"]
    enc.word_ids("a")
    assert tok.calls == 1004  # "a" was dropped, so tokenised again

    enc, tok = encoder(3)
    for w in ("a", "b", "c", "a", "d"):  # "a" used again before "d" arrives: "b" is the one dropped
        enc.word_ids(w)
    assert list(enc._word_cache) == ["c", "a", "d"] and tok.calls == 4


def test_over_long_words_are_tokenised_but_not_kept():
    enc, tok = encoder(10)
    long = "x" * (MAX_CACHED_WORD_CHARS + 1)
    assert enc.word_ids(long) == enc.word_ids(long) == [ord(" ")] + [ord("x")] * len(long)
    assert tok.calls == 2 and long not in enc._word_cache
    enc.encode(["aspirin", "aspirin"], Category.CHEMICAL, None)
    assert tok.calls == 3  # the repeated word is a hit


def test_deepcopy_gets_its_own_cache():
    enc, _ = encoder(10)
    enc.word_ids("a")
    twin = copy.deepcopy(enc)
    twin.word_ids("b")
    assert list(enc._word_cache) == ["a"] and list(twin._word_cache) == ["a", "b"]
