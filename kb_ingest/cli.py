"""``kb-ingest``: build, list, search and drop KB snapshots from a shell.

Output contract: with ``--json`` exactly one JSON value goes to stdout and everything else
(progress bars, warnings) to stderr, so the command can be piped into ``jq`` or another program.
Errors are one ``error: ...`` line and a non-zero exit (vaner.cli_common.run_app).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from kb_ingest.rrf import check_file
from vaner.categories import Category
from vaner.cli_common import (
    JSON_HELP,
    callback,
    command,
    invoke,
    new_app,
    option,
    print_json,
    run_app,
    settings_from_args,
)
from vaner.errors import InvalidArgument
from vaner.progress import ProgressBars, ProgressTracker

SEARCH_CHUNK = 4096


def _kb(args: argparse.Namespace):  # noqa: ANN202 - KnowledgeBase, imported lazily (torch is slow to import)
    from kb_ingest.kb import KnowledgeBase

    return KnowledgeBase(settings_from_args(args))


def _progress(args: argparse.Namespace) -> ProgressBars:
    return ProgressBars(enabled=not args.quiet and sys.stderr.isatty() or args.progress, unit="row")


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
    with ProgressBars(enabled=len(queries) > SEARCH_CHUNK and sys.stderr.isatty(), unit="query") as bar:
        tracker = ProgressTracker("search", len(queries), bar)
        for start in range(0, len(queries), SEARCH_CHUNK):  # bounded memory for a long list
            chunk = queries[start:start + SEARCH_CHUNK]
            results.extend(kb.search(chunk, snapshot=args.snapshot, categories=cats, k=args.k, encoder=args.encoder,
                                     one_per_concept=args.per_concept))
            tracker.advance(len(chunk))
        tracker.finish()
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


# ---- the command line ------------------------------------------------------------------------------
ENCODER_HELP = ("alias (all-MiniLM-L6-v2, sapbert), candidate (minilm-onnx, minilm-onnx-int8, minilm-m2v: built offline "
                "on first use), an encoder under $VANER_HOME/encoders, a local model directory, or a hub id (e.g. "
                "cambridgeltl/SapBERT-from-PubMedBERT-fulltext); default all-MiniLM-L6-v2")
JSON = option("json", bool, False, "--json", help=JSON_HELP)
BARS = [option("quiet", bool, False, "-q", "--quiet", help="no progress bar"),
        option("progress", bool, False, "--progress", help="progress bar even when stderr is not a terminal")]
INGEST = [option("encoder", str | None, None, "--encoder", help=ENCODER_HELP), *BARS, JSON]
CATEGORIES = ", ".join(c.value for c in Category)


def umls_command(
    ctx: typer.Context,
    mrconso: Annotated[str, typer.Argument(
        metavar="MRCONSO", show_default=False,
        help="path to MRCONSO.RRF or MRCONSO.RRF.gz (read as a stream, never unpacked)")],
    mrsty: Annotated[str | None, typer.Option("--mrsty", help="MRSTY.RRF or .gz (default: beside MRCONSO)")] = None,
    lang: Annotated[list[str] | None, typer.Option(
        "--lang", help="languages to keep, e.g. ENG or ENG,SPA (default ENG)")] = None,
    sab: Annotated[list[str] | None, typer.Option(
        "--sab", help="keep only these source vocabularies, e.g. MSH,SNOMEDCT_US")] = None,
    exclude_sab: Annotated[list[str] | None, typer.Option("--exclude-sab", help="drop these source vocabularies")] = None,
    keep_suppressed: Annotated[bool, typer.Option(
        "--keep-suppressed", help="keep atoms with SUPPRESS in O,E,Y")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="fail at the first malformed line")] = False,
    max_seq_length: Annotated[int | None, typer.Option(
        "--max-seq-length", help="truncate terms to this many tokens (default: the encoder's own limit); recorded "
                                 "and reused for queries")] = None,
    encode_batch_size: Annotated[int | None, typer.Option(
        "--encode-batch-size", help="terms per encoder call (default 256)")] = None,
    **_: object,
) -> None:
    """Ingest a UMLS release (MRCONSO.RRF + MRSTY.RRF) as a new snapshot."""
    invoke(ctx, cmd_umls)


def dataset_command(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(
        metavar="PATH", help="CoNLL files (token<TAB>tag)", show_default=False)],
    type: Annotated[str, typer.Option("--type", help=f"entity category: {CATEGORIES}", show_default=False)],
    base: Annotated[str, typer.Option("--base", help="snapshot to extend (latest, if any)")] = "latest",
    no_base: Annotated[bool, typer.Option("--no-base", help="a snapshot of the dataset entities only")] = False,
    **_: object,
) -> None:
    """Add the entity strings of CoNLL training files."""
    invoke(ctx, cmd_dataset)


def snapshots_command(ctx: typer.Context, **_: object) -> None:
    """List snapshots."""
    invoke(ctx, cmd_snapshots)


def search_command(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(
        metavar="TEXT", help="one query (or use --input)", show_default=False)] = None,
    input: Annotated[str | None, typer.Option(
        "--input", help="file with one query per line ('-' = stdin); an empty line gets an empty hit list. "
                        "With --json: one list of hit lists, in input order")] = None,
    snapshot: Annotated[str, typer.Option("--snapshot", help="snapshot id or 'latest'")] = "latest",
    category: Annotated[list[str] | None, typer.Option("--category", help=f"filter: {CATEGORIES}")] = None,
    k: Annotated[int, typer.Option("-k", help="hits per query")] = 10,
    per_concept: Annotated[bool, typer.Option(
        "--per-concept", help="the best name of each of the top-k concepts (normalising terms) instead of the "
                              "top-k names")] = False,
    encoder: Annotated[str | None, typer.Option("--encoder", help="must match the snapshot's encoder (checked)")] = None,
    **_: object,
) -> None:
    """Nearest KB terms to a text, or to each line of a file."""
    invoke(ctx, cmd_search)


def align_command(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Option("--snapshot", help="snapshot whose synonym sets train the encoder")] = "latest",
    base: Annotated[str | None, typer.Option(
        "--base", help="encoder to start from (default: the snapshot's); sentence-transformers or model2vec")] = None,
    budget_minutes: Annotated[float, typer.Option("--budget-minutes", help="wall-clock training budget")] = 10.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="at most this many steps")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="concepts per step; the others are its negatives")] = 64,
    lr: Annotated[float | None, typer.Option(
        "--lr", help="learning rate (default 2e-5 transformer, 0.05 static)")] = None,
    max_concepts: Annotated[int | None, typer.Option(
        "--max-concepts", help="train on a seeded sample of this many concepts")] = None,
    seed: Annotated[int, typer.Option("--seed", help="sampling and init seed")] = 0,
    no_reencode: Annotated[bool, typer.Option("--no-reencode", help="only train and record the encoder")] = False,
    **_: object,
) -> None:
    """Fine-tune an encoder on a snapshot's synonym sets (SapBERT-style) and re-encode the snapshot with it."""
    invoke(ctx, cmd_align)


