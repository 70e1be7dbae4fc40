"""The retrain promotion gate: the new and the current model, scored on the same dev sentences of
every dataset either of them covers, and a per-dataset verdict users can read.

Why it is built this way:

* **Same sentences for both.** Each model is scored now, on one seeded sample of each dataset's
  dev split (:func:`gate_sample`), never through figures stored at training time, which came
  from other samples (``--dev-max-sentences`` 150 for the bundled model, 300 for a retrain) and
  so were not comparable. The sample's sentence ids (``dataset:dev:index``) are recorded, and the
  seed does not depend on the training seed, so consecutive retrains are gated on the same text.
* **Every dataset.** A retrain on two datasets must not replace a seven-dataset model and lose
  Gene and Chemical without a word: the gate covers every dataset of the current model plus the
  retrain's own, and one dataset that drops by more than the margin blocks promotion, as does
  any drop of the macro F1 (the margin allows noise on one dataset, not a net loss).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaner.corpus import DATASETS, Sentence, load_dataset
from vaner.progress import ProgressCallback, ProgressEvent, ProgressTracker

STAGE = "gate"
OK, DROP = "ok", "drop"


@dataclass(frozen=True)
class GateSample:
    """The dev sentences both models are scored on, with their ids."""

    seed: int
    per_dataset: int | None  # None: whole dev splits
    sentences: dict[str, list[Sentence]]
    ids: dict[str, list[str]]

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def digest(self) -> str:
        """sha256 of the ids (dataset order as sampled), to tell at a glance that two gates match."""
        return hashlib.sha256(json.dumps(self.ids, sort_keys=True).encode()).hexdigest()

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seed": self.seed, "per_dataset": self.per_dataset, "sha256": self.digest(),
                                    "ids": self.ids}, indent=1))
        return path


def gate_sample(datasets: Sequence[str], data_dir: str | None, per_dataset: int | None, seed: int) -> GateSample:
    """A seeded sample of ``per_dataset`` dev sentences of each dataset, in split order.

    The sample of one dataset depends on (seed, dataset name, split size) only, so adding a
    dataset to the gate leaves the others' samples unchanged."""
    sentences: dict[str, list[Sentence]] = {}
    ids: dict[str, list[str]] = {}
    for name in datasets:
        dev = load_dataset(name, "dev", data_dir)
        idx = list(range(len(dev)))
        if per_dataset is not None and len(dev) > per_dataset:
            idx = sorted(random.Random(f"{seed}:gate:{name}").sample(idx, per_dataset))
        sentences[name] = [dev[i] for i in idx]
        ids[name] = [f"{name}:dev:{i}" for i in idx]
    return GateSample(seed, per_dataset, sentences, ids)


