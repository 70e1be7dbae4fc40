"""Benchmark: full ``KnowledgeBase.ingest_umls`` with the real MiniLM encoder on a synthetic
release subset (issue 2: entities/s and share of wall time in the encoder, target >= 90 %).

Writes a synthetic MRCONSO/MRSTY/MRFILES of ``--rows`` lines (kb_ingest.testing.synth_umls: about
a third of the rows survive the filters as terms), ingests it into a fresh VANER_HOME (SQLite +
qdrant-edge), and reports wall time, encoder time (measured around every encode call), upsert
time and the rest (parse, filter, MRSTY, index build, SQL). Prints one JSON object.

    nice -n 10 .venv/bin/python bench/kb_ingest.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb_ingest.encoder import load_encoder  # noqa: E402
from kb_ingest.kb import KnowledgeBase  # noqa: E402
from kb_ingest.testing import synth_umls  # noqa: E402
from vaner.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--encoder", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vaner-kb-ingest-"))
    meta = tmp / "2099AB" / "META"
    synth_umls(meta, args.rows, seed=1)
    enc = load_encoder(args.encoder)  # loading the model is not part of the ingest rate
    enc.encode(["warm up"])
    kb = KnowledgeBase(Settings(home=tmp / "home"))
    t0 = time.perf_counter()
    c0 = time.process_time()
    info = kb.ingest_umls(meta / "MRCONSO.RRF", encoder=args.encoder)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    stats = info.filters["stats"]
    print(json.dumps({
        "rows": stats["rows"], "concepts": info.concepts, "terms": info.terms, "encoder": info.encoder,
        "wall_s": round(wall, 2), "process_cpu_s": round(cpu, 2),
        "terms_per_s": round(info.terms / wall, 1), "rows_per_s": round(stats["rows"] / wall),
        "encode_s": stats["encode_seconds"], "upsert_s": stats["upsert_seconds"],
        "encoder_share": round(stats["encode_seconds"] / wall, 4),
        "other_s": round(wall - stats["encode_seconds"] - stats["upsert_seconds"], 2),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
