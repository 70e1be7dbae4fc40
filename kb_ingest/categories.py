"""TUI -> :class:`Category` mapping, read from the one data file ``semantic_types.tsv``.

The table is data, not code, so a user who disagrees with a choice (say, Sign or Symptom as a
Disease) edits one line or points ``VANER_SEMANTIC_TYPES`` at their own copy. Rows are checked
when loaded (TUI shape, known category, no duplicates), like any registry in vaner.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from vaner.categories import Category
from vaner.errors import InvalidArgument

DEFAULT_TABLE = Path(__file__).with_name("semantic_types.tsv")
_TUI_RE = re.compile(r"^T\d{3}$")


class CategoryMap:
    """Maps a concept's TUIs to its categories (several when its types span categories)."""

    def __init__(self, table: dict[str, Category], names: dict[str, str] | None = None,
                 source: str = "") -> None:
        self.table = dict(table)
        self.names = dict(names or {})
        self.source = source
        self._memo: dict[tuple[str, ...], tuple[Category, ...]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None) -> CategoryMap:
        path = Path(path or os.environ.get("VANER_SEMANTIC_TYPES") or DEFAULT_TABLE)
        table: dict[str, Category] = {}
        names: dict[str, str] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"{path}: cannot read the semantic type table ({exc.strerror})") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#") or line.startswith("tui\t"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise InvalidArgument(f"{path}:{lineno}: expected 'TUI<TAB>name<TAB>category'")
            tui, name, cat = (p.strip() for p in parts)
            if not _TUI_RE.match(tui):
                raise InvalidArgument(f"{path}:{lineno}: {tui!r} is not a TUI (T followed by 3 digits)")
            if tui in table:
                raise InvalidArgument(f"{path}:{lineno}: {tui} listed twice")
            try:
                table[tui] = Category.parse(cat)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{path}:{lineno}: {exc.message}") from None
            names[tui] = name
        return cls(table, names, str(path))

    def categories_for(self, tuis: tuple[str, ...]) -> tuple[Category, ...]:
        """Categories in enum order (stable payloads); empty when no TUI is mapped."""
        hit = self._memo.get(tuis)
        if hit is None:
            found = {self.table[t] for t in tuis if t in self.table}
            hit = tuple(c for c in Category if c in found)
            with self._lock:
                self._memo[tuis] = hit
        return hit

    def tuis_for(self, category: Category) -> list[str]:
        return sorted(t for t, c in self.table.items() if c == category)


_default: CategoryMap | None = None


def default_map() -> CategoryMap:
    global _default
    if _default is None:
        _default = CategoryMap.load()
    return _default
