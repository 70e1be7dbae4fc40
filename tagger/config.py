"""Typed, self-validating configs for the tagger model and its training (peft-style dataclasses:
each field's help text lives in its metadata and the CLI reads it from there).

Unknown keys are refused, never dropped: a misspelt ``--set lr_head=0.01`` or a config_json key
that silently did nothing would train a different model than the one asked for. Saved model
configs are the one tolerant path (:meth:`TaggerConfig.from_saved`): a key missing from an old
file takes its default (a field added later must default to the old behaviour), a key listed in
:data:`RETIRED_MODEL_KEYS` (a field a later release removed) is ignored, and any other unknown
key is refused, because it means a newer vaner saved the model and dropping a setting it relies
on could serve different entities without a word.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tagger.instructions import InstructionTemplate
from vaner.errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# TaggerConfig fields that older releases saved and this one no longer has: name -> why it is safe
# to ignore. Add an entry in the same commit that removes a field. Empty: no field was removed yet.
RETIRED_MODEL_KEYS: dict[str, str] = {}


def check_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Refuse keys that are not fields of the dataclass ``cls``, naming them and the known ones."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise InvalidArgument(f"unknown {what} {', '.join(map(repr, unknown))}; known: {', '.join(known)}")


@dataclass(frozen=True)
class TaggerConfig:
    backbone: str = field(default="smollm2-135m", metadata={"help": "alias, local dir, .gguf file or hub id"})
    attention: str = field(default="bidirectional", metadata={"help": "bidirectional (VANER) or causal (ablation)"})
    num_layers: int | None = field(default=None, metadata={"help": "keep only the first N decoder layers"})
    max_length: int = field(default=128, metadata={"help": "max tokens per input (instruction + sentence)"})
    lora_r: int = field(default=12, metadata={"help": "LoRA rank (VANER: 12)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (VANER: 32)"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (VANER: 0.1)"})
    lora_targets: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS, metadata={"help": "module names"})
    quantize_4bit: bool = field(default=False, metadata={"help": "QLoRA 4-bit base (needs CUDA + bitsandbytes)"})
    head_dropout: float = field(default=0.1, metadata={"help": "dropout before the O/B/I head"})
    multi_type: bool = field(default=False, metadata={"help": (
        "one O/B/I head per category and an instruction that names no type: one forward pass per sentence "
        "tags Disease, Chemical, Gene and Species at once, instead of one pass per (sentence, type)")})
    # The paper wording by default; for a multi-type model its multi-type form (instructions.py).
    template: InstructionTemplate = field(default_factory=InstructionTemplate)

    def __post_init__(self) -> None:
        if self.attention not in ("bidirectional", "causal"):
            raise InvalidArgument(f"attention must be 'bidirectional' or 'causal', not {self.attention!r}")
        if self.num_layers is not None and self.num_layers < 1:
            raise InvalidArgument("num_layers must be >= 1")
        if not 16 <= self.max_length <= 8192:
            raise InvalidArgument("max_length must be between 16 and 8192")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise InvalidArgument("LoRA needs r >= 1, alpha >= 1 and 0 <= dropout < 1")
        if isinstance(self.template, dict):
            object.__setattr__(self, "template", InstructionTemplate.from_dict(self.template))
        if not isinstance(self.multi_type, bool):
            raise InvalidArgument(f"multi_type must be true or false, not {self.multi_type!r}")
        if self.multi_type and self.template == InstructionTemplate():
            object.__setattr__(self, "template", InstructionTemplate.named("paper", multi_type=True))
        if self.template.names_type == self.multi_type:
            raise InvalidArgument(
                "a multi-type model's instruction must not name a type (no {type}: one pass asks for every "
                "category)" if self.multi_type else
                "a single-type model's instruction must name the type it asks for ({type})")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaggerConfig:
        """From user input (``--set model.x``, config_json): unknown keys are refused."""
        check_keys(cls, data, "model setting")
        return cls(**data)

    @classmethod
    def from_saved(cls, data: Mapping[str, Any], source: str) -> TaggerConfig:
        """From a saved model's ``tagger_config.json`` (``source`` names it in errors): retired
        keys are ignored, unknown ones refused (see the module docstring)."""
        retired = [k for k in data if k in RETIRED_MODEL_KEYS]
        if retired:
            log.info("%s: ignoring retired model settings %s", source, retired)
        kept = {k: v for k, v in data.items() if k not in RETIRED_MODEL_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in kept if k not in known)
        if unknown:
            raise InvalidArgument(f"{source}: model settings {', '.join(map(repr, unknown))} are unknown to this "
                                  "vaner; the model was probably saved by a newer release (upgrade vaner)")
        return cls(**kept)


@dataclass(frozen=True)
class TrainConfig:
    datasets: tuple[str, ...] = field(default=(), metadata={"help": "registry names (ncbi,bc5cdr-disease,...)"})
    train_files: tuple[tuple[str, str], ...] = field(default=(), metadata={"help": "(path, category) pairs"})
    data_dir: str | None = field(default=None, metadata={"help": "folder of the shared datasets"})
    output_dir: str = field(default="runs/tagger", metadata={"help": "run folder: checkpoints, best model, plots"})
    model: TaggerConfig = field(default_factory=TaggerConfig)
    epochs: int = field(default=3, metadata={"help": "number of epochs (each ends with a dev evaluation)"})
    steps_per_epoch: int | None = field(default=None, metadata={"help": "optimizer steps per epoch; default one pass"})
    batch_size: int = field(default=8, metadata={"help": "sentences per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate for LoRA weights"})
    head_lr: float = field(default=1e-3, metadata={"help": "learning rate for the O/B/I head"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "linear warm-up share of all steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    mix_temperature: float = field(default=0.5, metadata={"help": "dataset sampling prob ~ size**T (1=proportional)"})
    free_instruction_share: float = field(default=0.0, metadata={
        "help": "share of dataset sentences trained with the dataset-free instruction (seeded per epoch), so "
                "unseen text, which gets that instruction, is tagged as well as a named corpus"})
    mix_weights: tuple[tuple[str, float], ...] = field(default=(), metadata={
        "help": "per-source factors on the mixing probability, e.g. bionlp09-gene=0.5"})
    dbr_ratio: float = field(default=1.0, metadata={"help": "DBR sentences per dataset sentence, at most"})
    dbr_budget: str = field(default="shared", metadata={
        "help": "shared: DBR sentences are one more mixed source and take part of each epoch's steps; extra: "
                "each epoch draws the same dataset sentences as without DBR and adds DBR sentences on top "
                "(dbr_ratio per dataset sentence, at most the set once per pass), so it takes more steps"})
    eval_every: int | None = field(default=None, metadata={
        "help": "dev evaluation every N dataset sentences (DBR not counted) and at the end; unset: each epoch end"})
    patience: int | None = field(default=None, metadata={
        "help": "stop after N dev evaluations in a row without a new best; unset: never stop early"})
    lr_schedule: str = field(default="linear", metadata={
        "help": "linear (warm-up, then decay to 0 at the last planned step) or constant after warm-up (paper 4.3)"})
    dev_datasets: tuple[str, ...] | None = field(default=None, metadata={
        "help": "datasets whose dev split selects the best model (default: every trained dataset)"})
    dev_max_sentences: int | None = field(default=300, metadata={"help": "dev sentences per dataset per evaluation"})
    seed: int = field(default=13, metadata={"help": "seed for sampling, dropout and init"})
    checkpoint_every: int = field(default=100, metadata={"help": "optimizer steps between resumable checkpoints"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: all cores)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})

    def __post_init__(self) -> None:
        if not self.datasets and not self.train_files:
            raise InvalidArgument("nothing to train on: give --datasets and/or --train PATH --type T")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise InvalidArgument("epochs, batch_size and grad_accum must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise InvalidArgument("steps_per_epoch must be >= 1")
        if not 0 < self.lr < 1 or not 0 < self.head_lr < 1:
            raise InvalidArgument("learning rates must be in (0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise InvalidArgument("warmup_ratio must be in [0, 1)")
        if self.mix_temperature <= 0:
            raise InvalidArgument("mix_temperature must be > 0")
        if not 0 <= self.free_instruction_share < 1:
            raise InvalidArgument(f"free_instruction_share must be in [0, 1), not {self.free_instruction_share}")
        if self.dbr_ratio < 0:
            raise InvalidArgument(f"dbr_ratio must be >= 0, not {self.dbr_ratio}")
        if self.dbr_budget not in ("shared", "extra"):
            raise InvalidArgument(f"dbr_budget must be 'shared' or 'extra', not {self.dbr_budget!r}")
        if self.lr_schedule not in ("linear", "constant"):
            raise InvalidArgument(f"lr_schedule must be 'linear' or 'constant', not {self.lr_schedule!r}")
        for name in ("eval_every", "patience"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgument(f"{name} must be an integer >= 1 (or unset), not {value!r}")
        weights = tuple((str(n), float(w)) for n, w in (self.mix_weights.items() if isinstance(self.mix_weights, dict)
                                                            else self.mix_weights))
        for name, w in weights:
            if not w > 0:
                raise InvalidArgument(f"mix weight for {name!r} must be > 0, not {w}")
        object.__setattr__(self, "mix_weights", weights)
        if self.dev_datasets is not None:
            object.__setattr__(self, "dev_datasets", tuple(self.dev_datasets))
            unknown = [d for d in self.dev_datasets if d not in self.datasets]
            if unknown or not self.dev_datasets:
                raise InvalidArgument(f"dev_datasets must be a non-empty subset of datasets; not trained: {unknown}")
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", TaggerConfig.from_dict(self.model))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "train_files", tuple(tuple(x) for x in self.train_files))

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """From user input or a run's saved ``train_config``: unknown keys are refused, and a
        ``model`` dict goes through :meth:`TaggerConfig.from_dict` (refused the same way)."""
        check_keys(cls, data, "training setting")
        return cls(**data)

    @classmethod
    def check_override_keys(cls, overrides: Mapping[str, Any]) -> None:
        """Refuse unknown keys in partial overrides (``model`` may be a partial dict of model
        settings) without building a config: callers check before any expensive work."""
        check_keys(cls, overrides, "training setting")
        model = overrides.get("model")
        if model is not None and not isinstance(model, (Mapping, TaggerConfig)):
            raise InvalidArgument(f"training setting 'model' must be an object of model settings, not {model!r}")
        if isinstance(model, Mapping):
            check_keys(TaggerConfig, model, "model setting")
