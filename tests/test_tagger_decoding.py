"""BIO-constrained decoding: an I never starts an entity, well-formed argmax is left alone."""

import numpy as np
import pytest

from tagger.decoding import decode_tags


def _p(*rows):
    return np.array(rows, dtype=np.float32)


def test_viterbi_repairs_an_i_after_o():
    # argmax would read O I I: conlleval makes that an entity starting with I
    probs = _p([0.9, 0.05, 0.05], [0.3, 0.3, 0.4], [0.2, 0.1, 0.7])
    assert decode_tags(probs, "argmax") == ["O", "I", "I"]
    assert decode_tags(probs, "viterbi") in (["O", "B", "I"], ["O", "O", "O"])
    assert decode_tags(probs, "viterbi") == ["O", "B", "I"]


def test_viterbi_never_starts_with_i():
    assert decode_tags(_p([0.1, 0.3, 0.6], [0.8, 0.1, 0.1]), "viterbi") == ["B", "O"]


def test_viterbi_keeps_well_formed_argmax():
    rng = np.random.default_rng(0)
    for _ in range(200):
        probs = rng.dirichlet([1, 1, 1], size=rng.integers(1, 12)).astype(np.float32)
        am = decode_tags(probs, "argmax")
        well_formed = all(not (t == "I" and (i == 0 or am[i - 1] == "O")) for i, t in enumerate(am))
        vt = decode_tags(probs, "viterbi")
        assert all(not (t == "I" and (i == 0 or vt[i - 1] == "O")) for i, t in enumerate(vt))
        if well_formed:
            assert vt == am


def test_empty_and_unknown():
    assert decode_tags(np.zeros((0, 3), dtype=np.float32)) == []
    with pytest.raises(ValueError):
        decode_tags(_p([1, 0, 0]), "beam")
