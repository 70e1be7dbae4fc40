"""The ingest pipeline: RRF rows -> filtered concepts -> categorised terms -> vectors -> snapshot.

Stages, each leaving something inspectable (STYLE.md, scispaCy):
1. MRSTY.RRF -> :class:`TuiIndex` (compact arrays: CUI number -> TUI combination).
2. MRCONSO.RRF streamed and grouped by CUI (a release is sorted by CUI, so one concept's atoms
   are consecutive and memory stays bounded by one concept) -> :class:`Concept` records.
3. Terms encoded and upserted in batches into a collection that only this snapshot uses.
4. Completeness (MRFILES row counts) and bad-line checks, index build, then ``latest`` flips.
Anything raised before step 4 marks the snapshot failed and drops its collection.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kb_ingest.categories import CategoryMap
from kb_ingest.filters import SUPPRESSED, UmlsFilters, normalise
from kb_ingest.rrf import (
    MRCONSO_COLUMNS,
    MRSTY_COLUMNS,
    BadLine,
    BadLineReport,
    RrfReader,
    columns_for,
)
from vaner.cancel import StopCheck, check_stop
from vaner.categories import Category
from vaner.errors import InvalidArgument
from vaner.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

ENCODE_BATCH = 2048  # terms per encode+upsert round: large enough for length-sorted batching
PROGRESS_EVERY = 20000


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def cui_number(cui: str) -> int:
    """``C0012345`` -> 12345; -1 for anything else (such a concept has no semantic type)."""
    if len(cui) > 1 and cui[0] == "C" and cui[1:].isdigit():
        return int(cui[1:])
    return -1


class TuiIndex:
    """CUI -> TUIs for a whole release in ~6 bytes per concept (a dict would take ~100)."""

    def __init__(self, cuis: array, combo_ids: array, combos: list[tuple[str, ...]]):
        self.cuis = cuis
        self.combo_ids = combo_ids
        self.combos = combos

    def __len__(self) -> int:
        return len(self.cuis)

    def tuis(self, cui: str) -> tuple[str, ...]:
        n = cui_number(cui)
        i = bisect.bisect_left(self.cuis, n)
        if n < 0 or i >= len(self.cuis) or self.cuis[i] != n:
            return ()
        return self.combos[self.combo_ids[i]]

    @classmethod
    def from_mrsty(cls, path: Path, report: BadLineReport, columns: tuple[str, ...] = MRSTY_COLUMNS,
                   progress: ProgressCallback | None = None, total: int | None = None,
                   hasher: object | None = None) -> tuple[TuiIndex, int]:
        reader = RrfReader(path, columns, report, required=("CUI", "TUI"), hasher=hasher)
        ci, ti = reader.col("CUI"), reader.col("TUI")
        cuis = array("q")
        tuis = array("H")
        tracker = ProgressTracker("MRSTY.RRF", total, progress)
        done = 0
        for row in reader:
            n = cui_number(row[ci])
            t = row[ti]
            if n < 0:
                report.add(BadLine(str(path), reader.lines, "bad_cui", f"CUI {row[ci]!r}"))
                continue
            if len(t) != 4 or t[0] != "T" or not t[1:].isdigit():
                report.add(BadLine(str(path), reader.lines, "bad_tui", f"TUI {t!r}"))
                continue
            cuis.append(n)
            tuis.append(int(t[1:]))
            done += 1
            if done % PROGRESS_EVERY == 0:
                tracker.advance(PROGRESS_EVERY)
        tracker.done = reader.lines
        tracker.finish()
        c = np.frombuffer(cuis, dtype=np.int64)
        t = np.frombuffer(tuis, dtype=np.uint16)
        order = np.lexsort((t, c))
        c, t = c[order], t[order]
        uniq_c, starts = np.unique(c, return_index=True) if len(c) else (c, np.zeros(0, dtype=np.int64))
        ends = np.append(starts[1:], len(c)).astype(np.int64)
        combo_of: dict[tuple[str, ...], int] = {}
        combos: list[tuple[str, ...]] = []
        combo_ids = array("I")
        tl = t.tolist()
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            key = tuple(sorted({f"T{x:03d}" for x in tl[s:e]}))
            cid = combo_of.get(key)
            if cid is None:
                cid = combo_of[key] = len(combos)
                combos.append(key)
            combo_ids.append(cid)
        cuis_arr = array("q")
        cuis_arr.frombytes(uniq_c.astype(np.int64).tobytes())  # no transient list of millions of ints
        return cls(cuis_arr, combo_ids, combos), reader.lines


@dataclass
class Concept:
    cui: str
    preferred: str
    terms: list[str]
    tuis: tuple[str, ...] = ()
    categories: tuple[Category, ...] = ()
    codes: list[tuple[str, str]] = field(default_factory=list)  # (SAB, CODE) of each term's first atom


@dataclass
class IngestCounts:
    rows: int = 0
    concepts: int = 0
    terms: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def iter_mrconso_concepts(reader: RrfReader, filters: UmlsFilters, counts: IngestCounts,
                          tracker: ProgressTracker | None = None) -> Iterator[Concept]:
    """Group filtered atoms by CUI. This loop is the parse+filter hot path: only list indexing,
    string comparisons and dict lookups per row, no objects until a concept is complete."""
    c_cui, c_lat, c_ts, c_stt = reader.col("CUI"), reader.col("LAT"), reader.col("TS"), reader.col("STT")
    c_pref, c_sab, c_str, c_sup = reader.col("ISPREF"), reader.col("SAB"), reader.col("STR"), reader.col("SUPPRESS")
    # the source's own id: CODE, else SCUI (a release without either still ingests, with empty codes)
    c_code = reader.index.get("CODE", reader.index.get("SCUI", -1))
    has_code = c_code >= 0
    langs = frozenset(filters.languages)
    include = frozenset(filters.include_sabs)
    exclude = frozenset(filters.exclude_sabs)
    drop_suppressed = not filters.keep_suppressed
    skipped = counts.skipped
    cur = None
    terms: dict[str, tuple[str, str, str]] = {}  # normalised -> (text, SAB, CODE)
    best_rank = -1
    best = ""
    out_of_order = 0
    if tracker is not None:
        reader.on_chunk = lambda lines: tracker.advance(lines - tracker.done)
    for row in reader:
        if row[c_lat] not in langs:
            skipped["language"] = skipped.get("language", 0) + 1
            continue
        if drop_suppressed and row[c_sup] in SUPPRESSED:
            skipped["suppressed"] = skipped.get("suppressed", 0) + 1
            continue
        sab = row[c_sab]
        if (include and sab not in include) or sab in exclude:
            skipped["source_vocabulary"] = skipped.get("source_vocabulary", 0) + 1
            continue
        cui = row[c_cui]
        if cui != cur:
            if cur is not None:
                if terms:
                    yield _concept(cur, best, terms)
                if cui < cur:
                    out_of_order += 1
            cur = cui
            terms = {}
            best_rank = -1
        text = row[c_str]
        key = " ".join(text.lower().split())  # filters.normalise, inlined in the hot loop
        if not key:
            skipped["empty_str"] = skipped.get("empty_str", 0) + 1
            continue
        if key in terms:
            skipped["duplicate_string"] = skipped.get("duplicate_string", 0) + 1
        else:
            terms[key] = (text, sab, row[c_code] if has_code else "")
        if best_rank < 7:  # 7 = TS=P, STT=PF, ISPREF=Y: nothing can beat it
            rank = (4 if row[c_ts] == "P" else 0) + (2 if row[c_stt] == "PF" else 0) + (row[c_pref] == "Y")
            if rank > best_rank:
                best_rank = rank
                best = text
    if cur is not None and terms:
        yield _concept(cur, best, terms)
    counts.rows = reader.lines
    if tracker is not None:
        tracker.done = reader.lines
    if out_of_order:
        log.warning("%s is not sorted by CUI (%d concepts out of order): a concept split across the file "
                    "is stored as several concepts", reader.path, out_of_order)


def _concept(cui: str, preferred: str, terms: dict[str, tuple[str, str, str]]) -> Concept:
    vals = list(terms.values())
    return Concept(cui, preferred, [v[0] for v in vals], codes=[(v[1], v[2]) for v in vals])


@dataclass
class TermBatch:
    """Terms waiting to be encoded; flushed at ENCODE_BATCH so memory stays bounded."""

    texts: list[str] = field(default_factory=list)
    payloads: list[dict] = field(default_factory=list)


class BatchWriter:
    """Encodes and upserts terms in batches, and times the encoder (the benchmark's 'share').
    ``should_stop`` is asked before each batch: the batch boundary is where an ingest can stop."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray],
                 upsert: Callable[[list[int], np.ndarray, list[dict]], None],
                 first_id: int = 0, batch: int = ENCODE_BATCH, tracker: ProgressTracker | None = None,
                 should_stop: StopCheck | None = None):
        self.encode = encode
        self.upsert = upsert
        self.next_id = first_id
        self.batch = batch
        self.pending = TermBatch()
        self.encode_seconds = 0.0
        self.upsert_seconds = 0.0
        self.written = 0
        self.tracker = tracker
        self.should_stop = should_stop

    def add(self, text: str, payload: dict) -> None:
        self.pending.texts.append(text)
        self.pending.payloads.append(payload)
        if len(self.pending.texts) >= self.batch:
            self.flush()

    def add_concept(self, concept: Concept, source: str) -> None:
        cats = [c.value for c in concept.categories]
        tuis = list(concept.tuis)
        codes = concept.codes or [("", "")] * len(concept.terms)
        for t, (sab, code) in zip(concept.terms, codes, strict=True):
            self.add(t, {"cui": concept.cui, "name": t, "preferred": concept.preferred,
                         "categories": cats, "tuis": tuis, "source": source, "sab": sab, "code": code})

    def flush(self) -> None:
        texts, payloads = self.pending.texts, self.pending.payloads
        if not texts:
            return
        check_stop(self.should_stop, "ingest")
        self.pending = TermBatch()
        t0 = time.perf_counter()
        vecs = self.encode(texts)
        t1 = time.perf_counter()
        ids = list(range(self.next_id, self.next_id + len(texts)))
        self.upsert(ids, vecs, payloads)
        self.upsert_seconds += time.perf_counter() - t1
        self.encode_seconds += t1 - t0
        self.next_id += len(texts)
        self.written += len(texts)
        if self.tracker is not None:
            self.tracker.advance(len(texts))


