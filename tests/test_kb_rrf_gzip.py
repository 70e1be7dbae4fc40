"""``kb-ingest umls`` on gzip-compressed releases (the open KB ships MRCONSO/MRSTY as .gz):
streamed without unpacking, same snapshot as the plain files, checksums of the files on disk,
and a damaged archive reported with its file name. Fixtures are written by the test."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest

from kb_ingest import rrf
from kb_ingest.kb import KnowledgeBase
from kb_ingest.rrf import MRCONSO_COLUMNS, BadLineReport, RrfReader
from kb_ingest.testing import hash_encoder, synth_umls, write_small_release
from vaner.errors import InvalidArgument, NotFound
from vaner.settings import Settings

ENC = hash_encoder()


def make_kb(home: Path) -> KnowledgeBase:
    return KnowledgeBase(Settings(home=home), encoder_loader=lambda name: ENC)


def gzip_release(src: Path, dst: Path, names=("MRCONSO.RRF", "MRSTY.RRF", "MRFILES.RRF")) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name in names:
            with p.open("rb") as fi, gzip.open(dst / (p.name + ".gz"), "wb") as fo:
                shutil.copyfileobj(fi, fo)
        else:
            shutil.copy2(p, dst / p.name)
    return dst / "MRCONSO.RRF.gz"


def rows(path: Path, monkeypatch=None) -> tuple[list[list[str]], RrfReader]:
    reader = RrfReader(path, MRCONSO_COLUMNS, BadLineReport(strict=True), required=("CUI", "STR"))
    return list(reader), reader


def test_gz_reader_matches_plain_across_chunk_boundaries(tmp_path, monkeypatch):
    synth_umls(tmp_path / "plain", 3000, seed=3)
    gz = gzip_release(tmp_path / "plain", tmp_path / "gz")
    monkeypatch.setattr(rrf, "CHUNK_BYTES", 4096)  # many chunks: lines cut at chunk ends must rejoin
    plain_rows, plain_reader = rows(tmp_path / "plain" / "MRCONSO.RRF")
    h = hashlib.sha256()
    reader = RrfReader(gz, MRCONSO_COLUMNS, BadLineReport(strict=True), required=("CUI", "STR"), hasher=h)
    assert list(reader) == plain_rows and reader.lines == plain_reader.lines == 3000
    assert h.hexdigest() == hashlib.sha256(gz.read_bytes()).hexdigest()  # the file on disk, as sha256sum says


def test_gz_release_ingests_like_the_plain_one(tmp_path):
    plain = write_small_release(tmp_path / "plain")
    gz = write_small_release(tmp_path / "gz", gz=True)
    (tmp_path / "gz" / "MRFILES.RRF").rename(tmp_path / "gz" / "MRFILES.RRF.x")
    with (tmp_path / "gz" / "MRFILES.RRF.x").open("rb") as fi, gzip.open(tmp_path / "gz" / "MRFILES.RRF.gz", "wb") as fo:
        shutil.copyfileobj(fi, fo)  # MRFILES beside, compressed too
    (tmp_path / "gz" / "MRFILES.RRF.x").unlink()
    kb_a, kb_b = make_kb(tmp_path / "a"), make_kb(tmp_path / "b")
    a = kb_a.ingest_umls(plain)
    b = kb_b.ingest_umls(gz)  # MRSTY.RRF.gz found beside MRCONSO.RRF.gz, no --mrsty
    assert (b.concepts, b.terms, b.skipped, b.umls_release) == (a.concepts, a.terms, a.skipped, a.umls_release)
    assert b.filters["stats"]["rows"] == a.filters["stats"]["rows"] == 35
    assert [Path(s["path"]).name for s in b.sources] == ["MRCONSO.RRF.gz", "MRSTY.RRF.gz"]
    for s in b.sources:
        assert s["sha256"] == hashlib.sha256(Path(s["path"]).read_bytes()).hexdigest()
    hit = kb_b.search(["breast cancer"], k=1)[0][0]
    assert (hit.cui, hit.sab, hit.code) == ("C0006142", "DOID", "DOID:1612")
    kb_a.close()
    kb_b.close()


def test_truncated_gz_is_one_clear_error_and_no_snapshot(tmp_path):
    gz = write_small_release(tmp_path / "r", gz=True)
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    kb = make_kb(tmp_path / "home")
    with pytest.raises(InvalidArgument, match=r"MRCONSO\.RRF\.gz: broken gzip data after line \d+"):
        kb.ingest_umls(gz)
    assert [s.status for s in kb.snapshots()] == ["failed"]
    kb.close()


def test_row_count_of_mrfiles_checks_a_gz_too(tmp_path):
    gz = write_small_release(tmp_path / "r", gz=True)
    with gzip.open(gz, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    with gzip.open(gz, "wb") as fh:
        fh.write(b"".join(lines[:-3]))  # a clean archive of a cut file: only MRFILES can tell
    kb = make_kb(tmp_path / "home")
    with pytest.raises(InvalidArgument, match="read 32 lines but MRFILES.RRF expects 35"):
        kb.ingest_umls(gz)
    kb.close()


def test_missing_mrsty_names_both_forms(tmp_path):
    gz = write_small_release(tmp_path / "r", gz=True)
    (tmp_path / "r" / "MRSTY.RRF.gz").unlink()
    with pytest.raises(NotFound, match="nor MRSTY.RRF.gz"):
        make_kb(tmp_path / "home").ingest_umls(gz)
