"""``vaner dbr build|list`` and ``vaner retrain``: registered on the ``vaner`` dispatcher; plus what
the dispatcher injects into the tagger's commands (``extract --link``, ``train --dbr``), which need
the KB and DBR code of this package."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Annotated, Any, Literal

import typer

from vaner.cli_common import (
    CLIENT_OPTIONS,
    JSON_HELP,
    attach,
    client_flags,
    command,
    invoke,
    new_app,
    option,
    print_json,
    settings_from_args,
)
from vaner.corpus import DATASETS, Sentence
from vaner.errors import InvalidArgument, Unavailable, VanerError
from vaner.progress import ProgressBars, ProgressCallback
from vaner.settings import Settings

TRAIN_FLAGS: list[tuple[str, type, str, str | None]] = [
    # flag, type, help, target ("model." prefix for TaggerConfig fields)
    ("--epochs", int, "training epochs", "epochs"),
    ("--steps-per-epoch", int, "optimizer steps per epoch", "steps_per_epoch"),
    ("--batch-size", int, "sentences per micro-batch", "batch_size"),
    ("--grad-accum", int, "micro-batches per optimizer step", "grad_accum"),
    ("--lr", float, "LoRA learning rate", "lr"),
    ("--dbr-ratio", float, "DBR sentences per dataset sentence, at most", "dbr_ratio"),
    ("--dev-max-sentences", int, "dev sentences per dataset per evaluation", "dev_max_sentences"),
    ("--threads", int, "torch CPU threads", "threads"),
    ("--device", str, "auto, cpu or cuda", "device"),
    ("--backbone", str, "backbone alias, path or hub id", "model.backbone"),
    ("--num-layers", int, "keep only the first N decoder layers", "model.num_layers"),
    ("--max-length", int, "max tokens per input", "model.max_length"),
]


def _parse_set(values: list[str], flag: str = "--set") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig overrides from flags; ``model.x`` keys go into a partial dict of model settings.
    Unknown keys are refused by :class:`RetrainRequest`, before any KB or DBR work."""
    flat: dict[str, Any] = {}
    for flag, _t, _h, target in TRAIN_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and target:
            flat[target] = value
    flat.update(_parse_set(args.set))
    out: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("model."):
            model[key[len("model."):]] = value
        else:
            out[key] = value
    if model:  # only what was given: a warm start checks these against the model it continues
        out["model"] = model
    return out


def _datasets(value: str) -> list[str]:
    return [d.name for d in DATASETS.parse_list(value)]


def _client_options(args: argparse.Namespace):  # noqa: ANN202 - clients.ClientOptions
    from clients.base import ClientOptions

    return ClientOptions.from_env(**client_flags(args))


def _progress(args: argparse.Namespace) -> ProgressBars:
    return ProgressBars(enabled=not args.json and sys.stderr.isatty() or getattr(args, "progress", False))


def cmd_dbr_build(args: argparse.Namespace) -> int:
    from retrieval.dbr import DbrBuilder, DbrParams
    from retrieval.remote import build_dbr_remote

    settings = settings_from_args(args).ensure()
    params = DbrParams(mode=args.mode, seed=args.seed, max_positive=args.max_positive,
                       max_negative=args.max_negative, top_k=args.top_k, corpus_agreement=args.corpus_agreement,
                       max_uses=args.max_uses)
    bar = _progress(args)
    try:
        if args.retrieval_address:
            s = build_dbr_remote(args.retrieval_address, settings, _datasets(args.datasets), params,
                                 args.kb_snapshot, args.data_dir, bar, options=_client_options(args))
        else:
            from kb_ingest.kb import KnowledgeBase

            s = DbrBuilder(settings, KnowledgeBase(settings)).build(
                _datasets(args.datasets), params, snapshot=args.kb_snapshot, data_dir=args.data_dir,
                progress=bar, force=args.force)
    finally:
        bar.close()
    info = {"id": s.id, "path": str(s.path), "sentences": s.sentences, "snapshot": s.snapshot,
            "cached": s.cached, "counts": s.manifest.get("counts"), "build_seconds": s.manifest.get("build_seconds")}
    if args.json:
        print_json(info)
    else:
        c = s.manifest.get("counts", {})
        print(f"DBR set {s.id} ({'cached' if s.cached else 'built'}): {s.sentences} sentences from "
              f"{c.get('training_sentences')} training sentences, {c.get('positives')} positive / "
              f"{c.get('negatives')} negative entities; KB snapshot {s.snapshot}\n{s.path}")
    return 0


