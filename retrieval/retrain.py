"""``vaner retrain --kb-snapshot latest``: rebuild DBR from a KB snapshot, train, gate, register.

This is a core object with no gRPC in it, so the CLI and the tagger service's Retrain RPC share it.
Properties it exists for:

* **Refuse early.** Everything that can be wrong with a request (unknown training settings, model
  settings that disagree with the model a warm start continues from, unknown datasets, missing dev
  splits) is refused in :meth:`Retrainer.plan`, before the KB, DBR or training are touched.
* **Adds to the serving model.** By default a retrain continues from the current ``latest``
  model's adapter and head (``tagger/warm_start.py``; its backbone, layers, LoRA shape and
  instruction are kept) and trains on fresh DBR plus a replay of its datasets for a bounded number
  of steps (``warm_fraction`` of the current model's training), so it costs a fraction of the
  first training. ``from_scratch`` trains a new adapter and head, as ``vaner train`` does.
* **One at a time.** An exclusive, non-blocking lock on ``locks_dir/retrain.lock`` (:mod:`vaner.locks`);
  a second retrain gets :class:`AlreadyRunning` immediately instead of queueing behind hours of
  training. The kernel drops the lock when the process dies, so a killed retrain never leaves a
  stale lock behind.
* **latest is touched last.** Nothing is registered until training and the gate finished; a
  crash, kill or exception before that leaves the registry (and the serving model) as it was.
* **A gate users can trust** (:mod:`retrieval.gate`): the new and the current model are scored on
  the same seeded dev sentences of every dataset either covers; promoted only if no dataset drops
  by more than ``promote_margin`` and the macro F1 does not drop. The new version is registered
  either way, with the gate table in its metrics, so a rejected model can still be inspected.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from retrieval.dbr import DbrBuilder, DbrParams, DbrSet
from retrieval.gate import Evaluator, GateReport, GateSample, decide, emit_report, gate_datasets, gate_sample, ungated
from vaner.corpus import DATASETS
from vaner.errors import InvalidArgument, NotFound
from vaner.locks import exclusive_lock
from vaner.permissions import make_private_dir
from vaner.progress import ProgressCallback, ProgressEvent
from vaner.settings import Settings

log = logging.getLogger(__name__)

DBR_CHOICES = ("retrieved", "random", "none")
# Training settings the request itself owns: an override would silently fight the request's field.
RESERVED_OVERRIDES = {"datasets": "datasets (--datasets)", "data_dir": "data_dir (--data-dir)",
                      "output_dir": "output_dir (--output-dir)", "seed": "seed (--seed)",
                      "train_files": "train_files (not offered by retrain)"}
# Optimizer steps assumed for a current model whose record says nothing about its training.
DEFAULT_FIRST_TRAINING_STEPS = 1000


@dataclass(frozen=True)
class RetrainRequest:
    kb_snapshot: str = "latest"
    datasets: tuple[str, ...] | None = field(default=None, metadata={
        "help": "datasets to train on; default: the current model's"})
    dbr_mode: str = "retrieved"
    promote_margin: float = field(default=0.5, metadata={"help": "allowed dev F1 drop per dataset, in points"})
    seed: int = 13
    dbr_seed: int | None = None
    data_dir: str | None = None
    output_dir: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    dbr_params: dict[str, Any] = field(default_factory=dict)
    from_scratch: bool = field(default=False, metadata={
        "help": "train a new adapter and head instead of continuing the current model"})
    warm_fraction: float = field(default=0.1, metadata={
        "help": "a warm start trains this share of the current model's training steps (one epoch)"})
    gate_sentences: int | None = field(default=300, metadata={
        "help": "dev sentences per dataset both models are scored on (None: whole dev splits)"})
    gate_seed: int = field(default=0, metadata={"help": "seed of the gate's dev sample (not the training seed)"})
    command: str = "vaner retrain"

    def __post_init__(self) -> None:
        from tagger.config import TrainConfig, check_keys

        if self.dbr_mode not in DBR_CHOICES:
            raise InvalidArgument(f"--dbr must be one of {', '.join(DBR_CHOICES)}, not {self.dbr_mode!r}")
        if self.promote_margin < 0:
            raise InvalidArgument("--promote-margin must be >= 0")
        if not 0 < self.warm_fraction <= 1:
            raise InvalidArgument("warm_fraction must be in (0, 1]")
        if self.gate_sentences is not None and self.gate_sentences < 1:
            raise InvalidArgument("gate_sentences must be >= 1 (or None for whole dev splits)")
        if self.datasets is not None:
            if not self.datasets:
                raise InvalidArgument("retrain needs at least one dataset (or none given: the current model's)")
            object.__setattr__(self, "datasets", tuple(d.name for d in DATASETS.parse_list(list(self.datasets))))
        if not isinstance(self.train_overrides, dict):
            raise InvalidArgument("train_overrides must be an object of training settings")
        reserved = [RESERVED_OVERRIDES[k] for k in self.train_overrides if k in RESERVED_OVERRIDES]
        if reserved:
            raise InvalidArgument(f"training overrides may not set {', '.join(reserved)}: the retrain request "
                                  "sets them itself")
        TrainConfig.check_override_keys(self.train_overrides)
        check_keys(DbrParams, {**self.dbr_params}, "DBR setting")
        for key in ("mode", "seed"):
            if key in self.dbr_params:
                raise InvalidArgument(f"DBR setting {key!r} comes from the request (dbr_mode / dbr_seed)")
        DbrParams(**self.dbr_params)  # its values too (e.g. max_uses=-1), before any KB or DBR work


@dataclass(frozen=True)
class RetrainPlan:
    """What a retrain will do, settled before any KB, DBR or training work."""

    current: Any | None               # the current ModelRecord, None when there is none
    config: Any                       # tagger.config.TrainConfig
    warm_from: Path | None            # artifact whose adapter and head training continues from
    sample: GateSample | None         # the gate's dev sentences (None without a current model)
    not_evaluated: tuple[str, ...]    # entries of the current model's datasets with no dev split to score
    start: str                        # how training starts, for people
    first_training_steps: int | None = None  # a warm start's reference cost (None from scratch)

    @property
    def recorded_datasets(self) -> list[str]:
        """What the new model covers: its training datasets, plus the current model's when it
        continues from it (the gate checked those too)."""
        inherited = list(self.current.datasets) if self.warm_from is not None and self.current is not None else []
        return list(dict.fromkeys([*inherited, *self.config.datasets]))


@dataclass
class RetrainOutcome:
    model: Any
    promoted: bool
    snapshot: str
    new_f1: float | None
    previous_id: str | None
    previous_f1: float | None
    dbr_set: DbrSet | None
    reason: str
    gate: GateReport | None = None
    warm_start: str | None = None
    notified: str | None = None
    notify_error: Exception | None = field(default=None, repr=False)  # the CLI exits non-zero with it

    def to_dict(self) -> dict[str, Any]:
        return {"model": getattr(self.model, "id", None), "promoted": self.promoted, "snapshot": self.snapshot,
                "dev_f1": self.new_f1, "previous": self.previous_id, "previous_dev_f1": self.previous_f1,
                "dbr_set": self.dbr_set.id if self.dbr_set else None, "reason": self.reason,
                "warm_start": self.warm_start, "gate": self.gate.to_dict() if self.gate else None,
                "notified": self.notified}


TrainFn = Callable[..., Any]
Notifier = Callable[[str], None]
# (artifact folder, device) -> a model to continue training (tagger.warm_start.load_trainable)
ModelLoader = Callable[[Path, str], Any]


class Retrainer:
    """Orchestrates one retrain; collaborators are injectable so tests (and services) pass fakes."""

    def __init__(self, settings: Settings, *, kb: Any = None, registry: Any = None, train_fn: TrainFn | None = None,
                 dbr_source: Callable[..., DbrSet] | None = None, notifier: Notifier | None = None,
                 evaluator: Evaluator | None = None, model_loader: ModelLoader | None = None):
        self.settings = settings
        self._kb = kb
        self._registry = registry
        self._train_fn = train_fn
        self._dbr_source = dbr_source
        self.notifier = notifier
        self._evaluator = evaluator
        self._model_loader = model_loader

    @property
    def kb(self) -> Any:
        if self._kb is None:
            from kb_ingest.kb import KnowledgeBase

            self._kb = KnowledgeBase(self.settings)
        return self._kb

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from tagger.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings)
        return self._registry

    @property
    def train_fn(self) -> TrainFn:
        if self._train_fn is None:
            from tagger.train import train

            self._train_fn = train
        return self._train_fn

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            from retrieval import gate

            return gate.evaluate_artifact
        return self._evaluator

    @property
    def model_loader(self) -> ModelLoader:
        if self._model_loader is None:
            from tagger.warm_start import load_trainable

            return load_trainable
        return self._model_loader

    # ---- planning: everything that can be refused, before any KB, DBR or training work -------------
    def current_model(self) -> Any | None:
        try:
            return self.registry.resolve("latest")
        except NotFound:
            return None

    def plan(self, request: RetrainRequest) -> RetrainPlan:
        from tagger.config import TaggerConfig, TrainConfig

        current = self.current_model()
        current_datasets = list(getattr(current, "datasets", None) or []) if current is not None else []
        datasets = request.datasets
        if datasets is None:
            datasets = tuple(gate_datasets(current_datasets, ())[0])
            if not datasets:
                raise InvalidArgument("no datasets to retrain on: " + (
                    f"the current model {current.id} lists none that vaner knows" if current is not None
                    else "there is no current model") + "; pass --datasets")
        overrides = dict(request.train_overrides)
        model_given = overrides.pop("model", None)
        warm_from: Path | None = None
        first_steps: int | None = None
        if current is not None and not request.from_scratch:
            from tagger.warm_start import warm_start_config

            warm_from = Path(current.artifact_path)
            model = warm_start_config(warm_from, model_given, source=f"the current model {current.id}",
                                      hint="drop those settings, or pass --from-scratch to train a new adapter")
            first_steps = self.first_training_steps(current, warm_from)
            overrides = {**self._warm_budget(first_steps, request.warm_fraction, overrides), **overrides}
            start = (f"warm start from {current.id}: {overrides['epochs']} epoch(s) of "
                     f"{overrides['steps_per_epoch']} steps")
        else:
            model = model_given if isinstance(model_given, TaggerConfig) else TaggerConfig.from_dict(model_given or {})
            start = "from scratch (" + ("--from-scratch" if current is not None else "no current model") + ")"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        # unique: a run folder with a checkpoint in it would be resumed, not started
        out = request.output_dir or str(self.settings.runs_dir / f"retrain-{stamp}-{secrets.token_hex(3)}")
        config = TrainConfig.from_dict({**overrides, "datasets": datasets, "data_dir": request.data_dir,
                                        "output_dir": out, "seed": request.seed, "model": model})
        sample, not_evaluated = None, ()
        if current is not None:
            names, skipped = gate_datasets(current_datasets, config.datasets)
            not_evaluated = tuple(skipped)
            sample = gate_sample(names, request.data_dir, request.gate_sentences, request.gate_seed)
        return RetrainPlan(current, config, warm_from, sample, not_evaluated, start, first_steps)

    @staticmethod
    def first_training_steps(current: Any, artifact: Path) -> int:
        """What the current model's line cost to train in the first place, in optimizer steps: a
        warm-started model carries it forward (else each retrain would be a tenth of the last);
        otherwise its record's epochs x steps per epoch, the step its artifact was saved at, or
        a default."""
        from tagger.warm_start import trained_steps

        hp = getattr(current, "hyperparameters", None) or {}
        carried = hp.get("first_training_steps")
        if isinstance(carried, int) and carried > 0:
            return carried
        epochs, per_epoch = hp.get("epochs"), hp.get("steps_per_epoch")
        if isinstance(epochs, int) and isinstance(per_epoch, int) and epochs * per_epoch > 0:
            return epochs * per_epoch
        return trained_steps(artifact) or DEFAULT_FIRST_TRAINING_STEPS

    @staticmethod
    def _warm_budget(first_steps: int, fraction: float, overrides: dict[str, Any]) -> dict[str, Any]:
        """One epoch of ``fraction`` x the first training's steps, unless the overrides say otherwise."""
        budget: dict[str, Any] = {}
        if "epochs" not in overrides:
            budget["epochs"] = 1
        if "steps_per_epoch" not in overrides:
            budget["steps_per_epoch"] = max(1, math.ceil(fraction * first_steps))
        return budget

    def dbr_set(self, snapshot_id: str, datasets: Sequence[str], mode: str, seed: int, data_dir: str | None = None,
                dbr_params: dict[str, Any] | None = None, progress: ProgressCallback | None = None) -> DbrSet | None:
        """The DBR set a training run mixes in (None for mode ``none``): from the configured source
        (a Retrieval service) or built here. ``vaner train --dbr`` calls this too, so both commands
        get the same sentences for the same snapshot, datasets and seed."""
        if mode == "none":
            return None
        params = DbrParams(**{**(dbr_params or {}), "mode": mode, "seed": seed})
        if self._dbr_source is not None:
            return self._dbr_source(tuple(datasets), params, snapshot_id, data_dir, progress)
        return DbrBuilder(self.settings, self.kb).build(datasets, params, snapshot=snapshot_id, data_dir=data_dir,
                                                        progress=progress)

    def run(self, request: RetrainRequest, progress: ProgressCallback | None = None) -> RetrainOutcome:
        with exclusive_lock(self.settings, "retrain"):
            return self._run_locked(request, progress)

    def _emit(self, progress: ProgressCallback | None, stage: str, message: str) -> None:
        log.info("retrain: %s: %s", stage, message)
        if progress:
            progress(ProgressEvent(stage, 0, None, 0.0, None, message))

    def _run_locked(self, request: RetrainRequest, progress: ProgressCallback | None) -> RetrainOutcome:
        t0 = time.monotonic()
        plan = self.plan(request)
        config, current = plan.config, plan.current
        if not request.output_dir:  # the run lands under the state dir: keep its new folders private
            make_private_dir(self.settings.runs_dir)
        self._emit(progress, "retrain", f"{plan.start}; datasets {','.join(config.datasets)}")
        old_scores = None
        if current is not None and plan.sample is not None:
            self._emit(progress, "gate", f"scoring the current model {current.id} on {plan.sample.size} dev "
                                         f"sentences of {','.join(plan.sample.ids)}")
            old_scores = self.evaluator(Path(current.artifact_path), plan.sample.sentences, config.device, progress)
        snap = self.kb.get_snapshot(request.kb_snapshot or "latest")
        snap_id = str(snap.id)
        self._emit(progress, "retrain", f"KB snapshot {snap_id}")
        extra: Sequence[Any] = ()
        seed = request.dbr_seed if request.dbr_seed is not None else request.seed
        dbr_set = self.dbr_set(snap_id, config.datasets, request.dbr_mode, seed, request.data_dir,
                               request.dbr_params, progress)
        if dbr_set is not None:
            extra = dbr_set.load()
            self._emit(progress, "retrain", f"DBR set {dbr_set.id}: {len(extra)} sentences")
        init = {"model": self.model_loader(plan.warm_from, config.device)} if plan.warm_from is not None else {}
        result = self.train_fn(config, extra_sentences=extra, progress=progress, **init)
        report = self._gate(plan, request, Path(result.artifact_dir), old_scores, progress)
        hyper = config.to_dict()
        hyper["dbr"] = {"mode": request.dbr_mode, "set": dbr_set.id if dbr_set else None,
                        "params": dbr_set.params if dbr_set else None,
                        "sentences": dbr_set.sentences if dbr_set else 0}
        hyper["warm_start"] = current.id if plan.warm_from is not None else None
        if plan.first_training_steps is not None:
            hyper["first_training_steps"] = plan.first_training_steps
        record = self.registry.register(
            Path(result.artifact_dir), backbone=config.model.backbone, datasets=plan.recorded_datasets,
            template=config.model.template.to_dict(), hyperparameters=hyper,
            metrics={"dev": dict(result.dev_metrics), "gate": report.to_dict()}, command=request.command,
            kb_snapshot=snap_id, promote=report.promote)
        new_f1 = report.new_macro if report.rows else _f1(result.dev_metrics)
        outcome = RetrainOutcome(record, report.promote, snap_id, new_f1, getattr(current, "id", None),
                                 report.old_macro, dbr_set, report.reason, report, hyper["warm_start"])
        if report.promote and self.notifier is not None:
            try:
                self.notifier(str(record.id))
                outcome.notified = "ok"
            except Exception as exc:  # registered and promoted; a tagger following latest catches up
                log.warning("could not tell the tagger service to load %s: %s", record.id, exc)
                outcome.notified = f"failed: {exc}"
                outcome.notify_error = exc
        self._emit(progress, "retrain", f"done in {time.monotonic() - t0:.0f}s: {record.id} "
                                        f"{'promoted' if report.promote else 'not promoted'} ({report.reason})")
        return outcome

    def _gate(self, plan: RetrainPlan, request: RetrainRequest, artifact: Path, old_scores: dict[str, float] | None,
              progress: ProgressCallback | None) -> GateReport:
        if plan.current is None or plan.sample is None or old_scores is None:
            report = ungated("no current model to compare with", request.promote_margin, plan.not_evaluated)
        else:
            self._emit(progress, "gate", f"scoring the new model on the same {plan.sample.size} dev sentences")
            new_scores = self.evaluator(artifact, plan.sample.sentences, plan.config.device, progress)
            ids_file = plan.sample.write(plan.config.run_dir / "gate_sample.json")
            report = decide(old_scores, new_scores, plan.sample, request.promote_margin, plan.current.id,
                            plan.not_evaluated, str(ids_file))
        emit_report(report, progress)
        return report


def _f1(metrics: Any) -> float | None:
    try:
        return float(metrics["f1"])
    except (KeyError, TypeError, ValueError):
        return None
