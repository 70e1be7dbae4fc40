"""Benchmark: parse+filter rate of MRCONSO.RRF (issue 2 target: >= 250k rows/s).

Generates a synthetic release (kb_ingest.testing.synth_umls, >= 1M rows) unless it exists, then
times the exact code path of an ingest up to the encoder: chunked UTF-8 decode, field split and
checks, language/suppression/SAB filters, CUI grouping with duplicate collapse and preferred
name, and the TUI -> category join. Prints one JSON object.

    nice -n 10 .venv/bin/python bench/kb_parse.py --rows 1000000 --dir /tmp/vaner-bench-umls
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb_ingest.categories import default_map  # noqa: E402
from kb_ingest.filters import UmlsFilters  # noqa: E402
from kb_ingest.ingest import IngestCounts, TuiIndex, categorise, iter_mrconso_concepts  # noqa: E402
from kb_ingest.rrf import MRCONSO_COLUMNS, BadLineReport, RrfReader  # noqa: E402
from kb_ingest.testing import synth_umls  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/vaner-bench-umls")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    meta = Path(args.dir) / f"{args.rows}" / "META"
    if not (meta / "MRFILES.RRF").exists():
        t = time.perf_counter()
        info = synth_umls(meta, args.rows)
        print(f"generated {info} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    size = (meta / "MRCONSO.RRF").stat().st_size
    t = time.perf_counter()
    c_sty = time.process_time()
    tui_index, sty_lines = TuiIndex.from_mrsty(meta / "MRSTY.RRF", BadLineReport())
    t_sty = time.perf_counter() - t
    t_sty_cpu = time.process_time() - c_sty
    best = None
    for _ in range(args.repeat):
        counts = IngestCounts()
        reader = RrfReader(meta / "MRCONSO.RRF", MRCONSO_COLUMNS, BadLineReport(), required=("CUI", "STR"))
        t = time.perf_counter()
        c0 = time.process_time()
        kept = terms = 0
        for c in categorise(iter_mrconso_concepts(reader, UmlsFilters(), counts), tui_index, default_map(), counts):
            kept += 1
            terms += len(c.terms)
        dt = time.perf_counter() - t
        cpu = time.process_time() - c0
        if best is None or dt < best[0]:
            best = (dt, reader.lines, kept, terms, dict(counts.skipped), cpu)
    dt, rows, kept, terms, skipped, cpu = best
    print(json.dumps({
        "rows": rows, "bytes": size, "mean_line_bytes": round(size / rows, 1),
        "seconds": round(dt, 3), "rows_per_s": round(rows / dt), "cpu_seconds": round(cpu, 3),
        "rows_per_cpu_s": round(rows / cpu), "MB_per_s": round(size / dt / 1e6, 1),
        "concepts_kept": kept, "terms": terms, "skipped": skipped,
        "mrsty_rows": sty_lines, "mrsty_rows_per_cpu_s": round(sty_lines / t_sty_cpu),
        "mrsty_seconds": round(t_sty, 3), "mrsty_rows_per_s": round(sty_lines / t_sty),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
