"""Offsets in vaner are Unicode code points (Python ``str`` indices); JavaScript, Java and C#
index strings in UTF-16 code units, so any character outside the Basic Multilingual Plane
(emoji, many math letters, some CJK) shifts every later offset by one per such character.

These two functions convert between the units; docs/services.md shows the same conversion in
JavaScript for clients that slice the returned spans themselves.
"""

from __future__ import annotations


def _utf16_len(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def to_utf16(text: str, offset: int) -> int:
    """The UTF-16 code-unit offset of code-point ``offset`` in ``text``."""
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} is outside a text of {len(text)} code points")
    return offset + sum(1 for ch in text[:offset] if ord(ch) > 0xFFFF)


def from_utf16(text: str, offset: int) -> int:
    """The code-point offset of UTF-16 ``offset`` in ``text``; an offset inside a surrogate pair is an error."""
    units = 0
    for i, ch in enumerate(text):
        if units == offset:
            return i
        units += _utf16_len(ch)
        if units > offset:
            raise ValueError(f"UTF-16 offset {offset} falls inside the surrogate pair of code point {i}")
    if units == offset:
        return len(text)
    raise ValueError(f"UTF-16 offset {offset} is outside a text of {units} UTF-16 code units")
