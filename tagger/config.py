"""Typed, self-validating configs for the tagger model and its training (peft-style dataclasses:
each field's help text lives in its metadata and the CLI reads it from there)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tagger.instructions import InstructionTemplate
from vaner.errors import InvalidArgument

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TaggerConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    mix_weights: tuple[tuple[str, float], ...] = field(default=(), metadata={
        "help": "per-source factors on the mixing probability, e.g. bionlp09-gene=0.5"})
    dbr_ratio: float = field(default=1.0, metadata={"help": "DBR sentences per dataset sentence, at most"})
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
