"""``vaner train``: multi-dataset instruction tuning from the command line, then registration of
the best model as a new version (promoted to ``latest`` with ``--promote`` or when it is the first).

``--dbr`` mixes in DBR sentences, which the retrieval package builds (above this one): the ``vaner``
dispatcher injects a :data:`DbrSentences` (``register(app, dbr_sentences=...)``), the same code
``vaner retrain`` uses, so nothing here imports retrieval.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Annotated, Literal

import typer

from tagger.config import TaggerConfig, TrainConfig
from vaner.categories import Category
from vaner.cli_common import attach, command, invoke, option, print_json, settings_from_args
from vaner.corpus import DATASETS, Sentence
from vaner.errors import FailedPrecondition, InvalidArgument
from vaner.progress import ProgressBars, ProgressCallback
from vaner.settings import Settings


def _help(cls, name: str) -> str:  # noqa: ANN001
    f = cls.__dataclass_fields__[name]
    default = f.default if f.default is not dataclasses.MISSING else None
    return f"{f.metadata.get('help', '')} (default: {default})"


# (settings, KB snapshot ref, datasets, mode, seed, data dir, progress) -> (snapshot id, DBR sentences)
DbrSentences = Callable[[Settings, str, list[str], str, int, "str | None", ProgressCallback], tuple[str, list[Sentence]]]


MODEL_FIELDS = ("backbone", "attention", "num_layers", "max_length", "lora_r", "lora_alpha", "lora_dropout",
                "quantize_4bit", "multi_type")
TRAIN_FIELDS = ("epochs", "steps_per_epoch", "batch_size", "grad_accum", "lr", "head_lr", "warmup_ratio",
                "lr_schedule", "mix_temperature", "free_instruction_share", "dbr_ratio", "dbr_budget", "eval_every",
                "patience", "dev_max_sentences", "seed", "checkpoint_every", "threads", "device")


def _field_options(cls, names: tuple[str, ...], panel: str) -> list:  # noqa: ANN001
    """One flag per config field, typed and helped from the dataclass (its one home)."""
    out = []
    for name in names:
        f = cls.__dataclass_fields__[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(f.default, bool):
            out.append(option(name, bool, False, flag, help=_help(cls, name), panel=panel))
        else:
            out.append(option(name, _caster(f.default) | None, None, flag, help=_help(cls, name), panel=panel))
    return out


def train_command(
    ctx: typer.Context,
    datasets: Annotated[str, typer.Option("--datasets", help=f"comma-separated: {','.join(DATASETS.names())}")] = "",
    data_dir: Annotated[str | None, typer.Option(
        "--data-dir", help="folder of the shared datasets (default ../shared/data/bioner)")] = None,
    train: Annotated[list[str], typer.Option("--train", metavar="PATH.tsv", help="extra CoNLL training file")] = (),
    type: Annotated[list[str], typer.Option(
        "--type", metavar="TYPE", help="entity type of each --train file (one per --train, or one for all)")] = (),
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", help="run folder (default: $VANER_HOME/runs/<timestamp>)")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", metavar="MODEL", help="warm start: continue from a saved model's adapter and head (version id, "
                                             "'latest' or folder); its backbone, layers, LoRA shape and instruction "
                                             "are kept")] = None,
    no_resume: Annotated[bool, typer.Option(
        "--no-resume", help="start afresh even if the run folder has a checkpoint")] = False,
    dbr: Annotated[Literal["none", "retrieved", "random"], typer.Option(
        "--dbr", help="mix Dense Bioentities Recognition sentences built from a KB snapshot")] = "none",
    kb_snapshot: Annotated[str, typer.Option("--kb-snapshot", help="KB snapshot for --dbr (id or latest)")] = "latest",
    no_register: Annotated[bool, typer.Option(
        "--no-register", help="do not register the result as a model version")] = False,
    promote: Annotated[bool, typer.Option("--promote", help="make the new version 'latest'")] = False,
    json: Annotated[bool, typer.Option("--json", help="print one JSON object with the result")] = False,
    lora_targets: Annotated[str | None, typer.Option("--lora-targets", help="comma-separated module names",
                                                     rich_help_panel="Model")] = None,
    dev_datasets: Annotated[str | None, typer.Option(
        "--dev-datasets", help="comma-separated subset of --datasets whose dev split picks the best model "
                               "(default: all)", rich_help_panel="Training")] = None,
    mix_weight: Annotated[list[str], typer.Option(
        "--mix-weight", metavar="NAME=FACTOR", rich_help_panel="Training",
        help="scale one source's sampling probability (repeatable), e.g. bionlp09-gene=0.5")] = (),
    instruction: Annotated[Literal["paper", "compact"] | None, typer.Option(
        "--instruction", rich_help_panel="Model",
        help="instruction wording, saved with the model: paper (VANER's) or compact (~6 tokens)")] = None,
    **_: object,
) -> None:
    """LoRA-train the tagger on datasets (+ optional DBR sentences) and register the best model."""
    invoke(ctx, run_train)


def register(target: typer.Typer | argparse._SubParsersAction, *, dbr_sentences: DbrSentences | None = None) -> None:
    app = typer.Typer()
    command(app, train_command, "train", options=[*_field_options(TaggerConfig, MODEL_FIELDS, "Model"),
                                 *_field_options(TrainConfig, TRAIN_FIELDS, "Training")],
            inject={"dbr_sentences": dbr_sentences}, examples=[
                "vaner train --datasets ncbi,bc5cdr-disease --data-dir ../shared/data/bioner",
                "vaner train --train my.tsv --type Species --epochs 2 --json",
                "vaner train --train genes.tsv --type Gene --train chems.tsv --type Chemical",
                "vaner train --datasets ncbi,bionlp09-gene --mix-weight bionlp09-gene=0.5 --instruction compact",
                "vaner train --datasets ncbi,bc5cdr-chem,bc2gm,s800 --multi-type   # all four types in one pass",
                "vaner train --datasets ncbi,s800 --dbr retrieved --kb-snapshot latest --promote",
                "vaner train --datasets ncbi --init-from latest --epochs 1     # warm start",
            ])
    attach(target, app)


def _caster(default):  # noqa: ANN001, ANN202
    if isinstance(default, bool):
        return None
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if default is None:
        return int
    return str


def model_settings(args: argparse.Namespace, warm_multi_type: bool = False) -> dict:
    """The model settings the user gave on the command line (and only those). ``--instruction``
    names a wording; its form follows the model's kind (``--multi-type``, or the kind of the model a
    warm start continues, ``warm_multi_type``)."""
    model_kw = {k: getattr(args, k) for k in ("backbone", "attention", "num_layers", "max_length", "lora_r",
                                               "lora_alpha", "lora_dropout") if getattr(args, k) is not None}
    if args.quantize_4bit:
        model_kw["quantize_4bit"] = True
    multi_type = bool(getattr(args, "multi_type", False))
    if multi_type:
        model_kw["multi_type"] = True
    if getattr(args, "instruction", None):
        from tagger.instructions import InstructionTemplate

        model_kw["template"] = InstructionTemplate.named(args.instruction, multi_type=multi_type or warm_multi_type)
    if args.lora_targets:
        model_kw["lora_targets"] = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    return model_kw


def build_train_config(args: argparse.Namespace, output_dir: str) -> TrainConfig:
    model_kw = model_settings(args)
    types = args.type
    if args.train and len(types) not in (1, len(args.train)):
        raise InvalidArgument("give one --type for all --train files, or one per --train file")
    if args.train and not types:
        raise InvalidArgument("--train needs --type (Disease, Chemical, Gene or Species)")
    files = tuple((path, Category.parse(types[0] if len(types) == 1 else types[i]).value)
                  for i, path in enumerate(args.train))
    datasets = tuple(d.name for d in DATASETS.parse_list(args.datasets)) if args.datasets else ()
    train_kw = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k) is not None}
    weights = []
    for item in getattr(args, "mix_weight", []) or []:
        name, sep, factor = item.partition("=")
        try:
            weights.append((name.strip(), float(factor)))
        except ValueError:
            raise InvalidArgument(f"--mix-weight {item!r}: expected NAME=FACTOR") from None
        if not sep:
            raise InvalidArgument(f"--mix-weight {item!r}: expected NAME=FACTOR")
    if getattr(args, "dev_datasets", None):
        train_kw["dev_datasets"] = tuple(d.name for d in DATASETS.parse_list(args.dev_datasets))
    return TrainConfig(datasets=datasets, train_files=files, data_dir=args.data_dir, output_dir=output_dir,
                       model=TaggerConfig(**model_kw), mix_weights=tuple(weights), **train_kw)


def _warm_start(settings, args: argparse.Namespace, config: TrainConfig):  # noqa: ANN001, ANN202
    """Continue training a saved model (tagger/warm_start.py): its model settings are kept, and
    flags that disagree with them are refused."""
    from tagger.model import read_saved_config
    from tagger.registry import ModelRegistry, resolve_model
    from tagger.warm_start import load_trainable, warm_start_config, widen_to_multi_type

    artifact = resolve_model(args.init_from, lambda: ModelRegistry(settings), allow_path=True).artifact_path
    saved_multi_type = read_saved_config(artifact).multi_type
    given = model_settings(args, warm_multi_type=saved_multi_type)
    model_config = warm_start_config(artifact, given, source=f"--init-from {args.init_from}", hint="drop those flags",
                                     widen=True)
    config = dataclasses.replace(config, model=model_config)
    model = load_trainable(artifact, device=config.device)
    if model_config.multi_type and not saved_multi_type:  # a single-type model seeds a multi-type one
        model = widen_to_multi_type(model, model_config)
    return config, model


def run_train(args: argparse.Namespace) -> int:
    import time

    from tagger.train import command_line, train

    settings = settings_from_args(args).ensure()
    output_dir = args.output_dir or str(settings.runs_dir / time.strftime("%Y%m%d-%H%M%S"))
    config = build_train_config(args, output_dir)
    init_model = None
    if getattr(args, "init_from", None):
        config, init_model = _warm_start(settings, args, config)
    extra = []
    kb_snapshot = None
    with ProgressBars(enabled=True, unit="step") as bar:
        if args.dbr != "none":
            make = getattr(args, "dbr_sentences", None)
            if make is None:
                raise FailedPrecondition("--dbr needs the retrieval package; run it as `vaner train`")
            kb_snapshot, extra = make(settings, args.kb_snapshot, list(config.datasets), args.dbr, config.seed,
                                      config.data_dir, bar)
        result = train(config, extra_sentences=extra, progress=bar, resume=not args.no_resume, model=init_model)
    out = {"run_dir": str(result.run_dir), "artifact": str(result.artifact_dir), "dev": result.dev_metrics,
           "steps": result.steps, "tokens_per_second": round(result.tokens_per_second, 1)}
    if not args.no_register:
        from tagger.registry import ModelRegistry

        registry = ModelRegistry(settings)
        first = not registry.list()
        record = registry.register(
            result.artifact_dir, backbone=config.model.backbone,
            datasets=list(config.datasets) + [p for p, _ in config.train_files] + (["dbr:" + args.dbr] if extra else []),
            template=config.model.template.to_dict(), hyperparameters=config.to_dict(),
            metrics={"dev": result.dev_metrics}, command=command_line(), kb_snapshot=kb_snapshot,
            promote=args.promote or first)
        out["model"] = record.id
        out["latest"] = args.promote or first
    if args.json:
        print_json(out)
    else:
        print(f"best dev macro F1 {result.dev_metrics.get('f1', 0):.2f}; model {out.get('model', out['artifact'])}")
    return 0
