"""DBR build throughput (training sentences/s) on a KB built from the shared training splits.

No UMLS licence is available here, so the benchmark KB holds the entity strings of the seven
shared datasets' TRAIN splits (the paper's KB also drew on them), encoded with all-MiniLM-L6-v2.
The code path for a real MRCONSO snapshot is the same; only the KB size differs.

    .venv/bin/python bench/dbr_build_speed.py --home /tmp/vaner-dbr-bench --build-kb \
        --datasets ncbi,s800 [--json]

Stages timed: KB ingest (once, --build-kb), retrieved-mode build (mine + encode + search +
assemble), random-mode build (same counts; reuses the retrieved set), and a cached reload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.dbr import DbrBuilder, DbrParams  # noqa: E402
from vaner.corpus import DATASETS, default_data_dir  # noqa: E402
from vaner.settings import Settings  # noqa: E402


def build_kb(settings: Settings, data_dir: Path, encoder: str) -> dict:
    from kb_ingest.kb import KnowledgeBase

    kb = KnowledgeBase(settings)
    by_cat = defaultdict(list)
    for name in DATASETS.names("bioner"):
        info = DATASETS.get(name)
        path = data_dir / info.directory / "train.tsv"
        if path.exists():
            by_cat[info.category].append(path)
    t0 = time.perf_counter()
    snap = None
    for cat, paths in sorted(by_cat.items(), key=lambda kv: kv[0].value):
        snap = kb.ingest_dataset(paths, cat, encoder=encoder)
    return {"snapshot": snap.id, "terms": snap.terms, "encoder": snap.encoder,
            "ingest_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="VANER_HOME for the benchmark KB and DBR cache")
    ap.add_argument("--datasets", default="ncbi,s800")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--build-kb", action="store_true", help="ingest the 7 training splits first")
    ap.add_argument("--encoder", default="all-MiniLM-L6-v2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings(home=Path(args.home)).ensure()
    data_dir = Path(args.data_dir or default_data_dir())
    out: dict = {"machine": f"{platform.machine()} {os.cpu_count()} CPU cores, no GPU",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "datasets": args.datasets}
    if args.build_kb:
        out["kb"] = build_kb(settings, data_dir, args.encoder)
    from kb_ingest.kb import KnowledgeBase

    kb = KnowledgeBase(settings)
    out.setdefault("kb", {"snapshot": kb.get_snapshot("latest").id, "terms": kb.get_snapshot("latest").terms})
    names = args.datasets.split(",")
    builder = DbrBuilder(settings, kb)
    for mode in ("retrieved", "random"):
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        s = builder.build(names, DbrParams(mode=mode, seed=args.seed), data_dir=data_dir, force=True)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        n_train = s.manifest["counts"]["training_sentences"]
        out[mode] = {"seconds": round(dt, 1), "training_sentences": n_train, "dbr_sentences": s.sentences,
                     "sentences_per_second": round(n_train / dt, 1), "process_cpu_seconds": round(cpu, 1),
                     "sentences_per_cpu_second": round(n_train / max(cpu, 1e-9), 1),
                     "load_avg_before_after": [round(load0, 1), round(os.getloadavg()[0], 1)],
                     "counts": s.manifest["counts"], "id": s.id}
    t0 = time.perf_counter()
    s = builder.build(names, DbrParams(seed=args.seed), data_dir=data_dir)
    loaded = s.load()
    out["cached_reload"] = {"seconds": round(time.perf_counter() - t0, 2), "cached": s.cached,
                            "sentences": len(loaded)}
    sample = loaded[:3]
    out["examples"] = [" ".join(f"{w}/{t}" for w, t in zip(x.words, x.tags, strict=True)) for x in sample]
    print(json.dumps(out, indent=1 if not args.json else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