def categorise(concepts: Iterable[Concept], tui_index: TuiIndex, cmap: CategoryMap,
               counts: IngestCounts) -> Iterator[Concept]:
    """Attach TUIs and categories; concepts of no vaner category are counted, not stored."""
    for c in concepts:
        tuis = tui_index.tuis(c.cui)
        if not tuis:
            counts.skip("no_semantic_type")
            continue
        cats = cmap.categories_for(tuis)
        if not cats:
            counts.skip("other_semantic_type")
            continue
        c.tuis = tuis
        c.categories = cats
        yield c


def check_expected_rows(path: Path, lines: int, expected: int | None) -> None:
    """MRFILES.RRF's row count catches a truncated copy (an interrupted download or unzip)."""
    if expected is not None and lines != expected:
        raise InvalidArgument(f"{path}: read {lines} lines but MRFILES.RRF expects {expected}; "
                              "the file looks truncated or belongs to another release")


def dataset_cui(text: str, category: Category) -> str:
    """Stable synthetic id for a dataset entity string (datasets carry no CUIs)."""
    return "DS:" + hashlib.sha1(f"{normalise(text)}|{category.value}".encode()).hexdigest()[:12]


def columns_of(mrfiles: dict | None, name: str) -> tuple[str, ...]:
    default = MRCONSO_COLUMNS if name == "MRCONSO.RRF" else MRSTY_COLUMNS
    cols = columns_for(mrfiles, name, default)
    need = ("CUI", "LAT", "TS", "STT", "ISPREF", "SAB", "STR", "SUPPRESS") if name == "MRCONSO.RRF" else ("CUI", "TUI")
    missing = [c for c in need if c not in cols]
    if missing:
        raise InvalidArgument(f"MRFILES.RRF: {name} lacks column(s) {', '.join(missing)}")
    return cols
