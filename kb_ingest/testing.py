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


def tiny_static_encoder_dir(folder: Path, dim: int = 32, seed: int = 0) -> Path:
    """A model2vec folder with MiniLM's real tokenizer and a random ``dim``-wide table: the format
    and code path of a distilled model in well under a second (a real distillation takes minutes)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    from kb_ingest.encoder import ALIASES

    tok = Tokenizer.from_file(str(Path(ALIASES["minilm"]()) / "tokenizer.json"))  # type: ignore[operator]
    vectors = np.random.default_rng(seed).standard_normal((tok.get_vocab_size(), dim)).astype(np.float32)
    StaticModel(vectors=vectors, tokenizer=tok, config={"model_type": "model2vec", "hidden_dim": dim,
                                                        "normalize": True, "pooling": "mean"},
                normalize=True).save_pretrained(str(folder))
    return Path(folder)


# A small release in the open KB's shape: real-looking SAB/CODE pairs, several sources merged under
# one CUI, synonyms that share no words (what alignment has to learn). (cui, tui, [(sab, code, name)])
SMALL_RELEASE: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    ("C0027051", "T047", [("DOID", "DOID:5844", "myocardial infarction"), ("DOID", "DOID:5844", "heart attack"),
                          ("MONDO", "MONDO:0005068", "MI")]),
    ("C0006142", "T191", [("DOID", "DOID:1612", "breast cancer"), ("NCI", "NCIT:C4872", "mammary carcinoma"),
                          ("DOID", "DOID:1612", "malignant neoplasm of breast")]),
    ("C0011849", "T047", [("DOID", "DOID:9351", "diabetes mellitus"), ("MONDO", "MONDO:0005015", "diabetes"),
                          ("DOID", "DOID:9351", "DM")]),
    ("C0020538", "T047", [("DOID", "DOID:10763", "hypertension"), ("DOID", "DOID:10763", "high blood pressure"),
                          ("MONDO", "MONDO:0005044", "HTN")]),
    ("C0038454", "T047", [("DOID", "DOID:6713", "stroke"), ("DOID", "DOID:6713", "cerebrovascular accident"),
                          ("NCI", "NCIT:C3390", "CVA")]),
    ("C0004057", "T121", [("CHEBI", "CHEBI:15365", "aspirin"), ("CHEBI", "CHEBI:15365", "acetylsalicylic acid"),
                          ("DRUGBANK", "DB00945", "ASA")]),
    ("C0000970", "T121", [("CHEBI", "CHEBI:46195", "paracetamol"), ("DRUGBANK", "DB00316", "acetaminophen"),
                          ("DRUGBANK", "DB00316", "tylenol")]),
    ("C0021641", "T121", [("CHEBI", "CHEBI:5931", "insulin"), ("DRUGBANK", "DB00030", "human insulin")]),
    ("C0376571", "T028", [("HGNC", "HGNC:1100", "BRCA1"), ("HGNC", "HGNC:1100", "breast cancer 1"),
                          ("NCBIGENE", "NCBIGene:672", "RNF53")]),
    ("C0079419", "T028", [("HGNC", "HGNC:11998", "TP53"), ("HGNC", "HGNC:11998", "tumor protein p53"),
                          ("NCBIGENE", "NCBIGene:7157", "p53")]),
    ("C10100000001", "T028", [("HGNC", "HGNC:583", "APC"), ("HGNC", "HGNC:583", "adenomatous polyposis coli")]),
    ("C0014834", "T007", [("UNIPROT_SPECLIST", "NCBITaxon:562", "Escherichia coli"),
                          ("UNIPROT_SPECLIST", "NCBITaxon:562", "E. coli")]),
    ("C0086418", "T016", [("UNIPROT_SPECLIST", "NCBITaxon:9606", "Homo sapiens"),
                          ("UNIPROT_SPECLIST", "NCBITaxon:9606", "human")]),
]


def write_small_release(meta: Path, *, gz: bool = False, release: str = "2099AC",
                        concepts: Sequence[tuple[str, str, list[tuple[str, str, str]]]] = SMALL_RELEASE) -> Path:
    """MRCONSO/MRSTY/MRFILES/release.dat of ``concepts`` (first name of each = TS=P); with ``gz``
    the two large files are written gzip-compressed, as the open KB ships them. Returns MRCONSO's path."""
    import gzip

    meta = Path(meta)
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "release.dat").write_text(f"umls.release.name={release}\n")
    conso, sty = [], []
    n = 0
    for cui, tui, names in sorted(concepts):
        for j, (sab, code, name) in enumerate(names):
            n += 1
            row = mrconso_row(cui, name, ts="P" if j == 0 else "S", stt="PF" if j == 0 else "VO",
                              ispref="Y" if j == 0 else "N", sab=sab, n=n)
            row[9], row[13] = code, code  # SCUI, CODE: the source's own id
            conso.append(rrf_line(row))
        sty.append(rrf_line([cui, tui, "A1", "Type", f"AT{n:08d}", ""]))
    for name, lines in (("MRCONSO.RRF", conso), ("MRSTY.RRF", sty)):
        data = ("\n".join(lines) + "\n").encode()
        if gz:
            with gzip.open(meta / (name + ".gz"), "wb") as fh:
                fh.write(data)
        else:
            (meta / name).write_bytes(data)
    mrfiles = [[name, name, ",".join(cols), str(len(cols)), str(len(lines)), str(len(("\n".join(lines) + "\n").encode()))]
               for name, cols, lines in (("MRCONSO.RRF", MRCONSO_COLUMNS, conso), ("MRSTY.RRF", MRSTY_COLUMNS, sty))]
    write_rrf(meta / "MRFILES.RRF", mrfiles)
    return meta / ("MRCONSO.RRF.gz" if gz else "MRCONSO.RRF")
