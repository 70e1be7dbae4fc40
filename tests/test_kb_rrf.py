"""RRF readers and the TUI -> category table, against the hand-written fixtures in
tests/fixtures/umls (clean release) and tests/fixtures/umls_dirty (CRLF, malformed lines)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kb_ingest import rrf
from kb_ingest.categories import CategoryMap, default_map
from kb_ingest.filters import UmlsFilters, normalise, preferred_rank
from kb_ingest.ingest import IngestCounts, TuiIndex, categorise, iter_mrconso_concepts
from kb_ingest.rrf import MRCONSO_COLUMNS, MRSTY_COLUMNS, BadLineReport, RrfReader
from kb_ingest.testing import mrconso_row, write_rrf
from vaner.categories import Category
from vaner.errors import InvalidArgument, NotFound

FIX = Path(__file__).parent / "fixtures"
UMLS = FIX / "umls"
DIRTY = FIX / "umls_dirty"


def concepts(path: Path, filters: UmlsFilters | None = None, report: BadLineReport | None = None):
    counts = IngestCounts()
    reader = RrfReader(path, MRCONSO_COLUMNS, report or BadLineReport(), required=("CUI", "STR"))
    out = {c.cui: c for c in iter_mrconso_concepts(reader, filters or UmlsFilters(), counts)}
    return out, counts, reader


def test_clean_fixture_groups_filters_and_names():
    got, counts, reader = concepts(UMLS / "MRCONSO.RRF")
    assert reader.lines == 21
    assert got["C0004057"].terms == ["Aspirin", "Acetylsalicylic Acid"]  # 'aspirin' collapsed, GER dropped
    assert got["C0011849"].terms == ["Diabetes Mellitus", "DM"]  # double space collapsed, suppressed + FRE out
    assert got["C0027651"].preferred == "neoplasm"  # no TS=P atom: STT=PF, ISPREF=Y wins over the first atom
    assert got["C0027651"].terms == ["tumour", "neoplasm"]  # 'Cancer' is SUPPRESS=E
    assert counts.skipped == {"language": 2, "suppressed": 2, "duplicate_string": 2}


def test_filters_language_sab_and_suppressed():
    got, counts, _ = concepts(UMLS / "MRCONSO.RRF", UmlsFilters(languages=("eng", "GER")))
    assert "Acetylsalicylsäure" in got["C0004057"].terms
    got, counts, _ = concepts(UMLS / "MRCONSO.RRF", UmlsFilters(include_sabs=("NCBI",)))
    assert set(got) == {"C0025914", "C0086418"}
    got, _, _ = concepts(UMLS / "MRCONSO.RRF", UmlsFilters(exclude_sabs=("MSH",)))
    assert got["C0004057"].terms == ["Acetylsalicylic Acid"]
    got, _, _ = concepts(UMLS / "MRCONSO.RRF", UmlsFilters(keep_suppressed=True))
    assert "Cancer" in got["C0027651"].terms
    with pytest.raises(InvalidArgument, match="MSH"):
        UmlsFilters(include_sabs=("MSH",), exclude_sabs=("MSH",))
    with pytest.raises(InvalidArgument, match="--lang"):
        UmlsFilters(languages=("EN G",))


def test_dirty_fixture_crlf_bad_lines_are_reported_with_file_and_line():
    report = BadLineReport()
    got, counts, reader = concepts(DIRTY / "MRCONSO.RRF", report=report)
    assert reader.lines == 24
    assert report.counts == {"field_count": 1, "bad_utf8": 1, "empty_cui": 1}
    where = [(b.line, b.reason) for b in report.examples]
    assert where == [(4, "field_count"), (9, "bad_utf8"), (13, "empty_cui")]
    assert all(b.path.endswith("umls_dirty/MRCONSO.RRF") for b in report.examples)
    # CRLF does not leak into the last field or the strings
    assert got["C0004057"].terms == ["Aspirin", "Acetylsalicylic Acid"]
    with pytest.raises(InvalidArgument, match=r"more than|over 0.1%"):
        report.check(reader.lines, DIRTY / "MRCONSO.RRF")


def test_strict_fails_at_first_bad_line():
    with pytest.raises(InvalidArgument, match=r"MRCONSO.RRF:4: field count.*--strict"):
        concepts(DIRTY / "MRCONSO.RRF", report=BadLineReport(strict=True))


def test_tolerated_below_threshold(tmp_path):
    rows = [mrconso_row(f"C{i:07d}", f"term {i}", n=i) for i in range(1, 3001)]
    path = tmp_path / "MRCONSO.RRF"
    write_rrf(path, rows)
    with path.open("ab") as fh:
        fh.write(b"C0000001|ENG|broken line\n")
    report = BadLineReport()
    got, _, reader = concepts(path, report=report)
    assert len(got) == 3000 and report.total == 1
    report.check(reader.lines, path)  # 1/3001 < 0.1 %: fine


def test_chunk_boundaries_and_missing_final_newline(tmp_path, monkeypatch):
    rows = [mrconso_row(f"C{i:07d}", f"name ünïcode {i}", n=i) for i in range(1, 200)]
    path = tmp_path / "MRCONSO.RRF"
    write_rrf(path, rows)
    data = path.read_bytes().rstrip(b"\n")  # no final newline
    path.write_bytes(data)
    monkeypatch.setattr(rrf, "CHUNK_BYTES", 37)  # lines and multi-byte characters cut across chunks
    h = hashlib.sha256()
    reader = RrfReader(path, MRCONSO_COLUMNS, BadLineReport(strict=True), hasher=h)
    got = list(reader)
    assert len(got) == 199 and got[-1][14] == "name ünïcode 199"
    assert reader.lines == 199
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_mrfiles_columns_and_release():
    files = rrf.read_mrfiles(UMLS / "MRFILES.RRF")
    assert files["MRCONSO.RRF"].columns == MRCONSO_COLUMNS
    assert files["MRCONSO.RRF"].rows == 21 and files["MRSTY.RRF"].rows == 11
    assert rrf.detect_release(UMLS / "MRCONSO.RRF") == "2099AA"


def test_release_from_path(tmp_path):
    meta = tmp_path / "2025AA" / "META"
    meta.mkdir(parents=True)
    (meta / "MRCONSO.RRF").write_text("")
    assert rrf.detect_release(meta / "MRCONSO.RRF") == "2025AA"


def test_reordered_columns_from_mrfiles(tmp_path):
    cols = ("TUI", "CUI", "STN", "STY", "ATUI", "CVF")
    write_rrf(tmp_path / "MRSTY.RRF", [["T047", "C0000001", "B", "Disease or Syndrome", "AT1", ""]])
    idx, _ = TuiIndex.from_mrsty(tmp_path / "MRSTY.RRF", BadLineReport(strict=True), cols)
    assert idx.tuis("C0000001") == ("T047",)


def test_check_file_errors(tmp_path):
    with pytest.raises(NotFound, match="no such file"):
        rrf.check_file(tmp_path / "MRCONSO.RRF", "MRCONSO.RRF")
    with pytest.raises(InvalidArgument, match="is a directory"):
        rrf.check_file(tmp_path, "MRCONSO.RRF")


def test_mrsty_index_multi_tui_and_missing():
    idx, lines = TuiIndex.from_mrsty(UMLS / "MRSTY.RRF", BadLineReport(strict=True))
    assert lines == 11
    assert idx.tuis("C0004057") == ("T109", "T121")
    assert idx.tuis("C0021641") == ("T116", "T121", "T125")
    assert idx.tuis("C9999999") == () and idx.tuis("bogus") == ()


def test_mrsty_bad_tui_is_a_bad_line(tmp_path):
    write_rrf(tmp_path / "MRSTY.RRF", [["C0000001", "X47", "B", "x", "AT1", ""]])
    with pytest.raises(InvalidArgument, match=r"MRSTY.RRF:1: bad tui"):
        TuiIndex.from_mrsty(tmp_path / "MRSTY.RRF", BadLineReport(strict=True), MRSTY_COLUMNS)


def test_category_table():
    m = default_map()
    assert m.categories_for(("T047",)) == (Category.DISEASE,)
    assert m.categories_for(("T109", "T121")) == (Category.CHEMICAL,)
    # protein-like types are Gene only, never Chemical
    for tui in ("T116", "T126", "T192"):
        assert m.categories_for((tui,)) == (Category.GENE,)
    assert m.categories_for(("T116", "T121")) == (Category.CHEMICAL, Category.GENE)
    assert m.categories_for(("T023",)) == ()
    assert {"T001", "T016", "T194", "T204"} <= set(m.tuis_for(Category.SPECIES))
    chem = set(m.tuis_for(Category.CHEMICAL))
    assert {"T103", "T104", "T109", "T121", "T195", "T196", "T197", "T200"} <= chem
    assert not chem & {"T116", "T126", "T192"}


def test_category_table_rejects_bad_rows(tmp_path):
    bad = tmp_path / "t.tsv"
    bad.write_text("T047\tDisease\tDisease\nT047\tagain\tDisease\n")
    with pytest.raises(InvalidArgument, match=r"t.tsv:2: T047 listed twice"):
        CategoryMap.load(bad)
    bad.write_text("T999\tx\tOrgan\n")
    with pytest.raises(InvalidArgument, match=r"t.tsv:1: .*Organ"):
        CategoryMap.load(bad)


def test_categorise_counts_other_and_missing_types():
    got, counts, _ = concepts(UMLS / "MRCONSO.RRF")
    idx, _ = TuiIndex.from_mrsty(UMLS / "MRSTY.RRF", BadLineReport(strict=True))
    kept = {c.cui: c for c in categorise(got.values(), idx, default_map(), counts)}
    assert "C0018787" not in kept and "C9999999" not in kept
    assert counts.skipped["other_semantic_type"] == 1 and counts.skipped["no_semantic_type"] == 1
    assert kept["C0021641"].categories == (Category.CHEMICAL, Category.GENE)


def test_normalise_and_rank():
    assert normalise("  Diabetes   MELLITUS ") == "diabetes mellitus"
    assert normalise("IL-2") != normalise("IL 2")
    assert preferred_rank("P", "PF", "Y") > preferred_rank("S", "PF", "Y") > preferred_rank("S", "VO", "Y")
