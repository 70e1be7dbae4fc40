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

from kb_ingest.rrf import check_file
from vaner.categories import Category
from vaner.cli_common import add_global_args, print_json, run_cli, settings_from_args
from vaner.errors import InvalidArgument
from vaner.progress import TqdmProgress

SEARCH_CHUNK = 4096


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
                              encoder=args.encoder, strict=args.strict, progress=bar,
                              max_seq_length=args.max_seq_length, encode_batch_size=args.encode_batch_size)
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


def _queries(args: argparse.Namespace) -> list[str]:
    """TEXT, or one query per line of --input ('-' = stdin); blank lines stay (as empty queries)."""
    if (args.text is None) == (args.input is None):
        raise InvalidArgument("search: give TEXT or --input FILE ('-' for stdin), not both and not neither")
    if args.input is None:
        return [args.text]
    if args.input == "-":
        return sys.stdin.read().splitlines()
    path = check_file(Path(args.input), "query list")
    lines = []
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as exc:
                raise InvalidArgument(f"{path}:{n}: not valid UTF-8 ({exc.reason})") from None
    return lines


def _print_hits(hits: list) -> None:  # noqa: ANN001 - ConceptHit
    if not hits:
        print("no match")
    for rank, h in enumerate(hits, 1):
        cats_s = ",".join(c.value for c in h.categories)
        code = f"  {h.sab}:{h.code}" if h.sab and h.code and not h.code.startswith(h.sab + ":") else \
            (f"  {h.code}" if h.code else "")
        print(f"{rank:>3}. {h.score:.4f}  {h.cui:<10} {h.name}  [{cats_s}]{code}"
              + (f"  (preferred: {h.preferred})" if h.preferred and h.preferred != h.name else ""))


