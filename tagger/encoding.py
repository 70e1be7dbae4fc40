"""Turn (words, category, dataset) into model inputs: instruction tokens, then each word's
sub-tokens; only the FIRST sub-token of a word carries a label, instruction tokens never do.
A multi-type model's instruction names no type, so its inputs do not depend on the category
(only its training labels do: ``EncodedInput.category`` says which head they are for).

Words are tokenised one at a time with a leading space (how they appear after the prompt in
running text), so a word's tokens never depend on its neighbours and word boundaries are exact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from tagger.data import TAG_TO_ID
from tagger.instructions import InstructionTemplate
from vaner.categories import Category

IGNORE_INDEX = -100
# Words whose sub-tokens are kept, least recently used dropped first: a service fed arbitrary text
# sees an endless stream of new words, so the cache is bounded (about 25 MB at typical word
# lengths) while the words of running text, which repeat, stay hits.
WORD_CACHE_SIZE = 100_000
# Longer words are tokenised every time: they rarely repeat, and 100k of them could hold gigabytes.
MAX_CACHED_WORD_CHARS = 64


@dataclass(frozen=True)
class EncodedInput:
    input_ids: list[int]
    labels: list[int]          # IGNORE_INDEX except at first sub-tokens of kept words
    word_starts: list[int]     # token index of each kept word's first sub-token
    word_offset: int           # index of the first kept word in the original word list
    category: Category | None = None  # whose tags ``labels`` holds (training inputs); None without tags


class InputEncoder:
    def __init__(self, tokenizer, template: InstructionTemplate, max_length: int,  # noqa: ANN001
                 word_cache_size: int = WORD_CACHE_SIZE):
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.word_cache_size = word_cache_size
        # an OrderedDict, not functools.lru_cache on a bound method: that one is shared by a deepcopy
        # of the model (bench/tagger_extract_speed.py) and would keep the original encoder alive
        self._word_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._prompt_cache: dict[tuple[Category | None, str | None], list[int]] = {}
        fallback = tokenizer(" ", add_special_tokens=False)["input_ids"]
        self._fallback = fallback[:1] or [tokenizer.unk_token_id or 0]

    def prompt_ids(self, category: Category | None, dataset: str | None) -> list[int]:
        key = (category if self.template.names_type else None, dataset)
        ids = self._prompt_cache.get(key)
        if ids is None:
            ids = self.tokenizer(self.template.render(key[0], dataset), add_special_tokens=True)["input_ids"]
            self._prompt_cache[key] = ids
        return ids

    def word_ids(self, word: str) -> list[int]:
        cache = self._word_cache
        ids = cache.get(word)
        if ids is not None:
            try:
                cache.move_to_end(word)
            except KeyError:  # dropped meanwhile by another thread's insert
                pass
            return ids
        ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"] or list(self._fallback)
        if len(word) <= MAX_CACHED_WORD_CHARS:
            cache[word] = ids
            while len(cache) > self.word_cache_size:
                try:
                    cache.popitem(last=False)
                except KeyError:  # emptied meanwhile by another thread
                    break
        return ids

    def encode(self, words: Sequence[str], category: Category, dataset: str | None,
               tags: Sequence[str] | None = None, word_offset: int = 0) -> EncodedInput:
        """Encode words[word_offset:] until max_length; words that do not fit are left out."""
        ids = list(self.prompt_ids(category, dataset))
        labels = [IGNORE_INDEX] * len(ids)
        starts: list[int] = []
        for i in range(word_offset, len(words)):
            piece = self.word_ids(words[i])
            if len(ids) + len(piece) > self.max_length:
                if not starts:  # a single over-long word: keep its first sub-tokens
                    piece = piece[: max(self.max_length - len(ids), 1)]
                else:
                    break
            starts.append(len(ids))
            labels.append(TAG_TO_ID[tags[i]] if tags is not None else IGNORE_INDEX)
            labels.extend([IGNORE_INDEX] * (len(piece) - 1))
            ids.extend(piece)
        return EncodedInput(ids, labels, starts, word_offset, category if tags is not None else None)

    def encode_windows(self, words: Sequence[str], category: Category, dataset: str | None) -> list[EncodedInput]:
        """Cover every word of a long sentence with consecutive windows that each fit max_length."""
        out: list[EncodedInput] = []
        offset = 0
        while offset < len(words):
            enc = self.encode(words, category, dataset, word_offset=offset)
            out.append(enc)
            offset += max(len(enc.word_starts), 1)
        return out
