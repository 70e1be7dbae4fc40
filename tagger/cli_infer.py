"""``vaner eval``, ``vaner extract`` and ``vaner models``: the inference side of the tagger CLI.

Bad input (empty text, unknown type, unknown model version, a malformed file) is checked before
the model loads, so the user gets a one-line error in milliseconds instead of after ~15 s.
``--model`` takes a registry version id, ``latest``, or the path of a saved model folder.
``--link`` needs the knowledge base and retrieval packages, which sit above this one: the ``vaner``
dispatcher injects a :data:`LinkerFactory` (``register(app, linker=...)``), so nothing here imports them.
With ``--remote`` the tagger service links (``ExtractOptions.link``) with the same linker.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from tagger.formats import INPUT_FORMATS, OUTPUT_FORMATS, LinkFn
from vaner.categories import Category
from vaner.cli_common import (
    CLIENT_OPTIONS,
    JSON_HELP,
    attach,
    callback,
    client_flags,
    command,
    invoke,
    new_app,
    print_json,
    settings_from_args,
)
from vaner.errors import FailedPrecondition, InvalidArgument
from vaner.progress import ProgressBars
from vaner.settings import Settings

# (settings, k, KB snapshot) -> a tagger.formats.LinkFn; called before the model loads, so a missing
# snapshot fails in milliseconds.
LinkerFactory = Callable[[Settings, int, str], LinkFn]


Model = Annotated[str, typer.Option("--model", help="version id, 'latest', or a saved model folder")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="inputs per forward pass")]
Json = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


def eval_command(
    ctx: typer.Context,
    model: Model = "latest",
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="shared dataset name (ncbi, bc5cdr-disease, bc5cdr-chem, bc2gm, ...); or --data")] = None,
    data: Annotated[str | None, typer.Option("--data", metavar="PATH.tsv", help="any CoNLL file (token<TAB>tag)")] = None,
    split: Annotated[Literal["train", "dev", "test"], typer.Option("--split", help="split of --dataset")] = "test",
    type: Annotated[str | None, typer.Option("--type", help="entity type of --data (default: from its tags)")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="folder of the shared datasets")] = None,
    batch_size: BatchSize = 32,
    max_sentences: Annotated[int | None, typer.Option(
        "--max-sentences", help="evaluate on the first N sentences only")] = None,
    device: Device = "auto",
    no_store: Annotated[bool, typer.Option("--no-store", help="do not record test metrics in the registry")] = False,
    json: Json = False,
    **_: object,
) -> None:
    """Strict entity-level P/R/F1 of a model on a dataset or CoNLL file."""
    invoke(ctx, run_eval)


def extract_command(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(
        metavar="TEXT", help="text to tag (or use --input)", show_default=False)] = None,
    input: Annotated[str | None, typer.Option("--input", "-i", metavar="FILE", help="input file ('-' for stdin)")] = None,
    input_format: Annotated[Literal[INPUT_FORMATS], typer.Option(  # type: ignore[valid-type]
        "--input-format", help="format of --input")] = "text",
    types: Annotated[str | None, typer.Option(
        "--types", help="comma-separated subset of Disease,Chemical,Gene,Species")] = None,
    model: Model = "latest",
    format: Annotated[Literal[OUTPUT_FORMATS], typer.Option("--format", help="output format")] = "json",  # type: ignore[valid-type]
    output: Annotated[str | None, typer.Option(
        "--output", "-o", metavar="FILE", help="write here instead of stdout")] = None,
    overlap: Annotated[Literal["best", "all"], typer.Option(
        "--overlap", help="overlapping spans of different types: keep the higher score (best) or all")] = "best",
    consistency: Annotated[Literal["both", "abbreviations", "repeats", "none"], typer.Option(
        "--consistency", help="document-level rules: a tagged long form's abbreviation and a tagged name are "
        "tagged wherever else they occur in the document (both), one of them, or none")] = "both",
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="use this dataset's instruction (annotation style)")] = None,
    no_text: Annotated[bool, typer.Option("--no-text", help="omit document text from JSON output")] = False,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    link: Annotated[bool, typer.Option("--link", help="attach top-k KB concepts (CUIs) to each span")] = False,
    link_k: Annotated[int, typer.Option("--link-k", help="concepts per span with --link")] = 5,
    kb_snapshot: Annotated[str, typer.Option("--kb-snapshot", help="KB snapshot used by --link")] = "latest",
    remote: Annotated[str | None, typer.Option(
        "--remote", metavar="HOST:PORT", help="ask a running tagger service instead")] = None,
    **_: object,
) -> None:
    """Extract Disease/Chemical/Gene/Species mentions from text."""
    invoke(ctx, run_extract)


def models_command(ctx: typer.Context, json: Json = False, **_: object) -> None:
    """List registered model versions ('*' marks latest), or promote one to 'latest'."""
    if ctx.invoked_subcommand is None:
        invoke(ctx, run_models)


def promote_command(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="model version id", show_default=False)],
    json: Json = False,
    **_: object,
) -> None:
    """Make a version 'latest'."""
    invoke(ctx, run_promote)


def register(target: typer.Typer | argparse._SubParsersAction, *, linker: LinkerFactory | None = None) -> None:
    app = typer.Typer()
    command(app, eval_command, "eval", examples=[
        "vaner eval --dataset ncbi --split test --json          # strict entity P/R/F1 (0-100)",
        "vaner eval --data my_corpus.tsv --type Species --json  # any CoNLL file",
        "vaner eval --dataset bc5cdr-chem --model m-20261125-101500-ab12cd --max-sentences 200",
    ])
    command(app, extract_command, "extract", options=CLIENT_OPTIONS, inject={"make_linker": linker}, examples=[
        'vaner extract "BRCA1 mutations cause hereditary breast cancer in mice."',
        'vaner extract "Aspirin relieves headache." --types Disease,Chemical --link --link-k 3',
        "vaner extract --input abstracts.pubtator --input-format pubtator --format pubtator -o tagged.pubtator",
        "cat paper.txt | vaner extract --input - --format conll",
        "vaner extract --input paper.txt --remote tagger.example.org:50053 --tls-ca ca.pem --token-file token",
    ])
    models = new_app("models", "List registered model versions, or promote one to 'latest'.",
                     no_args_is_help=False, invoke_without_command=True,
                     examples=["vaner models", "vaner models --json", "vaner models promote m-20261125-101500-ab12cd"])
    callback(models, models_command)
    command(models, promote_command, "promote", examples=["vaner models promote m-20261125-101500-ab12cd --json"])
    app.add_typer(models)
    attach(target, app)


# ---- helpers ------------------------------------------------------------------------------------
def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InvalidArgument(f"{name} must be >= 1, got {value}")


def _model(settings, ref: str):  # noqa: ANN001, ANN202 - tagger.registry.ModelRecord
    """A version id, ``latest`` or a saved model folder (the user's own files)."""
    from tagger.registry import ModelRegistry, resolve_model

    return resolve_model(ref, lambda: ModelRegistry(settings), allow_path=True)


# ---- eval ---------------------------------------------------------------------------------------
def run_eval(args: argparse.Namespace) -> int:
    from tagger.evaluate import evaluate
    from tagger.extract import load_for_inference
    from vaner.corpus import DATASETS, load_dataset, read_conll

    if (args.dataset is None) == (args.data is None):
        raise InvalidArgument("give --dataset NAME or --data PATH.tsv (one of them)")
    _positive("--batch-size", args.batch_size)
    _positive("--max-sentences", args.max_sentences)
    settings = settings_from_args(args)
    if args.dataset:
        if args.type:
            raise InvalidArgument("--type goes with --data; a shared dataset has its own type")
        info = DATASETS.get(args.dataset)
        sentences = load_dataset(info.name, args.split, args.data_dir)
        target = {"dataset": info.name, "split": args.split}
    else:
        sentences = read_conll(args.data, Category.parse(args.type) if args.type else None)
        target = {"data": str(args.data)}
    if args.max_sentences:
        sentences = sentences[: args.max_sentences]
    if not sentences:
        raise InvalidArgument("no sentences to evaluate")
    record = _model(settings, args.model)
    tagger = load_for_inference(record.artifact_path, args.device)
    bar = ProgressBars(enabled=True, unit="sent")
    try:
        result = evaluate(tagger, sentences, batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    out = {**target, "model": record.id, **result}
    full_test = args.dataset and args.split == "test" and not args.max_sentences
    if record.registered and full_test and not args.no_store:
        from tagger.registry import ModelRegistry

        keep = {k: result[k] for k in ("precision", "recall", "f1", "support", "tp", "fp", "fn")}
        ModelRegistry(settings).update_metrics(record.id, {"test": {info.name: keep}})
        out["stored"] = True
    if args.json:
        print_json(out)
    else:
        print(f"{out.get('dataset') or out.get('data')}: P {out['precision']:.2f}  R {out['recall']:.2f}  "
              f"F1 {out['f1']:.2f}  (support {out['support']}, {out['sentences']} sentences, model {out['model']})")
    return 0


# ---- extract ------------------------------------------------------------------------------------
def _read_input(args: argparse.Namespace):  # noqa: ANN202
    from tagger.formats import read_documents, read_text

    if args.text is not None and args.input is not None:
        raise InvalidArgument("give either TEXT or --input FILE, not both")
    if args.text is None and args.input is None:
        raise InvalidArgument("nothing to extract from: give TEXT or --input FILE ('-' for stdin)")
    if args.text is not None:
        if args.input_format != "text":
            raise InvalidArgument("--input-format applies to --input; TEXT is always plain text")
        docs = read_text(args.text, "doc1")
    else:
        docs = read_documents(args.input, args.input_format)
    if not any(d.text.strip() for d in docs):
        raise InvalidArgument("empty text: nothing to extract from")
    return docs


def _linker(args: argparse.Namespace, settings: Settings) -> LinkFn:
    _positive("--link-k", args.link_k)
    make = getattr(args, "make_linker", None)
    if make is None:
        raise FailedPrecondition("--link needs the knowledge base and retrieval packages; run it as `vaner extract`")
    return make(settings, args.link_k, args.kb_snapshot)


def _extract_remote(args: argparse.Namespace, docs, cats):  # noqa: ANN001, ANN202
    """The documents with the entities (and, with ``--link``, the concepts) a tagger service found."""
    try:
        from clients.base import ClientOptions
        from clients.tagger import TaggerClient
    except ImportError as exc:
        raise FailedPrecondition(f"--remote needs the tagger client (clients/tagger.py): {exc}") from exc
    import dataclasses

    from tagger.formats import Entity

    if args.link:
        _positive("--link-k", args.link_k)
    client = TaggerClient(args.remote, ClientOptions.from_env(**client_flags(args)))
    try:
        result = client.extract([(d.id, d.text) for d in docs], categories=cats, link=args.link,
                                link_k=args.link_k if args.link else 0,
                                kb_snapshot=args.kb_snapshot if args.link else "")
    finally:
        client.close()
    return [dataclasses.replace(d, entities=tuple(Entity(e.start, e.end, e.text, e.type, e.score, tuple(e.concepts))
                                                  for e in r.entities))
            for d, r in zip(docs, result, strict=True)]


def run_extract(args: argparse.Namespace) -> int:
    from tagger.formats import write_documents

    _positive("--batch-size", args.batch_size)
    cats = Category.parse_list(args.types)
    if args.types is not None and not args.types.strip():
        raise InvalidArgument("--types is empty; use Disease,Chemical,Gene,Species or leave it out")
    docs = _read_input(args)
    settings = settings_from_args(args)
    if args.remote:
        if args.consistency != "both":
            raise InvalidArgument("--consistency is for local extraction; a tagger service applies both rules")
        out = _extract_remote(args, docs, cats)
    else:
        from tagger.consistency import Consistency
        from tagger.extract import Extractor, load_for_inference

        link = _linker(args, settings) if args.link else None
        record = _model(settings, args.model)
        extractor = Extractor(load_for_inference(record.artifact_path, args.device), batch_size=args.batch_size,
                              overlap=args.overlap, link=link, model_id=record.id,
                              consistency=Consistency.named(args.consistency))
        bar = ProgressBars(enabled=len(docs) > 1 or len(docs[0].text) > 5000, unit="query")
        try:
            out = extractor.extract(docs, cats, dataset=args.dataset, progress=bar)
        finally:
            bar.close()
        stats = extractor.last_stats
        if stats and stats.empty_documents:
            print(f"note: skipped {stats.empty_documents} empty document(s)", file=sys.stderr)
    text = write_documents(out, args.format, include_text=not args.no_text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


# ---- models -------------------------------------------------------------------------------------
def run_models(args: argparse.Namespace) -> int:
    from tagger.registry import ModelRegistry

    records = ModelRegistry(settings_from_args(args)).list()
    if args.json:
        print_json([r.to_json() for r in records])
        return 0
    if not records:
        print("no model versions registered (train one with `vaner train`; the bundled default registers "
              "itself on first use)")
        return 0
    for r in records:
        f1 = {k: v.get("f1") for k, v in (r.metrics.get("test") or {}).items() if isinstance(v, dict)}
        scores = " ".join(f"{k}={v:.1f}" for k, v in f1.items() if isinstance(v, (int, float)))
        print(f"{'*' if r.latest else ' '} {r.id}  {r.backbone}  {','.join(r.datasets) or '-'}  "
              f"{r.created_at:%Y-%m-%d %H:%M}  {scores}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from tagger.registry import ModelRegistry

    record = ModelRegistry(settings_from_args(args)).promote(args.id)
    if args.json:
        print_json(record.to_json())
    else:
        print(f"{record.id} is now latest")
    return 0
