"""Training/evaluation sentences, the CoNLL reader and the dataset registry.

Lives in ``vaner`` (below ``kb_ingest``, ``retrieval`` and ``tagger``) because all three read
corpora: the KB adds training-set entities, DBR assembly mines training sentences, the tagger
trains and evaluates on them. None of them may import another just to read a CoNLL file.

A :class:`Sentence` is words + IOB tags for ONE category, plus the dataset it came from
(``None`` for DBR sentences and unseen text, which get the dataset-free instruction).
Tags are stored type-free (``O``/``B``/``I``): the category lives on the sentence, because the
instruction, not the tag set, says what to extract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vaner.categories import Category
from vaner.errors import InvalidArgument, NotFound

TAGS = ("O", "B", "I")
TAG_TO_ID = {t: i for i, t in enumerate(TAGS)}


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # O/B/I, same length as words
    category: Category
    dataset: str | None = None  # None: dataset-free instruction (DBR, unseen text)
    source: str = field(default="", compare=False)  # "file:line" of the first token, for messages

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise InvalidArgument(f"{self.source or 'sentence'}: {len(self.words)} words but {len(self.tags)} tags")
        bad = [t for t in self.tags if t not in TAG_TO_ID]
        if bad:
            raise InvalidArgument(f"{self.source or 'sentence'}: invalid tag {bad[0]!r} (expected O, B or I)")

    def spans(self) -> list[tuple[int, int]]:
        """Entity word spans [start, end) under strict IOB2 reading (an I after O starts an entity)."""
        return tags_to_spans(self.tags)


def tags_to_spans(tags: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
    """conlleval semantics: B starts; I continues an open entity, or starts one after O."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, tag in enumerate(tags):
        if tag == "B" or (tag == "I" and start is None):
            if start is not None:
                spans.append((start, i))
            start = i
        elif tag == "O":
            if start is not None:
                spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(tags)))
    return spans


_TAG_RE = re.compile(r"^(O|([BI])-(.+))$")


def read_conll(path: str | Path, category: Category | str | None = None,
               dataset: str | None = None) -> list[Sentence]:
    """Read ``token<TAB>tag`` lines with blank lines between sentences (IOB2, one entity type).

    The category comes from the tags (``B-Disease``) unless given; a file that mixes types or a
    malformed line is an :class:`InvalidArgument` naming the file and line number.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if path.is_dir():
        raise InvalidArgument(f"{path}: is a directory, expected a CoNLL file")
    want = Category.parse(category) if category is not None else None
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    seen_type: str | None = None
    pending: list[tuple[int, list[str], list[str]]] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise InvalidArgument(f"{path}:{lineno}: not valid UTF-8 ({exc.reason})") from None
            if not line.strip():
                if words:
                    pending.append((first_line, words, tags))
                    words, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 2 or not parts[0]:
                raise InvalidArgument(f"{path}:{lineno}: expected 'token<TAB>tag', got {line[:60]!r}")
            token, tag = parts[0], parts[-1]
            m = _TAG_RE.match(tag)
            if not m:
                raise InvalidArgument(f"{path}:{lineno}: invalid tag {tag!r} (expected O, B-<Type> or I-<Type>)")
            if m.group(3):
                if seen_type is None:
                    seen_type = m.group(3)
                elif m.group(3) != seen_type and want is None:
                    raise InvalidArgument(
                        f"{path}:{lineno}: tag type {m.group(3)!r} differs from {seen_type!r}; "
                        "one entity type per file (pass --type to override)")
            if not words:
                first_line = lineno
            words.append(token)
            tags.append(m.group(2) or "O")
    if words:
        pending.append((first_line, words, tags))
    category_ = want
    if category_ is None:
        if seen_type is None:
            raise InvalidArgument(f"{path}: no entity type in the tags; pass the type explicitly (--type)")
        try:
            category_ = Category.parse(seen_type)
        except InvalidArgument:
            raise InvalidArgument(f"{path}: tag type {seen_type!r} is not a vaner category; pass --type") from None
    sentences = [Sentence(tuple(w), tuple(t), category_, dataset, f"{path}:{ln}") for ln, w, t in pending]
    return sentences


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    category: Category
    directory: str
    collection: str = "bioner"  # folder beside the data dir: bioner (the paper's sets) or bioner-extra

    @property
    def benchmark(self) -> bool:
        """One of the paper's benchmark sets (reported in its Table 1), not an extra corpus."""
        return self.collection == "bioner"


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class DatasetRegistry:
    """Name -> (category, folder) for the shared benchmark sets; names are lower-case slugs."""

    def __init__(self) -> None:
        self._items: dict[str, DatasetInfo] = {}

    def register(self, name: str, category: Category, directory: str | None = None,
                 collection: str = "bioner") -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"dataset name {name!r} must be a lower-case slug")
        if name in self._items:
            raise ValueError(f"dataset {name!r} registered twice")
        self._items[name] = DatasetInfo(name, category, directory or name, collection)

    def get(self, name: str) -> DatasetInfo:
        try:
            return self._items[name.strip().lower()]
        except KeyError:
            raise NotFound(f"unknown dataset {name!r}; known: {', '.join(self._items)}") from None

    def names(self, collection: str | None = None) -> list[str]:
        return [n for n, i in self._items.items() if collection is None or i.collection == collection]

    def parse_list(self, value: str | list[str]) -> list[DatasetInfo]:
        items = value.split(",") if isinstance(value, str) else value
        return [self.get(n) for n in items if n.strip()]


