"""The one list of entity categories, shared by protos, CLI, KB payloads and docs.

Kept as a plain enum whose values are the names users type and see (``Disease`` ...), so CLI
parsing, JSON output and Qdrant payloads all use the same strings.
"""

from __future__ import annotations

from enum import Enum

from vaner.errors import InvalidArgument


class Category(str, Enum):
    DISEASE = "Disease"
    CHEMICAL = "Chemical"
    GENE = "Gene"
    SPECIES = "Species"

    @classmethod
    def parse(cls, value: str | Category) -> Category:
        """Case-insensitive lookup; raises a domain error that lists the valid names."""
        if isinstance(value, Category):
            return value
        key = str(value).strip().lower()
        for c in cls:
            if c.value.lower() == key or c.name.lower() == key:
                return c
        raise InvalidArgument(
            f"unknown entity type {value!r}; expected one of {', '.join(c.value for c in cls)}"
        )

    @classmethod
    def parse_list(cls, value: str | list[str] | None) -> list[Category]:
        """Parse ``"Disease,Gene"`` or a list; ``None``/empty means all categories."""
        if not value:
            return list(cls)
        items = value.split(",") if isinstance(value, str) else value
        out: list[Category] = []
        for item in items:
            if str(item).strip():
                c = cls.parse(item)
                if c not in out:
                    out.append(c)
        return out or list(cls)

    def to_proto(self) -> int:
        """Proto enum number (vaner.v1.Category); 0 is UNSPECIFIED."""
        return list(Category).index(self) + 1

    @classmethod
    def from_proto(cls, number: int) -> Category:
        members = list(cls)
        if not 1 <= number <= len(members):
            raise InvalidArgument(f"unknown category number {number}")
        return members[number - 1]


ALL_CATEGORIES: tuple[Category, ...] = tuple(Category)
