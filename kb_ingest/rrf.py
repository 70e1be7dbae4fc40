"""Streaming readers for UMLS Rich Release Format files (MRCONSO, MRSTY, MRFILES).

A real MRCONSO.RRF is 10-20 million lines, so the readers never hold a file: they decode 4 MiB
chunks at a time (a ``.gz`` file is decompressed in the same stream, so a release need not be
unpacked; its checksum is of the compressed bytes on disk, what ``sha256sum`` shows) and hand out
plain ``list[str]`` rows (no per-row objects) because the parse+filter loop has to run at hundreds
of thousands of rows a second in pure Python.
A malformed line is never an ``assert``: it becomes a :class:`BadLine` that names file, line and
reason, and a :class:`BadLineReport` decides (strict or tolerant) what happens next.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vaner.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

MRCONSO_COLUMNS = ("CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI", "SCUI", "SDUI",
                   "SAB", "TTY", "CODE", "STR", "SRL", "SUPPRESS", "CVF")
MRSTY_COLUMNS = ("CUI", "TUI", "STN", "STY", "ATUI", "CVF")
MRFILES_COLUMNS = ("FIL", "DES", "FMT", "CLS", "RWS", "BTS")

CHUNK_BYTES = 4 << 20
BAD_LINE_EXAMPLES = 5
BAD_LINE_MAX_FRACTION = 0.001  # issue 2: fail the ingest when more than 0.1 % of lines are bad


GZ_SUFFIX = ".gz"


def rrf_name(path: Path | str) -> str:
    """The release's name for a file (``MRCONSO.RRF`` for ``MRCONSO.RRF.gz``), as MRFILES.RRF lists it."""
    name = Path(path).name
    return name[:-len(GZ_SUFFIX)] if name.endswith(GZ_SUFFIX) else name


def is_gzip(path: Path | str) -> bool:
    return str(path).endswith(GZ_SUFFIX)


def find_beside(path: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in the folder of ``path`` (plain first); None when neither exists."""
    folder = Path(path).parent
    for candidate in (folder / name, folder / (name + GZ_SUFFIX)):
        if candidate.is_file():
            return candidate
    return None


class _HashingReader(io.RawIOBase):
    """Feeds every byte read from disk to a hasher; sits under GzipFile so the checksum is of the
    compressed file while the reader sees decompressed text, in one pass."""

    def __init__(self, raw, hasher):  # noqa: ANN001
        self.raw = raw
        self.hasher = hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001
        n = self.raw.readinto(buffer)
        if n:
            self.hasher.update(memoryview(buffer)[:n])
        return n


def check_file(path: Path, what: str) -> Path:
    """Turn the common path mistakes into one readable line before anything is opened."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NotFound(f"{path}: no such file ({what})")
    if path.is_dir():
        raise InvalidArgument(f"{path}: is a directory, expected the {what} file")
    return path


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    reason: str  # bad_utf8 | field_count | empty_cui | empty_str | bad_cui | bad_tui
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason.replace('_', ' ')} ({self.detail})"


@dataclass
class BadLineReport:
    """Counts malformed lines by reason; ``strict`` turns the first one into an error.

    Why a separate object: the same policy is shared by the MRCONSO and MRSTY readers and its
    counts end up in the snapshot's ``skipped`` map, so users see exactly what was dropped.
    """

    strict: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[BadLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, bad: BadLine) -> None:
        if self.strict:
            raise InvalidArgument(f"{bad} [--strict]")
        self.counts[bad.reason] = self.counts.get(bad.reason, 0) + 1
        if len(self.examples) < BAD_LINE_EXAMPLES:
            self.examples.append(bad)
            log.warning("skipping malformed line %s", bad)

    def check(self, lines_read: int, path: Path | str) -> None:
        """Fail when the file looks broken rather than slightly dirty."""
        bad = self.total
        if lines_read and bad / lines_read > BAD_LINE_MAX_FRACTION:
            shown = "; ".join(str(b) for b in self.examples)
            raise InvalidArgument(
                f"{path}: {bad} of {lines_read} lines are malformed (over "
                f"{BAD_LINE_MAX_FRACTION:.1%}); first: {shown}")


