"""Documents in and out: raw text, PubTator and BioC XML in; JSON, PubTator, BioC and CoNLL out.

Why passages are kept: PubTator and BioC documents are several passages (title, abstract,
sections) at fixed character offsets, and downstream tools match our spans against THEIR offsets.
So a :class:`Document` keeps one ``text`` in which every passage sits at its original offset
(gaps padded with spaces), every entity offset is into that text, and the extractor splits
sentences passage by passage (a title without a final period must not run into the abstract).

Writers never change a character count: newlines inside a PubTator line become spaces, so
offsets written out are the offsets read in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tagger.text import TextSentence
from tagger.text import sentences as split_and_tokenize
from vaner.cancel import StopCheck
from vaner.categories import Category
from vaner.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

INPUT_FORMATS = ("text", "pubtator", "bioc")
OUTPUT_FORMATS = ("json", "pubtator", "bioc", "conll")


@dataclass(frozen=True)
class Passage:
    offset: int
    text: str
    type: str = ""

    @property
    def end(self) -> int:
        return self.offset + len(self.text)


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    text: str
    type: str                       # a Category value for predictions; any string for gold input
    score: float = 1.0
    concepts: tuple = ()            # ConceptHit objects from linking, or {"cui": ...} dicts read in

    def to_json(self) -> dict:
        d: dict = {"start": self.start, "end": self.end, "text": self.text, "type": self.type,
                   "score": round(float(self.score), 6)}
        if self.concepts:
            d["concepts"] = [_concept_json(c) for c in self.concepts]
        return d


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    passages: tuple[Passage, ...] = ()
    entities: tuple[Entity, ...] = ()

    def __post_init__(self) -> None:
        if not self.passages:
            object.__setattr__(self, "passages", (Passage(0, self.text, ""),) if self.text else ())

    def to_json(self, include_text: bool = True) -> dict:
        d: dict = {"id": self.id}
        if include_text:
            d["text"] = self.text
        d["entities"] = [e.to_json() for e in self.entities]
        return d


# The extractor returns the same shape as the readers: a document with its (predicted) entities.
DocumentEntities = Document

# (mentions, their categories) -> top-k concepts per mention (retrieval/linking.py provides one).
LinkFn = Callable[[list[str], list[Category]], list[list[object]]]


def link_documents(docs: Sequence[Document], link: LinkFn) -> list[Document]:
    """The documents with each entity's ``concepts`` filled by ONE ``link`` call over all their
    mentions, so the linker can de-duplicate and batch across documents. The step shared by
    ``vaner extract --link`` (after the model) and the Tagger service's Extract (after tagging)."""
    docs = list(docs)
    flat = [(di, ei) for di, d in enumerate(docs) for ei in range(len(d.entities))]
    if not flat:
        return docs
    mentions = [docs[di].entities[ei].text for di, ei in flat]
    cats = [Category.parse(docs[di].entities[ei].type) for di, ei in flat]
    hits = link(mentions, cats)
    if len(hits) != len(mentions):
        raise RuntimeError(f"linker returned {len(hits)} results for {len(mentions)} mentions")
    ents = [list(d.entities) for d in docs]
    for (di, ei), h in zip(flat, hits, strict=True):
        ents[di][ei] = dataclasses.replace(ents[di][ei], concepts=tuple(h))
    return [dataclasses.replace(d, entities=tuple(e)) for d, e in zip(docs, ents, strict=True)]


def _concept_json(c: object) -> dict:
    if isinstance(c, dict):
        return dict(c)
    if hasattr(c, "to_json"):
        return c.to_json()  # type: ignore[no-any-return]
    if dataclasses.is_dataclass(c):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(c).items()}
    return {"cui": str(c)}


def _concept_id(c: object) -> str:
    if isinstance(c, dict):
        return str(c.get("cui") or c.get("id") or "")
    return str(getattr(c, "cui", "") or "")