def gate_datasets(current: Sequence[str], requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """(datasets to gate on, entries of the current model's list that cannot be scored). The current
    model's list may hold CoNLL file paths (``vaner train --train``) and ``dbr:<mode>`` markers:
    the first have no dev split to share, the second are not datasets."""
    known = set(DATASETS.names())
    out: list[str] = []
    skipped: list[str] = []
    for name in [*current, *requested]:
        if name in known:
            if name not in out:
                out.append(name)
        elif not name.startswith("dbr:") and name not in skipped:
            skipped.append(name)
    return out, skipped


@dataclass(frozen=True)
class GateRow:
    dataset: str
    old: float  # dev F1 in points, current model
    new: float  # dev F1 in points, retrained model
    sentences: int

    @property
    def delta(self) -> float:
        return round(self.new - self.old, 4)

    def verdict(self, margin: float) -> str:
        return DROP if self.delta < -margin else OK

    def to_dict(self, margin: float) -> dict[str, Any]:
        return {"dataset": self.dataset, "old": self.old, "new": self.new, "delta": self.delta,
                "verdict": self.verdict(margin), "sentences": self.sentences}


def _macro(values: Sequence[float]) -> float | None:
    """Mean F1 over the gate's datasets; None when there are none (nothing was compared)."""
    return round(sum(values) / len(values), 4) if values else None


@dataclass(frozen=True)
class GateReport:
    promote: bool
    reason: str
    margin: float
    current: str | None  # id of the model compared against
    rows: tuple[GateRow, ...]
    sample_seed: int
    sample_per_dataset: int | None
    sample_sha256: str
    sample_file: str = ""
    not_evaluated: tuple[str, ...] = field(default=())

    @property
    def old_macro(self) -> float | None:
        return _macro([r.old for r in self.rows])

    @property
    def new_macro(self) -> float | None:
        return _macro([r.new for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        old, new = self.old_macro, self.new_macro
        return {"promote": self.promote, "reason": self.reason, "margin": self.margin, "current": self.current,
                "macro": {"old": old, "new": new,
                          "delta": None if old is None or new is None else round(new - old, 4)},
                "datasets": [r.to_dict(self.margin) for r in self.rows],
                "sample": {"seed": self.sample_seed, "per_dataset": self.sample_per_dataset,
                           "sentences": sum(r.sentences for r in self.rows), "ids_sha256": self.sample_sha256,
                           "ids_file": self.sample_file},
                "not_evaluated": list(self.not_evaluated)}

    def lines(self) -> list[str]:
        """The table as text: one line per dataset, the macro, then the verdict."""
        out = [f"{r.dataset:<16} old {r.old:6.2f}  new {r.new:6.2f}  {r.delta:+6.2f}  {r.verdict(self.margin)}"
               for r in self.rows]
        old, new = self.old_macro, self.new_macro
        if old is not None and new is not None:
            out.append(f"{'macro':<16} old {old:6.2f}  new {new:6.2f}  {new - old:+6.2f}")
        out.append(f"{'PROMOTE' if self.promote else 'KEEP the current model'}: {self.reason}")
        return out


def decide(old: Mapping[str, float], new: Mapping[str, float], sample: GateSample, margin: float,
           current: str, not_evaluated: Sequence[str] = (), sample_file: str = "") -> GateReport:
    """Promote iff no dataset drops by more than ``margin`` points and the macro F1 does not drop."""
    rows = tuple(GateRow(name, round(float(old[name]), 4), round(float(new[name]), 4), len(ids))
                 for name, ids in sample.ids.items())
    old_macro, new_macro = _macro([r.old for r in rows]), _macro([r.new for r in rows])
    drops = [r for r in rows if r.verdict(margin) == DROP]
    if drops:
        promote = False
        reason = "; ".join(f"{r.dataset} drops {-r.delta:.2f} F1 points" for r in drops)
        reason += f", more than the margin of {margin}"
    elif old_macro is not None and new_macro is not None and new_macro < old_macro:
        promote, reason = False, f"macro F1 drops from {old_macro:.2f} to {new_macro:.2f}"
    else:
        promote, reason = True, (f"no dataset drops more than {margin} F1 points and macro F1 {new_macro:.2f} "
                                 f">= {old_macro:.2f}")
    return GateReport(promote, reason, margin, current, rows, sample.seed, sample.per_dataset, sample.digest(),
                      sample_file, tuple(not_evaluated))


def ungated(reason: str, margin: float, not_evaluated: Sequence[str] = ()) -> GateReport:
    """The report when nothing was compared (no current model): promoted, no rows."""
    return GateReport(True, reason, margin, None, (), 0, None, "", "", tuple(not_evaluated))


# (model artifact folder, {dataset: sentences}, device, progress) -> {dataset: F1 in points}
Evaluator = Callable[[Path, Mapping[str, Sequence[Sentence]], str, "ProgressCallback | None"], dict[str, float]]


def evaluate_artifact(artifact: Path, sentences: Mapping[str, Sequence[Sentence]], device: str = "auto",
                      progress: ProgressCallback | None = None) -> dict[str, float]:
    """Score a saved model on each dataset's sentences with the serving path's loader (merged LoRA),
    each sentence asked with its dataset's instruction, as in training's dev evaluation."""
    from tagger.extract import load_for_inference
    from tagger.train import evaluate_sentences

    model = load_for_inference(artifact, device=device)
    tracker = ProgressTracker(STAGE, total=sum(len(v) for v in sentences.values()), callback=progress)
    out: dict[str, float] = {}
    for name, sents in sentences.items():
        out[name] = float(evaluate_sentences(model, list(sents))["f1"]) if sents else 0.0
        tracker.advance(len(sents), f"{Path(artifact).name}: {name} F1 {out[name]:.2f}")
    del model
    return out


def emit_report(report: GateReport, progress: ProgressCallback | None) -> None:
    """The table on the progress stream (CLI bar messages, gRPC Progress events), one row each."""
    if progress is None:
        return
    lines = report.lines()
    for i, line in enumerate(lines):
        progress(ProgressEvent(STAGE, i + 1, len(lines), 0.0, None, line))
