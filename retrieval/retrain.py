"""``vaner retrain --kb-snapshot latest``: rebuild DBR from a KB snapshot, train, gate, register.

This is a core object with no gRPC in it, so the CLI and the tagger service's Retrain RPC share it.
Safety properties it exists for:

* **One at a time.** An exclusive, non-blocking lock on ``locks_dir/retrain.lock`` (:mod:`vaner.locks`);
  a second retrain gets :class:`AlreadyRunning` immediately instead of queueing behind hours of
  training. The kernel drops the lock when the process dies, so a killed retrain never leaves a
  stale lock behind.
* **latest is touched last.** Nothing is registered until training and evaluation finished; a
  crash, kill or exception before that leaves the registry (and the serving model) as it was.
* **Promotion gate.** The new version becomes ``latest`` only when its dev F1 is not worse than the
  current latest's by more than ``promote_margin`` F1 points, compared on the datasets both were
  evaluated on. It is registered either way, so a rejected model can still be inspected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from retrieval.dbr import DbrBuilder, DbrParams, DbrSet
from vaner.errors import InvalidArgument, NotFound
from vaner.locks import exclusive_lock
from vaner.progress import ProgressCallback, ProgressEvent
from vaner.settings import Settings

log = logging.getLogger(__name__)

DBR_CHOICES = ("retrieved", "random", "none")


@dataclass(frozen=True)
class RetrainRequest:
    kb_snapshot: str = "latest"
    datasets: tuple[str, ...] = ("ncbi", "s800")
    dbr_mode: str = "retrieved"
    promote_margin: float = field(default=0.5, metadata={"help": "allowed dev F1 drop, in points"})
    seed: int = 13
    dbr_seed: int | None = None
    data_dir: str | None = None
    output_dir: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    dbr_params: dict[str, Any] = field(default_factory=dict)
    command: str = "vaner retrain"

    def __post_init__(self) -> None:
        if self.dbr_mode not in DBR_CHOICES:
            raise InvalidArgument(f"--dbr must be one of {', '.join(DBR_CHOICES)}, not {self.dbr_mode!r}")
        if self.promote_margin < 0:
            raise InvalidArgument("--promote-margin must be >= 0")
        if not self.datasets:
            raise InvalidArgument("retrain needs at least one dataset")
        object.__setattr__(self, "datasets", tuple(self.datasets))


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
    notified: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": getattr(self.model, "id", None), "promoted": self.promoted, "snapshot": self.snapshot,
                "dev_f1": self.new_f1, "previous": self.previous_id, "previous_dev_f1": self.previous_f1,
                "dbr_set": self.dbr_set.id if self.dbr_set else None, "reason": self.reason,
                "notified": self.notified}


def _as_points(value: Any) -> float | None:
    """F1 as the trainer reports it (tagger/metrics.py: points, 0-100); None when absent."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def dev_scores(metrics: dict[str, Any] | None) -> tuple[float | None, dict[str, float]]:
    """(overall dev F1, per-dataset dev F1) in points, from the shape the trainer and registry use,
    ``{"dev": {"f1": macro, "datasets": {"ncbi": {"f1": ..}}}}``, or a flat ``{"f1": ..}``."""
    if not metrics:
        return None, {}
    dev = metrics.get("dev", metrics) if isinstance(metrics.get("dev"), dict) else metrics
    overall = _as_points(dev.get("f1", metrics.get("dev_f1")))
    per: dict[str, float] = {}
    nested = dev.get("datasets") if isinstance(dev.get("datasets"), dict) else dev
    for key, value in nested.items():
        if isinstance(value, dict) and "f1" in value:
            p = _as_points(value["f1"])
            if p is not None:
                per[key] = p
    return overall, per