DATASETS = DatasetRegistry()
for _name, _cat in (("ncbi", Category.DISEASE), ("bc5cdr-disease", Category.DISEASE),
                    ("bc5cdr-chem", Category.CHEMICAL), ("bc2gm", Category.GENE),
                    ("jnlpba", Category.GENE), ("linnaeus", Category.SPECIES), ("s800", Category.SPECIES)):
    DATASETS.register(_name, _cat)
# Further public corpora (../shared/data/bioner-extra, README = data card): more Chemical, Gene and
# Species supervision for adaptation to unseen text (VANER 4.6 names the few Gene/Chemical corpora
# as why its adaptation lags HunFlair).
for _name, _cat in (("bionlp11id-chem", Category.CHEMICAL), ("bionlp11id-gene", Category.GENE),
                    ("bionlp11id-species", Category.SPECIES), ("bionlp13cg-chem", Category.CHEMICAL),
                    ("bionlp13cg-gene", Category.GENE), ("bionlp13cg-species", Category.SPECIES),
                    ("bionlp13pc-chem", Category.CHEMICAL), ("bionlp13pc-gene", Category.GENE),
                    ("bionlp09-gene", Category.GENE), ("bionlp11epi-gene", Category.GENE),
                    ("bionlp13ge-gene", Category.GENE), ("ex-ptm-gene", Category.GENE)):
    DATASETS.register(_name, _cat, collection="bioner-extra")


def default_data_dir() -> Path:
    """``$VANER_DATA_DIR``, else ``../shared/data/bioner`` beside the checkout (as laid out here)."""
    import os

    env = os.environ.get("VANER_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "bioner"


def load_dataset(name: str, split: str, data_dir: str | Path | None = None) -> list[Sentence]:
    info = DATASETS.get(name)
    if split not in ("train", "dev", "test"):
        raise InvalidArgument(f"unknown split {split!r}; expected train, dev or test")
    root = Path(data_dir or default_data_dir())
    if info.collection != "bioner":  # extra collections sit beside the benchmark folder
        root = root.parent / info.collection
    path = root / info.directory / f"{split}.tsv"
    return read_conll(path, info.category, info.name)


def benchmark_eval_texts(data_dir: str | Path | None = None) -> set[tuple[str, ...]]:
    """Word sequences of every benchmark dev and test sentence (for decontaminating extra corpora)."""
    out: set[tuple[str, ...]] = set()
    for name in DATASETS.names("bioner"):
        for split in ("dev", "test"):
            out.update(s.words for s in load_dataset(name, split, data_dir))
    return out