def assemble(doc_id: str, passages: Sequence[Passage], entities: Iterable[Entity] = ()) -> Document:
    """Place passages at their offsets in one text (space-padded gaps); reject overlaps."""
    parts: list[str] = []
    pos = 0
    for p in sorted(passages, key=lambda p: p.offset):
        if p.offset < pos:
            raise InvalidArgument(f"document {doc_id}: passage at offset {p.offset} overlaps the previous one")
        parts.append(" " * (p.offset - pos))
        parts.append(p.text)
        pos = p.end
    text = "".join(parts)
    checked = []
    for e in entities:
        if not 0 <= e.start <= e.end <= len(text):
            raise InvalidArgument(f"document {doc_id}: entity {e.start}-{e.end} is outside the text")
        if text[e.start:e.end] != e.text:
            log.warning("document %s: mention %r differs from the text at %d-%d (%r); using the text",
                        doc_id, e.text, e.start, e.end, text[e.start:e.end])
            e = dataclasses.replace(e, text=text[e.start:e.end])
        checked.append(e)
    return Document(doc_id, text, tuple(sorted(passages, key=lambda p: p.offset)), tuple(checked))


# ---- readers ------------------------------------------------------------------------------------
def read_text(text: str, doc_id: str = "doc1") -> list[Document]:
    return [Document(doc_id, text)]


