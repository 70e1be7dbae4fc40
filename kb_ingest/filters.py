"""Which MRCONSO atoms become KB terms: language, suppression, source vocabulary, duplicates.

Kept apart from the reader so the rules are visible in one place and recorded verbatim in each
snapshot (``filters``), which is what makes two snapshots comparable.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from vaner.errors import InvalidArgument

SUPPRESSED = frozenset({"O", "E", "Y"})  # obsolete, editor-suppressed, source-suppressed
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _clean_list(values, what: str, upper: bool = True) -> tuple[str, ...]:  # noqa: ANN001
    if isinstance(values, str):
        values = values.split(",")
    out: list[str] = []
    for v in values or ():
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            if not _NAME_RE.match(part):
                raise InvalidArgument(f"{what}: {part!r} is not a valid name (letters, digits, _ . -)")
            part = part.upper() if upper else part
            if part not in out:
                out.append(part)
    return tuple(out)


@dataclass(frozen=True)
class UmlsFilters:
    languages: tuple[str, ...] = ("ENG",)
    include_sabs: tuple[str, ...] = ()
    exclude_sabs: tuple[str, ...] = ()
    keep_suppressed: bool = False

    def __post_init__(self) -> None:
        langs = _clean_list(self.languages, "--lang") or ("ENG",)
        inc = _clean_list(self.include_sabs, "--sab", upper=False)
        exc = _clean_list(self.exclude_sabs, "--exclude-sab", upper=False)
        both = sorted(set(inc) & set(exc))
        if both:
            raise InvalidArgument(f"--sab and --exclude-sab both name {', '.join(both)}")
        object.__setattr__(self, "languages", langs)
        object.__setattr__(self, "include_sabs", inc)
        object.__setattr__(self, "exclude_sabs", exc)
        object.__setattr__(self, "keep_suppressed", bool(self.keep_suppressed))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def normalise(text: str) -> str:
    """Key for collapsing duplicate strings of one concept: case and whitespace only, because
    SapBERT-style encoders are case-insensitive in practice while punctuation can carry meaning
    (``IL-2`` vs ``IL 2`` stay distinct)."""
    return " ".join(text.lower().split())


def preferred_rank(ts: str, stt: str, ispref: str) -> int:
    """Higher is better: TS=P, then STT=PF, then ISPREF=Y (the UMLS preferred-name rule); the
    first atom of the concept wins ties, so a concept lacking the full triple still gets a name."""
    return (4 if ts == "P" else 0) + (2 if stt == "PF" else 0) + (1 if ispref == "Y" else 0)