def _decoded_lines(path: Path, report: BadLineReport, hasher=None,  # noqa: ANN001
                   on_chunk=None) -> Iterator[tuple[int, list[str | None], dict[int, str]]]:  # noqa: ANN001
    """Yield ``(first_line_number, lines, bad)`` per chunk, without line endings; CRLF and a
    missing final newline are tolerated. A chunk decodes in one C call; only a chunk with a bad
    byte is decoded line by line, so a bad byte costs one line (``None`` in ``lines``, its
    description in ``bad`` by line number, reported by the reader in file order), not the file."""
    lineno = 0
    rest = b""
    gz = is_gzip(path)
    with path.open("rb") as raw:
        fh = gzip.GzipFile(fileobj=_HashingReader(raw, hasher) if hasher is not None else raw, mode="rb") if gz else raw
        while True:
            chunk = _read_chunk(fh, path, lineno) if gz else fh.read(CHUNK_BYTES)
            if not chunk:
                body, rest = rest, b""
                if not body:
                    break
            else:
                if hasher is not None and not gz:
                    hasher.update(chunk)  # checksum in the same pass: no second read of a multi-GB file
                chunk = rest + chunk
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    rest = chunk
                    continue
                rest = chunk[cut + 1:]
                body = chunk[:cut]
            if b"\r" in body:
                body = body.replace(b"\r\n", b"\n")
                if body.endswith(b"\r"):
                    body = body[:-1]
            bad: dict[int, str] = {}
            try:
                lines: list[str | None] = body.decode("utf-8").split("\n")  # type: ignore[assignment]
            except UnicodeDecodeError:
                lines = []
                for i, raw in enumerate(body.split(b"\n")):
                    try:
                        lines.append(raw.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        lines.append(None)
                        bad[lineno + i + 1] = f"byte {raw[exc.start:exc.start + 1]!r} at column {exc.start + 1}"
            yield lineno + 1, lines, bad
            lineno += len(lines)
            if on_chunk is not None:
                on_chunk(lineno)
            if not chunk:
                break


def _read_chunk(fh, path: Path, lineno: int) -> bytes:  # noqa: ANN001 - gzip.GzipFile
    """A chunk of decompressed bytes; a damaged or cut-off archive becomes one readable error."""
    try:
        return fh.read(CHUNK_BYTES)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InvalidArgument(f"{path}: broken gzip data after line {lineno} ({exc}); "
                              "the file looks truncated or corrupt") from None


class RrfReader:
    """Iterate the rows of one RRF file as lists of column strings (the trailing ``|`` removed).

    ``lines`` counts every physical line read, good or bad, so the caller can compare it with
    MRFILES.RRF and compute the bad-line fraction.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], report: BadLineReport,
                 required: tuple[str, ...] = ("CUI",), hasher: object | None = None):
        self.path = Path(path)
        self.columns = columns
        self.report = report
        self.index = {name: i for i, name in enumerate(columns)}
        self.required = tuple((name, self.index[name]) for name in required if name in self.index)
        self.lines = 0
        self.hasher = hasher
        self.on_chunk = None  # called with the line count after each chunk (progress)

    def col(self, name: str) -> int:
        try:
            return self.index[name]
        except KeyError:
            raise InvalidArgument(f"{self.path}: no column {name} (columns: {','.join(self.columns)})") from None

    def __iter__(self) -> Iterator[list[str]]:
        """Rows that passed the field-count and required-field checks. This is the hot loop of
        an ingest: per line one ``split`` and a few comparisons, nothing else."""
        width = len(self.columns) + 1  # each line ends in '|', so split gives one empty extra field
        path = str(self.path)
        report = self.report
        req = [i for _, i in self.required]
        r0 = req[0] if req else 0
        r1 = req[1] if len(req) > 1 else r0
        for first, lines, bad in _decoded_lines(self.path, report, self.hasher, self.on_chunk):
            lineno = first - 1
            for text in lines:
                lineno += 1
                if text is None:
                    report.add(BadLine(path, lineno, "bad_utf8", bad[lineno]))
                    continue
                row = text.split("|")
                if len(row) != width or row[-1]:
                    self._bad_width(path, lineno, text, len(row), width)
                    continue
                if not row[r0] or not row[r1]:
                    self._bad_required(path, lineno, row)
                    continue
                self.lines = lineno
                yield row
            self.lines = lineno

    def _bad_width(self, path: str, lineno: int, text: str, got: int, width: int) -> None:
        if not text.strip():
            self.report.add(BadLine(path, lineno, "field_count", "empty line"))
        else:
            self.report.add(BadLine(path, lineno, "field_count",
                                    f"{got - 1} fields, expected {width - 1}: {text[:60]!r}"))

    def _bad_required(self, path: str, lineno: int, row: list[str]) -> None:
        for name, i in self.required:
            if not row[i]:
                self.report.add(BadLine(path, lineno, f"empty_{name.lower()}", f"empty {name}"))
                return


@dataclass(frozen=True)
class RrfFileInfo:
    name: str
    columns: tuple[str, ...]
    rows: int | None
    bytes: int | None


def read_mrfiles(path: Path) -> dict[str, RrfFileInfo]:
    """MRFILES.RRF: column names and expected row/byte counts of every file of the release."""
    report = BadLineReport(strict=True)
    reader = RrfReader(path, MRFILES_COLUMNS, report, required=("FIL",))
    out: dict[str, RrfFileInfo] = {}
    for row in reader:
        cols = tuple(c.strip() for c in row[2].split(",") if c.strip())
        rows = int(row[4]) if row[4].strip().isdigit() else None
        size = int(row[5]) if row[5].strip().isdigit() else None
        name = row[0].strip()
        out[name] = RrfFileInfo(name, cols, rows, size)
        out.setdefault(Path(name).name, out[name])
    return out


def columns_for(mrfiles: dict[str, RrfFileInfo] | None, filename: str,
                default: tuple[str, ...]) -> tuple[str, ...]:
    """Columns from MRFILES.RRF when it describes the file, so a reordered release still reads;
    a release without the columns vaner needs is rejected up front."""
    info = (mrfiles or {}).get(filename)
    if not info or not info.columns:
        return default
    missing = [c for c in ("CUI",) if c not in info.columns]
    if missing:
        raise InvalidArgument(f"MRFILES.RRF: {filename} has no {','.join(missing)} column")
    return info.columns


_RELEASE_RE = re.compile(r"^(19|20)\d\d[A-Z]{2}$")


def detect_release(mrconso: Path) -> str:
    """UMLS release name (e.g. ``2025AA``) from ``release.dat`` or a path part; '' when unknown."""
    mrconso = Path(mrconso).resolve()
    for candidate in (mrconso.parent / "release.dat", mrconso.parent.parent / "release.dat"):
        try:
            for line in candidate.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("umls.release.name="):
                    return line.split("=", 1)[1].strip()
        except OSError:
            continue
    for part in reversed(mrconso.parts):
        if _RELEASE_RE.match(part):
            return part
    return ""
