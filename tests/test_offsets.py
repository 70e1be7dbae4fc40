"""Code points (vaner's offsets) <-> UTF-16 code units (JavaScript/Java string indices)."""

from __future__ import annotations

import pytest

from vaner.offsets import from_utf16, to_utf16


def test_astral_characters_shift_utf16_offsets():
    text = "𝛼-synuclein 🧬 in PD"  # U+1D6FC and U+1F9EC take two UTF-16 units each
    start = text.index("PD")
    u16 = to_utf16(text, start)
    assert u16 == start + 2 == len(text[:start].encode("utf-16-le")) // 2
    assert text.encode("utf-16-le")[2 * u16:2 * (u16 + 2)].decode("utf-16-le") == "PD"  # what JS slices
    assert from_utf16(text, u16) == start
    assert [from_utf16(text, to_utf16(text, i)) for i in range(len(text) + 1)] == list(range(len(text) + 1))


def test_offsets_outside_the_text_or_inside_a_pair_are_refused():
    with pytest.raises(ValueError, match="surrogate pair"):
        from_utf16("🧬x", 1)
    with pytest.raises(ValueError, match="outside"):
        to_utf16("abc", 4)
    with pytest.raises(ValueError, match="outside"):
        from_utf16("abc", 9)