def cmd_dbr_list(args: argparse.Namespace) -> int:
    from retrieval.dbr import list_sets

    sets = list_sets(settings_from_args(args))
    if args.json:
        print_json(sets)
    else:
        for m in sets:
            print(f"{m['id']}\t{m['snapshot']}\t{','.join(m['datasets'])}\t{m['counts'].get('sentences')}\t"
                  f"{m['created_at']}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from retrieval.remote import remote_dbr_source, tagger_notifier
    from retrieval.retrain import Retrainer, RetrainRequest

    settings = settings_from_args(args).ensure()
    request = RetrainRequest(
        kb_snapshot=args.kb_snapshot, datasets=tuple(_datasets(args.datasets)) if args.datasets else None,
        dbr_mode=args.dbr, promote_margin=args.promote_margin, seed=args.seed, dbr_seed=args.dbr_seed,
        data_dir=args.data_dir, output_dir=args.output_dir, train_overrides=train_overrides(args),
        dbr_params=_parse_set(args.dbr_set, "--dbr-set"),
        from_scratch=args.from_scratch, warm_fraction=args.warm_fraction,
        gate_sentences=args.gate_sentences or None, gate_seed=args.gate_seed,
        command=" ".join(["vaner", *map(shlex.quote, sys.argv[1:])]))
    options = _client_options(args)
    retrainer = Retrainer(settings, notifier=tagger_notifier(args.tagger_address, options),
                          dbr_source=remote_dbr_source(args.retrieval_address, settings, options))
    bar = _progress(args)
    try:
        outcome = retrainer.run(request, progress=bar)
    finally:
        bar.close()
    if args.json:
        print_json(outcome.to_dict())
    else:
        d = outcome.to_dict()
        if outcome.gate is not None and outcome.gate.rows:
            print("\n".join(outcome.gate.lines()[:-1]))
        start = f"warm start from {d['warm_start']}" if d["warm_start"] else "from scratch"
        print(f"model {d['model']} registered ({start}, KB snapshot {d['snapshot']}, DBR {d['dbr_set'] or 'none'}); "
              f"{'PROMOTED to latest' if d['promoted'] else 'NOT promoted'}: {d['reason']}"
              + (f"; tagger service: {d['notified']}" if d["notified"] else ""))
    err = outcome.notify_error
    if err is not None:  # promoted, but the tagger serves something else: not a success
        raise err if isinstance(err, VanerError) else Unavailable(f"the tagger did not load the new model: {err}")
    return 0


def kb_linker(settings: Settings, k: int, snapshot: str):  # noqa: ANN201 - tagger.formats.LinkFn
    """``vaner extract --link``: link spans against the local knowledge base."""
    from kb_ingest.kb import KnowledgeBase
    from retrieval.linking import snapshot_linker

    return snapshot_linker(KnowledgeBase(settings), k, snapshot)


def training_dbr(settings: Settings, snapshot: str, datasets: list[str], mode: str, seed: int,
                 data_dir: str | None, progress: ProgressCallback | None) -> tuple[str, list[Sentence]]:
    """``vaner train --dbr``: (snapshot id, DBR sentences), built by the Retrainer's own code."""
    from retrieval.retrain import Retrainer

    retrainer = Retrainer(settings)
    snapshot_id = str(retrainer.kb.get_snapshot(snapshot).id)
    dbr = retrainer.dbr_set(snapshot_id, datasets, mode, seed, data_dir, progress=progress)
    return snapshot_id, dbr.load() if dbr is not None else []


COMMON_OPTIONS = [
    option("kb_snapshot", str, "latest", "--kb-snapshot", help="KB snapshot id or 'latest'"),
    option("datasets", str, "ncbi,s800", "--datasets", help="comma-separated dataset names"),
    option("data_dir", str | None, None, "--data-dir", help="folder of the datasets (default $VANER_DATA_DIR or shared)"),
    option("retrieval_address", str | None, None, "--retrieval-address",
           help="build DBR on a retrieval service (host:port; default $VANER_RETRIEVAL_ADDRESS, else in-process)"),
    option("json", bool, False, "--json", help="print one JSON object"),
    option("progress", bool, False, "--progress", help="show progress bars even when not a terminal"),
    *CLIENT_OPTIONS,
]
RETRAIN_OPTIONS = [
    option("datasets", str | None, None, "--datasets",
           help="comma-separated dataset names to train on (default: the current model's datasets)")
    if o.name == "datasets" else o for o in COMMON_OPTIONS]


def dbr_build_command(
    ctx: typer.Context,
    mode: Annotated[Literal["retrieved", "random"], typer.Option(
        "--mode", help="retrieved (paper) or random entities at the same counts (ablation)")] = "retrieved",
    seed: Annotated[int, typer.Option("--seed", help="sampling seed")] = 0,
    max_positive: Annotated[int, typer.Option("--max-positive", help="entities of the sentence's type")] = 10,
    max_negative: Annotated[int, typer.Option("--max-negative", help="entities of other types")] = 5,
    top_k: Annotated[int, typer.Option("--top-k", help="KB entities per query phrase")] = 5,
    corpus_agreement: Annotated[float, typer.Option(
        "--corpus-agreement", help="drop entities whose DBR label the training split contradicts (e.g. 0.5: "
        "a positive the annotators tag in under half of its occurrences); 0: keep all, as the paper")] = 0.0,
    max_uses: Annotated[int, typer.Option(
        "--max-uses", help="DBR sentences one KB name may appear in (0: no limit, as the paper; 1 with a larger "
        "--top-k spreads the set over many distinct names, see docs/dbr.md)")] = 0,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when a cached set matches")] = False,
    **_: object,
) -> None:
    """Mine phrases, retrieve KB entities, assemble DBR sentences (cached)."""
    invoke(ctx, cmd_dbr_build)


def dbr_list_command(ctx: typer.Context, json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
                     **_: object) -> None:
    """Cached DBR sets."""
    invoke(ctx, cmd_dbr_list)


def retrain_command(
    ctx: typer.Context,
    dbr: Annotated[Literal["retrieved", "random", "none"], typer.Option(
        "--dbr", help="DBR mode mixed into training")] = "retrieved",
    from_scratch: Annotated[bool, typer.Option(
        "--from-scratch", help="train a new adapter and head instead of continuing the current model's")] = False,
    warm_fraction: Annotated[float, typer.Option(
        "--warm-fraction", help="a warm start trains one epoch of this share of the current model's training "
                                "steps (--epochs/--steps-per-epoch override)")] = 0.1,
    promote_margin: Annotated[float, typer.Option(
        "--promote-margin", help="promote only if no dataset's dev F1 drops by more than this many points and "
                                 "the macro F1 does not drop")] = 0.5,
    gate_sentences: Annotated[int, typer.Option(
        "--gate-sentences", help="dev sentences per dataset both models are scored on (0 = whole splits)")] = 300,
    gate_seed: Annotated[int, typer.Option("--gate-seed", help="seed of the gate's dev sample")] = 0,
    tagger_address: Annotated[str | None, typer.Option(
        "--tagger-address", help="tagger service to LoadModel the promoted version (default $VANER_TAGGER_ADDRESS)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="training seed")] = 13,
    dbr_seed: Annotated[int | None, typer.Option("--dbr-seed", help="DBR sampling seed (default: --seed)")] = None,
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", help="run folder (default VANER_HOME/runs/retrain-...)")] = None,
    set: Annotated[list[str], typer.Option(
        "--set", metavar="KEY=VALUE", rich_help_panel="Training overrides",
        help="any TrainConfig field (model.x for TaggerConfig), JSON values; repeatable")] = (),
    dbr_set: Annotated[list[str], typer.Option(
        "--dbr-set", metavar="KEY=VALUE",
        help="a DBR setting (max_positive, max_negative, top_k, corpus_agreement, max_uses), JSON values; "
             "repeatable")] = (),
    **_: object,
) -> None:
    """Continue the current model on fresh DBR (or train anew), gate it against the current model on every
    dataset, register, promote if not worse."""
    invoke(ctx, cmd_retrain)


def register(target: typer.Typer | argparse._SubParsersAction) -> None:
    app = typer.Typer()
    dbr = new_app("dbr", "Dense Bioentities Recognition sets (paper 3.4).", examples=[
        "vaner dbr build --kb-snapshot latest --datasets ncbi,s800",
        "vaner dbr list --json",
    ])
    command(dbr, dbr_build_command, "build", options=COMMON_OPTIONS, examples=[
        "vaner dbr build --kb-snapshot latest --datasets ncbi,s800",
        "vaner dbr build --datasets ncbi --mode random --seed 1 --json     # the ablation",
        "vaner dbr build --datasets ncbi --retrieval-address 127.0.0.1:50052 --token-file token",
    ])
    command(dbr, dbr_list_command, "list", examples=["vaner dbr list --json"])
    app.add_typer(dbr)
    train_options = [option(flag[2:].replace("-", "_"), typ | None, None, flag, help=help_, panel="Training overrides")
                     for flag, typ, help_, _target in TRAIN_FLAGS]
    command(app, retrain_command, "retrain", options=[*RETRAIN_OPTIONS, *train_options], examples=[
        "vaner retrain --kb-snapshot latest --datasets ncbi     # old model keeps serving; promoted only if not worse",
        "vaner retrain --datasets ncbi,s800 --epochs 2 --num-layers 8 --set lr=0.0002 --set model.lora_r=16",
        "vaner retrain --dbr-set top_k=20 --dbr-set max_uses=1     # breadth DBR (docs/dbr.md)",
        "vaner retrain --retrieval-address 127.0.0.1:50052 --tagger-address 127.0.0.1:50053 --token-file token",
    ])
    attach(target, app)