def cmd_search(args: argparse.Namespace) -> int:
    queries = _queries(args)
    kb = _kb(args)
    cats = Category.parse_list(_split(args.category)) if args.category else None
    results: list[list] = []
    kb.get_snapshot(args.snapshot)  # an unknown snapshot fails even for an input of blank lines
    for start in range(0, len(queries), SEARCH_CHUNK):  # bounded memory for a long list
        results.extend(kb.search(queries[start:start + SEARCH_CHUNK], snapshot=args.snapshot, categories=cats,
                                 k=args.k, encoder=args.encoder, one_per_concept=args.per_concept))
    if args.json:
        if args.input is None:
            print_json([h.to_json() for h in results[0]])
        else:
            print_json([[h.to_json() for h in hits] for hits in results])
        return 0
    for i, (query, hits) in enumerate(zip(queries, results, strict=True)):
        if args.input is not None:
            print(("" if i == 0 else "\n") + f"# {i + 1}: {query}")
        _print_hits(hits)
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from kb_ingest.align import AlignConfig

    cfg = AlignConfig(budget_minutes=args.budget_minutes, max_steps=args.max_steps, batch_size=args.batch_size,
                      learning_rate=args.lr, seed=args.seed, max_concepts=args.max_concepts)
    kb = _kb(args)
    bar = _progress(args)
    try:
        result, info = kb.align(args.snapshot, base=args.base, config=cfg, progress=bar, reencode=not args.no_reencode)
    finally:
        bar.close()
    out = {"encoder": result.name, "folder": str(result.folder), "steps": result.steps,
           "seconds": round(result.seconds, 1), "loss_first": round(result.loss_first, 4),
           "loss_last": round(result.loss_last, 4), "margin_before": result.before, "margin_after": result.after,
           "snapshot": _ingest_summary(info) if info is not None else None}
    if args.json:
        print_json(out)
        return 0
    print(f"encoder {result.name}: {result.steps} steps in {result.seconds:.0f} s, loss {result.loss_first:.3f} -> "
          f"{result.loss_last:.3f}; synonym margin {result.before['margin']:.3f} -> {result.after['margin']:.3f}")
    if info is not None:
        _print_ingest(args, info)
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from kb_ingest.encoder import load_encoder
    from kb_ingest.encoder_build import CANDIDATES, ensure_candidate

    settings = settings_from_args(args)
    if args.build:
        ensure_candidate(args.build.lower(), settings.home)
        enc = load_encoder(args.build, home=settings.home)
        _kb(args)._record_encoder(enc)
    recorded = {i.name: i for i in _kb(args).encoders.list()}
    rows = [{"name": c.name, "backend": c.backend, "description": c.description,
             "built": (settings.home / "encoders" / c.name).is_dir()} for c in CANDIDATES.values()]
    rows += [{"name": n, "backend": i.backend, "description": i.provenance.get("description", ""), "built": True,
              "version": i.version, "dimension": i.dimension, "sha256": i.sha256}
             for n, i in recorded.items() if n not in CANDIDATES]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(f"{r['name']:<32} {r['backend']:<22} {'built' if r['built'] else 'not built':<10} {r['description']}")
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
                            help="alias (all-MiniLM-L6-v2, sapbert), candidate (minilm-onnx, minilm-onnx-int8, "
                                 "minilm-m2v: built offline on first use), an encoder under $VANER_HOME/encoders, "
                                 "a local model directory, or a hub id (e.g. cambridgeltl/SapBERT-from-PubMedBERT-"
                                 "fulltext); default all-MiniLM-L6-v2")
            sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
            sp.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")

    u = sub.add_parser("umls", help="ingest a UMLS release (MRCONSO.RRF + MRSTY.RRF)")
    u.add_argument("mrconso", help="path to MRCONSO.RRF or MRCONSO.RRF.gz (read as a stream, never unpacked)")
    u.add_argument("--mrsty", default=None, help="MRSTY.RRF[.gz] (default: beside MRCONSO)")
    u.add_argument("--lang", action="append", help="languages to keep, e.g. ENG or ENG,SPA (default ENG)")
    u.add_argument("--sab", action="append", help="keep only these source vocabularies, e.g. MSH,SNOMEDCT_US")
    u.add_argument("--exclude-sab", action="append", help="drop these source vocabularies")
    u.add_argument("--keep-suppressed", action="store_true", help="keep atoms with SUPPRESS in O,E,Y")
    u.add_argument("--strict", action="store_true", help="fail at the first malformed line")
    u.add_argument("--max-seq-length", type=int, default=None,
                   help="truncate terms to this many tokens (default: the encoder's own limit); recorded and "
                        "reused for queries")
    u.add_argument("--encode-batch-size", type=int, default=None, help="terms per encoder call (default 256)")
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

    q = sub.add_parser("search", help="nearest KB terms to a text, or to each line of a file")
    q.add_argument("text", nargs="?", default=None, help="one query (or use --input)")
    q.add_argument("--input", default=None,
                   help="file with one query per line ('-' = stdin); an empty line gets an empty hit list. "
                        "With --json: one list of hit lists, in input order")
    q.add_argument("--snapshot", default="latest")
    q.add_argument("--category", action="append", help="filter: " + ", ".join(c.value for c in Category))
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--per-concept", action="store_true",
                   help="the best name of each of the top-k concepts (normalising terms) instead of the top-k names")
    q.add_argument("--encoder", default=None, help="must match the snapshot's encoder (checked)")
    common(q)
    q.set_defaults(func=cmd_search)

    a = sub.add_parser("align", help="fine-tune an encoder on a snapshot's synonym sets (SapBERT-style) and "
                                     "re-encode the snapshot with it")
    a.add_argument("--snapshot", default="latest", help="snapshot whose synonym sets train the encoder")
    a.add_argument("--base", default=None, help="encoder to start from (default: the snapshot's); sentence-"
                                                "transformers or model2vec")
    a.add_argument("--budget-minutes", type=float, default=10.0, help="wall-clock training budget (default 10)")
    a.add_argument("--max-steps", type=int, default=1000, help="at most this many steps (default 1000)")
    a.add_argument("--batch-size", type=int, default=64, help="concepts per step; the others are its negatives")
    a.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-5 transformer, 0.05 static)")
    a.add_argument("--max-concepts", type=int, default=None, help="train on a seeded sample of this many concepts")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-reencode", action="store_true", help="only train and record the encoder")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    common(a)
    a.set_defaults(func=cmd_align)

    e = sub.add_parser("encoders", help="list encoder candidates and recorded encoders; --build one")
    e.add_argument("--build", default=None, metavar="NAME", help="build a candidate now (offline): minilm-onnx, "
                                                                "minilm-onnx-int8, minilm-m2v")
    common(e)
    e.set_defaults(func=cmd_encoders)

    r = sub.add_parser("drop", help="delete a snapshot and its vectors")
    r.add_argument("snapshot", help="snapshot id or 'latest'")
    common(r)
    r.set_defaults(func=cmd_drop)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
