"""Benchmark: synonym retrieval by CUI, per encoder, before and after synonym alignment (issue 8).

From a UMLS-shaped release (MRCONSO.RRF or .gz, MRSTY beside it): take the concepts the default
ingest keeps (ENG, not suppressed, a vaner category), optionally a seeded random slice of them
holding about ``--max-terms`` terms; pick ``--holdout`` concepts with at least three names and hold
out one non-preferred name of each; ingest the rest with every encoder in ``--encoders``; query
with the held-out names and score the concepts found (one per CUI, best name first):
acc@1 = the right CUI first, recall@10 = the right CUI among the first ten. With ``--align`` each
encoder is also aligned on the ingested snapshot's own synonym sets (``kb-ingest align``; held-out
names are not in it) and scored again. Ingest throughput (terms/s end to end and of the encoder
alone) is reported beside the quality, since the two are traded against each other.
Writes one JSON file and a PNG bar chart; prints the JSON.

    nice -n 10 .venv/bin/python bench/kb_synonyms.py ../shared/data/openkb/MRCONSO.RRF.gz \\
        --encoders all-MiniLM-L6-v2,minilm-onnx-int8,minilm-m2v --max-terms 100000 --holdout 3000 --align
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb_ingest.align import AlignConfig  # noqa: E402
from kb_ingest.categories import default_map  # noqa: E402
from kb_ingest.filters import UmlsFilters, normalise  # noqa: E402
from kb_ingest.ingest import IngestCounts, TuiIndex, categorise, columns_of, iter_mrconso_concepts  # noqa: E402
from kb_ingest.kb import KnowledgeBase, best_per_concept  # noqa: E402
from kb_ingest.rrf import BadLineReport, RrfReader, check_file, find_beside, read_mrfiles  # noqa: E402
from vaner.errors import NotFound  # noqa: E402
from vaner.settings import Settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MIN_NAMES = 3


@dataclass(frozen=True)
class HeldOut:
    cui: str
    name: str
    categories: tuple[str, ...]


@dataclass
class Split:
    slice_cuis: set[str]
    slice_terms: int
    concepts_total: int
    terms_total: int
    eligible: int
    held_out: list[HeldOut]


def _release_files(mrconso: Path, mrsty: Path | None) -> tuple[Path, Path, dict | None]:
    mrconso = check_file(mrconso, "MRCONSO.RRF")
    mrsty = mrsty or find_beside(mrconso, "MRSTY.RRF")
    if mrsty is None:
        raise NotFound(f"no MRSTY.RRF[.gz] beside {mrconso}; pass --mrsty")
    mrfiles_path = find_beside(mrconso, "MRFILES.RRF")
    return mrconso, check_file(mrsty, "MRSTY.RRF"), read_mrfiles(mrfiles_path) if mrfiles_path else None


def choose_split(mrconso: Path, mrsty: Path, mrfiles: dict | None, *, holdout: int, max_terms: int | None,
                 seed: int) -> Split:
    """The ingest's own parser decides what a concept's names are, so the split matches what gets stored."""
    tuis, _ = TuiIndex.from_mrsty(mrsty, BadLineReport(), columns_of(mrfiles, "MRSTY.RRF"))
    counts = IngestCounts()
    reader = RrfReader(mrconso, columns_of(mrfiles, "MRCONSO.RRF"), BadLineReport(), required=("CUI", "STR"))
    concepts = [(c.cui, c.preferred, c.terms, tuple(x.value for x in c.categories))
                for c in categorise(iter_mrconso_concepts(reader, UmlsFilters(), counts), tuis, default_map(), counts)]
    rng = random.Random(seed)
    order = list(range(len(concepts)))
    rng.shuffle(order)
    chosen: list[int] = []
    terms = 0
    for i in order:
        if max_terms is not None and terms >= max_terms:
            break
        chosen.append(i)
        terms += len(concepts[i][2])
    eligible = [i for i in chosen if len(concepts[i][2]) >= MIN_NAMES]
    picked = sorted(rng.sample(eligible, min(holdout, len(eligible))))
    held = []
    for i in picked:
        cui, preferred, names, cats = concepts[i]
        others = [n for n in names if normalise(n) != normalise(preferred)]
        held.append(HeldOut(cui, rng.choice(others), cats))
    return Split({concepts[i][0] for i in chosen}, terms, len(concepts), sum(len(c[2]) for c in concepts),
                 len(eligible), held)


def write_ingest_copy(mrconso: Path, mrsty: Path, mrfiles: dict | None, split: Split, out: Path) -> Path:
    """MRCONSO.RRF of the slice without the held-out names (every atom of that string in that
    concept), MRSTY copied, release.dat kept; no MRFILES, whose row counts no longer hold."""
    out.mkdir(parents=True, exist_ok=True)
    drop = {(h.cui, normalise(h.name)) for h in split.held_out}
    reader = RrfReader(mrconso, columns_of(mrfiles, "MRCONSO.RRF"), BadLineReport(), required=("CUI", "STR"))
    ci, si = reader.col("CUI"), reader.col("STR")
    keep_cuis = split.slice_cuis
    with (out / "MRCONSO.RRF").open("w", encoding="utf-8", newline="") as fh:
        for row in reader:
            if row[ci] in keep_cuis and (row[ci], normalise(row[si])) not in drop:
                fh.write("|".join(row) + "\n")  # the row still ends in its empty last field: 'x|y|'
    shutil.copy2(mrsty, out / mrsty.name)
    release = mrconso.parent / "release.dat"
    if release.is_file():
        shutil.copy2(release, out / "release.dat")
    return out / "MRCONSO.RRF"


def score(kb: KnowledgeBase, snapshot: str, held: list[HeldOut], k: int, category_filter: bool) -> dict:
    t0 = time.perf_counter()
    ranked: list[list] = []
    if category_filter:
        for h in held:
            ranked.append(kb.search([h.name], snapshot=snapshot, categories=list(h.categories), k=k * 4)[0])
    else:
        for start in range(0, len(held), 1024):
            ranked.extend(kb.search([h.name for h in held[start:start + 1024]], snapshot=snapshot, k=k * 4))
    seconds = time.perf_counter() - t0
    top1 = topk = 0
    for h, hits in zip(held, ranked, strict=True):
        cuis = [x.cui for x in best_per_concept(hits, k)]
        top1 += bool(cuis) and cuis[0] == h.cui
        topk += h.cui in cuis
    n = max(1, len(held))
    return {"acc@1": round(top1 / n, 4), f"recall@{k}": round(topk / n, 4), "queries": len(held),
            "queries_per_s": round(len(held) / seconds, 1) if seconds else None}


def run(args: argparse.Namespace) -> dict:
    mrconso, mrsty, mrfiles = _release_files(Path(args.mrconso), Path(args.mrsty) if args.mrsty else None)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vaner-kb-synonyms-"))
    t0 = time.perf_counter()
    split = choose_split(mrconso, mrsty, mrfiles, holdout=args.holdout, max_terms=args.max_terms, seed=args.seed)
    copy = write_ingest_copy(mrconso, mrsty, mrfiles, split, work / "release")
    prep = time.perf_counter() - t0
    kb = KnowledgeBase(Settings(home=work / "home"))
    rows = []
    try:
        for name in [e.strip() for e in args.encoders.split(",") if e.strip()]:
            info = kb.ingest_umls(copy, encoder=name, max_seq_length=args.max_seq_length,
                                  encode_batch_size=args.encode_batch_size)
            stats = info.filters.get("stats", {})
            wall, enc_s = stats.get("wall_seconds"), stats.get("encode_seconds")
            row = {"encoder": info.encoder, "aligned": False, "snapshot": info.id, "terms": info.terms,
                   "dimension": info.dimension, "encoder_record": {k: v for k, v in info.filters["encoder"].items()
                                                                    if k != "files"},
                   "ingest_seconds": stats.get("wall_seconds"),
                   "ingest_terms_per_s": round(info.terms / wall, 1) if wall else None,
                   "encode_terms_per_s": round(info.terms / enc_s, 1) if enc_s else None,
                   **score(kb, info.id, split.held_out, args.k, args.category_filter)}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("encoder", "acc@1", f"recall@{args.k}", "ingest_terms_per_s")}),
                  file=sys.stderr)
            if args.align:
                cfg = AlignConfig(budget_minutes=args.align_minutes, max_steps=args.align_steps, seed=args.seed,
                                  batch_size=args.align_batch)
                result, snap = kb.align(info.id, config=cfg)
                arow = {"encoder": snap.encoder, "aligned": True, "base": info.encoder, "snapshot": snap.id,
                        "terms": snap.terms, "dimension": snap.dimension, "align_steps": result.steps,
                        "align_seconds": round(result.seconds, 1), "margin_before": result.before["margin"],
                        "margin_after": result.after["margin"],
                        "reencode_seconds": snap.filters.get("stats", {}).get("wall_seconds"),
                        **score(kb, snap.id, split.held_out, args.k, args.category_filter)}
                rows.append(arow)
                print(json.dumps({k: arow[k] for k in ("encoder", "acc@1", f"recall@{args.k}")}), file=sys.stderr)
    finally:
        kb.close()
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return {"benchmark": "kb_synonyms", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": __import__("os").cpu_count()},
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if args.record_command else "",
            "source": str(mrconso), "seed": args.seed, "k": args.k, "category_filter": args.category_filter,
            "split": {"concepts_total": split.concepts_total, "terms_total": split.terms_total,
                      "slice_concepts": len(split.slice_cuis), "slice_terms": split.slice_terms,
                      "eligible_concepts": split.eligible, "held_out": len(split.held_out),
                      "prepare_seconds": round(prep, 1)},
            "results": rows}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    rows = report["results"]
    labels = [r["encoder"] if not r["aligned"] else f"{r['base']}\n+aligned" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 4))
    ax.bar([i - 0.2 for i in x], [r["acc@1"] for r in rows], width=0.4, label="acc@1")
    ax.bar([i + 0.2 for i in x], [r[f"recall@{k}"] for r in rows], width=0.4, label=f"recall@{k}")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylim(0, 1)
    s = report["split"]
    ax.set_title(f"held-out synonym -> CUI ({s['held_out']} queries, {s['slice_terms']} terms)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mrconso", help="MRCONSO.RRF or MRCONSO.RRF.gz (MRSTY[.gz] beside it)")
    ap.add_argument("--mrsty", default=None)
    ap.add_argument("--encoders", default="all-MiniLM-L6-v2", help="comma-separated encoder names or paths")
    ap.add_argument("--holdout", type=int, default=3000, help="concepts (with >= 3 names) to query")
    ap.add_argument("--max-terms", type=int, default=None, help="ingest a seeded random slice of about this many terms")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--category-filter", action="store_true", help="restrict each query to its concept's categories")
    ap.add_argument("--align", action="store_true", help="also align each encoder and score again")
    ap.add_argument("--align-minutes", type=float, default=10.0)
    ap.add_argument("--align-steps", type=int, default=1000)
    ap.add_argument("--align-batch", type=int, default=64)
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--encode-batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="working folder (kept); default a temporary one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    ap.add_argument("--out", default=str(RESULTS / "kb_synonyms.json"))
    ap.add_argument("--png", default=None, help="default: --out with .png")
    ap.add_argument("--no-command", dest="record_command", action="store_false")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    report = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot(report, Path(args.png) if args.png else out.with_suffix(".png"))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