def encoders_command(
    ctx: typer.Context,
    build: Annotated[str | None, typer.Option(
        "--build", metavar="NAME",
        help="build a candidate now (offline): minilm-onnx, minilm-onnx-int8, minilm-m2v")] = None,
    **_: object,
) -> None:
    """List encoder candidates and recorded encoders; --build one."""
    invoke(ctx, cmd_encoders)


def drop_command(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", help="snapshot id or 'latest'", show_default=False)],
    **_: object,
) -> None:
    """Delete a snapshot and its vectors."""
    invoke(ctx, cmd_drop)


def _root(ctx: typer.Context, **_: object) -> None:
    """Takes the state flags given before the command; commands read them through their context."""


def build_app() -> typer.Typer:
    app = new_app("kb-ingest", "Build and query versioned vaner KB snapshots.", examples=[
        "kb-ingest umls /data/umls/2025AA/META/MRCONSO.RRF --sab MSH,SNOMEDCT_US",
        "kb-ingest dataset train.tsv --type Species",
        'kb-ingest search "heart attack" --category Disease -k 5 --json',
        "kb-ingest COMMAND --help               # every command's flags and examples",
    ])
    callback(app, _root)
    command(app, umls_command, "umls", options=INGEST, examples=[
        "kb-ingest umls /data/umls/2025AA/META/MRCONSO.RRF            # English, non-suppressed, all sources",
        "kb-ingest umls .../MRCONSO.RRF --sab MSH,SNOMEDCT_US,RXNORM  # only these source vocabularies",
        "kb-ingest umls .../MRCONSO.RRF --exclude-sab MDR --lang ENG,SPA",
        "kb-ingest umls openkb/MRCONSO.RRF.gz --encoder minilm-m2v --encode-batch-size 1024 --json",
    ])
    command(app, dataset_command, "dataset", options=INGEST, examples=[
        "kb-ingest dataset data/ncbi/train.tsv --type Disease        # new snapshot = latest + these strings",
        "kb-ingest dataset data/bc5cdr-chem/train.tsv --type Chemical --no-base",
    ])
    command(app, snapshots_command, "snapshots", options=[JSON], examples=["kb-ingest snapshots --json"])
    command(app, search_command, "search", options=[JSON], examples=[
        'kb-ingest search "heart attack" --category Disease -k 5 --json',
        "kb-ingest search --input terms.txt --per-concept -k 3 --json   # one hit list per line, in order",
        "cut -f2 mentions.tsv | kb-ingest search --input - -k 1",
    ])
    command(app, align_command, "align", options=[*BARS, JSON], examples=[
        "kb-ingest align --snapshot latest --budget-minutes 10",
        "kb-ingest align --base minilm-m2v --max-steps 1000 --seed 0 --json",
    ])
    command(app, encoders_command, "encoders", options=[JSON], examples=[
        "kb-ingest encoders", "kb-ingest encoders --build minilm-onnx-int8"])
    command(app, drop_command, "drop", options=[JSON], examples=["kb-ingest drop kb-20261125-101500-ab12cd"])
    return app


def main(argv: Sequence[str] | None = None) -> int:
    return run_app(build_app(), argv, "kb-ingest")


if __name__ == "__main__":
    sys.exit(main())
