"""``kb-ingest``: build, list, search and drop KB snapshots from a shell.

Output contract: with ``--json`` exactly one JSON value goes to stdout and everything else
(progress bars, warnings) to stderr, so the command can be piped into ``jq`` or another program.
Errors are one ``error: ...`` line and a non-zero exit (vaner.cli_common.run_cli).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vaner.categories import Category
from vaner.cli_common import add_global_args, print_json, run_cli, settings_from_args
from vaner.progress import TqdmProgress


def _kb(args: argparse.Namespace):  # noqa: ANN202 - KnowledgeBase, imported lazily (torch is slow to import)
    from kb_ingest.kb import KnowledgeBase

    return KnowledgeBase(settings_from_args(args))


def _progress(args: argparse.Namespace) -> TqdmProgress:
    return TqdmProgress(enabled=not args.quiet and sys.stderr.isatty() or args.progress, unit="row")


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def _ingest_summary(info) -> dict:  # noqa: ANN001 - SnapshotInfo
    d = info.to_json()
    return {"snapshot": info.id, "status": info.status, "latest": info.latest, "kind": info.kind,
            "umls_release": info.umls_release, "encoder": info.encoder, "dimension": info.dimension,
            "concepts": info.concepts, "terms": info.terms, "skipped": info.skipped,
            "sources": info.sources, "filters": d["filters"], "created_at": info.created_at}


def _print_ingest(args: argparse.Namespace, info) -> None:  # noqa: ANN001
    if args.json:
        print_json(_ingest_summary(info))
        return
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(info.skipped.items())) or "none"
    print(f"snapshot {info.id} complete (latest): {info.concepts} concepts, {info.terms} terms, "
          f"encoder {info.encoder} ({info.dimension}-d)")
    if info.umls_release:
        print(f"UMLS release: {info.umls_release}")
    print(f"skipped: {skipped}")


def cmd_umls(args: argparse.Namespace) -> int:
    kb = _kb(args)
    bar = _progress(args)
    try:
        info = kb.ingest_umls(Path(args.mrconso), mrsty=Path(args.mrsty) if args.mrsty else None,
                              languages=_split(args.lang) or ["ENG"], include_sabs=_split(args.sab),
                              exclude_sabs=_split(args.exclude_sab), keep_suppressed=args.keep_suppressed,
                              encoder=args.encoder, strict=args.strict, progress=bar)
    finally:
        bar.close()
    _print_ingest(args, info)
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    kb = _kb(args)
    bar = _progress(args)
    try:
        info = kb.ingest_dataset([Path(p) for p in args.paths], Category.parse(args.type), encoder=args.encoder,
                                 progress=bar, base=None if args.no_base else args.base)
    finally:
        bar.close()
    _print_ingest(args, info)
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    infos = _kb(args).snapshots()
    if args.json:
        print_json([i.to_json() for i in infos])
        return 0
    if not infos:
        print("no snapshots yet; run `kb-ingest umls PATH/MRCONSO.RRF`")
        return 0
    print(f"{'id':<26} {'status':<9} {'latest':<6} {'kind':<7} {'release':<8} {'concepts':>9} {'terms':>10}  encoder")
    for i in infos:
        print(f"{i.id:<26} {i.status:<9} {'*' if i.latest else '':<6} {i.kind:<7} {i.umls_release or '-':<8} "
              f"{i.concepts:>9} {i.terms:>10}  {i.encoder}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    kb = _kb(args)
    cats = Category.parse_list(_split(args.category)) if args.category else None
    hits = kb.search([args.text], snapshot=args.snapshot, categories=cats, k=args.k, encoder=args.encoder)[0]
    if args.json:
        print_json([h.to_json() for h in hits])
        return 0
    if not hits:
        print("no match")
    for rank, h in enumerate(hits, 1):
        cats_s = ",".join(c.value for c in h.categories)
        print(f"{rank:>3}. {h.score:.4f}  {h.cui:<10} {h.name}  [{cats_s}]"
              + (f"  (preferred: {h.preferred})" if h.preferred and h.preferred != h.name else ""))
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    kb = _kb(args)
    info = kb.get_snapshot(args.snapshot)
    kb.drop(info.id)
    if args.json:
        print_json({"dropped": info.id})
    else:
        print(f"dropped snapshot {info.id}")
    return 0


def _sub_globals(sp: argparse.ArgumentParser) -> None:
    """The global flags also after the subcommand; SUPPRESS keeps a flag given before it."""
    g = sp.add_argument_group("state")
    g.add_argument("--home", default=argparse.SUPPRESS, help="state directory (default $VANER_HOME)")
    g.add_argument("--db-url", default=argparse.SUPPRESS, help="SQL database URL (default SQLite in home)")
    g.add_argument("--qdrant-url", default=argparse.SUPPRESS, help="Qdrant server URL (default embedded)")
    sp.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kb-ingest", description="Build and query versioned vaner KB snapshots.")
    add_global_args(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, ingest: bool = False) -> None:
        sp.add_argument("--json", action="store_true", help="print exactly one JSON value on stdout")
        _sub_globals(sp)
        if ingest:
            sp.add_argument("--encoder", default=None,
                            help="alias (all-MiniLM-L6-v2, sapbert), local model directory, or hub id "
                                 "(e.g. cambridgeltl/SapBERT-from-PubMedBERT-fulltext); default all-MiniLM-L6-v2")
            sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
            sp.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")

    u = sub.add_parser("umls", help="ingest a UMLS release (MRCONSO.RRF + MRSTY.RRF)")
    u.add_argument("mrconso", help="path to MRCONSO.RRF")
    u.add_argument("--mrsty", default=None, help="MRSTY.RRF (default: beside MRCONSO.RRF)")
    u.add_argument("--lang", action="append", help="languages to keep, e.g. ENG or ENG,SPA (default ENG)")
    u.add_argument("--sab", action="append", help="keep only these source vocabularies, e.g. MSH,SNOMEDCT_US")
    u.add_argument("--exclude-sab", action="append", help="drop these source vocabularies")
    u.add_argument("--keep-suppressed", action="store_true", help="keep atoms with SUPPRESS in O,E,Y")
    u.add_argument("--strict", action="store_true", help="fail at the first malformed line")
    common(u, ingest=True)
    u.set_defaults(func=cmd_umls)

    d = sub.add_parser("dataset", help="add the entity strings of CoNLL training files")
    d.add_argument("paths", nargs="+", help="CoNLL files (token<TAB>tag)")
    d.add_argument("--type", required=True, help="entity category: " + ", ".join(c.value for c in Category))
    d.add_argument("--base", default="latest", help="snapshot to extend (default latest, if any)")
    d.add_argument("--no-base", action="store_true", help="a snapshot of the dataset entities only")
    common(d, ingest=True)
    d.set_defaults(func=cmd_dataset)

    s = sub.add_parser("snapshots", help="list snapshots")
    common(s)
    s.set_defaults(func=cmd_snapshots)

    q = sub.add_parser("search", help="nearest KB terms to a text")
    q.add_argument("text")
    q.add_argument("--snapshot", default="latest")
    q.add_argument("--category", action="append", help="filter: " + ", ".join(c.value for c in Category))
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--encoder", default=None, help="must match the snapshot's encoder (checked)")
    common(q)
    q.set_defaults(func=cmd_search)

    r = sub.add_parser("drop", help="delete a snapshot and its vectors")
    r.add_argument("snapshot", help="snapshot id or 'latest'")
    common(r)
    r.set_defaults(func=cmd_drop)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
