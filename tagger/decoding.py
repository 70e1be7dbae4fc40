"""O/B/I decoding of per-word probabilities into tags.

Why Viterbi: the head scores each word independently, so plain argmax can emit an ``I`` right
after ``O`` (or first in a sentence). conlleval reads such an ``I`` as the start of a new entity,
which usually is a boundary error (the model was unsure whether the previous word was in the span).
The constrained decoder picks the most probable tag sequence in which every ``I`` continues a
``B`` or ``I``; it changes nothing where argmax is already well formed.
"""

from __future__ import annotations

import numpy as np

from vaner.corpus import TAGS, tags_to_spans

DECODINGS = ("viterbi", "argmax")
_O, _B, _I = TAGS.index("O"), TAGS.index("B"), TAGS.index("I")
# allowed[prev, next]: I may only follow B or I
_ALLOWED = np.ones((3, 3), dtype=bool)
_ALLOWED[_O, _I] = False
_TRANS = np.where(_ALLOWED, 0.0, -np.inf)


def decode_ids(probs: np.ndarray, decoding: str = "viterbi") -> np.ndarray:
    """Tag ids (len(words),) for one sentence's (len(words), 3) probabilities."""
    if decoding == "argmax" or len(probs) == 0:
        return probs.argmax(-1) if len(probs) else np.zeros(0, dtype=np.int64)
    if decoding != "viterbi":
        raise ValueError(f"unknown decoding {decoding!r}; expected one of {DECODINGS}")
    logp = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0))
    n = len(logp)
    score = logp[0].copy()
    score[_I] = -np.inf  # a sentence cannot start inside an entity
    back = np.zeros((n, 3), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + _TRANS  # (prev, next)
        back[t] = cand.argmax(0)
        score = cand.max(0) + logp[t]
    out = np.empty(n, dtype=np.int64)
    out[-1] = int(score.argmax())
    for t in range(n - 1, 0, -1):
        out[t - 1] = back[t, out[t]]
    return out


def decode_tags(probs: np.ndarray, decoding: str = "viterbi") -> list[str]:
    return [TAGS[int(k)] for k in decode_ids(probs, decoding)]


def decode_spans(probs: np.ndarray, decoding: str = "viterbi") -> list[tuple[int, int, float]]:
    """Word spans [start, end) of one sentence with their scores: the mean probability of the
    decoded tag over the span's words. Cheap, in [0, 1], and it drops when any word of the span is
    uncertain, which is what users filter on; extraction and the saved eval spans share it."""
    ids = decode_ids(probs, decoding)
    picked = probs[np.arange(len(ids)), ids]
    return [(a, b, float(picked[a:b].mean())) for a, b in tags_to_spans([TAGS[int(k)] for k in ids])]