def parse_pubtator(content: str, source: str = "<pubtator>") -> list[Document]:
    """``PMID|t|title``, ``PMID|a|abstract``, then ``PMID<TAB>start<TAB>end<TAB>mention<TAB>type[<TAB>id]``
    lines; documents separated by blank lines. Abstract offset = len(title) + 1 (PubTator's rule)."""
    docs: list[Document] = []
    cur_id: str | None = None
    passages: list[Passage] = []
    ents: list[Entity] = []
    pos = 0

    def flush() -> None:
        nonlocal cur_id, passages, ents, pos
        if cur_id is not None:
            docs.append(assemble(cur_id, passages, ents))
        cur_id, passages, ents, pos = None, [], [], 0

    for lineno, raw in enumerate(content.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            flush()
            continue
        head = line.split("|", 2)
        if len(head) == 3 and head[1] in ("t", "a") and "\t" not in head[0]:
            pid, kind, body = head
            if cur_id is not None and pid != cur_id:
                flush()
            cur_id = pid
            offset = pos + 1 if passages else 0
            passages.append(Passage(offset, body, "title" if kind == "t" else "abstract"))
            pos = offset + len(body)
            continue
        cols = line.split("\t")
        if len(cols) >= 5 and cols[1].isdigit() and cols[2].isdigit():
            if cur_id is None or cols[0] != cur_id:
                raise InvalidArgument(f"{source}:{lineno}: annotation for {cols[0]!r} outside its document")
            concepts = tuple({"cui": c} for c in (cols[5].split(",") if len(cols) > 5 and cols[5] else []) if c)
            ents.append(Entity(int(cols[1]), int(cols[2]), cols[3], cols[4], 1.0, concepts))
            continue
        if len(cols) >= 4 and cols[1] in ("CID", "relation"):  # relation lines: not entities
            continue
        raise InvalidArgument(f"{source}:{lineno}: not a PubTator line: {line[:60]!r}")
    flush()
    return docs


def parse_bioc(content: str | bytes, source: str = "<bioc>") -> list[Document]:
    """BioC XML: documents of passages (offset + text, or offset + sentences); annotations with
    document-level ``location`` offsets. Discontinuous annotations keep their first location."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise InvalidArgument(f"{source}: not valid XML ({exc})") from None
    if root.tag != "collection":
        raise InvalidArgument(f"{source}: expected a BioC <collection>, found <{root.tag}>")
    docs = []
    for d_i, d in enumerate(root.iter("document"), 1):
        doc_id = (d.findtext("id") or f"doc{d_i}").strip()
        passages: list[Passage] = []
        ents: list[Entity] = []
        for p in d.findall("passage"):
            try:
                offset = int((p.findtext("offset") or "0").strip())
            except ValueError:
                raise InvalidArgument(f"{source}: document {doc_id}: passage offset is not an integer") from None
            ptype = next((i.text or "" for i in p.findall("infon") if i.get("key") == "type"), "")
            text_el = p.find("text")
            if text_el is not None:
                ptext = text_el.text or ""
            else:  # sentence-level BioC: rebuild the passage text from sentence offsets
                sents = [(int(s.findtext("offset") or "0"), s.findtext("text") or "") for s in p.findall("sentence")]
                buf = ""
                for so, st in sorted(sents):
                    buf += " " * max(so - offset - len(buf), 0) + st
                ptext = buf
            passages.append(Passage(offset, ptext, ptype))
            for a in list(p.findall("annotation")) + list(p.iter("sentence")):
                for ann in ([a] if a.tag == "annotation" else a.findall("annotation")):
                    ents.append(_bioc_annotation(ann, doc_id, source))
        ents.extend(_bioc_annotation(a, doc_id, source) for a in d.findall("annotation"))
        docs.append(assemble(doc_id, passages, ents))
    return docs


def _bioc_annotation(a: ET.Element, doc_id: str, source: str) -> Entity:
    infons = {i.get("key"): (i.text or "") for i in a.findall("infon")}
    loc = a.find("location")
    if loc is None:
        raise InvalidArgument(f"{source}: document {doc_id}: annotation {a.get('id')} has no location")
    try:
        start, length = int(loc.get("offset", "")), int(loc.get("length", ""))
    except ValueError:
        raise InvalidArgument(f"{source}: document {doc_id}: annotation {a.get('id')} has a bad location") from None
    ids = infons.get("identifier") or infons.get("Identifier") or ""
    concepts = tuple({"cui": c} for c in ids.replace(";", ",").split(",") if c.strip())
    score = float(infons["score"]) if infons.get("score") else 1.0
    return Entity(start, start + length, a.findtext("text") or "", infons.get("type", ""), score, concepts)


def read_documents(path: str | Path, fmt: str = "text") -> list[Document]:
    """Read a file (``-`` = stdin) in one of :data:`INPUT_FORMATS`; raw text is one document."""
    import sys

    if fmt not in INPUT_FORMATS:
        raise InvalidArgument(f"unknown input format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}")
    if str(path) == "-":
        content, name, stem = sys.stdin.read(), "<stdin>", "stdin"
    else:
        p = Path(path)
        if not p.is_file():
            raise NotFound(f"{p}: no such file")
        try:
            content = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{p}: not valid UTF-8 ({exc.reason})") from None
        name, stem = str(p), p.stem
    if fmt == "pubtator":
        return parse_pubtator(content, name)
    if fmt == "bioc":
        return parse_bioc(content.encode("utf-8"), name)
    return read_text(content, stem)


# ---- writers ------------------------------------------------------------------------------------
def to_json(docs: Sequence[Document], include_text: bool = True) -> list[dict]:
    return [d.to_json(include_text) for d in docs]


def _one_line(s: str) -> str:
    return s.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def to_pubtator(docs: Sequence[Document]) -> str:
    """Title = first passage, abstract = the rest of the text after it (same offsets)."""
    out: list[str] = []
    for d in docs:
        doc_id = _one_line(d.id).replace("|", "_")
        if len(d.passages) >= 2 and d.passages[1].offset == d.passages[0].end + 1:
            title, abstract = d.text[: d.passages[0].end], d.text[d.passages[0].end + 1:]
        else:  # one passage: it is the title, so its offsets stay unshifted
            title, abstract = d.text, ""
        out.append(f"{doc_id}|t|{_one_line(title)}")
        out.append(f"{doc_id}|a|{_one_line(abstract)}")
        for e in d.entities:
            ids = ",".join(c for c in (_concept_id(x) for x in e.concepts) if c)
            out.append(f"{doc_id}\t{e.start}\t{e.end}\t{_one_line(e.text)}\t{e.type}\t{ids}")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def to_bioc(docs: Sequence[Document], source: str = "vaner") -> str:
    root = ET.Element("collection")
    ET.SubElement(root, "source").text = source
    ET.SubElement(root, "date").text = ""
    ET.SubElement(root, "key").text = "vaner.key"
    n = 0
    for d in docs:
        de = ET.SubElement(root, "document")
        ET.SubElement(de, "id").text = d.id
        for p in d.passages:
            pe = ET.SubElement(de, "passage")
            if p.type:
                ET.SubElement(pe, "infon", key="type").text = p.type
            ET.SubElement(pe, "offset").text = str(p.offset)
            ET.SubElement(pe, "text").text = p.text
            for e in d.entities:
                if p.offset <= e.start < max(p.end, p.offset + 1):
                    n += 1
                    ae = ET.SubElement(pe, "annotation", id=str(n))
                    ET.SubElement(ae, "infon", key="type").text = e.type
                    ids = ",".join(c for c in (_concept_id(x) for x in e.concepts) if c)
                    if ids:
                        ET.SubElement(ae, "infon", key="identifier").text = ids
                    ET.SubElement(ae, "infon", key="score").text = f"{float(e.score):.6g}"
                    ET.SubElement(ae, "location", offset=str(e.start), length=str(e.end - e.start))
                    ET.SubElement(ae, "text").text = e.text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE collection SYSTEM "BioC.dtd">\n' + \
        ET.tostring(root, encoding="unicode") + "\n"


def document_sentences(doc: Document, should_stop: StopCheck | None = None) -> list[TextSentence]:
    """Sentences of every passage separately, offsets into ``doc.text``; ``should_stop`` is looked
    at as a long passage is split (see :mod:`tagger.text`)."""
    out: list[TextSentence] = []
    for p in doc.passages:
        out.extend(split_and_tokenize(doc.text, p.offset, p.end, should_stop))
    return out


def to_conll(docs: Sequence[Document]) -> str:
    """``token<TAB>B-Type/I-Type/O``, a blank line after each sentence, ``-DOCSTART- id`` per
    document (read_conll skips it). Where entities overlap, the earliest-starting, then longest wins."""
    import bisect

    out: list[str] = []
    for d in docs:
        out.append(f"-DOCSTART- {_one_line(d.id)}")
        out.append("")
        sents = document_sentences(d)
        tokens = [t for s in sents for t in s.tokens]
        starts = [t.start for t in tokens]
        owner: list[Entity | None] = [None] * len(tokens)
        for e in sorted(d.entities, key=lambda e: (e.start, -e.end)):
            i = bisect.bisect_left(starts, e.start)
            while i < len(tokens) and tokens[i].end <= e.end:
                if owner[i] is None:
                    owner[i] = e
                i += 1
        k = 0
        for sent in sents:
            prev: Entity | None = None
            for tok in sent.tokens:
                hit = owner[k]
                k += 1
                tag = "O" if hit is None else f"{'I' if hit is prev else 'B'}-{hit.type}"
                prev = hit
                out.append(f"{tok.text}\t{tag}")
            out.append("")
    return "\n".join(out) + ("\n" if out else "")


def write_documents(docs: Sequence[Document], fmt: str = "json", include_text: bool = True) -> str:
    if fmt == "json":
        return json.dumps(to_json(docs, include_text), ensure_ascii=False, indent=2) + "\n"
    if fmt == "pubtator":
        return to_pubtator(docs)
    if fmt == "bioc":
        return to_bioc(docs)
    if fmt == "conll":
        return to_conll(docs)
    raise InvalidArgument(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")


__all__ = ["Document", "DocumentEntities", "Entity", "LinkFn", "Passage", "INPUT_FORMATS", "OUTPUT_FORMATS",
           "assemble", "read_documents", "read_text", "parse_pubtator", "parse_bioc", "write_documents",
           "to_json", "to_pubtator", "to_bioc", "to_conll", "document_sentences", "link_documents"]
