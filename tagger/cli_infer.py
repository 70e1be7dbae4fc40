"""``vaner eval``, ``vaner extract`` and ``vaner models``: the inference side of the tagger CLI.

Bad input (empty text, unknown type, unknown model version, a malformed file) is checked before
the model loads, so the user gets a one-line error in milliseconds instead of after ~15 s.
``--model`` takes a registry version id, ``latest``, or the path of a saved model folder.
``--link`` needs the knowledge base and retrieval packages, which sit above this one: the ``vaner``
dispatcher injects a :data:`LinkerFactory` (``register(sub, linker=...)``), so nothing here imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tagger.formats import INPUT_FORMATS, OUTPUT_FORMATS
from vaner.categories import Category
from vaner.cli_common import add_client_args, client_flags, print_json, settings_from_args
from vaner.errors import FailedPrecondition, InvalidArgument
from vaner.progress import TqdmProgress
from vaner.settings import Settings

if TYPE_CHECKING:  # tagger.extract imports torch; the CLI checks input before that
    from tagger.extract import LinkFn


# (settings, k, KB snapshot) -> a tagger.extract.LinkFn; called before the model loads, so a missing
# snapshot fails in milliseconds.
LinkerFactory = Callable[[Settings, int, str], "LinkFn"]


def register(sub, *, linker: LinkerFactory | None = None) -> None:  # noqa: ANN001 - argparse subparsers action
    p = sub.add_parser("eval", help="strict entity-level P/R/F1 of a model on a dataset or CoNLL file")
    p.add_argument("--model", default="latest", help="version id, 'latest', or a saved model folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="shared dataset name (ncbi, bc5cdr-disease, bc5cdr-chem, bc2gm, ...)")
    src.add_argument("--data", metavar="PATH.tsv", help="any CoNLL file (token<TAB>tag)")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="split of --dataset")
    p.add_argument("--type", default=None, help="entity type of --data (default: from its tags)")
    p.add_argument("--data-dir", default=None, help="folder of the shared datasets")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-sentences", type=int, default=None, help="evaluate on the first N sentences only")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-store", action="store_true", help="do not record test metrics in the registry")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("extract", help="extract Disease/Chemical/Gene/Species mentions from text")
    p.add_argument("text", nargs="?", default=None, help="text to tag (or use --input)")
    p.add_argument("--input", "-i", default=None, metavar="FILE", help="input file ('-' for stdin)")
    p.add_argument("--input-format", default="text", choices=INPUT_FORMATS)
    p.add_argument("--types", default=None, help="comma-separated subset of Disease,Chemical,Gene,Species")
    p.add_argument("--model", default="latest", help="version id, 'latest', or a saved model folder")
    p.add_argument("--format", default="json", choices=OUTPUT_FORMATS, help="output format")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--overlap", default="best", choices=("best", "all"),
                   help="overlapping spans of different types: keep the higher score (best) or all")
    p.add_argument("--dataset", default=None, help="use this dataset's instruction (annotation style)")
    p.add_argument("--no-text", action="store_true", help="omit document text from JSON output")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--link", action="store_true", help="attach top-k KB concepts (CUIs) to each span")
    p.add_argument("--link-k", type=int, default=5)
    p.add_argument("--kb-snapshot", default="latest", help="KB snapshot used by --link")
    p.add_argument("--remote", default=None, metavar="HOST:PORT", help="ask a running tagger service instead")
    add_client_args(p)
    p.set_defaults(func=run_extract, make_linker=linker)

    p = sub.add_parser("models", help="list registered model versions, or promote one to 'latest'")
    p.add_argument("--json", action="store_true", help="print one JSON value")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pp = msub.add_parser("promote", help="make a version 'latest'")
    pp.add_argument("id")
    pp.add_argument("--json", action="store_true", help="print one JSON value")
    pp.set_defaults(func=run_promote)
    p.set_defaults(func=run_models)


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
    bar = TqdmProgress(enabled=True, unit="sent")
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
    try:
        from clients.base import ClientOptions
        from clients.tagger import TaggerClient
    except ImportError as exc:
        raise FailedPrecondition(f"--remote needs the tagger client (clients/tagger.py): {exc}") from exc
    import dataclasses
    import inspect

    from tagger.formats import Entity

    client = TaggerClient(args.remote, ClientOptions.from_env(**client_flags(args)))
    kwargs: dict = {"categories": cats}
    if args.link:
        params = inspect.signature(client.extract).parameters
        if "link" not in params:
            raise FailedPrecondition("--link with --remote is not supported by this tagger client; "
                                     "drop --remote to link in-process")
        kwargs.update(link=True, link_k=args.link_k, kb_snapshot=args.kb_snapshot)
    try:
        result = client.extract([(d.id, d.text) for d in docs], **kwargs)
    finally:
        close = getattr(client, "close", None)
        if close:
            close()
    remote_docs = result[0] if isinstance(result, tuple) else result
    out = []
    for d, r in zip(docs, remote_docs, strict=True):
        ents = r.get("entities") if isinstance(r, dict) else r.entities
        conv = []
        for e in ents or ():
            g = e.get if isinstance(e, dict) else (lambda k, default=None, e=e: getattr(e, k, default))
            t = g("type") or g("category")
            conv.append(Entity(int(g("start")), int(g("end")), str(g("text")), getattr(t, "value", str(t)),
                               float(g("score", 0.0) or 0.0), tuple(g("concepts", ()) or ())))
        out.append(dataclasses.replace(d, entities=tuple(conv)))
    return out


def run_extract(args: argparse.Namespace) -> int:
    from tagger.formats import write_documents

    _positive("--batch-size", args.batch_size)
    cats = Category.parse_list(args.types)
    if args.types is not None and not args.types.strip():
        raise InvalidArgument("--types is empty; use Disease,Chemical,Gene,Species or leave it out")
    docs = _read_input(args)
    settings = settings_from_args(args)
    if args.remote:
        out = _extract_remote(args, docs, cats)
    else:
        from tagger.extract import Extractor, load_for_inference

        link = _linker(args, settings) if args.link else None
        record = _model(settings, args.model)
        extractor = Extractor(load_for_inference(record.artifact_path, args.device), batch_size=args.batch_size,
                              overlap=args.overlap, link=link, model_id=record.id)
        bar = TqdmProgress(enabled=len(docs) > 1 or len(docs[0].text) > 5000, unit="query")
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