def compare_f1(new: dict[str, Any], old: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """Dev F1 of new and old on the datasets both report (macro); overall F1 when none are shared."""
    new_all, new_per = dev_scores(new)
    old_all, old_per = dev_scores(old)
    shared = sorted(set(new_per) & set(old_per))
    if shared:
        return (sum(new_per[d] for d in shared) / len(shared), sum(old_per[d] for d in shared) / len(shared))
    return new_all, old_all


TrainFn = Callable[..., Any]
Notifier = Callable[[str], None]


class Retrainer:
    """Orchestrates one retrain; collaborators are injectable so tests (and services) pass fakes."""

    def __init__(self, settings: Settings, *, kb: Any = None, registry: Any = None, train_fn: TrainFn | None = None,
                 dbr_source: Callable[..., DbrSet] | None = None, notifier: Notifier | None = None):
        self.settings = settings
        self._kb = kb
        self._registry = registry
        self._train_fn = train_fn
        self._dbr_source = dbr_source
        self.notifier = notifier

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

    def make_config(self, request: RetrainRequest, snapshot_id: str) -> Any:
        from tagger.config import TaggerConfig, TrainConfig

        overrides = dict(request.train_overrides)
        model = overrides.pop("model", None)
        if isinstance(model, dict):
            model = TaggerConfig.from_dict(model)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = request.output_dir or str(self.settings.home / "runs" / f"retrain-{stamp}-{snapshot_id[:12]}")
        kwargs: dict[str, Any] = {"datasets": request.datasets, "data_dir": request.data_dir, "output_dir": out,
                                  "seed": request.seed, **overrides}
        if model is not None:
            kwargs["model"] = model
        return TrainConfig(**kwargs)

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
        snap = self.kb.get_snapshot(request.kb_snapshot or "latest")
        snap_id = str(snap.id)
        self._emit(progress, "retrain", f"KB snapshot {snap_id}")
        extra: Sequence[Any] = ()
        seed = request.dbr_seed if request.dbr_seed is not None else request.seed
        dbr_set = self.dbr_set(snap_id, request.datasets, request.dbr_mode, seed, request.data_dir,
                               request.dbr_params, progress)
        if dbr_set is not None:
            extra = dbr_set.load()
            self._emit(progress, "retrain", f"DBR set {dbr_set.id}: {len(extra)} sentences")
        config = self.make_config(request, snap_id)
        result = self.train_fn(config, extra_sentences=extra, progress=progress)
        new_metrics = {"dev": dict(result.dev_metrics)}
        try:
            current = self.registry.resolve("latest")
        except NotFound:
            current = None
        current_metrics = getattr(current, "metrics", None) if current is not None else None
        new_f1, old_f1 = compare_f1(new_metrics, current_metrics)
        if current is None:
            promote, reason = True, "no current model"
        elif old_f1 is None:
            promote, reason = True, f"current model {current.id} has no dev F1"
        elif new_f1 is None:
            promote, reason = False, "new model has no dev F1"
        elif new_f1 >= old_f1 - request.promote_margin:
            promote, reason = True, f"dev F1 {new_f1:.2f} vs {old_f1:.2f} (margin {request.promote_margin})"
        else:
            promote, reason = False, (f"dev F1 {new_f1:.2f} is more than {request.promote_margin} points below "
                                      f"the current {old_f1:.2f}")
        hyper = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
        hyper["dbr"] = {"mode": request.dbr_mode, "set": dbr_set.id if dbr_set else None,
                        "params": dbr_set.params if dbr_set else None,
                        "sentences": dbr_set.sentences if dbr_set else 0}
        template = getattr(getattr(config, "model", None), "template", None)
        template = template.to_dict() if hasattr(template, "to_dict") else (template or {})
        record = self.registry.register(
            Path(result.artifact_dir), backbone=getattr(getattr(config, "model", None), "backbone", ""),
            datasets=list(request.datasets), template=template, hyperparameters=hyper, metrics=new_metrics,
            command=request.command, kb_snapshot=snap_id, promote=promote)
        outcome = RetrainOutcome(record, promote, snap_id, new_f1, getattr(current, "id", None), old_f1, dbr_set,
                                 reason)
        if promote and self.notifier is not None:
            try:
                self.notifier(str(record.id))
                outcome.notified = "ok"
            except Exception as exc:  # the model is registered and promoted; serving catches up on restart
                log.warning("could not tell the tagger service to load %s: %s", record.id, exc)
                outcome.notified = f"failed: {exc}"
        self._emit(progress, "retrain", f"done in {time.monotonic() - t0:.0f}s: {record.id} "
                                        f"{'promoted' if promote else 'not promoted'} ({reason})")
        return outcome
