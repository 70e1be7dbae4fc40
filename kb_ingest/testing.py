"""Test and benchmark helpers: RRF writers, a synthetic UMLS generator and a tiny hash encoder.

UMLS is licensed, so every RRF file vaner tests or benchmarks on is written by this module in
the exact release format (18 MRCONSO columns, 6 MRSTY columns, a trailing ``|`` per line).
The hash encoder stands in for a real model only where the encoder is not what a test is about;
it is deterministic and makes identical strings score 1.0.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from kb_ingest.encoder import Encoder
from kb_ingest.rrf import MRCONSO_COLUMNS, MRSTY_COLUMNS


class _HashModel:
    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, texts: Sequence[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            s = f"  {t.lower()}  "
            for j in range(len(s) - 2):
                h = zlib.crc32(s[j:j + 3].encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


def hash_encoder(dim: int = 32, name: str = "test-hash-encoder") -> Encoder:
    return Encoder(name, dim, _HashModel(dim))


def rrf_line(fields: Iterable[str]) -> str:
    return "|".join(fields) + "|"


def mrconso_row(cui: str, string: str, *, lat: str = "ENG", ts: str = "P", stt: str = "PF", ispref: str = "Y",
                sab: str = "MSH", tty: str = "PT", suppress: str = "N", n: int = 0) -> list[str]:
    return [cui, lat, ts, f"L{n:07d}", stt, f"S{n:07d}", ispref, f"A{n:08d}", str(1000000 + n * 7),
            f"{n * 13:09d}", "", sab, tty, f"D{n:06d}", string, "0", suppress, "256"]


def write_rrf(path: Path, rows: Iterable[Sequence[str]], crlf: bool = False) -> int:
    nl = "\r\n" if crlf else "\n"
    n = 0
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        for r in rows:
            fh.write(rrf_line(r) + nl)
            n += 1
    return n


def write_mrfiles(meta: Path) -> None:
    """MRFILES.RRF describing the MRCONSO/MRSTY files present in ``meta`` (row and byte counts)."""
    rows = []
    for name, cols in (("MRCONSO.RRF", MRCONSO_COLUMNS), ("MRSTY.RRF", MRSTY_COLUMNS)):
        p = meta / name
        if p.exists():
            with p.open("rb") as fh:
                lines = sum(1 for _ in fh)
            rows.append([name, name, ",".join(cols), str(len(cols)), str(lines), str(p.stat().st_size)])
    write_rrf(meta / "MRFILES.RRF", rows)


_SYLL = ["al", "ba", "car", "di", "en", "fo", "gly", "hy", "in", "ka", "lo", "me", "neu", "ox", "pa", "qui",
         "ro", "sul", "thi", "ur", "vi", "xy", "zo", "amine", "ase", "itis", "oma", "ose", "ide", "pathy"]
_SABS = ["MSH", "SNOMEDCT_US", "RXNORM", "NCI", "MDR", "HGNC", "NCBI", "LNC", "ICD10CM", "MTH"]
_LANGS = ["ENG"] * 7 + ["SPA", "FRE", "GER", "JPN"]
# mapped TUIs and unmapped ones (anatomy, procedures, findings...) roughly as often as in a release
_TUIS = ["T047", "T191", "T046", "T109", "T121", "T116", "T126", "T028", "T015", "T007",
         "T023", "T061", "T033", "T060", "T170", "T201", "T184", "T058", "T029", "T082"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLL) for _ in range(rng.randint(1, 4)))


def synth_umls(meta: Path, n_rows: int, seed: int = 0, release: str = "2099AB") -> dict[str, int]:
    """Write MRCONSO/MRSTY/MRFILES with ``n_rows`` MRCONSO lines (about 5 atoms per concept,
    strings of 1-6 words averaging ~30 characters, 64 % ENG, ~5 % suppressed)."""
    rng = random.Random(seed)
    meta = Path(meta)
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "release.dat").write_text(f"umls.release.name={release}\n")
    n = 0
    cui_n = 0
    concepts = 0
    with (meta / "MRCONSO.RRF").open("w", encoding="utf-8", newline="") as fc, \
            (meta / "MRSTY.RRF").open("w", encoding="utf-8", newline="") as fs:
        while n < n_rows:
            cui_n += rng.randint(1, 3)
            cui = f"C{cui_n:07d}"
            concepts += 1
            base = " ".join(_word(rng) for _ in range(rng.randint(1, 6)))
            for j in range(min(rng.randint(1, 9), n_rows - n)):
                n += 1
                s = base if j == 0 else (base.upper() if j == 1 else f"{base} {_word(rng)}")
                row = mrconso_row(cui, s, lat="ENG" if j == 0 else rng.choice(_LANGS),
                                  ts="P" if j == 0 else "S", stt="PF" if j < 2 else "VO",
                                  ispref="Y" if j == 0 else rng.choice("YN"), sab=rng.choice(_SABS),
                                  suppress="O" if rng.random() < 0.05 else "N", n=n)
                fc.write("|".join(row) + "|\n")
            for k, tui in enumerate(sorted(set(rng.choice(_TUIS) for _ in range(rng.choice((1, 1, 1, 2)))))):
                fs.write(f"{cui}|{tui}|A1.2.{k}|Synthetic Type|AT{cui_n:08d}{k}||\n")
    write_mrfiles(meta)
    return {"rows": n, "concepts": concepts}
